import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scinterp_assets.core.analyses.reference_structure import reference_auroc_tests, reference_membership
from scinterp_assets.core.analyses.score_sets import ScoreSet, random_score_set


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
                                 [ScoreSet("attention", 2, "head_mean", informative), random_score_set(40, 0)])
    off = ~np.eye(40, dtype=bool)
    assert rows[0]["statistic"] == pytest.approx(roc_auc_score(truth[off], informative[off]))
    assert rows[0]["p_value"] < 1e-6 and rows[0]["confirmatory"] and rows[0]["layer"] == 2
    assert rows[1]["test_id"] == "A12:planted:random" and not rows[1]["confirmatory"]
    assert abs(rows[1]["statistic"] - 0.5) < 0.1
