"""Reference schema, harmonisation and restriction on tiny references whose survivors can be counted by hand."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scinterp_assets.core.networks.planted import planted_reference_edges
from scinterp_assets.core.networks.references import (
    REFERENCE_COLUMNS,
    REFERENCE_DTYPES,
    HarmonisedReference,
    ReferenceFormatError,
    ReferenceOverlapError,
    co_membership_pairs,
    empty_reference,
    harmonise_gene_ids,
    reference_evaluability,
    require_evaluable,
    restrict_reference,
    validate_reference,
)


def reference(rows: list[tuple[str, str, int]], *, resource: str = "toy", relation: str = "regulates") -> pd.DataFrame:
    """A reference table from (source, target, sign) rows; confidence numbers the rows so tests can see which
    duplicate was kept."""
    return pd.DataFrame(
        {
            "source": [row[0] for row in rows],
            "target": [row[1] for row in rows],
            "resource": resource,
            "sign": [row[2] for row in rows],
            "confidence": [f"row{i}" for i in range(len(rows))],
            "weight": np.arange(len(rows), dtype=float),
            "relation": relation,
        }
    )


def gene_sets(sets: dict[str, list[str]], *, resource: str = "sets") -> pd.DataFrame:
    return reference([(name, gene, 0) for name, genes in sets.items() for gene in genes],
                     resource=resource, relation="member_of")


def steps(restricted, resource: str) -> dict[str, int]:
    survival = restricted.survival[restricted.survival["resource"] == resource]
    return dict(zip(survival["step"], survival["edges"]))


def pairs(restricted, resource: str) -> dict[tuple[str, str], pd.Series]:
    edges = restricted.edges[restricted.edges["resource"] == resource]
    return {(row.source, row.target): row for row in edges.itertuples()}


# --- schema -------------------------------------------------------------------------------------------------


def test_empty_reference_has_the_schema_and_validates():
    empty = empty_reference()
    assert tuple(empty.columns) == REFERENCE_COLUMNS
    assert {column: str(dtype) for column, dtype in empty.dtypes.items()} == REFERENCE_DTYPES
    assert validate_reference(empty).empty


def test_validate_reference_orders_columns_and_casts_dtypes():
    frame = reference([("TF1", "G1", 1)]).iloc[:, ::-1].assign(sign=[1.0])
    valid = validate_reference(frame)
    assert tuple(valid.columns) == REFERENCE_COLUMNS
    assert valid["sign"].dtype == np.int64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda frame: frame.drop(columns="relation"), "missing column(s) ['relation']"),
        (lambda frame: frame.assign(relation="binds"), "unknown relation(s) ['binds']"),
        (lambda frame: frame.assign(sign=2), "column 'sign' holds [2]"),
        (lambda frame: frame.assign(sign=np.nan), "column 'sign' holds missing values"),
        (lambda frame: frame.assign(confidence=None), "column 'confidence' must hold strings"),
        (lambda frame: frame.assign(target=""), "column 'target' holds empty strings"),
        (lambda frame: frame.assign(weight="high"), "column 'weight' must be numeric"),
    ],
)
def test_validate_reference_names_the_problem(change, message):
    with pytest.raises(ValueError, match="^my reference: ") as caught:
        validate_reference(change(reference([("TF1", "G1", 1)])), "my reference")
    assert message in str(caught.value)


def test_planted_reference_fills_the_relation_column():
    screen = ad.AnnData(np.zeros((1, 3)))
    screen.uns["truth_edges"] = {"source": ["A", "A", "B"], "target": ["B", "OUT", "B"], "sign": [1, -1, 1],
                                 "weight": [0.5, 0.2, 0.1]}
    planted = planted_reference_edges(screen, ["A", "B"])
    assert planted[["source", "target", "relation"]].values.tolist() == [["A", "B", "regulates"]]
    assert tuple(planted.columns) == REFERENCE_COLUMNS
    assert tuple(planted_reference_edges(ad.AnnData(np.zeros((1, 3))), ["A"]).columns) == REFERENCE_COLUMNS


# --- restriction: regulates ---------------------------------------------------------------------------------

TF_ROWS = [
    ("TF1", "G1", 1),
    ("TF1", "G2", 1),
    ("TF1", "G3", -1),
    ("TF1", "G1", -1),  # duplicate of row 0 with the opposite sign -> sign 0
    ("TF1", "TF1", 1),  # self pair
    ("TF1", "OUTSIDE", 1),  # target outside the universe
    ("TF2", "G1", 1),  # TF2 keeps 2 targets: dropped by the 3-target rule
    ("TF2", "G2", -1),
    ("TF3", "G1", 0),
    ("TF3", "G2", 0),
    ("TF3", "G4", 0),
    ("TF3", "G4", 1),  # duplicate with an unsigned first row -> +1
]
TF_UNIVERSE = ["TF1", "TF2", "TF3", "G1", "G2", "G3", "G4", "G5"]


def test_regulates_steps_count_by_hand():
    restricted = restrict_reference(reference(TF_ROWS), TF_UNIVERSE)
    assert steps(restricted, "toy") == {"read": 12, "in_universe": 11, "self_pairs_dropped": 10,
                                        "duplicates_dropped": 8, "tf_min_targets": 6}
    kept = pairs(restricted, "toy")
    assert sorted(kept) == [("TF1", "G1"), ("TF1", "G2"), ("TF1", "G3"), ("TF3", "G1"), ("TF3", "G2"), ("TF3", "G4")]
    assert kept["TF1", "G1"].sign == 0 and kept["TF1", "G1"].confidence == "row0"
    assert kept["TF3", "G4"].sign == 1 and kept["TF3", "G4"].confidence == "row10"
    assert kept["TF1", "G3"].sign == -1
    assert set(restricted.edges["relation"]) == {"regulates"}


def test_tf_list_is_applied_before_the_target_rule():
    restricted = restrict_reference(reference(TF_ROWS), TF_UNIVERSE, tfs={"TF1", "TF2"}, min_targets_per_tf=2)
    assert steps(restricted, "toy")["tf_list"] == 5
    assert steps(restricted, "toy")["tf_min_targets"] == 5
    assert set(restricted.edges["source"]) == {"TF1", "TF2"}


# --- restriction: interacts ---------------------------------------------------------------------------------


def test_undirected_pair_listed_in_both_orientations_gives_two_ordered_pairs():
    rows = [("A", "B", 0), ("B", "A", 0), ("A", "C", 1), ("C", "A", -1), ("C", "C", 0), ("A", "OUT", 0)]
    restricted = restrict_reference(reference(rows, relation="interacts"), ["A", "B", "C", "D"])
    assert steps(restricted, "toy") == {"read": 6, "in_universe": 5, "self_pairs_dropped": 4,
                                        "duplicates_dropped": 2, "both_orientations": 4}
    kept = pairs(restricted, "toy")
    assert sorted(kept) == [("A", "B"), ("A", "C"), ("B", "A"), ("C", "A")]
    assert kept["A", "C"].sign == 0 and kept["C", "A"].sign == 0
    assert kept["B", "A"].confidence == "row0"


# --- restriction: gene sets ---------------------------------------------------------------------------------

SETS = {
    "FOUR_GENES": ["G1", "G2", "G3", "G4"],  # below the 5-gene minimum: dropped
    "SET_A": ["G1", "G2", "G3", "X1", "X2"],  # 3 members in the universe -> 6 ordered pairs
    "SET_B": ["G1", "G2", "G5", "X3", "X4"],  # shares G1, G2 with SET_A -> weight 2
}


def test_gene_sets_expand_to_ordered_co_membership_pairs():
    restricted = restrict_reference(gene_sets(SETS), ["G1", "G2", "G3", "G4", "G5"])
    assert steps(restricted, "sets") == {"read": 14, "set_size": 10, "in_universe": 6, "duplicates_dropped": 6,
                                         "co_membership_pairs": 10}
    kept = pairs(restricted, "sets")
    assert len(kept) == 10
    assert {pair: row.weight for pair, row in kept.items() if row.weight != 1} == {("G1", "G2"): 2, ("G2", "G1"): 2}
    assert ("G3", "G5") not in kept
    assert set(restricted.edges["relation"]) == {"interacts"} and set(restricted.edges["sign"]) == {0}


def test_gene_set_size_bounds_are_inclusive_and_use_the_full_library_size():
    library = gene_sets({"FIVE": ["A", "B", "C", "D", "E"], "SIX": ["A", "B", "C", "D", "E", "F"]})
    restricted = restrict_reference(library, ["A", "B"], gene_set_size=(5, 5))
    assert steps(restricted, "sets")["set_size"] == 5
    assert sorted(pairs(restricted, "sets")) == [("A", "B"), ("B", "A")]


def test_co_membership_pairs_match_a_plain_python_oracle():
    rng = np.random.default_rng(7)
    genes = [f"G{i}" for i in range(40)]
    library = {f"S{s}": list(rng.choice(genes, size=rng.integers(1, 12), replace=False)) for s in range(30)}
    oracle = Counter(pair for members in library.values() for pair in itertools.permutations(members, 2))
    set_names = np.array([name for name, members in library.items() for _ in members], dtype=object)
    members = np.array([gene for members in library.values() for gene in members], dtype=object)
    result = co_membership_pairs(set_names, members)
    assert dict(zip(zip(result["source"], result["target"]), result["weight"])) == oracle


def test_gene_ontology_sized_library_restricts_in_seconds():
    rng = np.random.default_rng(0)
    genes = np.array([f"G{i}" for i in range(20_000)], dtype=object)
    sizes = np.exp(rng.uniform(np.log(3), np.log(800), size=7_500)).astype(int)  # GO BP's skewed set sizes
    set_names = np.repeat(np.array([f"GO:{i:07d}" for i in range(len(sizes))], dtype=object), sizes)
    members = genes[rng.integers(0, 20_000, size=sizes.sum())]  # rare repeats within a set are deduplicated
    library = pd.DataFrame({"source": set_names, "target": members, "resource": "go_bp", "sign": 0,
                            "confidence": "", "weight": np.nan, "relation": "member_of"})
    universe = list(rng.choice(genes, size=2_000, replace=False))
    start = time.perf_counter()
    restricted = restrict_reference(library, universe)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"restricting {len(library):,} memberships took {elapsed:.1f} s"
    assert steps(restricted, "go_bp")["co_membership_pairs"] == len(restricted.edges) > 0


# --- several resources, harmonisation, overlap --------------------------------------------------------------


def test_resources_are_restricted_separately_and_must_not_mix_relations():
    both = pd.concat([reference(TF_ROWS, resource="tf"), gene_sets(SETS, resource="sets")], ignore_index=True)
    restricted = restrict_reference(both, TF_UNIVERSE)
    assert list(restricted.survival["resource"].unique()) == ["tf", "sets"]
    assert not restricted.edges.duplicated(["source", "target", "resource"]).any()
    mixed = pd.concat([reference([("A", "B", 0)]), reference([("A", "C", 0)], relation="interacts")])
    with pytest.raises(ReferenceFormatError, match="mix relations"):
        restrict_reference(mixed, ["A", "B", "C"])


def test_harmonise_maps_ensembl_ids_aliases_and_case():
    table = pd.concat(
        [
            reference([("ENSG00000141510.17", "mdm2", 1),  # Ensembl ID with version -> TP53; case -> MDM2
                       ("ENSG00000000000", "MDM2", 1),  # no symbol for this ID: dropped
                       ("TP53", "c1orf112", 0),  # HGNC keeps "orf" lower case
                       ("P53", "CDKN1A", 1),  # alias -> TP53
                       ("TP53", "BAX", 1)]),  # TP53 is an official symbol: never read as an alias
            gene_sets({"my_set": ["p21"]}),  # set names are never renamed; members are
        ],
        ignore_index=True,
    )
    harmonised = harmonise_gene_ids(table, symbol_of_id={"ENSG00000141510.16": "TP53"},
                                    aliases={"P53": "TP53", "P21": "CDKN1A", "TP53": "TP53BP1"})
    assert harmonised.edges[["source", "target"]].values.tolist() == [
        ["TP53", "MDM2"], ["TP53", "C1orf112"], ["TP53", "CDKN1A"], ["TP53", "BAX"], ["my_set", "CDKN1A"]]
    counts = harmonised.counts.set_index("resource")
    assert counts.loc["toy", ["rows_read", "rows_changed", "rows_unmapped"]].tolist() == [5, 3, 1]
    assert counts.loc["sets", ["rows_read", "rows_changed", "rows_unmapped"]].tolist() == [1, 1, 0]


def test_harmonise_keeps_names_without_mappings_and_case_keep_keeps_case():
    table = reference([("ENSG00000141510.17", "mdm2", 1)])
    kept = harmonise_gene_ids(table, case="keep")
    assert kept.edges[["source", "target"]].values.tolist() == [["ENSG00000141510.17", "mdm2"]]
    assert kept.counts["rows_changed"].tolist() == [0]


def test_restriction_reports_the_harmonised_step():
    table = reference([("ENSG1", "G1", 1), ("ENSG2", "G1", 1), ("tf", "g2", 1), ("tf", "g3", 1), ("tf", "g4", 1)])
    harmonised = harmonise_gene_ids(table, symbol_of_id={"ENSG1": "TF"})
    assert isinstance(harmonised, HarmonisedReference)
    restricted = restrict_reference(harmonised, ["TF", "G1", "G2", "G3", "G4"])
    assert steps(restricted, "toy") == {"read": 5, "harmonised": 4, "in_universe": 4, "self_pairs_dropped": 4,
                                        "duplicates_dropped": 4, "tf_min_targets": 4}


def test_no_overlap_gives_empty_edges_and_evaluability_explains():
    table = pd.concat([reference([("ENSG1", "ENSG2", 1), ("ENSG1", "ENSG3", 1), ("ENSG1", "G1", 1)], resource="ids"),
                       reference(TF_ROWS, resource="tf")], ignore_index=True)
    restricted = restrict_reference(table, TF_UNIVERSE)
    assert (restricted.edges["resource"] == "ids").sum() == 0
    evaluability = reference_evaluability(restricted.edges, ["ids", "tf", "absent"], 6, overlap=restricted.overlap,
                                          where="in a universe of 8 genes").set_index("resource")
    assert evaluability["evaluable"].to_dict() == {"ids": False, "tf": True, "absent": False}
    assert evaluability["edges"].to_dict() == {"ids": 0, "tf": 6, "absent": 0}
    assert evaluability.loc["ids", "reason"].startswith(
        "keeps 0 edges (minimum 6) in a universe of 8 genes: 1 of its 4 genes are in the universe (the `survival`")
    assert evaluability.loc["tf", "reason"] == ""
    # a resource the restriction never saw has no overlap to report, but still a reason
    assert evaluability.loc["absent", "reason"].startswith("keeps 0 edges (minimum 6) in a universe of 8 genes. ")
    stricter = reference_evaluability(restricted.edges, ["tf"], 7, overlap=restricted.overlap, where="here")
    assert not stricter["evaluable"].item() and "keeps 6 edges (minimum 7) here" in stricter["reason"].item()


def test_a_required_reference_that_is_not_evaluable_is_one_error_naming_it_and_the_fix():
    table = pd.concat([reference([("ENSG1", "ENSG2", 1)], resource="ids"), reference(TF_ROWS, resource="tf")],
                      ignore_index=True)
    restricted = restrict_reference(table, TF_UNIVERSE)
    evaluability = reference_evaluability(restricted.edges, ["ids", "tf"], 1, overlap=restricted.overlap,
                                          where="in a universe of 8 genes")
    require_evaluable(evaluability, ["tf"], "cell type k562")  # evaluable: nothing to say
    require_evaluable(evaluability, [], "cell type k562")  # "ids" is not evaluable but not required
    with pytest.raises(ReferenceOverlapError) as caught:
        require_evaluable(evaluability, ["ids", "tf"], "cell type k562")
    message = str(caught.value)
    assert message.startswith("required reference(s) not evaluable for cell type k562: 'ids' keeps 0 edges")
    assert "'tf'" not in message and "Set `required: false`" in message