from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scinterp_assets.core.datasets.screens import (
    ScreenFormatError,
    ScreenSpec,
    cell_qc_frame,
    check_raw_counts,
    detect_expression_scale,
    load_screen_file,
    parse_perturbation_labels,
)


def _screen_file(tmp_path, matrix, name="screen.h5ad"):
    obs = pd.DataFrame({"gene": ["non-targeting", "A", "B", "non-targeting"]}, index=[f"c{i}" for i in range(4)])
    var = pd.DataFrame(index=["A", "B", "C"])
    path = tmp_path / name
    ad.AnnData(X=matrix, obs=obs, var=var).write_h5ad(path)
    return path


def _load(path, **overrides):
    options = dict(perturbation_column="gene", control_label="non-targeting", modality="CRISPRi")
    return load_screen_file(ScreenSpec(path=path, **{**options, **overrides}))


def test_loads_into_the_screen_layout(tmp_path):
    counts = np.array([[1, 0, 2], [0, 3, 1], [4, 4, 0], [2, 2, 2]], dtype=np.float32)
    screen = _load(_screen_file(tmp_path, counts))
    assert list(screen.obs["perturbation"]) == ["non-targeting", "A", "B", "non-targeting"]
    assert sparse.issparse(screen.X) and screen.uns["modality"] == "CRISPRi"
    qc = cell_qc_frame(screen)
    assert qc["total_counts"].tolist() == [3, 4, 8, 6]
    assert qc["n_genes_detected"].tolist() == [2, 2, 2, 3]


def test_negative_counts_name_file_field_and_fix(tmp_path):
    counts = np.array([[1, 0, 2], [0, -3, 1], [4, 4, 0], [2, 2, 2]], dtype=np.float32)
    path = _screen_file(tmp_path, counts, "negative.h5ad")
    with pytest.raises(ScreenFormatError, match=r"negative\.h5ad: field 'X' holds 1 negative.*counts_layer"):
        _load(path)


def test_non_finite_counts_refused(tmp_path):
    counts = sparse.csr_matrix(np.array([[1, 0, np.nan], [0, 3, 1], [np.inf, 4, 0], [2, 2, 2]], dtype=np.float32))
    with pytest.raises(ScreenFormatError, match=r"field 'X' holds 2 non-finite"):
        _load(_screen_file(tmp_path, counts))


def test_unknown_perturbation_column_and_missing_controls(tmp_path):
    path = _screen_file(tmp_path, np.ones((4, 3), dtype=np.float32))
    with pytest.raises(ScreenFormatError, match="no column 'guide'"):
        _load(path, perturbation_column="guide")
    with pytest.raises(ScreenFormatError, match="control_label"):
        _load(path, control_label="ctrl")


def test_not_an_h5ad_file(tmp_path):
    path = tmp_path / "broken.h5ad"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(ScreenFormatError, match="broken.h5ad: not a readable h5ad"):
        _load(path)


# ----------------------------------------------------------------------------------------------------------
# Expression scale, layouts and labels

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is not available (the shared data folder sits beside the repository)")
    return path


def test_expression_scale_detection():
    counts = sparse.csr_matrix(np.array([[0, 3, 1], [2, 0, 7]], dtype=np.float32))
    assert detect_expression_scale(counts, source="s", field="X") == "counts"
    logged = counts.copy()
    logged.data = np.log1p(logged.data * 10.0)
    assert detect_expression_scale(logged, source="s", field="X") == "log1p_normalized"
    per_ten_thousand = counts.multiply(1e4 / np.asarray(counts.sum(axis=1))).tocsr()
    assert detect_expression_scale(per_ten_thousand, source="s", field="X") == "normalized"


def test_gears_condition_strings():
    labels, combination = parse_perturbation_labels(
        pd.Series(["ctrl", "FOXL2+ctrl", "ctrl+ETS2", "MAP2K6+ELMSAN1", " KLF1+ctrl "]), control_label="ctrl", separator="+"
    )
    assert labels.tolist() == ["ctrl", "FOXL2", "ETS2", "ELMSAN1+MAP2K6", "KLF1"]
    assert combination.tolist() == [False, False, False, True, False]


def test_norman_gears_fixture_parses_conditions_and_finds_the_counts_layer():
    path = _shared("perturbseq/norman2019_k562_crispra_tiny_50x50.h5ad")
    raw = ad.read_h5ad(path)
    screen = load_screen_file(ScreenSpec(path=path, modality="CRISPRa", layout="gears"))
    singles = raw.obs["condition"].astype(str)
    expected = {c.replace("+ctrl", "").replace("ctrl+", "") for c in singles if c == "ctrl" or "ctrl" in c.split("+")}
    assert set(screen.obs["perturbation"]) == expected
    assert screen.n_obs == sum(c == "ctrl" or "ctrl" in c.split("+") for c in singles)  # combinations dropped
    assert screen.uns["expression_field"] == "layers['counts']" and screen.uns["expression_scale"] == "counts"
    assert list(screen.var_names) == raw.var["feature_name"].astype(str).tolist()  # CPA exports: feature_name
    assert (screen.var["ensembl_id"] == raw.var_names).all()
    kept = load_screen_file(ScreenSpec(path=path, modality="CRISPRa", layout="gears", combinations="keep"))
    assert kept.n_obs == raw.n_obs and "ELMSAN1+MAP2K6" in set(kept.obs["perturbation"])


def test_pbmc68k_is_recognised_as_log_normalised_and_refused_where_counts_are_needed():
    path = _shared("expression/pbmc68k_reduced_scanpy.h5ad")
    screen = load_screen_file(
        ScreenSpec(path=path, modality="CRISPRi", perturbation_column="bulk_labels", control_label="CD14+ Monocyte")
    )
    assert screen.uns["expression_scale"] == "log1p_normalized"
    assert screen.uns["expression_field"] == "raw.X"  # X is scaled (negative values), .raw holds log1p values
    with pytest.raises(ScreenFormatError, match=r"pbmc68k_reduced_scanpy\.h5ad: field 'raw\.X' holds log1p-normalized.*counts_layer"):
        check_raw_counts(screen, consumer="the Geneformer tokeniser")
    with pytest.raises(ScreenFormatError, match="layers has no 'counts'"):
        load_screen_file(ScreenSpec(path=path, modality="CRISPRi", perturbation_column="bulk_labels",
                                    control_label="CD14+ Monocyte", counts_layer="counts"))


def test_replogle_layout_maps_ensembl_var_names_to_symbols(tmp_path):
    obs = pd.DataFrame({"gene": ["non-targeting", "AARS", "non-targeting"], "gene_id": ["n/a", "ENSG00000090861", "n/a"]},
                       index=["a", "b", "c"])
    var = pd.DataFrame({"gene_name": ["AARS", "LINC00115", "AARS"]},
                       index=["ENSG00000090861", "ENSG00000225880", "ENSG00000999999"])
    path = tmp_path / "K562_essential_raw_singlecell_01.h5ad"
    ad.AnnData(X=sparse.csr_matrix(np.array([[1, 2, 3], [0, 1, 1], [4, 0, 2]], dtype=np.float32)), obs=obs, var=var).write_h5ad(path)
    with pytest.raises(ScreenFormatError, match=r"1 gene name\(s\) occur more than once .*'AARS'.*duplicate_genes: sum"):
        load_screen_file(ScreenSpec(path=path, modality="CRISPRi", layout="replogle"))
    screen = load_screen_file(ScreenSpec(path=path, modality="CRISPRi", layout="replogle", duplicate_genes="sum"))
    assert list(screen.var_names) == ["AARS", "LINC00115"]
    assert screen.var["ensembl_id"].tolist() == ["ENSG00000090861", "ENSG00000225880"]
    np.testing.assert_array_equal(screen.X.toarray(), [[4, 2], [1, 1], [6, 0]])
    assert screen.uns["control_label"] == "non-targeting"


def test_scperturb_layout_drops_multi_gene_cells(tmp_path):
    obs = pd.DataFrame({"perturbation": ["control", "KLF1", "AHR_KLF1", "control"], "nperts": [0, 1, 2, 0]},
                       index=list("abcd"))
    path = tmp_path / "NormanWeissman2019_filtered.h5ad"
    ad.AnnData(X=sparse.csr_matrix(np.ones((4, 2), dtype=np.float32)), obs=obs,
               var=pd.DataFrame(index=["KLF1", "AHR"])).write_h5ad(path)
    screen = load_screen_file(ScreenSpec(path=path, modality="CRISPRa", layout="scperturb"))
    assert screen.obs["perturbation"].tolist() == ["control", "KLF1", "control"]
    assert screen.uns["assignment"]["combination_cells"] == 1


def test_generic_layout_without_columns_names_the_fix(tmp_path):
    path = _screen_file(tmp_path, np.ones((4, 3), dtype=np.float32))
    with pytest.raises(ScreenFormatError, match="needs perturbation_column and control_label"):
        load_screen_file(ScreenSpec(path=path, modality="CRISPRi"))
