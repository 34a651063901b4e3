"""Write and briefly train a tiny scGPT-format checkpoint on expression data (the embedded offline default).

The folder has a released scGPT's layout: args.json (released key names), vocab.json (gene symbols, then
<pad>, <cls>, <eoc>) and best_model.pt, a plain state dict whose q/k/v projections carry flash-attention
names (`self_attn.Wqkv.*`) as released weights do. Training is scGPT's masked value prediction: a fraction of
each cell's gene values is replaced by the mask value and an MLP decoder (`decoder.fc.*`) predicts their
bins from the encoder output, MSE loss. Seeded and bounded in steps only (an optional wall-clock cap raises
instead of stopping early; see training.py for what makes two runs write the same bytes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from scinterp_assets.core.attention.streaming import torch_threads
from scinterp_assets.core.models.scgpt import (
    ARGS_FILE,
    CLS,
    EOC,
    PAD,
    VOCAB_FILE,
    WEIGHTS_FILE,
    BinnedCell,
    BinnedValueTokenizer,
    EncoderShape,
    ExpressionDecoder,
    ScGPTEncoder,
)
from scinterp_assets.core.models.training import TrainingBudget, train_masked, write_folder_atomically

_IN_PROJ = re.compile(r"^(transformer_encoder\.layers\.\d+\.self_attn\.)in_proj_(weight|bias)$")


@dataclass(frozen=True)
class TinyScGPTSpec:
    """Architecture and training budget of a tiny scGPT checkpoint (sizes in tokens / units; seconds wall)."""

    n_layers: int = 3
    n_heads: int = 4
    d_model: int = 64
    d_hid: int = 128
    max_seq_len: int = 1200  # tokens per cell including <cls>
    n_bins: int = 51
    pad_value: float = -2.0
    mask_value: float = -1.0
    max_steps: int = 300  # ~0.1 s a step on one core for 16 cells of ~250 genes: about 30 s in all
    max_seconds: float | None = None  # wall-clock cap: reaching it before max_steps raises; None: no cap
    batch_size: int = 16
    learning_rate: float = 1e-3  # peak, reached after `warmup_steps` of linear warm-up
    warmup_steps: int = 20
    grad_clip: float = 1.0  # max gradient norm; without it the loss sits at the global-mean plateau for long
    mask_fraction: float = 0.25
    seed: int = 0
    # One thread: a second gains ~25% on an idle 2-core machine but loses several-fold (OpenMP spin-waits)
    # as soon as anything else runs there, e.g. the Dagster daemon or a Geneformer checkpoint in training.
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if not 0 < self.mask_fraction < 1:
            raise ValueError(f"mask_fraction must lie in (0, 1), got {self.mask_fraction}")
        if self.n_bins < 3 or self.max_seq_len < 2:
            raise ValueError("n_bins must be >= 3 and max_seq_len >= 2")
        sizes = (self.n_layers, self.d_hid, self.max_steps, self.warmup_steps, self.batch_size)
        if min(*sizes, self.num_threads) < 1 or self.grad_clip <= 0:
            raise ValueError("layers, d_hid, steps, warm-up, batch, threads and grad_clip must be > 0")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0 or None (no cap), got {self.max_seconds}")


def build_vocab(adatas: Sequence[AnnData]) -> dict[str, int]:
    """Gene symbols (union of var_names, sorted) as ids 0..G-1, then <pad>, <cls>, <eoc> (released order)."""
    genes = sorted({str(name) for adata in adatas for name in adata.var_names})
    specials = [name for name in genes if name.startswith("<") and name.endswith(">")]
    if specials:
        raise ValueError(f"var_names {specials[:3]} look like special tokens; rename those genes")
    return {gene: i for i, gene in enumerate(genes + [PAD, CLS, EOC])}


class MaskedValueModel(nn.Module):
    """Encoder + expression decoder; `state_dict()` keys are scGPT's (encoder part under in_proj names)."""

    def __init__(self, shape: EncoderShape):
        super().__init__()
        self.body = ScGPTEncoder(shape)
        self.decoder = ExpressionDecoder(shape.d_model)

    def forward(self, ids: torch.Tensor, values: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """Predicted values (B, n)."""
        return self.decoder(self.body(ids, values, attend)).squeeze(-1)

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder tensors under scGPT's names with flash q/k/v names (`self_attn.Wqkv.*`), plus decoder.*."""
        state = {_IN_PROJ.sub(r"\1Wqkv.\2", key): value for key, value in self.body.state_dict().items()}
        state |= {f"decoder.{key}": value for key, value in self.decoder.state_dict().items()}
        return {key: value.detach().clone().contiguous() for key, value in state.items()}


def mask_values(
    values: np.ndarray, maskable: np.ndarray, fraction: float, mask_value: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """scGPT-style value masking of a padded batch: returns (inputs float32 (B, n), masked bool (B, n)).

    maskable: bool (B, n), True at gene positions (not <cls>, not padding); each is masked with `fraction`.
    """
    masked = maskable & (rng.random(values.shape) < fraction)
    return np.where(masked, np.float32(mask_value), values).astype(np.float32), masked


def _masked_mse(model: MaskedValueModel, batch) -> torch.Tensor:
    ids, inputs, attend, targets, masked = (torch.from_numpy(array) for array in batch)
    predictions = model(ids, inputs, attend)
    return F.mse_loss(predictions[masked], targets[masked])


def train_tiny_scgpt(
    adatas: list[AnnData],
    out_dir: str | Path,
    spec: TinyScGPTSpec = TinyScGPTSpec(),
    log: Callable[[str], None] = print,
) -> Path:
    """Build an scGPT-format checkpoint from AnnData objects (raw counts or normalised) and train it briefly.

    Genes are the union of the var_names (symbols). Writes args.json, vocab.json, best_model.pt and
    pretraining.json (spec, steps, initial and final masked-value MSE on fixed held-in cells) into a staging
    folder that replaces `out_dir` at once. pretraining.json leaves out the wall-clock seconds (they go to
    `log`), so every file of the folder is the same byte for byte wherever the spec runs. Returns the folder.
    Raises TrainingTimeCapError, writing nothing, when spec.max_seconds passes before spec.max_steps.
    """
    out_dir = Path(out_dir)
    vocab = build_vocab(adatas)
    tokenizer = BinnedValueTokenizer(vocab, spec.n_bins, spec.max_seq_len, spec.pad_value)
    cells: list[BinnedCell] = [
        cell
        for index, adata in enumerate(adatas)
        for cell in tokenizer.tokenize(adata, seed=spec.seed + index)
        if len(cell.ids) > 1  # <cls> alone has nothing to predict
    ]
    if not cells:
        raise ValueError("no cell has a detected gene: nothing to train on")
    rng = np.random.default_rng(spec.seed)

    def masked_batch(indices: np.ndarray) -> tuple[np.ndarray, ...]:
        ids, values, attend = tokenizer.pad([cells[i] for i in indices])
        maskable = attend.copy()
        maskable[:, 0] = False  # <cls>
        inputs, masked = mask_values(values, maskable, spec.mask_fraction, spec.mask_value, rng)
        return ids, inputs, attend, values, masked

    shape = EncoderShape(len(vocab), spec.d_model, spec.n_heads, spec.d_hid, spec.n_layers)
    with torch_threads(spec.num_threads):
        torch.manual_seed(spec.seed)
        model = MaskedValueModel(shape)
        result = train_masked(
            model, len(cells), masked_batch, _masked_mse, lambda batch: bool(batch[-1].any()),
            TrainingBudget(spec.max_steps, spec.batch_size, spec.learning_rate, spec.warmup_steps, spec.grad_clip,
                           max_seconds=spec.max_seconds),
            rng, lambda message: log(f"tiny scGPT: {len(cells)} cells, {len(vocab)} tokens; {message}"),
        )  # fmt: skip
    log(f"tiny scGPT: {result.steps} steps in {result.seconds:.1f} s; final masked-value MSE "
        f"{result.final_loss:.1f} (initial {result.initial_loss:.1f})")
    args = {  # key names as in released args.json files
        "embsize": spec.d_model, "nheads": spec.n_heads, "d_hid": spec.d_hid, "nlayers": spec.n_layers,
        "dropout": 0.0, "n_bins": spec.n_bins, "input_style": "binned", "input_emb_style": "continuous",
        "pad_token": PAD, "pad_value": spec.pad_value, "mask_value": spec.mask_value, "mask_ratio":
        spec.mask_fraction, "max_seq_len": spec.max_seq_len, "fast_transformer": True, "pre_norm": False,
        "lr": spec.learning_rate, "batch_size": spec.batch_size, "seed": spec.seed, "MLM": True,
    }  # fmt: skip
    record = {"spec": asdict(spec), "n_cells": len(cells), "vocab_size": len(vocab), **result.reproducible_record(),
              "loss": "masked-value MSE (bins^2) on fixed held-in cells"}
    state = model.released_state_dict()

    def build(folder: Path) -> None:
        (folder / ARGS_FILE).write_text(json.dumps(args, indent=2))
        (folder / VOCAB_FILE).write_text(json.dumps(vocab, indent=1))
        torch.save(state, folder / WEIGHTS_FILE)
        (folder / "pretraining.json").write_text(json.dumps(record, indent=2))

    write_folder_atomically(build, out_dir)
    return out_dir
