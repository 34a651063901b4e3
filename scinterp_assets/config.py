"""Project configuration: one YAML file, validated at load time.

The file is found through the SCINTERP_CONFIG environment variable, else ./scinterp.yaml. Relative
paths inside it are resolved against the file's own folder. Every threshold and seed the platform uses
lives here (FRAMEWORK.md section 8: thresholds versioned with the results), so a run is reproducible
from the stored configuration alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from scinterp_assets.core.datasets.de_labels import DELabelRule
from scinterp_assets.core.datasets.screens import GuideSpec, ScreenSpec
from scinterp_assets.core.datasets.tenx import TenxSpec
from scinterp_assets.core.networks.null import DEFAULT_MAX_SMALLEST_P, DEFAULT_MIN_MEDIAN_DISTANCE

CONFIG_ENV_VAR = "SCINTERP_CONFIG"
PARTITION_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")


class ConfigError(ValueError):
    """The configuration file is wrong; the message names the file, the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticCellType(_Strict):
    """A simulated context with a planted network (FRAMEWORK A25)."""

    kind: Literal["synthetic"]
    modality: Literal["CRISPRi", "CRISPRa"]
    wiring_seed: int = Field(ge=0)
    seed: int = Field(ge=0)
    n_genes: int = Field(default=300, ge=200)
    n_tfs: int = Field(default=24, ge=20)
    n_control_cells: int = Field(default=1500, ge=100)
    n_perturbed_genes: int = Field(default=40, ge=30)
    cells_per_perturbation: int = Field(default=60, ge=10)
    mean_library_size: float = Field(default=4000.0, gt=0)  # UMIs of an average control cell
    expression_log_sd: float = Field(default=1.5, gt=0)  # spread of the genes' log mean expression
    # TF -> target edges per cell state active only in that state (A20-A21: what pooling dilutes), and the
    # spread of the states' TF activity offsets
    state_specific_edges: int = Field(default=0, ge=0)
    state_effect_sd: float = Field(default=0.5, ge=0)
    # Geneformer dictionary folders (token_dictionary and gene_name_id_dict pickles, e.g. a release's V1 and
    # V2 dictionaries): genes then carry real symbols and Ensembl ids that every listed vocabulary holds, so
    # real vocabularies tokenise the world; empty: synthetic names (TF01, G0001; ENSSYN ids)
    gene_dictionaries: list[Path] = []


class PseudoBulkLabelConfig(_Strict):
    """DE labels from a Replogle z-normalised pseudo-bulk file of the same experiment (core/datasets/pseudobulk.py)."""

    path: Path  # *_normalized_bulk_01.h5ad
    min_abs_z: float = Field(default=1.0, gt=0)
    perturbation_stats: Path | None = None  # Table S2 TSV: cells per sgRNA pair, for de_labels.min_cells


class H5adCellType(_Strict):
    """A screen the user downloaded, as one h5ad file (core/datasets/screens.py documents the layouts)."""

    kind: Literal["h5ad"]
    path: Path
    modality: Literal["CRISPRi", "CRISPRa", "knockout"]
    layout: Literal["generic", "replogle", "scperturb", "gears"] = "generic"
    perturbation_column: str | None = None
    control_label: str | None = None
    gene_symbol_column: str | None = None
    ensembl_id_column: str | None = None
    counts_layer: str | None = None
    combinations: Literal["drop", "keep"] = "drop"
    duplicate_genes: Literal["error", "sum"] = "error"
    guides: GuideSpec | None = None  # per-cell guide UMI counts in obsm instead of a perturbation column
    references: tuple[str, ...] | None = None  # names under `references`; None: every configured reference
    pseudobulk_labels: PseudoBulkLabelConfig | None = None  # DE labels from pseudo-bulk instead of the cells

    @model_validator(mode="after")
    def _check_labels_source(self) -> H5adCellType:
        if self.layout == "generic" and self.guides is None and not (self.perturbation_column and self.control_label):
            raise ValueError(
                "a generic h5ad screen needs perturbation_column and control_label (or a guides section, or a "
                "layout: replogle | scperturb | gears that knows them)"
            )
        return self

    def screen_spec(self) -> ScreenSpec:
        return ScreenSpec(**{name: getattr(self, name) for name in ScreenSpec.__dataclass_fields__})


class TenxCellType(_Strict):
    """A Cell Ranger CRISPR screen: matrix folder, feature reference and optionally the guide calls."""

    kind: Literal["tenx"]
    path: Path  # the filtered_feature_bc_matrix folder
    modality: Literal["CRISPRi", "CRISPRa", "knockout"]
    feature_reference: Path
    guide_calls: Path | None = None  # protospacer_calls_per_cell.csv; else guide features of the matrix
    min_umis: int = Field(default=5, ge=1)
    multiple: Literal["drop", "dominant"] = "drop"
    dominant_fraction: float = Field(default=0.8, gt=0.5, le=1)
    duplicate_genes: Literal["error", "sum"] = "error"
    references: tuple[str, ...] | None = None  # names under `references`; None: every configured reference

    def screen_spec(self) -> TenxSpec:
        return TenxSpec(folder=self.path, **self.model_dump(exclude={"kind", "path", "references"}))


CellType = Annotated[SyntheticCellType | H5adCellType | TenxCellType, Field(discriminator="kind")]
CELL_TYPE_KINDS = ("synthetic", "h5ad", "tenx")


REFERENCE_FORMAT_OPTIONS = {
    "trrust": set(),
    "dorothea": {"levels"},
    "collectri": set(),
    "string": {"min_score"},
    "string_download": {"min_score", "protein_info"},
    "omnipath": {"types", "resources"},
    "beeline": {"relation"},
    "chip": {"cell_lines"},
    "gmt": set(),
}


class ReferenceSource(_Strict):
    """One published reference file (core/networks/reference_formats.py documents each format)."""

    format: Literal["trrust", "dorothea", "collectri", "string", "string_download", "omnipath", "beeline", "chip", "gmt"]
    path: Path
    levels: tuple[str, ...] | None = None  # dorothea confidence levels (default A, B, C)
    min_score: float | None = Field(default=None, ge=0, le=1000)  # STRING combined score, 0-1000 (default 700)
    protein_info: Path | None = None  # string_download: the protein.info file mapping ENSP ids to symbols
    types: tuple[str, ...] | None = None  # omnipath interaction types (default transcriptional)
    resources: tuple[str, ...] | None = None  # omnipath: keep rows from these primary resources
    relation: Literal["regulates", "interacts"] | None = None  # beeline: ChIP networks regulate, STRING interacts
    cell_lines: tuple[str, ...] | None = None  # chip target sets of these cell lines
    # a cell type where this reference keeps fewer than contracts.min_reference_edges edges fails instead of
    # reporting it as not evaluable and evaluating the others
    required: bool = False

    @model_validator(mode="after")
    def _check_options(self) -> ReferenceSource:
        allowed = REFERENCE_FORMAT_OPTIONS[self.format]
        given = {name for name in self.reader_option_names() if getattr(self, name) is not None}
        if given - allowed:
            raise ValueError(f"option(s) {sorted(given - allowed)} do not apply to format '{self.format}' "
                             f"(it takes {sorted(allowed) or 'no options'})")
        if self.format == "string_download" and self.protein_info is None:
            raise ValueError("format 'string_download' needs protein_info (the 9606.protein.info file)")
        if self.format == "beeline" and self.relation is None:
            raise ValueError("format 'beeline' needs relation: regulates (ChIP networks) or interacts (STRING)")
        return self

    @staticmethod
    def reader_option_names() -> set[str]:
        return set().union(*REFERENCE_FORMAT_OPTIONS.values())

    def reader_options(self) -> dict:
        return {name: getattr(self, name) for name in self.reader_option_names() if getattr(self, name) is not None}


class ReferenceRestrictionConfig(_Strict):
    """FRAMEWORK.md section 5: universe restriction of every reference."""

    min_targets_per_tf: int = Field(default=3, ge=1)
    tf_list: Path | None = None  # a BEELINE-style TF list (column TF): sources of TF-target references must be in it
    gene_aliases: Path | None = None  # HGNC complete set, or a TSV alias/symbol: aliases renamed to official symbols
    gene_set_min_size: int = Field(default=5, ge=2)
    gene_set_max_size: int = Field(default=500, ge=2)


class ReferenceNullConfig(_Strict):
    """FRAMEWORK.md section 5: verified degree-preserving null draws of each restricted reference."""

    n_draws: int = Field(default=1000, ge=1)
    relations: tuple[Literal["regulates", "interacts"], ...] = ("regulates",)  # which resources get a null
    # draws that barely move leave a reference's null tests without power; their rows say so (null.py)
    min_median_jaccard_distance: float = Field(default=DEFAULT_MIN_MEDIAN_DISTANCE, ge=0, le=1)
    max_smallest_p: float = Field(default=DEFAULT_MAX_SMALLEST_P, ge=0, le=1)


class PreprocessingConfig(_Strict):
    n_control_cells: int = Field(default=2000, ge=10)
    n_hvg: int = Field(default=2000, ge=10)
    force_perturbed_genes: bool = True
    target_sum: float = Field(default=1e4, gt=0)


class DELabelConfig(_Strict):
    """FRAMEWORK.md section 3: Welch t, BH over the universe, effect in natural-log units."""

    q_threshold: float = Field(default=0.05, gt=0, lt=1)
    min_abs_log_difference: float = Field(default=0.5, ge=0)
    min_cells: int = Field(default=30, ge=2)
    test: Literal["welch", "mann_whitney"] = "welch"  # mann_whitney with min_abs_log_difference 0.1 and
    # preprocessing.n_control_cells 500 is the study's alternative rule
    min_positives: int = Field(default=3, ge=1)
    min_negatives: int = Field(default=3, ge=1)


class AttentionConfig(_Strict):
    batch_size: int = Field(default=8, ge=1)
    # at most this many attention entries per head in one batch (cells x padded tokens^2; a longer cell goes
    # alone): bounds peak memory whatever the cell lengths. 2^23: 2 cells of 2,048 tokens, 1 of 4,096
    batch_token_budget: int | None = Field(default=2**23, ge=1)
    max_cells: int = Field(default=1000, ge=1)
    layers: list[int] | None = None
    device: str = "cpu"
    num_threads: int | None = Field(default=None, ge=1)  # torch intra-op threads on CPU; None: torch's default
    # rows kept per head (the head mean covers every pair either way): "all" universe genes, or "analyses",
    # the genes the analyses query (perturbed genes, sources of "regulates" references) plus extra_sources;
    # per-head memory scales with sources x universe instead of universe^2
    sources: Literal["all", "analyses"] = "all"
    extra_sources: list[str] = []


class AnalysisConfig(_Strict):
    """Settings of the statistical battery (FRAMEWORK section 6)."""

    layer_selection_folds: int = Field(default=5, ge=2)  # A02 outer folds over perturbations (and over targets)
    # A01/A02/A04 two-way (perturbations x targets) bootstrap resamples; the SE gives a normal interval and p
    perturbation_bootstrap: int = Field(default=200, ge=40)
    bootstrap_resamples: int = Field(default=1000, ge=10)  # A09 / A15 TF-block bootstrap
    residualisation_folds: int = Field(default=5, ge=2)  # A09 cross-fitting folds (by source gene)
    reference_permutations: int = Field(default=1000, ge=100)  # A12 (and A09) gene-label permutations
    residualisation_models: tuple[Literal["ols", "boosted"], ...] = ("ols",)  # A09 covariate models
    top_k_edges: int = Field(default=1000, ge=1)  # A14 top-k enrichment
    # A12 depth trend: seeded orderings for models deeper than the exact-enumeration limit
    # (core.stats.permutation.MAX_EXACT_PERMUTATION_N layers); shallower ones enumerate every ordering
    depth_trend_permutations: int = Field(default=10000, ge=100)
    incremental_value_folds: int = Field(default=5, ge=2)  # A05-A08 GroupKFold folds
    incremental_value_joint_folds: int = Field(default=3, ge=2)  # A06 joint split: folds per axis (k^2 fits)
    incremental_value_repeats: int = Field(default=3, ge=1)  # A05/A06 confirmatory: cross-validation fold seeds
    # A05/A06 two-way (perturbations x targets) and A08 resamples; 40 is the fewest that can reject at 0.05
    incremental_value_bootstrap: int = Field(default=200, ge=40)
    incremental_value_models: tuple[Literal["logistic", "boosted"], ...] = ("logistic", "boosted")
    incremental_value_splits: tuple[Literal["perturbation_split", "target_split", "joint_split"], ...] = (
        "perturbation_split", "target_split", "joint_split")
    threads: int | None = Field(default=None, ge=1)  # BLAS/OpenMP threads of the models (None: library default)
    # A03 grid (FRAMEWORK: N_ctrl {500, 2000, 10000} x HVG {1000, 2000, 5000}); cells beyond the data are skipped
    sensitivity_lfc: tuple[float, ...] = (0.25, 0.5, 1.0)
    sensitivity_n_ctrl: tuple[int, ...] = (500, 2000, 10000)
    sensitivity_n_hvg: tuple[int, ...] = (1000, 2000, 5000)
    alpha: float = Field(default=0.05, gt=0, lt=1)  # significance for conclusions (A23, family sensitivity)


class InterventionConfig(_Strict):
    """Family C causal interventions (A17-A19) on held-out control cells (core/analyses/causal_interventions.py)."""

    enabled: bool = True
    reference: str | None = None  # the "regulates" resource heads are ranked on; None: the first by name (synthetic: planted)
    ks: tuple[PositiveInt, ...] = (5, 10, 20, 50)  # head-set sizes below the number of ranked heads
    random_draws: int = Field(default=19, ge=1)  # random head sets per size; the smallest rank p is 1 / (1 + draws)
    exhaustive_up_to: int = Field(default=64, ge=0)  # compare with every other head set of a size when this few
    masked_fraction: float = Field(default=0.15, gt=0, lt=1)  # genes masked per cell for the masked readout
    fidelity_threshold: float = Field(default=0.02, ge=0)  # at or below: "did not move the model"
    max_cells: int = Field(default=200, ge=1)  # held-out control cells read out on (a seeded subset when more)
    in_silico_cells: int = Field(default=20, ge=1)  # cells each perturbed gene is silenced in (a forward pass each)
    batch_size: int = Field(default=32, ge=1)  # cells per forward pass (attention.batch_token_budget still bounds it)


class ScalingConfig(_Strict):
    """Family S: scaling (A20) and CSSI (A21) from one extraction pass (core/analyses/scaling.py)."""

    enabled: bool = True
    representation: Literal["expression_pcs", "cell_embeddings"] = "expression_pcs"  # what strata cluster
    n_pcs: int = Field(default=20, ge=2)  # expression principal components (representation: expression_pcs)
    n_neighbors: int = Field(default=15, ge=2)  # the kNN graph Leiden partitions
    methods: tuple[Literal["kmeans", "leiden"], ...] = ("kmeans", "leiden")
    k_values: tuple[int, ...] = (2, 3, 5, 10, 20)  # strata per stratification (each method x K)
    primary_method: Literal["kmeans", "leiden"] = "leiden"  # the confirmatory A21 row and the ladders' strata
    primary_k: int = Field(default=5, ge=2)  # must be among k_values
    rung_sizes: tuple[PositiveInt, ...] = (200, 500, 1000, 2000)  # A20 cells per rung (capped by attention.max_cells)
    heterogeneity_cells: PositiveInt = 200  # A20 fixed-N ladder: cells spread over the 1, 2, ... largest strata
    ladder_seeds: int = Field(default=5, ge=1)  # nested subsamples per ladder
    min_stratum_size: int = Field(default=30, ge=2)  # strata with fewer cells are skipped and reported
    null_draws: int = Field(default=100, ge=1)  # random stratifications of the same sizes per stratification
    null_blocks: int = Field(default=100, ge=2)  # random blocks of cells the null strata are built from
    layer: int = -1  # the layer accumulated per group (negative: from the last)
    # per-group sums are groups x reference sources x genes x 20 bytes, held during extraction: a larger design
    # leaves family S out of the extraction (fewer k_values, ladder_seeds or null_blocks shrink it)
    max_grouped_megabytes: float = Field(default=2000.0, gt=0)

    @model_validator(mode="after")
    def _check_primary(self) -> ScalingConfig:
        if self.primary_k not in self.k_values or self.primary_method not in self.methods:
            raise ValueError(f"scaling.primary_method/primary_k ({self.primary_method}, {self.primary_k}) must be "
                             f"among scaling.methods {self.methods} and scaling.k_values {self.k_values}")
        if min(self.k_values, default=2) < 2:
            raise ValueError("scaling.k_values must be >= 2")
        return self


class ContractThresholds(_Strict):
    """Parameters handed to the Great Expectations suites in data_contracts/."""

    min_cells: int = Field(default=50, ge=1)
    max_null_score_fraction: float = Field(default=0.5, ge=0, le=1)
    min_reference_edges: int = Field(default=10, ge=1)
    min_evaluable_fraction: float = Field(default=0.5, ge=0, le=1)
    min_evaluable_perturbations: int = Field(default=5, ge=1)


class AutomationConfig(_Strict):
    """What runs by itself once the Dagster daemon is up (`make ui`); none of it changes results."""

    nightly_schedule: bool = True  # nightly_stale_partitions starts running with the daemon
    # a new or changed checkpoint folder is registered once nothing in it changed for this long, or at once
    # when it holds the completion marker `.complete`
    checkpoint_quiet_seconds: float = Field(default=60, ge=0)


class DeploymentConfig(_Strict):
    """How runs execute (README "Scaling out"; deploy/dagster.yaml holds the instance side); changes no result.

    executor: in_process (one process per run, the default on one machine), multiprocess (each step its own
    process), or k8s (each step its own Kubernetes job: dagster-k8s's k8s_job_executor, for a cluster whose
    instance launches runs with the K8sRunLauncher)."""

    executor: Literal["in_process", "multiprocess", "k8s"] = "in_process"
    max_concurrent: int = Field(default=4, ge=1)  # multiprocess and k8s: steps of one run at a time
    gpus_per_model_step: int = Field(default=1, ge=0)  # k8s: nvidia.com/gpu limit of each step that runs a model


class SeedConfig(_Strict):
    control_sampling: int = 0
    attention: int = 0
    random_scores: int = 0
    reference_null: int = 0
    layer_selection: int = 0
    perturbation_bootstrap: int = 0
    reference_permutation: int = 0
    reference_battery: int = 0
    incremental_value: int = 0
    interventions: int = 0
    random_weights: int = 0  # the random-weights twins' initialisation (A25)
    scaling: int = 0  # strata, ladder orders and null blocks (A20-A21)


class TinyCheckpointConfig(_Strict):
    """One embedded default model, trained on the synthetic cell types when its folder is missing."""

    family: Literal["geneformer", "scgpt"]
    folder_name: str
    max_steps: int = Field(ge=1)  # training is bound by steps only: the same checkpoint on every machine
    # optional wall-clock cap; reaching it before max_steps fails the build (never a shorter run). None: no cap
    max_seconds: float | None = Field(default=None, gt=0)
    seed: int = 0


DEFAULT_TINY_CHECKPOINTS = (
    TinyCheckpointConfig(family="geneformer", folder_name="tiny-geneformer-v1", max_steps=400),
    TinyCheckpointConfig(family="scgpt", folder_name="tiny-scgpt", max_steps=300),
)


class PositiveControlConfig(_Strict):
    """The positive-control checkpoint (core/models/positive_control.py): Geneformer format, weights set so
    that one head carries the synthetic cell types' planted networks; built when its folder is missing."""

    folder_name: str = "positive-control-geneformer"
    edge_logit: float = Field(default=8.0, gt=0)  # the planted head's attention logit per regulatory link
    context_norm: float = Field(default=0.6, gt=0)  # what it writes into a target's state, relative to the state
    seed: int = 0  # the other heads' small random weights


class VerdictConfig(_Strict):
    """Thresholds of the quality-control verdict (FRAMEWORK.md section 8; core/verdict.py), recorded with it.
    Its significance level is analyses.alpha and its fidelity threshold interventions.fidelity_threshold."""

    baselines: tuple[str, ...] = ("baseline_variance", "baseline_mean", "baseline_detection_rate")  # C1
    incremental_models: tuple[Literal["logistic", "boosted"], ...] = ("logistic", "boosted")  # C2
    incremental_splits: tuple[Literal["perturbation_split", "target_split", "joint_split"], ...] = (
        "perturbation_split", "target_split", "joint_split")
    agreeing_metrics: tuple[str, ...] = ("auprc", "recall_at_10", "recall_at_50", "recall_at_100")  # C2
    min_retained_share: float = Field(default=0.8, ge=0, le=1)  # C3
    min_null_z: float = 3.0  # C3
    # C4: the regulatory readout (the model's in-silico perturbation response against the measured one); add
    # masked_loss (masked-gene reconstruction) or attention (the study's re-extracted attention) to require them
    causal_readouts: tuple[Literal["in_silico", "masked_loss", "attention"], ...] = ("in_silico",)


class ScinterpConfig(_Strict):
    home: Path
    checkpoint_dir: Path
    model_dictionary_dir: Path | None = None
    contracts_dir: Path | None = None
    cell_types: dict[str, CellType]
    references: dict[str, ReferenceSource] = {}
    reference_restriction: ReferenceRestrictionConfig = ReferenceRestrictionConfig()
    reference_null: ReferenceNullConfig = ReferenceNullConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    de_labels: DELabelConfig = DELabelConfig()
    attention: AttentionConfig = AttentionConfig()
    analyses: AnalysisConfig = AnalysisConfig()
    interventions: InterventionConfig = InterventionConfig()
    scaling: ScalingConfig = ScalingConfig()
    # every checkpoint also evaluated with seeded random weights as model partition "<key>.random-weights"
    # (A25: does training add anything the architecture and tokenisation do not?)
    random_weights_twins: bool = True
    contracts: ContractThresholds = ContractThresholds()
    seeds: SeedConfig = SeedConfig()
    automation: AutomationConfig = AutomationConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    tiny_checkpoints: tuple[TinyCheckpointConfig, ...] = DEFAULT_TINY_CHECKPOINTS
    positive_control: PositiveControlConfig | None = None  # None: no positive-control checkpoint is built
    verdict: VerdictConfig = VerdictConfig()
    source: Path = Path("scinterp.yaml")

    @model_validator(mode="after")
    def _check_cell_type_keys(self) -> ScinterpConfig:
        if not self.cell_types:
            raise ValueError("cell_types is empty; declare at least one synthetic or h5ad cell type")
        for key, cell_type in self.cell_types.items():
            if not PARTITION_KEY_PATTERN.match(key):
                raise ValueError(f"cell type name {key!r} may only use letters, digits, '.', '_' and '-'")
            unknown = set(getattr(cell_type, "references", None) or ()) - set(self.references)
            if unknown:
                raise ValueError(f"cell type {key!r} names reference(s) {sorted(unknown)} that `references` does not "
                                 f"declare (declared: {sorted(self.references)})")
        return self

    def label_rule(self, cell_type: str) -> str:
        """The DE label rule of a cell type, as written into the test registry."""
        entry = self.cell_types[cell_type]
        pseudobulk = getattr(entry, "pseudobulk_labels", None)
        if pseudobulk is not None:
            return f"pseudobulk |mean z|>={pseudobulk.min_abs_z} cells>={self.de_labels.min_cells}"
        rule = self.de_labels
        return DELabelRule(rule.q_threshold, rule.min_abs_log_difference, rule.min_cells, rule.test).describe()

    def references_of(self, cell_type: str) -> list[str]:
        """Configured references used by a cell type (synthetic cell types use their planted network)."""
        entry = self.cell_types[cell_type]
        if isinstance(entry, SyntheticCellType):
            return []
        return sorted(entry.references if entry.references is not None else self.references)

    @property
    def storage_dir(self) -> Path:
        return self.home / "storage"

    @property
    def dagster_home(self) -> Path:
        """Run history, dynamic partitions, schedules and sensor cursors (the Makefile exports it)."""
        return self.home / "dagster_home"

    @property
    def report_dir(self) -> Path:
        return self.home / "report"

    def fingerprint(self) -> str:
        """Short hash of the settings that change results (recorded with every registry row)."""
        # random-weights twins change no trained partition's result: they are partitions of their own, whose
        # seed enters their checkpoint fingerprint (resources/model_store.py), so turning them on or off does
        # not invalidate every registry row
        payload = self.model_dump(mode="json", exclude={
            "home": True, "checkpoint_dir": True, "contracts_dir": True, "model_dictionary_dir": True, "source": True,
            "automation": True, "deployment": True, "random_weights_twins": True, "seeds": {"random_weights"}})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _format_location(location: tuple) -> str:
    parts = [str(part) for part in location if not str(part).startswith(("function-", "tagged-union"))]
    if len(parts) >= 3 and parts[0] == "cell_types" and parts[2] in CELL_TYPE_KINDS:
        del parts[2]  # the discriminated union adds the entry's kind to the location
    return ".".join(parts)


def load_config(path: str | os.PathLike | None = None) -> ScinterpConfig:
    """Read and validate the configuration; raise ConfigError naming the key and the fix."""
    config_path = Path(path or os.environ.get(CONFIG_ENV_VAR) or "scinterp.yaml").expanduser().resolve()
    if not config_path.is_file():
        raise ConfigError(
            f"configuration file {config_path} does not exist; set {CONFIG_ENV_VAR} to your scinterp.yaml "
            "or run from the repository root (the Makefile sets it for you)"
        )
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{config_path}: not valid YAML ({error}); fix the syntax") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: the top level must be a mapping of keys (home, cell_types, ...)")
    try:
        config = ScinterpConfig.model_validate({**raw, "source": str(config_path)})
    except ValidationError as error:
        first = error.errors()[0]
        key = _format_location(first["loc"]) or "(top level)"
        raise ConfigError(
            f"{config_path}: key '{key}': {first['msg']}; fix that entry "
            f"(see the commented example in the repository's scinterp.yaml)"
        ) from error
    return _resolve_paths(config, config_path.parent)


def _resolve_paths(config: ScinterpConfig, base: Path) -> ScinterpConfig:
    def resolve(value: Path) -> Path:
        return value if value.is_absolute() else (base / value).resolve()

    cell_types = {}
    for name, cell_type in config.cell_types.items():
        if isinstance(cell_type, (H5adCellType, TenxCellType)):
            paths = {"path": resolve(cell_type.path)}
            for optional in ("feature_reference", "guide_calls"):
                if getattr(cell_type, optional, None) is not None:
                    paths[optional] = resolve(getattr(cell_type, optional))
            pseudobulk = getattr(cell_type, "pseudobulk_labels", None)
            pseudobulk_paths = {key: resolve(getattr(pseudobulk, key)) for key in ("path", "perturbation_stats")
                                if pseudobulk is not None and getattr(pseudobulk, key) is not None}
            for key, value in [*paths.items(), *((f"pseudobulk_labels.{k}", v) for k, v in pseudobulk_paths.items())]:
                if not value.exists():
                    raise ConfigError(
                        f"{config.source}: key 'cell_types.{name}.{key}': {value} does not exist; point it at the "
                        "downloaded file or folder (relative paths are read from the configuration's folder)"
                    )
            if pseudobulk_paths:
                paths["pseudobulk_labels"] = pseudobulk.model_copy(update=pseudobulk_paths)
            cell_type = cell_type.model_copy(update=paths)
        elif cell_type.gene_dictionaries:
            folders = [resolve(folder) for folder in cell_type.gene_dictionaries]
            for index, folder in enumerate(folders):
                if not folder.is_dir():
                    raise ConfigError(
                        f"{config.source}: key 'cell_types.{name}.gene_dictionaries.{index}': folder {folder} does "
                        "not exist; point it at a folder holding Geneformer's token_dictionary and gene_name_id_dict "
                        "pickles (relative paths are read from the configuration's folder)"
                    )
            cell_type = cell_type.model_copy(update={"gene_dictionaries": folders})
        cell_types[name] = cell_type
    references = {}
    for name, reference in config.references.items():
        paths = {key: resolve(getattr(reference, key)) for key in ("path", "protein_info") if getattr(reference, key)}
        for key, value in paths.items():
            if not value.is_file():
                raise ConfigError(
                    f"{config.source}: key 'references.{name}.{key}': file {value} does not exist; point it at the "
                    "downloaded file (`scinterp fetch --list` shows where to get it)"
                )
        references[name] = reference.model_copy(update=paths)
    restriction = config.reference_restriction
    for key in ("tf_list", "gene_aliases"):
        if getattr(restriction, key) is not None:
            value = resolve(getattr(restriction, key))
            if not value.is_file():
                raise ConfigError(f"{config.source}: key 'reference_restriction.{key}': file {value} does not exist")
            restriction = restriction.model_copy(update={key: value})
    updates = {"home": resolve(config.home), "checkpoint_dir": resolve(config.checkpoint_dir), "cell_types": cell_types,
               "references": references, "reference_restriction": restriction}
    for optional in ("contracts_dir", "model_dictionary_dir"):
        if getattr(config, optional) is not None:
            updates[optional] = resolve(getattr(config, optional))
    return config.model_copy(update=updates)


@cache
def _cached(path: str | None) -> ScinterpConfig:
    return load_config(path)


def get_config() -> ScinterpConfig:
    """The configuration for this process (cached per config path)."""
    return _cached(os.environ.get(CONFIG_ENV_VAR))
