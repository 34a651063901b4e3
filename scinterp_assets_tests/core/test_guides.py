from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scinterp_assets.core.datasets.de_labels import DELabelRule, compute_de_labels
from scinterp_assets.core.datasets.guides import CONTROL_LABEL, assign_guides, group_labels
from scinterp_assets.core.datasets.preprocessing import sample_control_cells
from scinterp_assets.core.datasets.screens import (
    GuideSpec,
    ScreenFormatError,
    ScreenSpec,
    load_screen_file,
    read_h5ad,
)

GASPERINI = Path(__file__).resolve().parents[3] / "shared" / "data" / "perturbseq" / "gasperini2019_k562_crispri_highmoi_sceptre_subset.h5ad"
TSS_PATTERN = r"^(?P<gene>.+)_TSS$"


def test_assignment_rule_by_hand():
    # guides: g0,g1 -> A; g2 -> B; g3 -> NT (control)
    counts = sparse.csr_matrix(np.array([
        [0, 0, 0, 0],    # nothing called -> unassigned
        [0, 0, 0, 9],    # control guide only -> control
        [6, 2, 0, 7],    # A (g1 under threshold) plus control -> A
        [5, 5, 6, 0],    # A (10 UMIs) and B (6): two targets
        [40, 0, 5, 0],   # A 40, B 5: A holds 0.89 of targeting UMIs
        [4, 4, 4, 4],    # everything under threshold -> unassigned
    ]))
    groups = np.array(["A", "A", "B", "NT"])
    dropped, summary = assign_guides(counts, groups, {"NT"}, min_umis=5, multiple="drop", dominant_fraction=0.8)
    assert dropped.tolist() == ["", CONTROL_LABEL, "A", "", "", ""]
    assert summary["several_target_cells"] == 2 and summary["no_guide_cells"] == 2
    dominant, _ = assign_guides(counts, groups, {"NT"}, min_umis=5, multiple="dominant", dominant_fraction=0.8)
    assert dominant.tolist() == ["", CONTROL_LABEL, "A", "", "A", ""]


def test_group_names_become_gene_labels_through_the_pattern():
    labels = np.array(["KRT18_TSS", "chr19.633", CONTROL_LABEL, ""], dtype=object)
    assert group_labels(labels, TSS_PATTERN).tolist() == ["KRT18", "chr19.633", CONTROL_LABEL, ""]
    with pytest.raises(ValueError, match="named group"):
        group_labels(labels, r"^(.+)_TSS$")


@pytest.fixture(scope="module")
def gasperini():
    if not GASPERINI.is_file():
        pytest.skip(f"{GASPERINI} is not available")
    spec = ScreenSpec(path=GASPERINI, modality="CRISPRi", gene_symbol_column="gene_symbol_gencode_v44",
                      guides=GuideSpec(target_pattern=TSS_PATTERN))
    return load_screen_file(spec)


def test_gasperini_cells_are_assigned_from_guide_counts(gasperini):
    raw = read_h5ad(GASPERINI)
    table = pd.DataFrame(raw.uns["grna_groups_table"]).set_index("gRNA_id")
    groups = table.loc[np.asarray(raw.uns["grna_ids"]).astype(str), "gRNA_group"].to_numpy()
    # oracle: a plain loop over cells with the same rule
    counts = raw.obsm["grna_counts"].tocsr()
    expected = {}
    for cell in range(raw.n_obs):
        row = counts[cell]
        called = {groups[j] for j, umis in zip(row.indices, row.data) if umis >= 5}
        targets = {g for g in called if not g.startswith("NTC")}
        if len(targets) == 1:
            expected[raw.obs_names[cell]] = targets.pop().removesuffix("_TSS")
        elif not targets and called:
            expected[raw.obs_names[cell]] = CONTROL_LABEL
    assert dict(zip(gasperini.obs_names, gasperini.obs["perturbation"])) == expected
    assert gasperini.uns["expression_scale"] == "counts"
    assert gasperini.var.loc["KRT18", "ensembl_id"] == "ENSG00000111057"


def test_gasperini_de_labels_detect_the_knockdown_at_positive_control_loci(gasperini):
    raw = read_h5ad(GASPERINI)
    pairs = pd.DataFrame(raw.uns["gene_grna_group_pairs"])
    positive = pairs[pairs["pair_type"] == "positive_control"]
    symbol_of = dict(zip(raw.var_names, raw.var["gene_symbol_gencode_v44"].astype(str)))
    targeted = sorted(symbol_of[gene_id] for gene_id in positive["gene_id"])
    assert len(targeted) == 5
    controls = sample_control_cells(gasperini, 2000, seed=0, target_sum=1e4)
    rule = DELabelRule(q_threshold=0.05, min_abs_log_difference=0.5, min_cells=30)
    summary = compute_de_labels(gasperini, controls, list(gasperini.var_names), rule, 1e4).summary.set_index("perturbation")
    for gene in targeted:
        assert summary.loc[gene, "on_target_status"] == "moved", summary.loc[gene].to_dict()
        assert summary.loc[gene, "on_target_log_difference"] < 0
    enhancers = summary.index[summary.index.str.startswith("chr")]
    assert (summary.loc[enhancers, "on_target_status"] == "not_measured").all()


def test_guide_section_errors_name_the_field(tmp_path):
    if not GASPERINI.is_file():
        pytest.skip(f"{GASPERINI} is not available")
    with pytest.raises(ScreenFormatError, match=r"obsm has no 'guides' \(guides.counts_key\)"):
        load_screen_file(ScreenSpec(path=GASPERINI, modality="CRISPRi", guides=GuideSpec(counts_key="guides")))
    with pytest.raises(ScreenFormatError, match="no guide .* has a control type"):
        load_screen_file(ScreenSpec(path=GASPERINI, modality="CRISPRi", guides=GuideSpec(control_types=("NT",))))


def test_sceptre_layout_reads_sceptres_own_names(tmp_path):
    """sceptre names its guide table grna_group_table with grna_id / grna_group and no type column; its
    non-targeting guides share the group "non-targeting". `layout: sceptre` reads that without overrides and
    assigns every cell as the default layout assigns the same screen."""
    if not GASPERINI.is_file():
        pytest.skip(f"{GASPERINI} is not available")
    raw = read_h5ad(GASPERINI)
    table = pd.DataFrame(raw.uns.pop("grna_groups_table"))
    control = table["gRNA_type"] == "non_target"
    raw.uns["grna_group_table"] = pd.DataFrame({
        "grna_id": table["gRNA_id"], "grna_group": table["gRNA_group"].where(~control, "non-targeting")})
    sceptre_file = tmp_path / "sceptre_layout.h5ad"
    raw.write_h5ad(sceptre_file)
    common = {"modality": "CRISPRi", "gene_symbol_column": "gene_symbol_gencode_v44"}
    sceptre = load_screen_file(ScreenSpec(path=sceptre_file, guides=GuideSpec(layout="sceptre",
                                                                               target_pattern=TSS_PATTERN), **common))
    default = load_screen_file(ScreenSpec(path=GASPERINI, guides=GuideSpec(target_pattern=TSS_PATTERN), **common))
    assert sceptre.obs["perturbation"].tolist() == default.obs["perturbation"].tolist()
    with pytest.raises(ScreenFormatError, match="grna_groups_table"):  # the default names do not fit it
        load_screen_file(ScreenSpec(path=sceptre_file, guides=GuideSpec(target_pattern=TSS_PATTERN), **common))
    with pytest.raises(ValueError, match="guides layout must be one of"):
        GuideSpec(layout="cellranger")
