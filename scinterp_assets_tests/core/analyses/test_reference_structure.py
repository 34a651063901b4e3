import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.reference_structure import (
    reference_auroc_tests,
    reference_membership,
    reference_structure_tests,
)
from scinterp_assets.core.analyses.score_sets import ScoreSet, random_score_set
from scinterp_assets.core.networks.references import reference_evaluability
from scinterp_assets.core.stats.auroc import auroc_mann_whitney_p


def test_membership_ignores_genes_outside_and_self_pairs():
    reference = pd.DataFrame({"source": ["A", "A", "B", "Z"], "target": ["B", "A", "C", "A"]})
    membership = reference_membership(reference, ["A", "B", "C"])
    assert membership.sum() == 2 and membership[0, 1] and membership[1, 2] and not membership[1, 0]


def test_reference_auroc_matches_sklearn_and_random_control_is_descriptive():
    genes = [f"G{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    pairs = rng.choice(40 * 40, size=120, replace=False)
    sources, targets = np.divmod(pairs, 40)
    keep = sources != targets
    reference = pd.DataFrame({"source": np.array(genes)[sources[keep]], "target": np.array(genes)[targets[keep]]})
    truth = reference_membership(reference, genes)
    informative = truth * 1.0 + rng.normal(0, 0.8, (40, 40))
    rows = reference_auroc_tests(reference, "planted", genes,
                                 [ScoreSet("attention", 2, "head_mean", informative), random_score_set(40, 0)],
                                 n_permutations=200, seed=0)
    off = ~np.eye(40, dtype=bool)
    assert rows[0]["statistic"] == pytest.approx(roc_auc_score(truth[off], informative[off]))
    assert rows[0]["p_value"] == pytest.approx(1 / 201)  # no relabelling comes near the planted score
    assert rows[0]["confirmatory"] and rows[0]["layer"] == 2
    assert rows[1]["test_id"] == "A12:planted:random" and not rows[1]["confirmatory"]
    assert abs(rows[1]["statistic"] - 0.5) < 0.1


def test_gene_level_structure_unrelated_to_the_reference_is_no_evidence():
    """Five hub TFs hold every positive; scores with a random preference per source gene, unrelated to the
    reference, rank the hubs' pairs high or low together. Mann-Whitney, counting pairs, calls that
    significant most of the time; relabelling genes keeps its level."""
    genes = [f"G{i}" for i in range(50)]
    rng = np.random.default_rng(1)
    sources, targets = rng.integers(0, 5, 80), rng.integers(0, 50, 80)
    keep = sources != targets
    reference = pd.DataFrame({"source": np.array(genes)[sources[keep]], "target": np.array(genes)[targets[keep]]})
    membership = reference_membership(reference, genes)
    off = ~np.eye(50, dtype=bool)
    permutation_rejections = mann_whitney_rejections = 0
    for draw in range(60):
        score = np.tile(rng.normal(size=50)[:, None], (1, 50)) + 0.1 * rng.normal(size=(50, 50))
        (row,) = reference_auroc_tests(reference, "hubs", genes, [ScoreSet("attention", 0, "head_mean", score)],
                                       n_permutations=200, seed=draw)
        permutation_rejections += row["p_value"] < 0.05
        mann_whitney_rejections += auroc_mann_whitney_p(membership[off], score[off])[1] < 0.05
    assert mann_whitney_rejections >= 30 and permutation_rejections <= 9  # 9/60: above 5% by chance < 1%


def test_references_not_evaluable_for_the_cell_type_or_the_models_genes_get_one_row_saying_why():
    genes = [f"G{i}" for i in range(30)]
    big = pd.DataFrame({"source": [genes[i % 3] for i in range(24)], "target": genes[3:27], "resource": "big"})
    # 12 pairs in the universe, but only 2 among the genes the model scores (G0, G1, G3, G4 and G28, G29)
    thin = pd.DataFrame({"source": ["G0"] * 6 + ["G28"] * 6, "target": ["G3", "G4"] + genes[5:9] + genes[9:15],
                         "resource": "thin"})
    cell_type = reference_evaluability(pd.concat([big, thin]).iloc[:0], ["trrust"], 10,
                                       where="in a universe of 60 genes")
    scored = genes[:5] + genes[15:]
    rows = reference_structure_tests(pd.concat([big, thin], ignore_index=True), cell_type, scored,
                                     [random_score_set(len(scored), 0)], min_edges=10, n_permutations=50, seed=0)
    by_id = {row["test_id"]: row for row in rows}
    assert set(by_id) == {"A12:trrust:not_evaluable", "A12:thin:not_evaluable", "A12:big:random"}
    trrust, thin_row = by_id["A12:trrust:not_evaluable"], by_id["A12:thin:not_evaluable"]
    assert trrust["note"].startswith("reference 'trrust' not evaluable: keeps 0 edges (minimum 10) in a universe of 60")
    assert thin_row["note"].startswith("reference 'thin' not evaluable: keeps 2 edges (minimum 10) among the 20 "
                                       "universe genes the model can score")
    assert not trrust["confirmatory"] and not thin_row["confirmatory"] and thin_row["n_positives"] == 2
    assert "statistic" not in trrust and "p_value" not in trrust
