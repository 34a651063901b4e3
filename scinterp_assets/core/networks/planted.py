"""The planted network of a synthetic screen as a reference table (the long reference schema)."""

from __future__ import annotations

import anndata as ad
import pandas as pd

from scinterp_assets.core.networks.references import empty_reference, validate_reference


def planted_reference_edges(screen: ad.AnnData, universe: list[str]) -> pd.DataFrame:
    """Planted TF -> target edges with both genes in the universe; empty for screens without planted truth."""
    if "truth_edges" not in screen.uns:
        return empty_reference()
    truth = pd.DataFrame(screen.uns["truth_edges"])
    inside = truth["source"].isin(universe) & truth["target"].isin(universe) & (truth["source"] != truth["target"])
    planted = truth[inside]
    return validate_reference(
        pd.DataFrame(
            {
                "source": planted["source"].astype(str).to_numpy(),
                "target": planted["target"].astype(str).to_numpy(),
                "resource": "planted",
                "sign": planted["sign"].astype(int).to_numpy(),
                "confidence": "exact",
                "weight": planted["weight"].astype(float).to_numpy(),
                "relation": "regulates",
            }
        ),
        "planted reference",
    )
