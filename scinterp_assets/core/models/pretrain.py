"""Write and briefly train a tiny Geneformer-format checkpoint on count data (the embedded offline default).

The folder is indistinguishable in layout from a released V1 Geneformer: config.json + model.safetensors
(BertForMaskedLM) and the three pickled dictionaries, medians stored as numpy float scalars. Training is
Geneformer's masked-token objective on rank-value tokens, seeded and bounded in steps (see training.py for
what makes two runs write the same bytes).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from scinterp_assets.core.attention.streaming import pad_sequences, torch_threads
from scinterp_assets.core.models.geneformer import MASK, PAD, TARGET_SUM, RankValueTokenizer, count_matrix
from scinterp_assets.core.models.training import TrainingBudget, train_masked, write_folder_atomically

# Geneformer's masking recipe (BERT's): of the selected tokens, 80% -> <mask>, 10% -> random gene, 10% kept.
MASK_REPLACE, MASK_RANDOM = 0.8, 0.1
IGNORE_INDEX = -100  # label of unselected positions, skipped by the cross-entropy loss


@dataclass(frozen=True)
class TinyGeneformerSpec:
    """Architecture and training budget of a tiny checkpoint (sizes in tokens / units; seconds wall clock).

    max_seconds: optional wall-clock cap; reaching it before max_steps raises TrainingTimeCapError."""

    n_layers: int = 3
    n_heads: int = 4
    hidden_size: int = 64
    intermediate_size: int = 128
    max_position_embeddings: int = 512
    max_steps: int = 2000
    max_seconds: float | None = None
    batch_size: int = 16
    learning_rate: float = 3e-3  # peak, reached after `warmup_steps` of linear warm-up
    warmup_steps: int = 20
    mask_fraction: float = 0.15
    dropout: float = 0.0  # attention dropout (bernoulli on B*H*n*n) costs a third of a CPU step
    seed: int = 0
    num_threads: int = 2

    def __post_init__(self) -> None:
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of n_heads {self.n_heads}")
        if not 0 < self.mask_fraction < 1:
            raise ValueError(f"mask_fraction must lie in (0, 1), got {self.mask_fraction}")
        sizes = (self.n_layers, self.max_position_embeddings, self.max_steps, self.warmup_steps)
        if min(*sizes, self.batch_size, self.num_threads) < 1:
            raise ValueError("layers, positions, steps, warm-up steps, batch size and threads must be >= 1")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0 or None (no cap), got {self.max_seconds}")


def build_dictionaries(adatas: Sequence[AnnData]) -> tuple[dict, dict, dict]:
    """Token, median and symbol dictionaries over the union of the data sets' var["ensembl_id"].

    Tokens: <pad> 0, <mask> 1, then genes in sorted Ensembl-id order. Median: of the non-zero normalised
    expression (counts / total * 10,000) of the gene over all cells, a numpy float64 like released files;
    a gene never detected gets 1.0 (it never enters a cell's tokens, so its median is never used).
    """
    values: dict[str, list[np.ndarray]] = {}
    symbols: dict[str, str] = {}
    for adata in adatas:
        if "ensembl_id" not in adata.var.columns:
            raise ValueError("each AnnData needs var['ensembl_id'] to build a Geneformer vocabulary")
        counts = count_matrix(adata)
        totals = np.asarray(counts.sum(axis=1)).ravel()
        scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
        normalised = sp.csc_matrix(sp.diags(scale) @ counts)
        for column, (gene, symbol) in enumerate(zip(adata.var["ensembl_id"].astype(str), adata.var_names)):
            column_values = normalised.data[normalised.indptr[column] : normalised.indptr[column + 1]]
            values.setdefault(gene, []).append(column_values[column_values > 0])
            symbols.setdefault(str(symbol), gene)
    genes = sorted(values)
    token_ids = {PAD: 0, MASK: 1} | {gene: 2 + i for i, gene in enumerate(genes)}
    medians = {}
    for gene in genes:
        detected = np.concatenate(values[gene])
        medians[gene] = np.float64(np.median(detected)) if detected.size else np.float64(1.0)
    return token_ids, medians, symbols


def mask_tokens(
    ids: np.ndarray,
    attend: np.ndarray,
    gene_tokens: np.ndarray,
    mask_id: int,
    fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Geneformer-style masking of a padded batch: returns (inputs, labels), both int64 (B, n)."""
    selected = attend & (rng.random(ids.shape) < fraction)
    labels = np.where(selected, ids, IGNORE_INDEX)
    draw = rng.random(ids.shape)
    inputs = np.where(selected & (draw < MASK_REPLACE), mask_id, ids)
    randomised = selected & (draw >= MASK_REPLACE) & (draw < MASK_REPLACE + MASK_RANDOM)
    inputs = np.where(randomised, rng.choice(gene_tokens, size=ids.shape), inputs)
    return inputs, labels


def _mlm_loss(model, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
    """Masked-token cross-entropy (nats) of one batch."""
    inputs, attend, labels = batch
    return model(
        input_ids=torch.from_numpy(inputs),
        attention_mask=torch.from_numpy(attend).long(),
        labels=torch.from_numpy(labels),
    ).loss


def write_geneformer_dictionaries(folder: Path, token_ids: dict, medians: dict, symbols: dict) -> None:
    """The three pickles Geneformer ships beside its weights, under their released (unsuffixed) names:
    token_dictionary (Ensembl id -> token), gene_median_dictionary (Ensembl id -> numpy float median),
    gene_name_id_dict (symbol -> Ensembl id)."""
    for name, dictionary in (
        ("token_dictionary.pkl", token_ids),
        ("gene_median_dictionary.pkl", medians),
        ("gene_name_id_dict.pkl", symbols),
    ):
        (folder / name).write_bytes(pickle.dumps(dictionary, protocol=4))


def train_tiny_geneformer(
    adatas: list[AnnData],
    out_dir: str | Path,
    spec: TinyGeneformerSpec = TinyGeneformerSpec(),
    log: Callable[[str], None] = print,
) -> Path:
    """Build a V1-layout Geneformer checkpoint from raw-count AnnData objects and train it briefly.

    Writes config.json, model.safetensors, token_dictionary.pkl, gene_median_dictionary.pkl,
    gene_name_id_dict.pkl and pretraining.json (spec, steps, initial and final masked-token loss on fixed
    held-in cells). pretraining.json leaves out the wall-clock seconds (they go to `log`), so every file of
    the folder is the same byte for byte wherever the spec runs. Returns the folder.
    Raises TrainingTimeCapError, writing nothing, when spec.max_seconds passes before spec.max_steps.
    """
    from transformers import BertConfig, BertForMaskedLM  # deferred: importing transformers costs seconds

    out_dir = Path(out_dir)
    token_ids, medians, symbols = build_dictionaries(adatas)
    tokenizer = RankValueTokenizer(token_ids, medians, symbols, spec.max_position_embeddings)
    cells = [cell for adata in adatas for cell in tokenizer.tokenize(adata) if len(cell)]
    if not cells:
        raise ValueError("no cell has a detected gene: nothing to train on")
    gene_tokens = np.arange(2, len(token_ids), dtype=np.int64)
    rng = np.random.default_rng(spec.seed)

    def masked_batch(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, attend = pad_sequences([cells[i] for i in indices], token_ids[PAD])
        inputs, labels = mask_tokens(ids, attend, gene_tokens, token_ids[MASK], spec.mask_fraction, rng)
        return inputs, attend, labels

    with torch_threads(spec.num_threads):
        torch.manual_seed(spec.seed)
        config = BertConfig(
            vocab_size=len(token_ids),
            hidden_size=spec.hidden_size,
            num_hidden_layers=spec.n_layers,
            num_attention_heads=spec.n_heads,
            intermediate_size=spec.intermediate_size,
            max_position_embeddings=spec.max_position_embeddings,
            hidden_act="relu",  # as Geneformer
            hidden_dropout_prob=spec.dropout,
            attention_probs_dropout_prob=spec.dropout,
            pad_token_id=token_ids[PAD],
        )
        model = BertForMaskedLM(config)
        result = train_masked(
            model, len(cells), masked_batch, _mlm_loss, lambda batch: bool((batch[2] != IGNORE_INDEX).any()),
            TrainingBudget(spec.max_steps, spec.batch_size, spec.learning_rate, spec.warmup_steps,
                           max_seconds=spec.max_seconds),
            rng, lambda message: log(f"tiny Geneformer: {len(cells)} cells, {len(token_ids)} tokens; {message}"),
        )  # fmt: skip
    log(f"tiny Geneformer: {result.steps} steps in {result.seconds:.1f} s; final masked-token loss "
        f"{result.final_loss:.3f} (initial {result.initial_loss:.3f})")
    record = {"spec": asdict(spec), "n_cells": len(cells), "vocab_size": len(token_ids),
              **result.reproducible_record()}
    return write_geneformer_folder(model, (token_ids, medians, symbols), out_dir, {"pretraining.json": record})


def write_geneformer_folder(model, dictionaries: tuple[dict, dict, dict], out_dir: Path, records: dict[str, dict]) -> Path:
    """A released-layout Geneformer folder, written atomically: the model's config.json and weights, the three
    dictionaries (token ids, medians, symbols) and JSON records (file name -> content) of how it was made."""

    def build(folder: Path) -> None:
        model.save_pretrained(folder)
        write_geneformer_dictionaries(folder, *dictionaries)
        for name, record in records.items():
            (folder / name).write_text(json.dumps(record, indent=2))

    write_folder_atomically(build, out_dir)
    return out_dir
