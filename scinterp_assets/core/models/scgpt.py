"""scGPT: checkpoint folder loading, per-cell value binning, a state-dict-compatible encoder, attention.

A released scGPT checkpoint is a folder with args.json (hyper-parameters), vocab.json (gene symbol -> token
id) and best_model.pt (a plain state dict). The PyPI `scgpt` package does not import on current torch, so
the encoder half of its TransformerModel is re-implemented here under the same parameter names: gene
embedding + LayerNorm, continuous value encoder, optional BatchNorm over the summed embeddings, and a
post-norm ReLU transformer encoder. Released weights name the fused q/k/v projection as flash-attention
does (`self_attn.Wqkv.*`, or `self_attn._impl.Wqkv.*` with `self_attn._impl.out_proj.*` from the current
FlashMHA wrapper); that is a pure rename of `self_attn.in_proj_*` and `self_attn.out_proj.*`.

Tokenisation (FRAMEWORK.md section 4): per cell, the non-zero values of the genes the vocabulary knows are
binned into `n_bins - 1` quantile bins of that cell (ties broken at random, seeded), `<cls>` is prepended,
and a longer cell keeps a seeded random subset of its genes. Attention is recomputed from each layer's q/k
weights, since flash attention returns no probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from scinterp_assets.core.attention.embeddings import (
    CellEmbeddings,
    pool_hidden,
    resolve_pooling,
    stream_embeddings,
)
from scinterp_assets.core.attention.grouped import CellGroups
from scinterp_assets.core.attention.scores import (
    AttentionScores,
)
from scinterp_assets.core.attention.streaming import (
    NOT_ACCUMULATED,
    AttentionAccumulator,
    ProgressCallback,
    labelled_results,
    pad_sequences,
    plan_extraction,
    stream_attention,
    torch_threads,
)
from scinterp_assets.core.models.dictionaries import ModelLoadError
from scinterp_assets.core.models.interventions import LayerSites
from scinterp_assets.core.models.random_weights import seeded_initialisation
from scinterp_assets.core.models.readouts import ForwardStates, ReadoutCell
from scinterp_assets.core.models.geneformer import (
    CountDataError,
    GeneCoverage,
    GeneCoverageError,
    GeneMapping,
)

ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE = "args.json", "vocab.json", "best_model.pt"
PAD, CLS, EOC = "<pad>", "<cls>", "<eoc>"
# Defaults of released args.json files, used when a key is absent (nheads has none: it is required).
DEFAULT_N_BINS, DEFAULT_PAD_VALUE, DEFAULT_MAX_SEQ_LEN, DEFAULT_MASK_VALUE = 51, -2.0, 1200, -1.0
# Used as the padding token when vocab.json has no <pad>: padded positions are masked out of attention by
# position (never by id) and never accumulated, so the embedding row they look up cannot reach a result.
FALLBACK_PAD_ID = 0
VALUE_CLIP = 512.0  # scGPT's continuous value encoder clips its input at 512
BATCH_NORM_EPS = 6.1e-5  # scGPT's BatchNorm1d over the summed embeddings
_QKV_ALIAS = re.compile(r"^(transformer_encoder\.layers\.\d+\.self_attn\.)(?:_impl\.)?Wqkv\.(weight|bias)$")
# the current FlashMHA wrapper nests the output projection as well: self_attn._impl.out_proj.*
_OUT_PROJ_ALIAS = re.compile(r"^(transformer_encoder\.layers\.\d+\.self_attn\.)_impl\.(out_proj\.(?:weight|bias))$")
_LAYER_KEY = re.compile(r"^transformer_encoder\.layers\.(\d+)\.")


# ---------------------------------------------------------------------------------------------------------
# the encoder (parameter names as in scGPT's TransformerModel, q/k/v under torch's in_proj names)


class GeneEncoder(nn.Module):
    """Token embedding followed by LayerNorm: (B, n) int64 -> (B, n, d)."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.enc_norm = nn.LayerNorm(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.enc_norm(self.embedding(ids))


class ContinuousValueEncoder(nn.Module):
    """Binned value (B, n) -> (B, n, d): clip at 512, Linear(1, d), ReLU, Linear(d, d), LayerNorm."""

    def __init__(self, d_model: int):
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.linear1(values.clamp(max=VALUE_CLIP).unsqueeze(-1)))
        return self.norm(self.linear2(hidden))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (rows: q, then k, then v) and key masking."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"width {d_model} is not a multiple of {n_heads} heads")
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (each (B, H, n, d_head)) from the fused projection (rows: q, then k, then v)."""
        batch, length, _ = x.shape
        heads = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(batch, length, 3, self.n_heads, -1)
        q, k, v = heads.permute(2, 0, 3, 1, 4)
        return q, k, v

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """The heads' value vectors, concatenated (B, n, H * d_head): the v rows of the fused projection."""
        width = self.out_proj.in_features
        return F.linear(x, self.in_proj_weight[2 * width :], self.in_proj_bias[2 * width :])

    def probs_and_context(self, x: torch.Tensor, attend: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit attention: probabilities (B, H, n, n), query x key, and per-head context vectors
        probs @ v (B, H, n, d_head), v being the v slice of the fused projection (before out_proj)."""
        q, k, v = self._qkv(x)
        # q scaled before the product, as torch's MultiheadAttention does (same float32 rounding)
        logits = (q * math.sqrt(1.0 / q.shape[-1])) @ k.transpose(-2, -1)
        logits.masked_fill_(~attend[:, None, None, :], float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return probs, probs @ v

    def project(self, context: torch.Tensor) -> torch.Tensor:
        """Per-head context vectors (B, H, n, d_head) -> the attention output (B, n, d) through out_proj."""
        batch, _, length, _ = context.shape
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, -1))

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor, return_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x: (B, n, d); attend: bool (B, n), False at padding (masked as keys).

        Returns the projected context (B, n, d) and, when asked, the probabilities (B, H, n, n), query x key,
        and the per-head context vectors (B, H, n, d_head) (else None, None).
        """
        probs = None
        if return_probs:
            probs, context = self.probs_and_context(x, attend)
        else:  # the fused kernel, for training; it returns no probabilities
            q, k, v = self._qkv(x)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend[:, None, None, :])
        return self.project(context), probs, context if return_probs else None


class EncoderLayer(nn.Module):
    """Post-norm transformer layer as torch's TransformerEncoderLayer(activation=relu, norm_first=False)."""

    def __init__(self, d_model: int, n_heads: int, d_hid: int):
        super().__init__()
        self.self_attn = SelfAttention(d_model, n_heads)
        self.linear1 = nn.Linear(d_model, d_hid)
        self.linear2 = nn.Linear(d_hid, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor, return_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The layer's output (B, n, d) and, with `return_probs`, its attention probabilities (B, H, n, n) and
        per-head context vectors (B, H, n, d_head) (else None, None). Every path calls the attention module,
        so hooks on it (interventions) see every forward pass."""
        attended, probs, context = self.self_attn(x, attend, return_probs)
        return self._update(x, attended), probs, context

    def _update(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Post-norm residual blocks around the projected attention output (B, n, d)."""
        x = self.norm1(x + attended)
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class ExpressionDecoder(nn.Module):
    """scGPT's ExprDecoder (without batch labels or explicit zero probabilities): a gene token's last-layer
    state (.., d) -> its predicted expression value (.., 1). Parameter names as in scGPT (`decoder.fc.*`)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(d_model, d_model), nn.LeakyReLU(), nn.Linear(d_model, d_model), nn.LeakyReLU(),
            nn.Linear(d_model, 1),
        )  # fmt: skip

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.fc(states)


class LayerStack(nn.Module):
    def __init__(self, layers: list[EncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


@dataclass(frozen=True)
class EncoderShape:
    vocab_size: int
    d_model: int
    n_heads: int
    d_hid: int
    n_layers: int
    batch_norm: bool = False


class ScGPTEncoder(nn.Module):
    """The encoder half of scGPT's TransformerModel; `state_dict()` keys are scGPT's (q/k/v as in_proj_*)."""

    def __init__(self, shape: EncoderShape):
        super().__init__()
        self.shape = shape
        self.encoder = GeneEncoder(shape.vocab_size, shape.d_model)
        self.value_encoder = ContinuousValueEncoder(shape.d_model)
        if shape.batch_norm:
            self.bn = nn.BatchNorm1d(shape.d_model, eps=BATCH_NORM_EPS)
        layers = [EncoderLayer(shape.d_model, shape.n_heads, shape.d_hid) for _ in range(shape.n_layers)]
        self.transformer_encoder = LayerStack(layers)

    def embed(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """ids int64 (B, n), values float (B, n) -> layer-0 input (B, n, d)."""
        hidden = self.encoder(ids) + self.value_encoder(values)
        if self.shape.batch_norm:
            hidden = self.bn(hidden.transpose(1, 2)).transpose(1, 2)
        return hidden

    def forward(self, ids: torch.Tensor, values: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """Last layer's output (B, n, d); attend: bool (B, n), False at padding."""
        hidden = self.embed(ids, values)
        for layer in self.transformer_encoder.layers:
            hidden = layer(hidden, attend)[0]
        return hidden

    def layer_attention(
        self, ids: torch.Tensor, values: torch.Tensor, attend: torch.Tensor, last_layer: int,
        with_context: bool = False,
    ):  # fmt: skip
        """Run layers 0..last_layer, yielding (layer index, probabilities (B, H, n, n)), one at a time, or
        with `with_context` (layer index, probabilities, per-head context vectors (B, H, n, d_head))."""
        hidden = self.embed(ids, values)
        for index, layer in enumerate(self.transformer_encoder.layers[: last_layer + 1]):
            hidden, probs, context = layer(hidden, attend, return_probs=True)
            yield (index, probs, context) if with_context else (index, probs)
            del probs, context  # not alive while the next layer runs


# ---------------------------------------------------------------------------------------------------------
# reading the folder


@dataclass(frozen=True)
class ScGPTArgs:
    """What attention extraction needs from args.json (the rest of the file is ignored)."""

    n_heads: int
    n_bins: int = DEFAULT_N_BINS
    pad_token: str = PAD
    pad_value: float = DEFAULT_PAD_VALUE
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    mask_value: float = DEFAULT_MASK_VALUE


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: cannot read the {what} ({type(err).__name__}: {err})") from err


def read_args(path: Path) -> ScGPTArgs:
    """args.json -> ScGPTArgs; ModelLoadError names the file and the key for anything missing or unusable."""
    raw = _read_json(path, "scGPT hyper-parameters")
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object of settings, not a {type(raw).__name__}")
    if "nheads" not in raw:
        raise ModelLoadError(
            f"{path}: no 'nheads' key; the number of attention heads cannot be read from the weights. Fix: "
            "add \"nheads\": <heads> (8 for the released whole-human model) to args.json"
        )

    def integer(key: str, default: int, minimum: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ModelLoadError(f"{path}: '{key}' must be an integer >= {minimum}, found {value!r}")
        return value

    style = raw.get("input_emb_style", "continuous")
    if style != "continuous":
        raise ModelLoadError(
            f"{path}: input_emb_style is {style!r}; only scGPT's 'continuous' value encoder is supported"
        )
    if raw.get("pre_norm", False):
        raise ModelLoadError(f"{path}: pre_norm is true; only the released post-norm encoder is supported")

    def number(key: str, default: float) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelLoadError(f"{path}: '{key}' must be a finite number, found {value!r}")
        return float(value)

    pad_token = raw.get("pad_token", PAD)
    if not isinstance(pad_token, str):
        raise ModelLoadError(f"{path}: 'pad_token' must be a string, found {pad_token!r}")
    return ScGPTArgs(
        n_heads=integer("nheads", 0, 1),
        n_bins=integer("n_bins", DEFAULT_N_BINS, 3),  # at least two quantile edges
        pad_token=pad_token,
        pad_value=number("pad_value", DEFAULT_PAD_VALUE),
        max_seq_len=integer("max_seq_len", DEFAULT_MAX_SEQ_LEN, 2),  # <cls> and one gene
        mask_value=number("mask_value", DEFAULT_MASK_VALUE),  # the input value of a masked gene
    )


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.json (token -> id) with distinct non-negative integer ids."""
    raw = _read_json(path, "scGPT vocabulary")
    if not isinstance(raw, dict) or not raw:
        raise ModelLoadError(f"{path}: expected a non-empty JSON object mapping gene symbols to token ids")
    bad = [key for key, value in raw.items() if type(value) is not int or value < 0]  # bool is not an id
    if bad:
        raise ModelLoadError(
            f"{path}: token ids must be non-negative integers; e.g. {bad[0]!r}: {raw[bad[0]]!r}"
        )
    if len(set(raw.values())) != len(raw):
        raise ModelLoadError(f"{path}: two tokens share an id; every token needs its own embedding row")
    return {str(key): int(value) for key, value in raw.items()}


def with_missing_specials(vocab: dict[str, int], n_rows: int, pad_token: str, path: Path) -> dict[str, int]:
    """The vocabulary as scGPT's own loader completes it: special tokens it lacks (the pad token, <cls>,
    <eoc>, in that order) are appended with the next ids, when the embedding has exactly those extra rows.
    Says so with a UserWarning naming the tokens and ids; otherwise returns the vocabulary unchanged."""
    missing = [token for token in dict.fromkeys((pad_token, CLS, EOC)) if token not in vocab]
    if not missing or len(vocab) + len(missing) != n_rows or max(vocab.values()) != len(vocab) - 1:
        return vocab
    appended = {token: len(vocab) + offset for offset, token in enumerate(missing)}
    warnings.warn(f"{path}: lacks {', '.join(missing)}; appended with ids "
                  f"{', '.join(str(i) for i in appended.values())}, as scGPT's loader does", stacklevel=2)
    return {**vocab, **appended}


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """best_model.pt as a dict of float32 tensors, loaded weights-only (no code from the file can run)."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing; an scGPT folder holds {ARGS_FILE}, {VOCAB_FILE} and it")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights-only refusal or a corrupt file: never retry with unsafe loading
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise ModelLoadError(
            f"{path}: refused: not a plain tensor state dict that torch.load(weights_only=True) accepts "
            f"({type(err).__name__}: {reason}). Nothing from the file was executed. Fix: save the weights "
            "with torch.save(model.state_dict(), 'best_model.pt')"
        ) from None
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path}: holds a {type(loaded).__name__}, not a state dict (name: tensor)")
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors or not all(isinstance(key, str) for key in loaded):
        example = not_tensors[0] if not_tensors else next(k for k in loaded if not isinstance(k, str))
        raise ModelLoadError(
            f"{path}: entry {example!r} is not a named tensor; expected a plain state dict (a training "
            "checkpoint that wraps one must be unwrapped: torch.save(checkpoint['model_state_dict'], ...))"
        )
    if loaded and all(key.startswith("module.") for key in loaded):  # saved from DistributedDataParallel
        loaded = {key.removeprefix("module."): value for key, value in loaded.items()}
    return {key: value.float() if value.is_floating_point() else value for key, value in loaded.items()}


def canonical_weights(state: dict[str, torch.Tensor], n_heads: int, path: Path) -> tuple[EncoderShape, dict]:
    """Encoder shape (from the weights) and the encoder's tensors under ScGPTEncoder's names.

    Flash-attention q/k/v names become in_proj_*; decoders and other heads are dropped. Raises
    ModelLoadError naming the key for a missing tensor or a shape that disagrees with the embedding.
    """
    renamed: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}
    for key, value in state.items():
        canonical = _OUT_PROJ_ALIAS.sub(r"\1\2", _QKV_ALIAS.sub(r"\1in_proj_\2", key))
        if canonical in renamed:
            raise ModelLoadError(
                f"{path}: holds both {original[canonical]} and {key}, two names of the one tensor "
                f"{canonical}; keep only one"
            )
        renamed[canonical], original[canonical] = value, key
    embedding = renamed.get("encoder.embedding.weight")
    if embedding is None or embedding.ndim != 2:
        found = "missing" if embedding is None else f"shape {tuple(embedding.shape)}"
        raise ModelLoadError(f"{path}: encoder.embedding.weight (vocab x width) is {found}")
    vocab_size, d_model = embedding.shape
    indices = sorted({int(m.group(1)) for key in renamed if (m := _LAYER_KEY.match(key))})
    if not indices or indices != list(range(len(indices))):
        raise ModelLoadError(f"{path}: transformer_encoder.layers.<i> must run 0..L-1, found {indices}")
    if d_model % n_heads:
        raise ModelLoadError(
            f"{path}: width {d_model} is not a multiple of args.json nheads {n_heads}; args.json belongs to "
            "a different model"
        )
    d_hid_weight = renamed.get("transformer_encoder.layers.0.linear1.weight")
    if d_hid_weight is None or d_hid_weight.ndim != 2:
        raise ModelLoadError(f"{path}: transformer_encoder.layers.0.linear1.weight is missing or not 2-D")
    shape = EncoderShape(
        vocab_size=int(vocab_size),
        d_model=int(d_model),
        n_heads=n_heads,
        d_hid=int(d_hid_weight.shape[0]),
        n_layers=len(indices),
        batch_norm=any(key.startswith("bn.") for key in renamed),
    )
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        expected = {key: tuple(value.shape) for key, value in ScGPTEncoder(shape).state_dict().items()}
    weights = {}
    for key, expected_shape in expected.items():
        if key not in renamed:
            if key == "bn.num_batches_tracked":  # a counter that eval mode never reads
                continue
            raise ModelLoadError(f"{path}: the encoder tensor {key} is missing (expected {expected_shape})")
        found = tuple(renamed[key].shape)
        if found != expected_shape:
            raise ModelLoadError(f"{path}: {key} has shape {found}, expected {expected_shape}")
        weights[key] = renamed[key]
    return shape, weights


def load_expression_decoder(state: dict[str, torch.Tensor], d_model: int, path: Path) -> tuple[ExpressionDecoder | None, str | None]:
    """The checkpoint's expression decoder (`decoder.fc.*`), or None and why it cannot be used. Attention
    extraction never needs it; the readouts that do (masked values, predicted in-silico change) raise that
    reason. A decoder made for batch labels (input 2 x width) is not supported; an explicit-zero-probability
    head (`decoder.zero_logit.*`) is ignored, as scGPT's own prediction without sampling does."""
    weights = {key.removeprefix("decoder."): value for key, value in state.items() if key.startswith("decoder.fc.")}
    if not weights:
        return None, f"{path} holds no expression decoder (decoder.fc.*)"
    decoder = ExpressionDecoder(d_model)
    expected = {key: tuple(value.shape) for key, value in decoder.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in weights.items()}
    if found != expected:
        return None, (f"{path}: the expression decoder's tensors {found} are not scGPT's ExprDecoder for width "
                      f"{d_model} {expected} (a decoder for batch labels is not supported)")  # fmt: skip
    decoder.load_state_dict(weights)
    return decoder.eval(), None


def load_scgpt(folder: str | Path) -> ScGPTModel:
    """Load an scGPT checkpoint folder (args.json, vocab.json, best_model.pt) without executing code from it.

    Layer count, width, feed-forward size and vocabulary size come from the weights, heads from args.json.
    """
    folder = Path(folder)
    args = read_args(folder / ARGS_FILE)
    vocab = read_vocab(folder / VOCAB_FILE)
    state = load_state_dict(folder / WEIGHTS_FILE)
    shape, weights = canonical_weights(state, args.n_heads, folder / WEIGHTS_FILE)
    vocab = with_missing_specials(vocab, shape.vocab_size, args.pad_token, folder / VOCAB_FILE)
    if len(vocab) != shape.vocab_size or max(vocab.values()) >= shape.vocab_size:
        raise ModelLoadError(
            f"{folder}: {VOCAB_FILE} holds {len(vocab)} tokens (ids up to {max(vocab.values())}) but "
            f"{WEIGHTS_FILE} encoder.embedding.weight has {shape.vocab_size} rows: expected "
            f"{shape.vocab_size} tokens, found {len(vocab)}. The vocabulary belongs to a different model"
        )
    if shape.batch_norm:
        weights.setdefault("bn.num_batches_tracked", torch.tensor(0))
    encoder = ScGPTEncoder(shape)
    encoder.load_state_dict(weights)
    tokenizer = BinnedValueTokenizer(vocab, args.n_bins, args.max_seq_len, args.pad_value, args.pad_token)
    decoder = load_expression_decoder(state, shape.d_model, folder / WEIGHTS_FILE)
    return ScGPTModel(folder, encoder.eval(), tokenizer, args, decoder)


# ---------------------------------------------------------------------------------------------------------
# tokenisation


def expression_matrix(adata: AnnData, layer: str | None = None) -> sp.csr_matrix:
    """adata.X (or a layer) as float64 CSR; raises CountDataError for negative or non-finite values.

    Binning is rank-based within a cell, so raw counts and per-cell normalised (or log1p) values give the
    same bins; negative values (scaled or centred data) have no such reading.
    """
    where = "X" if layer is None else f"layers[{layer!r}]"
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise CountDataError(f"adata.{where} is empty; scGPT binning needs expression values there")
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    if matrix.data.size and (not np.all(np.isfinite(matrix.data)) or matrix.data.min() < 0):
        raise CountDataError(
            f"adata.{where} holds negative or non-finite values; scGPT binning needs non-negative expression "
            f"(raw counts, or normalised / log1p values): pass such a matrix as {where}, or name a layer "
            "with layer='<layer>'"
        )
    return matrix


def bin_values(values: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """scGPT's per-cell quantile binning of one cell's values (float (k,), >= 0) -> int64 (k,) bins.

    Zeros get bin 0. Non-zero values are placed among `n_bins - 1` edges, the quantiles 0, 1/(n_bins - 2),
    ..., 1 of the non-zero values, so non-zero bins lie in [1, n_bins - 1]. A value equal to several edges
    (ties) gets a bin drawn uniformly among those its left and right digitisations allow. One uniform draw
    is taken per non-zero value whether or not it is tied, so the stream of `rng` does not depend on ties.
    """
    bins = np.zeros(values.shape, dtype=np.int64)
    nonzero = np.flatnonzero(values > 0)
    if nonzero.size == 0:
        return bins
    x = values[nonzero]
    edges = np.quantile(x, np.linspace(0.0, 1.0, n_bins - 1))
    left = np.digitize(x, edges)  # edges[i-1] <= x < edges[i]
    right = np.digitize(x, edges, right=True)  # edges[i-1] < x <= edges[i]
    draw = rng.random(x.shape)  # in [0, 1): picks one of right+1 .. left
    bins[nonzero] = np.ceil(left - draw * (left - right)).astype(np.int64)
    return bins


@dataclass(frozen=True)
class BinnedCell:
    """One tokenised cell: ids int64 (n,) and bin values float32 (n,); <cls> (when present) first."""

    ids: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.shape != self.values.shape or self.ids.ndim != 1:
            raise ValueError(f"BinnedCell: ids {self.ids.shape} and values {self.values.shape} must match")


class BinnedValueTokenizer:
    """scGPT's tokenisation over one vocabulary.

    vocab:       token (gene symbol or <special>) -> id
    n_bins:      bins including 0 (zeros); non-zero values go to 1 .. n_bins - 1
    max_seq_len: tokens per cell including <cls> (scGPT's max_len); longer cells keep a random gene subset
    pad_value:   value at padded positions (masked out of attention)
    Padding id: vocab[pad_token], or FALLBACK_PAD_ID (0) when the vocabulary has no pad token. Without a
    <cls> token no class token is prepended.
    """

    def __init__(self, vocab: dict[str, int], n_bins: int, max_seq_len: int, pad_value: float, pad_token=PAD):
        self.vocab = dict(vocab)
        self.n_bins, self.max_seq_len, self.pad_value = int(n_bins), int(max_seq_len), float(pad_value)
        self.pad_id = self.vocab.get(pad_token, FALLBACK_PAD_ID)
        self.cls_id = self.vocab.get(CLS)
        self.max_genes = self.max_seq_len - (self.cls_id is not None)
        self.gene_tokens = {
            token: token_id
            for token, token_id in self.vocab.items()
            if not (token.startswith("<") and token.endswith(">")) and token != pad_token
        }

    def symbols(self, adata: AnnData, symbol_column: str | None = None) -> list[str | None]:
        """Gene symbol of each var: var_names, or var[symbol_column]."""
        if symbol_column is None:
            return [str(name) for name in adata.var_names]
        if symbol_column not in adata.var.columns:
            raise ValueError(
                f"symbol_column {symbol_column!r} is not a column of adata.var (columns: {list(adata.var)})"
            )
        return [None if pd.isna(value) else str(value) for value in adata.var[symbol_column]]

    def map_genes(self, adata: AnnData, symbol_column: str | None = None) -> GeneMapping:
        """Token of each var by symbol; a repeated symbol's values are merged into its first var."""
        looked_up = [self.gene_tokens.get(symbol) for symbol in self.symbols(adata, symbol_column)]
        tokens = np.array([-1 if token is None else token for token in looked_up], dtype=np.int64)
        owner = np.zeros(len(tokens), dtype=bool)
        _, first = np.unique(tokens, return_index=True)
        owner[first] = True
        owner &= tokens >= 0
        return GeneMapping(tuple(str(name) for name in adata.var_names), tokens, owner)

    def tokenize(
        self,
        adata: AnnData,
        mapping: GeneMapping | None = None,
        *,
        seed: int = 0,
        layer: str | None = None,
        context: np.ndarray | None = None,
        include_zero_genes: bool = False,
        cls_value: float = 0.0,
    ) -> list[BinnedCell]:
        """Binned tokens of each cell of `adata`, in cell order; genes in token-id order after <cls>.

        Binning runs over the cell's candidate genes (known to the vocabulary, within `context` (bool
        (n_vars,)) when given, non-zero unless `include_zero_genes`), before a longer cell is cut to a
        random subset of `max_genes`; both random steps draw from one generator seeded by `seed`.
        """
        mapping = mapping if mapping is not None else self.map_genes(adata)
        matrix = expression_matrix(adata, layer)
        usable = mapping.tokens >= 0 if context is None else (mapping.tokens >= 0) & context
        used_tokens, column_of_var = np.unique(mapping.tokens[usable], return_inverse=True)
        projection = sp.csr_matrix(  # var -> used token, summing repeated symbols
            (np.ones(usable.sum()), (np.flatnonzero(usable), column_of_var)),
            shape=(matrix.shape[1], len(used_tokens)),
        )
        expression = sp.csr_matrix(matrix @ projection)
        expression.sort_indices()
        rng = np.random.default_rng(seed)
        cells = []
        for row in range(expression.shape[0]):
            if include_zero_genes:
                tokens, values = used_tokens, expression[row].toarray().ravel()
            else:
                start, stop = expression.indptr[row], expression.indptr[row + 1]
                values, tokens = expression.data[start:stop], used_tokens[expression.indices[start:stop]]
                keep = values > 0
                values, tokens = values[keep], tokens[keep]
            bins = bin_values(values, self.n_bins, rng)
            if len(tokens) > self.max_genes:
                chosen = np.sort(rng.choice(len(tokens), self.max_genes, replace=False))
                tokens, bins = tokens[chosen], bins[chosen]
            ids, binned = tokens.astype(np.int64), bins.astype(np.float32)
            if self.cls_id is not None:
                ids = np.concatenate([[self.cls_id], ids]).astype(np.int64)
                binned = np.concatenate([[cls_value], binned]).astype(np.float32)
            cells.append(BinnedCell(ids, binned))
        return cells

    def pad(self, cells: list[BinnedCell]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids int64 (B, n_max), values float32 (B, n_max) (pad_value at padding), attend bool (B, n_max)."""
        ids, attend = pad_sequences([cell.ids for cell in cells], self.pad_id)
        values = np.full(ids.shape, self.pad_value, dtype=np.float32)
        for row, cell in enumerate(cells):
            values[row, : len(cell.values)] = cell.values
        return ids, values, attend


# ---------------------------------------------------------------------------------------------------------
# the adapter


class ScGPTModel:
    """A loaded scGPT checkpoint: binning tokeniser, encoder and attention extraction."""

    family = "scgpt"
    needs_raw_counts = False  # per-cell value binning is rank-based: normalised or log1p input bins alike
    version = "scGPT"

    def __init__(self, checkpoint_dir: Path, encoder: ScGPTEncoder, tokenizer: BinnedValueTokenizer, args,
                 decoder: tuple[ExpressionDecoder | None, str | None] = (None, "no expression decoder was loaded"),
                 random_weights_seed: int | None = None):  # fmt: skip
        self.checkpoint_dir = checkpoint_dir
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.args = args
        self.decoder, self._decoder_problem = decoder
        self.n_layers = encoder.shape.n_layers
        self.n_heads = encoder.shape.n_heads
        self.random_weights_seed = random_weights_seed  # None: the checkpoint's trained weights

    def with_random_weights(self, seed: int) -> ScGPTModel:
        """The random-weights twin (core/models/random_weights.py): an encoder of the same shape initialised as
        scGPT initialises an untrained TransformerModel on its nn.MultiheadAttention path (gene embeddings
        uniform(-0.1, 0.1); q/k/v xavier-uniform and attention biases zero, as nn.MultiheadAttention; every
        other layer torch's default; scGPT's flash-attention path would draw the fused q/k/v as a plain Linear),
        with the same tokeniser; a random expression decoder where the checkpoint has one."""
        with seeded_initialisation(seed):
            encoder = ScGPTEncoder(self.encoder.shape)
            nn.init.uniform_(encoder.encoder.embedding.weight, -0.1, 0.1)
            for layer in encoder.transformer_encoder.layers:
                nn.init.zeros_(layer.self_attn.out_proj.bias)
            decoder = (None, self._decoder_problem) if self.decoder is None else (
                ExpressionDecoder(self.encoder.shape.d_model).eval(), None)
        return ScGPTModel(self.checkpoint_dir, encoder.eval(), self.tokenizer, self.args, decoder,
                          random_weights_seed=int(seed))

    def intervention_sites(self, layer: int) -> LayerSites:
        """Layer `layer`'s modules for `interventions.intervene`: the self-attention module (called as
        (x, attend, ...)), its output projection (input: the heads' context vectors concatenated) and the
        feed-forward block's second linear map (its output is added to the residual stream before norm2)."""
        encoder_layer = self.encoder.transformer_encoder.layers[layer]
        return LayerSites(
            attention=encoder_layer.self_attn,
            read_call=lambda args, kwargs: (args[0], args[1]),
            values=encoder_layer.self_attn.values,
            head_projection=encoder_layer.self_attn.out_proj,
            mlp_output=encoder_layer.linear2,
        )

    # readouts of interventions (core/models/readouts.py)
    in_silico_readout = "predicted_change"

    def readout_cells(self, adata: AnnData, *, seed: int = 0, layer: str | None = None,
                      symbol_column: str | None = None, include_zero_genes: bool = False,
                      cls_value: float = 0.0) -> list[ReadoutCell]:  # fmt: skip
        """The cells of `adata` tokenised as for attention (same options), those without a known expressed
        gene left out; `genes` is False at <cls>."""
        mapping = self.tokenizer.map_genes(adata, symbol_column)
        self._require_coverage(adata, mapping, symbol_column, 0.0)
        cells = self.tokenizer.tokenize(adata, mapping, seed=seed, layer=layer,
                                        include_zero_genes=include_zero_genes, cls_value=cls_value)  # fmt: skip
        readout = [ReadoutCell(cell.ids, cell.values, cell.ids != self.tokenizer.cls_id) for cell in cells]
        return [cell for cell in readout if cell.genes.any()]

    def token_slots(self, adata: AnnData, genes: Sequence[str], symbol_column: str | None = None) -> np.ndarray:
        """int64 (vocab,): the index in `genes` (var names of `adata`) of each token, NOT_ACCUMULATED elsewhere."""
        mapping = self.tokenizer.map_genes(adata, symbol_column)
        return plan_extraction(adata.var_names, genes, None, self.n_layers, var_tokens=mapping.tokens,
                               var_owns_token=mapping.owner, vocab_size=self.encoder.shape.vocab_size,
                               restrict_context=False).slot_of_token  # fmt: skip

    def forward_states(self, cells: Sequence[ReadoutCell], device: str = "cpu") -> ForwardStates:
        """Every layer's output for a batch of cells; outputs are the expression decoder's predictions."""
        binned = [BinnedCell(cell.ids, cell.values) for cell in cells]
        ids, values, attend = (torch.from_numpy(array).to(device) for array in self.tokenizer.pad(binned))
        self.encoder.to(device)
        hidden, states = self.encoder.embed(ids, values), []
        for layer in self.encoder.transformer_encoder.layers:
            hidden = layer(hidden, attend)[0]
            states.append(hidden)
        return ForwardStates(tuple(states), attend, self._decode)

    def _decode(self, states: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise ModelLoadError(f"{self._decoder_problem}; this readout needs scGPT's expression decoder. Fix: "
                                 "use the released checkpoint's best_model.pt, which holds it")  # fmt: skip
        return self.decoder.to(states.device)(states)

    def layer_probabilities(self, cells: Sequence[ReadoutCell], device: str = "cpu"):
        """(real bool (B, n), a stream of (layer, probabilities (B, H, n, n))) for a batch of cells."""
        binned = [BinnedCell(cell.ids, cell.values) for cell in cells]
        ids, values, attend = (torch.from_numpy(array).to(device) for array in self.tokenizer.pad(binned))
        self.encoder.to(device)
        return attend, self.encoder.layer_attention(ids, values, attend, self.n_layers - 1)

    def mask(self, cell: ReadoutCell, positions: np.ndarray) -> tuple[ReadoutCell, np.ndarray]:
        """The cell with the values at `positions` set to args.json's mask_value; targets: the true values."""
        values = cell.values.copy()
        values[positions] = self.args.mask_value
        return ReadoutCell(cell.ids, values, cell.genes), cell.values[positions].astype(np.float32)

    def masked_errors(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Squared error of each masked gene's predicted value; there is no exact-hit accuracy for a value."""
        return (outputs.squeeze(-1) - targets.to(outputs.device)) ** 2, None

    def silence(self, cell: ReadoutCell, position: int) -> tuple[ReadoutCell, np.ndarray]:
        """The cell with the gene at `position` set to the zero-expression bin (0); positions unchanged."""
        values = cell.values.copy()
        values[position] = 0.0
        return ReadoutCell(cell.ids, values, cell.genes), np.arange(len(cell.ids))

    def coverage(self, adata: AnnData, symbol_column: str | None = None) -> GeneCoverage:
        return self.tokenizer.map_genes(adata, symbol_column).coverage()

    def _require_coverage(
        self, adata: AnnData, mapping: GeneMapping, symbol_column: str | None, minimum: float
    ) -> None:
        coverage = mapping.coverage()
        if coverage.n_mapped and coverage.fraction >= minimum:
            return
        source = "adata.var_names" if symbol_column is None else f"adata.var[{symbol_column!r}]"
        vocabulary = sorted(self.tokenizer.gene_tokens)[:5]
        raise GeneCoverageError(
            f"only {coverage.n_mapped} of {coverage.n_genes} genes ({coverage.fraction:.1%}) map to a token "
            f"of {self.checkpoint_dir / VOCAB_FILE} (required: more than none and >= {minimum:.0%}). scGPT "
            f"maps genes by symbol through {source}, e.g. {list(mapping.var_names[:5])}; the vocabulary "
            f"holds e.g. {vocabulary}. Fix: pass symbol_column='<var column of gene symbols>' (var columns: "
            f"{list(adata.var.columns)}) or use the checkpoint trained on this species' symbols"
        )

    def _tokenisation_provenance(self, seed: int, include_zero_genes: bool, cls_value: float,
                                 symbol_column: str | None, layer: str | None) -> dict:
        """The settings that decide how cells were tokenised, recorded with every result."""
        return {
            "family": self.family,
            "seed": int(seed),
            "n_bins": self.tokenizer.n_bins,
            "max_seq_len": self.tokenizer.max_seq_len,
            "include_zero_genes": include_zero_genes,
            "cls_value": cls_value,
            "symbol_column": symbol_column,
            "layer": layer,
        }

    def attention_scores(
        self,
        adata: AnnData,
        genes: list[str] | tuple[str, ...],
        layers: list[int] | tuple[int, ...] | None = None,
        batch_size: int = 8,
        seed: int = 0,
        device: str = "cpu",
        progress: ProgressCallback | None = None,
        *,
        sources: list[str] | tuple[str, ...] | None = None,
        layer: str | None = None,
        restrict_context: bool = False,
        num_threads: int | None = None,
        token_budget: int | None = None,
        symbol_column: str | None = None,
        include_zero_genes: bool = False,
        cls_value: float = 0.0,
        min_coverage: float = 0.0,
        value_weighted: bool = False,
        groups: CellGroups | None = None,
    ) -> AttentionScores | tuple[AttentionScores, ...]:
        """Summed attention and pair counts over the cells of `adata` for the G `genes` (var names), in
        batches of at most `batch_size` cells and `token_budget` attention entries per head (`plan_batches`).

        Each cell is binned and tokenised over all genes the vocabulary knows (`restrict_context=True`: over
        `genes` only); rows (query = source) and columns (key = target) are accumulated for `genes`, never
        for <cls>: per head for the `sources` rows (default every gene), the head mean for every pair. `seed` drives the random tie-breaking of binning and the gene subset of cells longer than
        max_seq_len. The scores' `provenance` records family, seed and the tokenisation options. Genes map by symbol: var_names or var[symbol_column].
        Raises GeneCoverageError when no gene (or under `min_coverage` of them) maps to the vocabulary.
        Cells without any known expressed gene are skipped.

        value_weighted=True returns `(attention, value_weighted)`: the second accumulates, over the same cells
        and pairs, the head mean of the cosine similarity of the two genes' per-head context vectors (probabilities @ v, v from
        the v slice of the fused in_proj/Wqkv projection, before out_proj). `provenance["score"]` tells the
        two apart.
        """
        mapping = self.tokenizer.map_genes(adata, symbol_column)
        self._require_coverage(adata, mapping, symbol_column, min_coverage)
        plan = plan_extraction(
            adata.var_names, genes, layers, self.n_layers, var_tokens=mapping.tokens, var_owns_token=mapping.owner,
            vocab_size=self.encoder.shape.vocab_size, restrict_context=restrict_context,
        )  # fmt: skip
        cells = self.tokenizer.tokenize(
            adata, mapping, seed=seed, layer=layer, context=plan.context,
            include_zero_genes=include_zero_genes, cls_value=cls_value,
        )  # fmt: skip
        has_cls = self.tokenizer.cls_id is not None
        kept = np.array([i for i, cell in enumerate(cells) if len(cell.ids) > has_cls], dtype=np.int64)
        cells = [cells[i] for i in kept]  # no known gene: nothing to accumulate

        def encode_batch(batch: np.ndarray):
            ids, values, attend = self.tokenizer.pad([cells[i] for i in batch])
            slots = np.where(attend, plan.slot_of_token[ids], NOT_ACCUMULATED)
            if has_cls:
                slots[:, 0] = NOT_ACCUMULATED
            tensors = (torch.from_numpy(array).to(device) for array in (ids, values, attend))
            return slots, self.encoder.layer_attention(*tensors, plan.layers[-1], with_context=value_weighted)

        with torch.inference_mode(), torch_threads(num_threads):
            self.encoder.to(device)
            accumulator = AttentionAccumulator(plan.genes, plan.layers, self.n_heads, device,
                                               value_weighted=value_weighted, sources=sources, groups=groups)
            lengths = [len(cell.ids) for cell in cells]
            scores = stream_attention(accumulator, lengths, batch_size, encode_batch, progress, token_budget,
                                      cell_rows=kept)
        provenance = self._tokenisation_provenance(seed, include_zero_genes, cls_value, symbol_column, layer)
        provenance["restrict_context"] = restrict_context
        return labelled_results(scores, accumulator, provenance, value_weighted)

    def cell_embeddings(
        self,
        adata: AnnData,
        batch_size: int = 8,
        seed: int = 0,
        device: str = "cpu",
        *,
        pooling: str = "auto",
        layer: str | None = None,
        num_threads: int | None = None,
        token_budget: int | None = None,
        progress: ProgressCallback | None = None,
        symbol_column: str | None = None,
        include_zero_genes: bool = False,
        cls_value: float = 0.0,
        min_coverage: float = 0.0,
    ) -> CellEmbeddings:
        """One embedding per cell of `adata` from the encoder's final-layer output (a plain forward pass).

        pooling: "auto" ("cls" when the vocabulary has <cls>, else "mean"), "cls" (position 0, the <cls>
        token) or "mean" (mean over the cell's gene tokens, never padding or <cls>). Cells are binned and
        tokenised as for attention (same `seed`, `layer`, `symbol_column`, `include_zero_genes`, `cls_value`);
        cells without any known expressed gene are left out and listed in `skipped`. Raises
        GeneCoverageError as `attention_scores` does. Batches as `attention_scores` does.
        """
        has_cls = self.tokenizer.cls_id is not None
        pooling = resolve_pooling(pooling, "cls" if has_cls else "mean", has_cls, "this scGPT vocabulary")
        mapping = self.tokenizer.map_genes(adata, symbol_column)
        self._require_coverage(adata, mapping, symbol_column, min_coverage)
        cells = self.tokenizer.tokenize(
            adata, mapping, seed=seed, layer=layer, include_zero_genes=include_zero_genes, cls_value=cls_value
        )
        has_genes = [len(cell.ids) > has_cls for cell in cells]
        names = [str(name) for name in adata.obs_names]
        embedded = [cell for cell, keep in zip(cells, has_genes) if keep]

        def embed_batch(batch: np.ndarray) -> torch.Tensor:
            ids, values, attend = self.tokenizer.pad([embedded[i] for i in batch])
            genes = attend.copy()
            if has_cls:
                genes[:, 0] = False
            tensors = (torch.from_numpy(array).to(device) for array in (ids, values, attend))
            return pool_hidden(self.encoder(*tensors), torch.from_numpy(genes), pooling)

        with torch.inference_mode(), torch_threads(num_threads):
            self.encoder.to(device)
            values = stream_embeddings([len(cell.ids) for cell in embedded], batch_size,
                                       self.encoder.shape.d_model, embed_batch, progress, token_budget)  # fmt: skip
        provenance = self._tokenisation_provenance(seed, include_zero_genes, cls_value, symbol_column, layer)
        provenance |= {"pooling": pooling, "hidden_states": "final_layer"}
        return CellEmbeddings(
            cell_ids=tuple(name for name, keep in zip(names, has_genes) if keep),
            values=values,
            pooling=pooling,
            skipped=tuple(name for name, keep in zip(names, has_genes) if not keep),
            provenance=provenance,
        )
