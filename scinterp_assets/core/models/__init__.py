"""Model adapters: `load_model(folder)` detects the checkpoint family from the folder layout."""

from __future__ import annotations

from pathlib import Path

from scinterp_assets.core.models.dictionaries import ModelLoadError
from scinterp_assets.core.models.geneformer import (
    CountDataError,
    GeneCoverage,
    GeneformerModel,
    load_geneformer,
    read_bert_config,
)

__all__ = ["CountDataError", "GeneCoverage", "GeneformerModel", "ModelLoadError", "load_model"]

GENEFORMER_LAYOUT = (
    "config.json (model_type 'bert'), model.safetensors or pytorch_model.bin, and the token_dictionary, "
    "gene_median_dictionary and gene_name_id_dict pickles"
)
SCGPT_LAYOUT = "args.json, vocab.json, best_model.pt"


def load_model(checkpoint_dir: str | Path) -> GeneformerModel:
    """Load a checkpoint folder; the family is read from its layout, never from code inside it.

    Geneformer: config.json with model_type 'bert' (its dictionaries must sit beside it).
    scGPT: args.json + vocab.json + best_model.pt (recognised, not yet supported).
    Raises ModelLoadError naming the folder, what it holds, and what each family needs.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: not a folder; a checkpoint is a folder holding {GENEFORMER_LAYOUT}")
    names = sorted(path.name for path in folder.iterdir())
    if "config.json" in names and read_bert_config(folder).get("model_type") == "bert":
        return load_geneformer(folder)
    if {"args.json", "vocab.json", "best_model.pt"} <= set(names):
        raise ModelLoadError(
            f"{folder}: this is an scGPT checkpoint ({SCGPT_LAYOUT}); the scGPT adapter is not available in "
            "this version of scinterp"
        )
    raise ModelLoadError(
        f"{folder}: not a recognised checkpoint; found {names or 'nothing'}. A Geneformer folder holds "
        f"{GENEFORMER_LAYOUT}; an scGPT folder holds {SCGPT_LAYOUT}."
    )
