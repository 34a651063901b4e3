"""Each reader on a tiny file written in the published layout, and one clear error for each kind of bad file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from scinterp_assets.core.networks.reference_formats import (
    DROPPED_ROWS,
    read_beeline_network,
    read_beeline_tfs,
    read_chip_target_sets,
    read_collectri,
    read_dorothea,
    read_gmt,
    read_omnipath,
    read_string_download,
    read_string_symbols,
    read_trrust,
)
from scinterp_assets.core.networks.references import REFERENCE_COLUMNS, ReferenceFormatError

TRRUST = "AATF\tBAX\tRepression\t22909821\nAATF\tCDKN1A\tUnknown\t17157788\nABL1\tBCL6\tActivation\t1;2;3\n"


def write(path: Path, text: str, *, compress: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def rows(table, *columns):
    return table[list(columns)].values.tolist()


def test_trrust_signs_modes_and_pmid_counts(tmp_path):
    table = read_trrust(write(tmp_path / "trrust.tsv", TRRUST), "trrust")
    assert tuple(table.columns) == REFERENCE_COLUMNS
    assert rows(table, "source", "target", "sign", "confidence", "weight") == [
        ["AATF", "BAX", -1, "Repression", 1.0], ["AATF", "CDKN1A", 0, "Unknown", 1.0],
        ["ABL1", "BCL6", 1, "Activation", 3.0]]
    assert set(table["resource"]) == {"trrust"} and set(table["relation"]) == {"regulates"}


def test_gzip_is_recognised_by_its_bytes_not_its_suffix(tmp_path):
    compressed_without_suffix = read_trrust(write(tmp_path / "trrust.tsv", TRRUST, compress=True), "t")
    plain_with_gz_suffix = read_trrust(write(tmp_path / "trrust.tsv.gz", TRRUST), "t")
    assert len(compressed_without_suffix) == len(plain_with_gz_suffix) == 3


def test_dorothea_keeps_the_requested_levels(tmp_path):
    path = write(tmp_path / "dorothea.tsv.gz", "tf\tconfidence\ttarget\tmor\nA1\tA\tG1\t1\nA1\tB\tG2\t-1\n"
                 "A1\tD\tG3\t1\n", compress=True)
    assert rows(read_dorothea(path, "dorothea"), "target", "sign", "confidence") == [["G1", 1, "A"], ["G2", -1, "B"]]
    assert len(read_dorothea(path, "dorothea", levels=("D",))) == 1
    assert np.isnan(read_dorothea(path, "dorothea")["weight"]).all()
    with pytest.raises(ReferenceFormatError, match="unknown DoRothEA level"):
        read_dorothea(path, "dorothea", levels=("F",))


def test_collectri_sign_from_weight_and_complexes_kept(tmp_path):
    path = write(tmp_path / "collectri.tsv", "source\ttarget\tweight\nMYC\tTERT\t1\nAP1\tMMP1\t-1\n")
    assert rows(read_collectri(path, "collectri"), "source", "sign", "weight") == [["MYC", 1, 1.0], ["AP1", -1, 1.0]]


@pytest.mark.parametrize("scores", [("0.952", "0.71", "0.699"), ("952", "710", "699")])
def test_string_symbol_table_detects_the_score_scale(tmp_path, scores):
    text = "protein1\tprotein2\tscore\n" + "".join(f"A{i}\tB{i}\t{score}\n" for i, score in enumerate(scores))
    table = read_string_symbols(write(tmp_path / "string.tsv", text), "string_700", min_score=700)
    assert rows(table, "source", "weight") == [["A0", 0.952], ["A1", 0.71]]
    assert set(table["relation"]) == {"interacts"} and set(table["sign"]) == {0}
    assert len(read_string_symbols(tmp_path / "string.tsv", "string_900", min_score=900)) == 1


def test_string_download_collapses_orientations_and_maps_proteins(tmp_path):
    links = write(tmp_path / "9606.protein.links.v12.0.txt.gz", (
        "protein1 protein2 combined_score\n"
        "9606.ENSP00000000233 9606.ENSP00000272298 950\n"
        "9606.ENSP00000272298 9606.ENSP00000000233 950\n"
        "9606.ENSP00000000233 9606.ENSP00000253401 400\n"
        "9606.ENSP00000253401 9606.ENSP00000000233 400\n"
        "9606.ENSP00000000233 9606.ENSP99999999999 990\n"
        "9606.ENSP99999999999 9606.ENSP00000000233 990\n"), compress=True)
    info = write(tmp_path / "9606.protein.info.v12.0.txt.gz", (
        "#string_protein_id\tpreferred_name\tprotein_size\tannotation\n"
        "9606.ENSP00000000233\tARF5\t180\tADP-ribosylation factor 5\n"
        "9606.ENSP00000272298\tCALM2\t149\tCalmodulin-2\n"
        "9606.ENSP00000253401\tARHGEF9\t516\tRho guanine nucleotide exchange factor 9\n"), compress=True)
    table = read_string_download(links, info, "string_700", min_score=700)
    assert rows(table, "source", "target", "weight") == [["ARF5", "CALM2", 0.95]]
    assert table.attrs[DROPPED_ROWS] == {"protein_missing_from_info_file": 1}
    assert len(read_string_download(links, info, "string_400", min_score=400)) == 2


OMNIPATH_HEADER = ("source\ttarget\tis_directed\tis_stimulation\tis_inhibition\tconsensus_direction\t"
                   "consensus_stimulation\tconsensus_inhibition\tcuration_effort\treferences\tsources\ttype\n")


def omnipath_row(source, target, stimulation, inhibition, sources, kind):
    return f"{source}\t{target}\tTrue\t{stimulation}\t{inhibition}\tTrue\t{stimulation}\t{inhibition}\t2\t\t{sources}\t{kind}\n"


def test_omnipath_types_resources_signs_and_dropped_identifiers(tmp_path):
    path = write(tmp_path / "omnipath.tsv.gz", OMNIPATH_HEADER + "".join([
        omnipath_row("STAT1", "IRF1", "True", "False", "TRRUST;DoRothEA", "transcriptional"),
        omnipath_row("ZEB1", "CDH1", "False", "True", "SIGNOR", "transcriptional"),
        omnipath_row("JUN", "FOS", "True", "True", "CollecTRI", "transcriptional"),
        omnipath_row("COMPLEX:NFKB1_RELA", "NFKBIA", "True", "False", "CollecTRI", "transcriptional"),
        omnipath_row("TP53", "P04637", "True", "False", "TRRUST", "transcriptional"),
        omnipath_row("CALM1", "TRPC1", "False", "True", "TRIP", "post_translational"),
    ]), compress=True)
    table = read_omnipath(path, "omnipath_tf")
    assert rows(table, "source", "target", "sign", "relation") == [
        ["STAT1", "IRF1", 1, "regulates"], ["ZEB1", "CDH1", -1, "regulates"], ["JUN", "FOS", 0, "regulates"]]
    assert table.attrs[DROPPED_ROWS] == {"uniprot_or_complex_identifier": 2}
    assert rows(read_omnipath(path, "o", resources=("TRRUST", "SIGNOR")), "source") == [["STAT1"], ["ZEB1"]]
    assert rows(read_omnipath(path, "o", types=("post_translational",)), "relation") == [["interacts"]]
    with pytest.raises(ReferenceFormatError, match="unknown OmniPath type"):
        read_omnipath(path, "o", types=("signalling",))


def test_beeline_networks_and_tf_list(tmp_path):
    path = write(tmp_path / "STRING-network.csv", "Gene1,Gene2\nCDC5L,ARF5\nDAB2,M6PR\n")
    assert set(read_beeline_network(path, "beeline_string", relation="interacts")["relation"]) == {"interacts"}
    assert set(read_beeline_network(path, "beeline_chip", relation="regulates")["relation"]) == {"regulates"}
    tfs = write(tmp_path / "human-tfs.csv", "TF,Sources\nAATF,RegNetwork|TRRUST\nABL1,TRRUST\n")
    assert read_beeline_tfs(tfs) == {"AATF", "ABL1"}


def test_chip_target_sets_by_cell_line(tmp_path):
    path = write(tmp_path / "chip.tsv", "tf\tcell_line\ttarget\nGATA1\tK562\tHBG1\nGATA1\tK562\tTAL1\n"
                 "CTCF\tHepG2\tMYC\n")
    table = read_chip_target_sets(path, "chip_k562", cell_lines=("K562",))
    assert rows(table, "source", "target", "confidence") == [["GATA1", "HBG1", "K562"], ["GATA1", "TAL1", "K562"]]
    assert len(read_chip_target_sets(path, "chip")) == 3
    with pytest.raises(ReferenceFormatError, match=r"no target sets for cell line\(s\) \['K-562'\].*'HepG2', 'K562'"):
        read_chip_target_sets(path, "chip", cell_lines=("K-562",))


def test_gmt_gives_one_membership_row_per_gene(tmp_path):
    path = write(tmp_path / "library.gmt", "SET_A\thttp://a\tG1\tG2\tG3\n\nSET_B\t\tG2\t\n")
    table = read_gmt(path, "reactome")
    assert rows(table, "source", "target") == [["SET_A", "G1"], ["SET_A", "G2"], ["SET_A", "G3"], ["SET_B", "G2"]]
    assert set(table["relation"]) == {"member_of"}
    with pytest.raises(ReferenceFormatError, match="line 2 has no set name or no genes"):
        read_gmt(write(tmp_path / "bad.gmt", "SET_A\tdesc\tG1\nSET_B\tdesc\n"), "bad")


# --- bad files: one ReferenceFormatError naming the file, the field and the fix ------------------------------


def test_missing_required_column_is_named(tmp_path):
    path = write(tmp_path / "dorothea.tsv", "tf\tconfidence\ttarget\nA1\tA\tG1\n")
    with pytest.raises(ReferenceFormatError) as caught:
        read_dorothea(path, "dorothea")
    assert str(caught.value).startswith(f"{path}: missing required column(s) ['mor']")
    assert "needs a header line with ['tf', 'confidence', 'target', 'mor']" in str(caught.value)


def test_truncated_gzip_says_to_re_download(tmp_path):
    complete = gzip.compress(("source\ttarget\tweight\n" + "MYC\tTERT\t1\n" * 20_000).encode())
    path = tmp_path / "collectri.tsv.gz"
    path.write_bytes(complete[: len(complete) // 2])
    with pytest.raises(ReferenceFormatError, match=r"collectri\.tsv\.gz: the gzip file is truncated or corrupt .*re-download"):
        read_collectri(path, "collectri")


@pytest.mark.parametrize("compress", [False, True])
def test_empty_file_is_named(tmp_path, compress):
    path = write(tmp_path / "trrust.tsv", "", compress=compress)
    with pytest.raises(ReferenceFormatError, match=r"trrust\.tsv: the file is empty"):
        read_trrust(path, "trrust")
    with pytest.raises(ReferenceFormatError, match=r"trrust\.tsv: the file is empty"):
        read_collectri(path, "collectri")


def test_header_without_rows_is_named(tmp_path):
    with pytest.raises(ReferenceFormatError, match="has a header but no rows"):
        read_collectri(write(tmp_path / "collectri.tsv", "source\ttarget\tweight\n"), "collectri")


def test_unknown_relation_is_named(tmp_path):
    path = write(tmp_path / "network.csv", "Gene1,Gene2\nA,B\n")
    with pytest.raises(ReferenceFormatError, match=r"network\.csv: unknown relation 'binds'.*'regulates'.*'interacts'"):
        read_beeline_network(path, "beeline", relation="binds")


def test_trrust_with_a_header_line_or_wrong_separator_is_explained(tmp_path):
    with pytest.raises(ReferenceFormatError, match=r"field 3 \(mode\) holds \['mode'\].*remove any header"):
        read_trrust(write(tmp_path / "header.tsv", "TF\ttarget\tmode\tPMIDs\n" + TRRUST), "trrust")
    with pytest.raises(ReferenceFormatError, match="found 1 tab-separated field"):
        read_trrust(write(tmp_path / "commas.tsv", TRRUST.replace("\t", ",")), "trrust")


def test_short_lines_and_non_numbers_are_named(tmp_path):
    with pytest.raises(ReferenceFormatError, match=r"field 'weight' is empty in 1 row\(s\) \(first: data row 2\).*re-download"):
        read_collectri(write(tmp_path / "short.tsv", "source\ttarget\tweight\nMYC\tTERT\t1\nMYC\tTP53\n"), "c")
    with pytest.raises(ReferenceFormatError, match="field 'weight' holds non-numbers such as 'strong'"):
        read_collectri(write(tmp_path / "words.tsv", "source\ttarget\tweight\nMYC\tTERT\tstrong\n"), "c")


def test_gene_aliases_from_hgnc_and_two_column_tables(tmp_path):
    from scinterp_assets.core.networks.reference_formats import read_gene_aliases

    hgnc = tmp_path / "hgnc_complete_set.txt"
    hgnc.write_text("hgnc_id\tsymbol\talias_symbol\tprev_symbol\n"
                    "HGNC:1\tPCLAF\tNS5ATP9|L5\tKIAA0101\n"
                    "HGNC:2\tNSD2\tWHSC1|L5\t\n"
                    "HGNC:3\tTP53\t\t\n")
    aliases = read_gene_aliases(hgnc)
    # L5 is claimed by two symbols: ambiguous, left out
    assert aliases == {"NS5ATP9": "PCLAF", "KIAA0101": "PCLAF", "WHSC1": "NSD2"}
    pairs = tmp_path / "aliases.tsv"
    pairs.write_text("alias\tsymbol\nSEPT7\tSEPTIN7\n")
    assert read_gene_aliases(pairs) == {"SEPT7": "SEPTIN7"}
