"""Data contracts: Great Expectations 1.x suites validated against asset frames.

Each `data_contracts/<suite>.json` is an ExpectationSuite; its file stem is its name. Thresholds are
`{"$PARAMETER": "<expression>"}` placeholders filled at validation time from the platform configuration,
so no suite holds a number that a screen or a model may need changed.

Great Expectations takes ~2 s to import and builds a data context on first use, so both happen lazily and
once per process. Everything except `ContractRunner.check_result` and `contract_check_spec` is free of
Dagster, so contracts can be run from notebooks and plain tests.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import dagster as dg

DEFAULT_CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "data_contracts"

# Enough offending values to recognise the problem while keeping check metadata small.
_UNEXPECTED_SAMPLE_SIZE = 5
_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": _UNEXPECTED_SAMPLE_SIZE}
_OBSERVED_KEYS = (
    "observed_value",
    "element_count",
    "missing_count",
    "unexpected_count",
    "unexpected_percent",
    "partial_unexpected_list",
    "details",
)
# A name inside a $PARAMETER expression such as "1 - max_null_score_fraction"; a name followed by "(" is
# one of GE's functions (trunc, round, now), not a parameter.
_PARAMETER_NAME = re.compile(r"\b[A-Za-z_]\w*\b(?!\s*\()")
# GE evaluates $PARAMETER expressions on one module-global parser stack, so validations must not overlap.
_VALIDATION_LOCK = threading.Lock()


class ContractError(ValueError):
    """A suite file is invalid, or a validation lacks a parameter its suite needs."""


@dataclass(frozen=True)
class ContractResult:
    """Outcome of validating one frame against one suite.

    failed:      labels `expectation_type(column)` of the failed expectations, in suite order
    observed:    label -> JSON-able observations of every expectation (success, severity, counts, percents,
                 observed value, a few offending values, the error message if it raised)
    parameters:  the parameter values the suite was evaluated with
    critical_failure: whether a failed expectation has GE severity "critical"; failures of "warning"
                 expectations alone are drift to report, not a reason to stop downstream assets
    """

    suite: str
    success: bool
    failed: tuple[str, ...]
    observed: dict[str, Any]
    parameters: dict[str, Any]
    critical_failure: bool

    def describe(self) -> str:
        """One line for logs and check descriptions, naming every failed expectation."""
        if self.success:
            return f"{self.suite}: all {len(self.observed)} expectations passed"
        failures = ", ".join(f"{label} [{_summarise(self.observed[label])}]" for label in self.failed)
        return f"{self.suite}: {len(self.failed)} of {len(self.observed)} expectations failed: {failures}"


@dataclass(frozen=True)
class _Contract:
    suite: Any  # great_expectations.ExpectationSuite, typed loosely to keep GE out of module import
    labels: tuple[str, ...]
    parameters: tuple[str, ...]


class ContractRunner:
    """Validates pandas frames against the suites in one contracts folder.

    Suites are read once per runner; the Great Expectations context is shared by every runner in the
    process (one ephemeral context, one pandas data source, one whole-frame batch definition).
    """

    def __init__(self, contracts_dir: str | Path = DEFAULT_CONTRACTS_DIR) -> None:
        self.contracts_dir = Path(contracts_dir)
        if not self.contracts_dir.is_dir():
            raise FileNotFoundError(
                f"contracts folder {self.contracts_dir} does not exist; pass the folder holding the "
                "suite JSON files (the repository's data_contracts/)"
            )
        self._contracts: dict[str, _Contract] = {}

    def suite_names(self) -> tuple[str, ...]:
        return tuple(sorted(path.stem for path in self.contracts_dir.glob("*.json")))

    def required_parameters(self, suite: str) -> tuple[str, ...]:
        """Parameter names the suite's `$PARAMETER` expressions read; the configuration must supply each."""
        return self._contract(suite).parameters

    def validate(
        self, suite: str, frame: pd.DataFrame, parameters: Mapping[str, Any] | None = None
    ) -> ContractResult:
        """Validate `frame` against `suite`; parameters not used by the suite are ignored."""
        contract = self._contract(suite)
        supplied = dict(parameters or {})
        missing = [name for name in contract.parameters if name not in supplied]
        if missing:
            raise ContractError(
                f"suite {suite!r} needs parameter(s) {missing}; pass them as parameters={{...}} "
                "from the configuration's `contracts:` section"
            )
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"suite {suite!r} validates a pandas DataFrame, got {type(frame).__name__}")
        used = {name: supplied[name] for name in contract.parameters}
        with _VALIDATION_LOCK:
            batch = _whole_frame_batch_definition().get_batch(batch_parameters={"dataframe": frame})
            report = batch.validate(contract.suite, expectation_parameters=used, result_format=_RESULT_FORMAT)

        observed: dict[str, Any] = {}
        critical_failure = False
        for outcome in report.results:
            label = _label(outcome.expectation_config)
            severity = outcome.expectation_config.severity.value
            observed[label] = _observations(outcome.to_json_dict(), severity)
            critical_failure |= not outcome.success and severity == "critical"
        failed = tuple(label for label in contract.labels if not observed[label]["success"])
        return ContractResult(
            suite=suite,
            success=not failed,
            failed=failed,
            observed={label: observed[label] for label in contract.labels},
            parameters=used,
            critical_failure=critical_failure,
        )

    def check_result(
        self,
        result: ContractResult,
        *,
        asset_key: dg.AssetKey | str | None = None,
        check_name: str | None = None,
        severity: str | None = None,
    ) -> dg.AssetCheckResult:
        """The Dagster check result for a validation, with every observation as metadata.

        Severity defaults to ERROR (which stops downstream assets when the check spec is blocking) if a
        critical expectation failed, else WARN; pass "ERROR" or "WARN" to override.
        """
        import dagster as dg

        if severity is None:
            severity = "WARN" if result.failed and not result.critical_failure else "ERROR"
        return dg.AssetCheckResult(
            passed=result.success,
            asset_key=asset_key,
            check_name=check_name or contract_check_name(result.suite),
            severity=dg.AssetCheckSeverity(severity),
            description=result.describe(),
            metadata={
                "suite": result.suite,
                "failed": list(result.failed),
                "parameters": result.parameters,
                **result.observed,
            },
        )

    def _contract(self, suite: str) -> _Contract:
        if suite not in self._contracts:
            path = self.contracts_dir / f"{suite}.json"
            if not path.is_file():
                raise FileNotFoundError(
                    f"no contract suite {suite!r}: {path} does not exist; "
                    f"suites in {self.contracts_dir}: {list(self.suite_names())}"
                )
            self._contracts[suite] = _load_contract(path)
        return self._contracts[suite]


def contract_check_name(suite: str) -> str:
    return f"check_{suite}_contract"


def contract_check_spec(
    suite: str, asset: dg.AssetKey | str, *, partitions_def: dg.PartitionsDefinition | None = None,
    blocking: bool = True, description: str | None = None
) -> dg.AssetCheckSpec:
    """The check spec matching `check_result` for `suite` on `asset`, for an asset's `check_specs`. Pass the
    asset's `partitions_def` so that each result is recorded against the partition it checked."""
    import dagster as dg

    return dg.AssetCheckSpec(
        contract_check_name(suite),
        asset=asset,
        partitions_def=partitions_def,
        blocking=blocking,
        description=description or f"data_contracts/{suite}.json (Great Expectations)",
    )


@functools.cache
def _whole_frame_batch_definition() -> Any:
    """The process-wide GE objects: one ephemeral context, one pandas data source, one batch definition."""
    ge_logger = logging.getLogger("great_expectations")
    if ge_logger.level == logging.NOTSET:
        # GE logs every parsed parameter and docs-site temp folder at INFO; keep an explicit choice.
        ge_logger.setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    frames = context.data_sources.add_pandas("scinterp_frames")
    return frames.add_dataframe_asset("frame").add_batch_definition_whole_dataframe("whole_frame")


def _load_contract(path: Path) -> _Contract:
    """Build a suite from its JSON; an invalid expectation is an error (GE would log it and drop it)."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ContractError(f"{path}: not valid JSON ({error})") from error
    if document.get("name") != path.stem:
        raise ContractError(
            f"{path}: suite name {document.get('name')!r} must equal the file name {path.stem!r}, "
            "since results are reported under the name"
        )
    expectations = []
    for index, spec in enumerate(document.get("expectations", [])):
        try:
            expectations.append(ExpectationConfiguration(**spec).to_domain_obj())
        except Exception as error:
            raise ContractError(
                f"{path}: expectation {index} ({spec.get('type')!r}) is invalid: {error}"
            ) from error
    if not expectations:
        raise ContractError(f"{path}: the suite has no expectations")
    labels = tuple(_label(expectation.configuration) for expectation in expectations)
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ContractError(
            f"{path}: expectations {repeated} appear twice; results are keyed by type and column, "
            "so merge them into one expectation"
        )
    suite = gx.ExpectationSuite(name=path.stem, expectations=expectations, notes=document.get("notes"))
    parameters = sorted(
        {name for expression in suite.suite_parameter_options for name in _PARAMETER_NAME.findall(expression)}
    )
    return _Contract(suite=suite, labels=labels, parameters=tuple(parameters))


def _label(configuration: Any) -> str:
    """`expectation_type(column)`, `expectation_type(a,b,c)` for compound columns, or the bare type."""
    kwargs = configuration.kwargs
    if "column" in kwargs:
        return f"{configuration.type}({kwargs['column']})"
    if "column_list" in kwargs:
        return f"{configuration.type}({','.join(kwargs['column_list'])})"
    return configuration.type


def _observations(outcome: dict[str, Any], severity: str) -> dict[str, Any]:
    observed = {"success": bool(outcome["success"]), "severity": severity}
    observed.update({key: outcome["result"][key] for key in _OBSERVED_KEYS if key in outcome["result"]})
    errors = _exception_messages(outcome.get("exception_info") or {})
    if errors:
        observed["exception"] = "; ".join(errors)
    return _json_safe(observed)


def _exception_messages(exception_info: dict[str, Any]) -> list[str]:
    """GE reports an expectation's error flat, or keyed by metric id (e.g. a missing column)."""
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    return sorted({info["exception_message"] for info in infos if info.get("raised_exception")})


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities (offending values are often exactly those) by strings: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _summarise(observed: dict[str, Any]) -> str:
    if "exception" in observed:
        summary = f"error: {observed['exception']}"
    elif "unexpected_count" in observed:
        summary = f"{observed['unexpected_count']} of {observed['element_count']} unexpected"
        if observed.get("partial_unexpected_list"):
            summary += f", e.g. {observed['partial_unexpected_list'][:3]}"
    else:
        summary = f"observed {observed.get('observed_value')}"
        if observed.get("details"):
            summary += f" {observed['details']}"
    return f"{summary}; {observed['severity']}" if observed["severity"] != "critical" else summary
