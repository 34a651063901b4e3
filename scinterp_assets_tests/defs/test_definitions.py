import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from scinterp_assets.definitions import build_definitions

REPO = Path(__file__).parents[2]


def test_definitions_load_and_validate(small_project):
    defs = build_definitions(small_project)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"screen_data", "attention_scores", "test_registry", "evaluation_report"} <= keys
    multi = graph.get(dg.AssetKey("attention_scores")).partitions_def
    assert isinstance(multi, dg.MultiPartitionsDefinition)
    assert {d.name for d in multi.partitions_defs} == {"model", "cell_type"}
    checks = {key.name for key in graph.asset_check_keys}
    assert {"check_expression_qc_contract", "check_edge_table_contract", "check_test_registry_contract",
            "check_reference_edges_contract", "check_evaluable_coverage", "check_enough_perturbations"} <= checks


def test_code_location_module_reads_the_repository_configuration():
    env = {**os.environ, "SCINTERP_CONFIG": str(REPO / "scinterp.yaml")}
    result = subprocess.run([sys.executable, "-c", "import scinterp_assets.definitions as d; print(type(d.defs).__name__)"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Definitions"


def test_code_location_with_a_broken_configuration_names_the_key(tmp_path):
    broken = tmp_path / "scinterp.yaml"
    broken.write_text("home: out\ncheckpoint_dir: c\ncell_types:\n  a: {kind: synthetic, modality: CRISPRx, wiring_seed: 1, seed: 1}\n")
    env = {**os.environ, "SCINTERP_CONFIG": str(broken)}
    result = subprocess.run([sys.executable, "-c", "import scinterp_assets.definitions"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode != 0
    assert "cell_types.a.synthetic.modality" in result.stderr or "cell_types.a" in result.stderr
    assert "CRISPRi" in result.stderr


def test_the_readme_asset_table_lists_every_asset_with_its_group_and_partitioning(small_project):
    """README "Assets": one row per asset, in the group and with the partitioning the definitions give it."""
    section = (REPO / "README.md").read_text().split("## Assets")[1].split("\n## ")[0]
    rows, group = {}, None
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1].startswith("`"):
            continue
        group = cells[0] or group
        rows[cells[1].strip("`")] = (group, cells[2])
    graph = build_definitions(small_project).resolve_asset_graph()
    dimensions = {None: "—", "cell_type": "cell_type", "model": "model", "cell_type,model": "model x cell_type"}
    defined = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        partitions = node.partitions_def
        names = (",".join(sorted(d.name for d in partitions.partitions_defs))
                 if isinstance(partitions, dg.MultiPartitionsDefinition)
                 else None if partitions is None else "model" if isinstance(partitions, dg.DynamicPartitionsDefinition)
                 else "cell_type")
        defined[key.to_user_string()] = (node.group_name, dimensions[names])
    assert rows == defined
