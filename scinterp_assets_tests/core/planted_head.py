"""A tiny Geneformer-format checkpoint with one attention head hand-set to carry planted regulatory signal,
and a screen that exercises it: the positive control of the causal-intervention analysis (A17-A19).

The world: N_MODULES modules of MODULE_SIZE genes; the first gene of each module is its TF, and silencing it
changes the other genes of its module (the DE labels). Each cell has one active module whose genes it
expresses highly, and a few genes of other modules at low counts.

The model (BERT, N_LAYERS x N_HEADS, width WIDTH, ReLU, the released Geneformer V1 layout):
- word embeddings: a module part (dims 0..N_MODULES-1, one-hot times MODULE_SCALE) and a gene part (dims
  IDENTITY_DIMS, a seeded random unit vector times IDENTITY_SCALE); <mask> sets dim MASK_DIM only; position
  and token-type embeddings are zero;
- the planted head PLANTED (layer 0, head 0): queries and keys read the module part (QK_SCALE), so a gene
  attends to the genes of its own module; values carry the module part (written back into the module dims)
  and a projection of the gene part (written into dims CONTEXT_DIMS). A <mask> query has no module part; a
  query bias makes it attend to every gene of the cell alike, whose average module part names the active
  module;
- every other head: small seeded random weights (OTHER_SCALE), carrying no module routing;
- feed-forward blocks: zero; LayerNorms: gain 1, shift 0;
- MLM head: identity transform, tied decoder (logits = word embedding . state), special tokens never predicted.

So silencing a TF shifts its module's genes through the planted head only (the in-silico readout), a masked
gene is predicted from the cell's active module only through the planted head (the masked readout), and the
planted head's attention from a TF to its targets ranks it first by reference AUROC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from transformers import BertConfig, BertForMaskedLM

from scinterp_assets_tests.core.tiny_models import gene_ids, gene_symbols, write_pickle

N_MODULES, MODULE_SIZE = 5, 8
N_GENES = N_MODULES * MODULE_SIZE
N_LAYERS, N_HEADS, WIDTH = 3, 8, 64
D_HEAD = WIDTH // N_HEADS
PLANTED = (0, 0)
MASK_DIM = N_MODULES
CONTEXT_DIMS = slice(8, 8 + D_HEAD - N_MODULES)
IDENTITY_DIMS = slice(16, WIDTH)
MODULE_SCALE, IDENTITY_SCALE, QK_SCALE, OTHER_SCALE = 3.0, 3.0, 4.0, 0.02
MODULE_GAIN, CONTEXT_GAIN, LOGIT_GAIN = 10.0, 20.0, 0.1  # the planted head's writes; the MLM logits' scale
MASK_QUERY_BIAS = 2.0
SPECIALS = ("<pad>", "<mask>")


def module_of(gene: int) -> int:
    return gene // MODULE_SIZE


def tfs() -> list[str]:
    """The TF of each module, as var names (symbols)."""
    return [gene_symbols(N_GENES)[module * MODULE_SIZE] for module in range(N_MODULES)]


def build_planted_geneformer(folder: Path, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    token_dictionary = {name: i for i, name in enumerate(list(SPECIALS) + gene_ids(N_GENES))}
    config = BertConfig(
        vocab_size=len(token_dictionary), hidden_size=WIDTH, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, intermediate_size=2 * WIDTH, max_position_embeddings=64,
        hidden_act="relu", pad_token_id=0, layer_norm_eps=1e-12,
    )  # fmt: skip
    model = BertForMaskedLM(config)
    state = {key: torch.zeros_like(value) for key, value in model.state_dict().items()}
    for key in state:
        if "LayerNorm.weight" in key:
            state[key] = torch.ones_like(state[key])
    embeddings = np.zeros((len(token_dictionary), WIDTH))
    identity = rng.normal(size=(N_GENES, IDENTITY_DIMS.stop - IDENTITY_DIMS.start))
    identity -= identity.mean(axis=1, keepdims=True)  # every gene's embedding then has one mean and norm, so
    identity /= np.linalg.norm(identity, axis=1, keepdims=True)  # LayerNorm leaves one module part for all
    for gene in range(N_GENES):
        embeddings[len(SPECIALS) + gene, module_of(gene)] = MODULE_SCALE
        embeddings[len(SPECIALS) + gene, IDENTITY_DIMS] = IDENTITY_SCALE * identity[gene]
    embeddings[token_dictionary["<mask>"], MASK_DIM] = MODULE_SCALE
    state["bert.embeddings.word_embeddings.weight"] = torch.tensor(embeddings, dtype=torch.float32)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # tied
    for layer in range(N_LAYERS):
        prefix = f"bert.encoder.layer.{layer}.attention."
        for name in ("self.query", "self.key", "self.value", "output.dense"):
            state[prefix + name + ".weight"] = torch.tensor(rng.normal(0, OTHER_SCALE, (WIDTH, WIDTH)), dtype=torch.float32)
    layer, head = PLANTED
    prefix, rows = f"bert.encoder.layer.{layer}.attention.", slice(head * D_HEAD, (head + 1) * D_HEAD)
    planted = {name: torch.zeros(D_HEAD, WIDTH) for name in ("query", "key", "value")}
    for name in ("query", "key"):
        planted[name][:N_MODULES, :N_MODULES] = QK_SCALE * torch.eye(N_MODULES)
    planted["value"][:N_MODULES, :N_MODULES] = torch.eye(N_MODULES)
    projection = rng.normal(size=(D_HEAD - N_MODULES, IDENTITY_DIMS.stop - IDENTITY_DIMS.start))
    planted["value"][N_MODULES:, IDENTITY_DIMS] = torch.tensor(projection / np.sqrt(projection.shape[1]), dtype=torch.float32)
    for name, weight in planted.items():
        state[prefix + f"self.{name}.weight"][rows] = weight
    # a query bias on the module part: a <mask> query (no module part) attends to every gene of the cell alike
    state[prefix + "self.query.bias"][rows.start : rows.start + N_MODULES] = MASK_QUERY_BIAS
    output = state[prefix + "output.dense.weight"]
    output[:, rows] = 0.0
    output[:N_MODULES, rows.start : rows.start + N_MODULES] = MODULE_GAIN * torch.eye(N_MODULES)
    output[CONTEXT_DIMS, rows.start + N_MODULES : rows.stop] = CONTEXT_GAIN * torch.eye(D_HEAD - N_MODULES)
    state["cls.predictions.transform.dense.weight"] = torch.eye(WIDTH)
    state["cls.predictions.transform.LayerNorm.weight"] = torch.full((WIDTH,), LOGIT_GAIN)
    bias = torch.zeros(len(token_dictionary))
    bias[: len(SPECIALS)] = -20.0  # <pad> and <mask> are never the answer
    state["cls.predictions.bias"] = state["cls.predictions.decoder.bias"] = bias  # tied
    model.load_state_dict(state)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    write_pickle(folder / "token_dictionary.pkl", token_dictionary)
    write_pickle(folder / "gene_median_dictionary.pkl", {gene: np.float32(1.0) for gene in gene_ids(N_GENES)})
    write_pickle(folder / "gene_name_id_dict.pkl", dict(zip(gene_symbols(N_GENES), gene_ids(N_GENES))))
    return folder


def planted_counts(n_cells: int, *, seed: int = 0) -> AnnData:
    """Each cell expresses its active module's genes (each with probability 0.9, 20-60 counts) and other
    genes with probability 0.05 (1-3 counts); cells cycle through the modules."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_cells, N_GENES), dtype=np.float32)
    active = np.arange(n_cells) % N_MODULES
    for cell in range(n_cells):
        members = np.array([module_of(gene) == active[cell] for gene in range(N_GENES)])
        present = np.where(members, rng.uniform(size=N_GENES) < 0.9, rng.uniform(size=N_GENES) < 0.05)
        counts[cell] = np.where(present, np.where(members, rng.integers(20, 61, N_GENES), rng.integers(1, 4, N_GENES)), 0)
    var = pd.DataFrame(index=gene_symbols(N_GENES))
    var["ensembl_id"] = gene_ids(N_GENES)
    obs = pd.DataFrame({"active_module": active}, index=[f"cell{i}" for i in range(n_cells)])
    return AnnData(X=counts, var=var, obs=obs)


def planted_de_labels() -> pd.DataFrame:
    """Silencing a module's TF changes exactly the other genes of its module."""
    symbols = gene_symbols(N_GENES)
    rows = [(symbols[tf], symbols[target], module_of(target) == module_of(tf))
            for tf in range(0, N_GENES, MODULE_SIZE) for target in range(N_GENES) if target != tf]  # fmt: skip
    return pd.DataFrame(rows, columns=["perturbation", "target", "is_de"])
