import gzip

import numpy as np
import pandas as pd
import pytest
from scipy import io, sparse

from scinterp_assets.core.datasets.screens import ScreenFormatError
from scinterp_assets.core.datasets.tenx import TenxSpec, load_tenx_screen

GENES = [("ENSG00000111057", "KRT18"), ("ENSG00000121211", "MND1"), ("ENSG00000134809", "TIMM10")]
GUIDES = [("KRT18-1", "ENSG00000111057", "KRT18"), ("MND1-1", "ENSG00000121211", "MND1"), ("NT-1", "Non-Targeting", "Non-Targeting")]
# cells x (genes + guides): c0 KRT18 guide; c1 non-targeting; c2 two targets; c3 no guide above 5 UMIs
COUNTS = np.array([
    [1, 5, 7, 9, 0, 0],
    [8, 4, 6, 0, 0, 12],
    [6, 2, 3, 6, 8, 0],
    [9, 9, 1, 2, 0, 0],
])


def _write_folder(tmp_path, *, with_guides=True, truncate=False):
    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    columns = 6 if with_guides else 3
    with gzip.open(folder / "matrix.mtx.gz", "wb") as handle:
        io.mmwrite(handle, sparse.coo_matrix(COUNTS[:, :columns].T))
    if truncate:
        data = (folder / "matrix.mtx.gz").read_bytes()
        (folder / "matrix.mtx.gz").write_bytes(data[: len(data) // 2])
    features = [(i, n, "Gene Expression") for i, n in GENES]
    if with_guides:
        features += [(g, g, "CRISPR Guide Capture") for g, _, _ in GUIDES]
    pd.DataFrame(features).to_csv(folder / "features.tsv.gz", sep="\t", header=False, index=False)
    pd.DataFrame([f"c{i}-1" for i in range(4)]).to_csv(folder / "barcodes.tsv.gz", sep="\t", header=False, index=False)
    reference = tmp_path / "feature_reference.csv"
    pd.DataFrame(
        [(g, g, "R2", "5P(BC)", "ACGT", "CRISPR Guide Capture", gid, gname) for g, gid, gname in GUIDES],
        columns=["id", "name", "read", "pattern", "sequence", "feature_type", "target_gene_id", "target_gene_name"],
    ).to_csv(reference, index=False)
    return folder, reference


def test_guide_capture_features_assign_cells(tmp_path):
    folder, reference = _write_folder(tmp_path)
    screen = load_tenx_screen(TenxSpec(folder=folder, modality="CRISPRi", feature_reference=reference))
    assert dict(zip(screen.obs_names, screen.obs["perturbation"])) == {"c0-1": "KRT18", "c1-1": "non-targeting"}
    assert list(screen.var_names) == ["KRT18", "MND1", "TIMM10"]
    np.testing.assert_array_equal(screen.X.toarray(), COUNTS[:2, :3])
    assert screen.uns["assignment"]["several_target_cells"] == 1 and screen.uns["expression_scale"] == "counts"
    dominant = load_tenx_screen(TenxSpec(folder=folder, modality="CRISPRi", feature_reference=reference,
                                         multiple="dominant", dominant_fraction=0.55))
    assert dict(zip(dominant.obs_names, dominant.obs["perturbation"]))["c2-1"] == "MND1"  # 8 of 14 UMIs


def test_protospacer_calls_table(tmp_path):
    folder, reference = _write_folder(tmp_path, with_guides=False)
    calls = tmp_path / "protospacer_calls_per_cell.csv"
    pd.DataFrame({"cell_barcode": ["c0-1", "c1-1", "c3-1", "unknown-1"], "num_features": [1, 2, 1, 1],
                  "feature_call": ["MND1-1", "NT-1|KRT18-1", "KRT18-1", "NT-1"], "num_umis": ["30", "9|2", "4", "8"]}
                 ).to_csv(calls, index=False)
    screen = load_tenx_screen(TenxSpec(folder=folder, modality="CRISPRi", feature_reference=reference, guide_calls=calls))
    # c1: KRT18 guide under 5 UMIs, so only the control guide is called; c3 under threshold; unknown barcode ignored
    assert dict(zip(screen.obs_names, screen.obs["perturbation"])) == {"c0-1": "MND1", "c1-1": "non-targeting"}


def test_truncated_matrix_and_missing_guides_are_clear(tmp_path):
    folder, reference = _write_folder(tmp_path, truncate=True)
    with pytest.raises(ScreenFormatError, match=r"matrix\.mtx\.gz: cannot be read .*truncated or corrupt"):
        load_tenx_screen(TenxSpec(folder=folder, modality="CRISPRi", feature_reference=reference))
    other = tmp_path / "other"
    other.mkdir()
    folder, reference = _write_folder(other, with_guides=False)
    with pytest.raises(ScreenFormatError, match="have no 'CRISPR Guide Capture' feature.*guide_calls"):
        load_tenx_screen(TenxSpec(folder=folder, modality="CRISPRi", feature_reference=reference))
