from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.datasets.pseudobulk import (
    load_replogle_pseudobulk,
    parse_perturbation_ids,
    pseudobulk_de_labels,
)
from scinterp_assets.core.datasets.screens import ScreenFormatError

TABLE_S2 = (Path(__file__).resolve().parents[3] / "shared" / "data" / "perturbseq"
            / "replogle2022_tableS2_k562_essential_day6_perturbation_stats.tsv.gz")


def test_table_s2_perturbation_ids_parse():
    if not TABLE_S2.is_file():
        pytest.skip(f"{TABLE_S2} is not available")
    table = pd.read_csv(TABLE_S2, sep="\t")
    parsed = parse_perturbation_ids(table["genetic perturbation"], source=str(TABLE_S2))
    assert len(parsed) == len(table) == 2285
    assert parsed["is_control"].sum() == table["genetic perturbation"].str.contains("non-targeting").sum() > 0
    targeted = parsed[~parsed["is_control"]]
    assert targeted["ensembl_id"].str.match(r"^ENSG\d{11}$").all()
    first = parsed.iloc[0]
    assert (first["gene"], first["transcript"], first["ensembl_id"]) == ("ZC3H18", "P1P2", "ENSG00000158545")


def test_malformed_ids_are_refused():
    with pytest.raises(ScreenFormatError, match="not '<N>_<GENE>_<TRANSCRIPT>_<ENSG>'"):
        parse_perturbation_ids(["AARS", "1_AARS_P1_ENSG00000090861"], source="bulk.h5ad")


def _bulk_file(tmp_path, values):
    ids = ["1_AARS_P1P2_ENSG00000090861", "2_AARS_P2_ENSG00000090861", "3_MYC_P1_ENSG00000136997",
           "4_non-targeting_non-targeting_non-targeting"]
    var = pd.DataFrame({"gene_name": ["AARS", "MYC", "G1", "G2", "G3"]},
                       index=["ENSG00000090861", "ENSG00000136997", "ENSG1", "ENSG2", "ENSG3"])
    path = tmp_path / "K562_essential_normalized_bulk_01.h5ad"
    ad.AnnData(X=np.asarray(values, dtype=np.float32), obs=pd.DataFrame(index=ids), var=var).write_h5ad(path)
    return path


def test_pseudobulk_labels_average_transcripts_and_flag_knockdown(tmp_path):
    values = [[-3.0, 0.1, 2.0, 0.2, -0.4],   # AARS sgRNA pair 1
              [-1.0, 0.3, 1.0, -1.6, 0.0],   # AARS pair 2: mean z AARS -2, G1 1.5, G2 -0.7
              [0.2, -0.1, 0.0, 3.0, -2.5],   # MYC did not move
              [0.0, 0.1, -0.1, 0.0, 0.05]]
    bulk = load_replogle_pseudobulk(_bulk_file(tmp_path, values))
    assert bulk.scale == "z_normalized" and list(bulk.genes) == ["AARS", "MYC", "G1", "G2", "G3"]
    result = pseudobulk_de_labels(bulk, ["AARS", "MYC", "G1", "G2", "G3"], min_abs_z=1.0, modality="CRISPRi")
    labels = result.labels.set_index(["perturbation", "target"])
    assert labels.loc[("AARS", "G1"), "is_de"] and not labels.loc[("AARS", "G2"), "is_de"]
    assert labels.loc[("AARS", "G1"), "statistic"] == pytest.approx(1.5)
    assert ("AARS", "AARS") not in labels.index
    summary = result.summary.set_index("perturbation")
    assert summary.loc["AARS", "on_target_status"] == "moved" and summary.loc["MYC", "on_target_status"] == "not_moved"
    assert summary.loc["MYC", "n_positives"] == 2
    cells = pd.Series({"1_AARS_P1P2_ENSG00000090861": 20, "2_AARS_P2_ENSG00000090861": 15, "3_MYC_P1_ENSG00000136997": 5})
    few = pseudobulk_de_labels(bulk, ["AARS", "MYC", "G1"], min_abs_z=1.0, modality="CRISPRi", min_cells=30, cells=cells)
    assert list(few.summary["perturbation"]) == ["AARS"] and few.summary["n_cells"].iloc[0] == 35


def test_raw_bulk_cannot_give_labels(tmp_path):
    bulk = load_replogle_pseudobulk(_bulk_file(tmp_path, np.ones((4, 5))))
    assert bulk.scale == "mean_counts"
    with pytest.raises(ScreenFormatError, match="normalized_bulk"):
        pseudobulk_de_labels(bulk, ["G1"], min_abs_z=1.0, modality="CRISPRi")


def test_table_s2_gives_cells_per_pair():
    if not TABLE_S2.is_file():
        pytest.skip(f"{TABLE_S2} is not available")
    from scinterp_assets.core.datasets.pseudobulk import read_perturbation_cells

    cells = read_perturbation_cells(TABLE_S2)
    table = pd.read_csv(TABLE_S2, sep="\t")
    assert len(cells) == len(table) and cells["10023_ZC3H18_P1P2_ENSG00000158545"] == 32
