"""Tiny seeded Geneformer-format checkpoints and matching count data for tests (no network, < 1 s)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from transformers import BertConfig, BertForMaskedLM


def gene_ids(n_genes: int) -> list[str]:
    return [f"ENSG{i:011d}" for i in range(1, n_genes + 1)]


def gene_symbols(n_genes: int) -> list[str]:
    return [f"GENE{i}" for i in range(1, n_genes + 1)]


def write_pickle(path: Path, value: object) -> None:
    path.write_bytes(pickle.dumps(value, protocol=4))


def build_tiny_geneformer(
    folder: Path,
    *,
    n_genes: int = 30,
    version: str = "V1",
    max_position_embeddings: int = 64,
    seed: int = 0,
    safetensors: bool = True,
) -> Path:
    """A 2-layer, 2-head, width-16 BertForMaskedLM folder with the three dictionaries beside it.

    Token ids: <pad> 0, <mask> 1 (V2 also <cls> 2, <eos> 3), then genes ENSG00000000001.. in order.
    Medians are numpy float32 scalars drawn from a seeded generator, as released files hold numpy values.
    """
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if version == "V2" else [])
    token_dictionary = {name: i for i, name in enumerate(specials + gene_ids(n_genes))}
    rng = np.random.default_rng(seed)
    medians = {gene: np.float32(m) for gene, m in zip(gene_ids(n_genes), rng.uniform(0.5, 4.0, n_genes))}
    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=len(token_dictionary),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_position_embeddings,
        hidden_act="relu",
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    # Sharper-than-default random weights, so attention is far from uniform and parity checks mean something.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0.0, 0.5)
    if safetensors:
        model.save_pretrained(folder)
    else:
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    write_pickle(folder / "token_dictionary.pkl", token_dictionary)
    write_pickle(folder / "gene_median_dictionary.pkl", medians)
    write_pickle(folder / "gene_name_id_dict.pkl", dict(zip(gene_symbols(n_genes), gene_ids(n_genes))))
    return folder


def set_config_value(folder: Path, key: str, value: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))


def tiny_counts(
    n_cells: int = 12,
    n_genes: int = 30,
    *,
    extra_genes: int = 3,
    seed: int = 0,
    ensembl_column: bool = True,
) -> AnnData:
    """Poisson counts over the tiny model's genes plus `extra_genes` the vocabulary lacks (var_names GENE*,
    Ensembl ids in var["ensembl_id"]); detection rates vary per gene, so cells differ in length."""
    rng = np.random.default_rng(seed)
    n_vars = n_genes + extra_genes
    detected = rng.uniform(size=(n_cells, n_vars)) < rng.uniform(0.2, 0.9, n_cells)[:, None]
    rates = rng.uniform(0.1, 5.0, n_vars) * detected
    counts = rng.poisson(rates).astype(np.float32)
    var = pd.DataFrame(index=gene_symbols(n_genes) + [f"NOVEL{i}" for i in range(extra_genes)])
    if ensembl_column:
        var["ensembl_id"] = gene_ids(n_genes) + [f"ENSG9{i:010d}" for i in range(extra_genes)]
    return AnnData(X=counts, var=var, obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]))
