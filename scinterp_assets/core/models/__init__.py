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
from scinterp_assets.core.models.scgpt import (
    ARGS_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    GeneCoverageError,
    ScGPTModel,
    load_scgpt,
)

__all__ = [
    "CountDataError",
    "GeneCoverage",
    "GeneCoverageError",
    "GeneformerModel",
    "ModelLoadError",
    "ScGPTModel",
    "load_model",
]

GENEFORMER_LAYOUT = (
    "config.json (model_type 'bert'), model.safetensors or pytorch_model.bin, and the token_dictionary, "
    "gene_median_dictionary and gene_name_id_dict pickles"
)
SCGPT_LAYOUT = f"{ARGS_FILE}, {VOCAB_FILE} and {WEIGHTS_FILE} (a plain state dict)"


def load_model(checkpoint_dir: str | Path, dictionary_dir: str | Path | None = None) -> GeneformerModel | ScGPTModel:
    """Load a checkpoint folder; the family is read from its layout, never from code inside it.

    Geneformer: config.json with model_type 'bert'; its dictionaries sit beside it or in `dictionary_dir`.
    scGPT: args.json + vocab.json + best_model.pt.
    Raises ModelLoadError naming the folder, what it holds, and what each family needs.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise ModelLoadError(
            f"{folder}: not a folder; a checkpoint is a folder holding {GENEFORMER_LAYOUT} (Geneformer) or "
            f"{SCGPT_LAYOUT} (scGPT)"
        )
    names = sorted(path.name for path in folder.iterdir())
    if "config.json" in names and read_bert_config(folder).get("model_type") == "bert":
        return load_geneformer(folder, dictionary_dir)
    if {ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE} <= set(names):
        return load_scgpt(folder)
    raise ModelLoadError(
        f"{folder}: not a recognised checkpoint; found {names or 'nothing'}. A Geneformer folder holds "
        f"{GENEFORMER_LAYOUT}; an scGPT folder holds {SCGPT_LAYOUT}."
    )
