"""Tiny seeded Geneformer- and scGPT-format checkpoints and matching count data for tests (no network)."""

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


def differing_files(first: Path, second: Path) -> list[str]:
    """Names of the files that are not byte-identical in two folders (present in one only included)."""
    names = sorted({p.name for p in first.iterdir()} | {p.name for p in second.iterdir()})
    return [name for name in names if not ((first / name).is_file() and (second / name).is_file()
                                           and (first / name).read_bytes() == (second / name).read_bytes())]


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


# ---------------------------------------------------------------------------------------------------------
# scGPT

SCGPT_QKV_NAMES = {  # how a checkpoint may name layer i's fused q/k/v projection (all the same tensor)
    "in_proj": "self_attn.in_proj_{}",
    "Wqkv": "self_attn.Wqkv.{}",
    "impl_Wqkv": "self_attn._impl.Wqkv.{}",
}
SCGPT_OUT_PROJ_NAMES = {  # and its output projection: the current FlashMHA wrapper nests both under _impl
    "in_proj": "self_attn.out_proj.{}",
    "Wqkv": "self_attn.out_proj.{}",
    "impl_Wqkv": "self_attn._impl.out_proj.{}",
}


def tiny_scgpt_state(
    n_tokens: int,
    *,
    width: int = 16,
    d_hid: int = 32,
    n_layers: int = 2,
    qkv_names: str = "Wqkv",
    batch_norm: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A seeded scGPT state dict written key by key (no model code involved), with decoder heads that the
    adapter must ignore. Matrices are drawn N(0, 0.5^2) so attention is far from uniform."""
    generator = torch.Generator().manual_seed(seed)

    def matrix(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.5

    def vector(size: int, centre: float = 0.0) -> torch.Tensor:
        return centre + torch.randn(size, generator=generator) * 0.1

    state = {
        "encoder.embedding.weight": matrix(n_tokens, width),
        "encoder.enc_norm.weight": vector(width, 1.0),
        "encoder.enc_norm.bias": vector(width),
        "value_encoder.linear1.weight": matrix(width, 1),
        "value_encoder.linear1.bias": vector(width),
        "value_encoder.linear2.weight": matrix(width, width),
        "value_encoder.linear2.bias": vector(width),
        "value_encoder.norm.weight": vector(width, 1.0),
        "value_encoder.norm.bias": vector(width),
    }
    if batch_norm:
        state |= {
            "bn.weight": vector(width, 1.0),
            "bn.bias": vector(width),
            "bn.running_mean": vector(width),
            "bn.running_var": torch.rand(width, generator=generator) + 0.5,
            "bn.num_batches_tracked": torch.tensor(100),
        }
    for i in range(n_layers):
        prefix = f"transformer_encoder.layers.{i}."
        qkv = prefix + SCGPT_QKV_NAMES[qkv_names]
        out_proj = prefix + SCGPT_OUT_PROJ_NAMES[qkv_names]
        state |= {
            qkv.format("weight"): matrix(3 * width, width),
            qkv.format("bias"): vector(3 * width),
            out_proj.format("weight"): matrix(width, width),
            out_proj.format("bias"): vector(width),
            prefix + "linear1.weight": matrix(d_hid, width),
            prefix + "linear1.bias": vector(d_hid),
            prefix + "linear2.weight": matrix(width, d_hid),
            prefix + "linear2.bias": vector(width),
            prefix + "norm1.weight": vector(width, 1.0),
            prefix + "norm1.bias": vector(width),
            prefix + "norm2.weight": vector(width, 1.0),
            prefix + "norm2.bias": vector(width),
        }
    state |= {  # heads that attention extraction never uses (the expression decoder serves output readouts)
        "decoder.fc.0.weight": matrix(width, width),
        "decoder.fc.0.bias": vector(width),
        "cls_decoder._decoder.0.weight": matrix(width, width),
        "mvc_decoder.gene2query.weight": matrix(width, width),
        "decoder.fc.2.weight": matrix(width, width),
        "decoder.fc.2.bias": vector(width),
        "decoder.fc.4.weight": matrix(1, width),
        "decoder.fc.4.bias": vector(1),
    }
    return state


def build_tiny_scgpt(
    folder: Path,
    *,
    n_genes: int = 30,
    qkv_names: str = "Wqkv",
    batch_norm: bool = False,
    max_seq_len: int = 1200,
    n_bins: int = 51,
    specials: tuple[str, ...] = ("<pad>", "<cls>", "<eoc>"),
    seed: int = 0,
) -> Path:
    """A 2-layer, 2-head, width-16 scGPT folder (args.json, vocab.json, best_model.pt) over GENE1..GENEn.

    As in released vocabularies the special tokens come after the genes (<pad> is not id 0).
    """
    vocab = {symbol: i for i, symbol in enumerate(gene_symbols(n_genes) + list(specials))}
    args = {
        "embsize": 16, "nheads": 2, "d_hid": 32, "nlayers": 2, "n_layers_cls": 3, "dropout": 0.2,
        "n_bins": n_bins, "pad_token": "<pad>", "pad_value": -2, "mask_value": -1, "max_seq_len": max_seq_len,
        "input_emb_style": "continuous", "input_style": "binned", "fast_transformer": qkv_names != "in_proj",
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps(args))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    state = tiny_scgpt_state(len(vocab), qkv_names=qkv_names, batch_norm=batch_norm, seed=seed)
    torch.save(state, folder / "best_model.pt")
    return folder


def load_tiny_models(folder: Path) -> dict:
    """One loaded tiny checkpoint of each family, written under `folder`: {"geneformer": ..., "scgpt": ...}."""
    from scinterp_assets.core.models import load_model  # the adapters, not needed by every test module

    return {"geneformer": load_model(build_tiny_geneformer(folder / "geneformer")),
            "scgpt": load_model(build_tiny_scgpt(folder / "scgpt"))}


def edit_json(path: Path, **changes: object) -> None:
    """Set (or, with value None, delete) keys of a JSON object file."""
    value = json.loads(path.read_text())
    for key, new in changes.items():
        if new is None:
            value.pop(key, None)
        else:
            value[key] = new
    path.write_text(json.dumps(value))


def float32_sum_tolerance(count: np.ndarray, n_layers: int, reduction_length: int) -> np.ndarray:
    """Largest difference two float32 computations of a per-cell score in [-1, 1] (an attention probability,
    a cosine) may show once summed over `count` cells in float64. A value passes through `n_layers` layers
    whose longest float32 reduction (a dot product over the width, the feed-forward size or the tokens) has
    `reduction_length` terms; by Higham's bound each reduction carries a relative error of at most
    reduction_length * eps32 to first order, so one computation is within n_layers * reduction_length * eps32,
    two of them (batched and padded, or one cell at a time) within twice that, and the sum over `count`
    cells within `count` times that. Broadcasts over `count` ((G, G) pair counts)."""
    return 2 * np.asarray(count, dtype=np.float64) * n_layers * reduction_length * float(np.finfo(np.float32).eps)


def assert_within(actual: np.ndarray, expected: np.ndarray, tolerance: np.ndarray) -> None:
    """|actual - expected| <= tolerance elementwise (NaN where both are NaN), with the worst offender named."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    both_nan = np.isnan(actual) & np.isnan(expected)
    excess = np.where(both_nan, -np.inf, np.abs(actual - expected) - np.broadcast_to(tolerance, actual.shape))
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (f"{actual[worst]} vs {expected[worst]} at {worst}: off by "
                                f"{abs(actual[worst] - expected[worst]):.3g}, tolerance "
                                f"{np.broadcast_to(tolerance, actual.shape)[worst]:.3g}")
