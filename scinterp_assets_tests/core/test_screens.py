import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scinterp_assets.core.datasets.screens import ScreenFormatError, cell_qc_frame, load_h5ad_screen


def _screen_file(tmp_path, matrix, name="screen.h5ad"):
    obs = pd.DataFrame({"gene": ["non-targeting", "A", "B", "non-targeting"]}, index=[f"c{i}" for i in range(4)])
    var = pd.DataFrame(index=["A", "B", "C"])
    path = tmp_path / name
    ad.AnnData(X=matrix, obs=obs, var=var).write_h5ad(path)
    return path


def _load(path, **overrides):
    options = dict(perturbation_column="gene", control_label="non-targeting", modality="CRISPRi")
    return load_h5ad_screen(path, **{**options, **overrides})


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
