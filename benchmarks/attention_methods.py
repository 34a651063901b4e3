"""What the attention extraction benchmark measures, for each model family it covers.

For each family, a seeded random checkpoint of a released model's size is written in that family's real
on-disk layout and read back through the public `load_model`. The same seeded synthetic count cells are used
throughout, and three methods run on them, each taking (model, adata, genes, setup):

  naive   every layer's attention of a batch kept at once, then a numpy loop over its cells adding each
          cell's gene x gene block into float64 sum and pair-count accumulators
  plain   the model's forward pass without attention capture, same tokenisation and batching: the floor
  eager   where `plain` forms no probabilities (scGPT's fused kernel): the forward that forms every one
          explicitly, as extraction must, and captures nothing (Geneformer's plain forward already is eager)
  engine  the platform's streaming `attention_scores`

naive and engine return an `Accumulated` (plain and eager return None): the naive reference every pair per head, the
engine the source rows per head and the head mean of every pair. benchmarks/attention_extraction.py times
them, checks parity on what both hold and prints the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METHODS = ("naive", "plain", "eager", "engine")
EXPRESSED_SIGMA = 0.35
WEIGHT_STD = 0.06  # wider than the usual 0.02 initialisation, so attention is far from uniform
V1_MAX_POSITIONS = 2048  # Geneformer V1: genes per cell, no special tokens
V2_MAX_POSITIONS = 4096  # Geneformer V2: <cls>, up to 4,094 genes, <eos>
TOKENISATION_SEED = 0  # scGPT's binning tie-breaks and long-cell subsets; the same for all three methods


@dataclass(frozen=True)
class Setup:
    """What defines a run: model family and shape, synthetic data, batching, device. Workers receive it as
    JSON. Build one with `default_setup(model, ...)` to get the family's released shape."""

    model: str = "geneformer"
    vocab: int = 2000  # genes in the model's vocabulary, all of them var names of the synthetic data
    genes: int = 2000  # genes accumulated (G): the most often detected, as a 2,000-HVG universe
    sources: int = 0  # rows the engine keeps per head (a seeded subset of G); 0: every gene
    value_weighted: bool = False  # the engine also accumulates the value-weighted scores in the same pass
    layers: int = 6
    heads: int = 4
    hidden: int = 256
    intermediate: int = 512  # feed-forward width (scGPT's d_hid)
    # expressed genes per cell: log-normal around the median (sigma 0.35: 5-95% ~ 0.56x-1.78x), clipped
    min_expressed: int = 200
    median_expressed: int = 400
    max_expressed: int = 1000
    batch_size: int = 8
    # attention entries per head in one batch (cells x padded tokens^2), as the pipeline's
    # attention.batch_token_budget (default 2^23: 2 cells of 2,048 tokens, 1 of 4,096); 0: no bound
    token_budget: int = 2**23
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads for every method (None: torch's default)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if not 1 <= self.genes <= self.vocab:
            raise ValueError(f"genes must lie in [1, vocab={self.vocab}], got {self.genes}")
        if not 0 <= self.sources <= self.genes:
            raise ValueError(f"sources must lie in [0 (every gene), genes={self.genes}], got {self.sources}")
        low, median, high = self.min_expressed, self.median_expressed, self.max_expressed
        if not 1 <= low <= median <= high <= self.vocab:
            raise ValueError(
                f"need 1 <= min <= median <= max expressed <= vocab; got {low}, {median}, {high} with vocab "
                f"{self.vocab} (a cell expressing more genes than the model's context holds is cut to its "
                "highest-ranked genes, as real full-length cells are)"
            )
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")


@dataclass(frozen=True)
class ModelFamily:
    """Everything the harness needs to know about one model family.

    shape:             the released model the benchmark mimics (layers, heads, hidden, intermediate, vocab) and
                       the study's workload on it (G, sources, full-length cells: expressed genes per cell)
    max_genes:         genes a cell's context holds; a cell expressing more is cut by the tokeniser
    cut:               which genes such a cell keeps, as the header says it
    gene_names:        n -> the first n gene names of the vocabulary (var names of the synthetic data)
    write_checkpoint:  (folder, setup) -> folder, a seeded random checkpoint in the family's real layout
    describe:          setup -> the report header's model line
    tokenised_lengths: (model, adata) -> tokens per cell as all three methods see them
    warm_up:           (model, device) -> one tiny forward pass, so lazy initialisation is not timed
    runners:           method name -> (model, adata, genes, setup) -> result (see the module docstring); no
                       "eager" where "plain" is already the eager forward
    time_target:       engine seconds / eager-forward seconds the family must stay within (issue 12)
    """

    name: str
    title: str
    shape: Mapping[str, int]
    max_genes: int
    cut: str
    gene_names: Callable[[int], list[str]]
    write_checkpoint: Callable[[Path, Setup], Path]
    describe: Callable[[Setup], str]
    tokenised_lengths: Callable[..., list[int]]
    warm_up: Callable[..., None]
    runners: Mapping[str, Callable]
    time_target: float


def default_setup(model: str, **overrides) -> Setup:
    """The family's released shape, with `overrides` (None values ignored) on top."""
    chosen = {key: value for key, value in overrides.items() if value is not None}
    return Setup(model=model, **{**MODELS[model].shape, **chosen})


# ----------------------------------------------------------------------------------------------------------
# Synthetic data, shared by every family


def synthetic_counts(n_cells: int, setup: Setup):
    """Seeded raw counts (AnnData, var_names = the vocabulary's gene names, X float32 CSR).

    Each cell expresses a log-normal number of genes (median `median_expressed`, sigma EXPRESSED_SIGMA,
    clipped to [min_expressed, max_expressed]: right-skewed like detected-gene counts), drawn without
    replacement with gene-specific propensities (some genes in nearly every cell, some rare), counts
    1 + Poisson. Every random stream is drawn in cell order, so the first n cells of a larger set are exactly
    the n-cell set; the counts do not depend on the model family, only the var names do.
    """
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData

    vocab = setup.vocab
    log_propensity, log_level = _gene_propensities(setup)
    lengths_rng = np.random.default_rng([setup.seed, 2])
    drawn = lengths_rng.lognormal(np.log(setup.median_expressed), EXPRESSED_SIGMA, n_cells)
    n_expressed = np.clip(np.rint(drawn), setup.min_expressed, setup.max_expressed).astype(np.int64)
    # Gumbel top-k: the k largest log_propensity + Gumbel noise are k draws without replacement.
    keys = log_propensity + np.random.default_rng([setup.seed, 3]).gumbel(size=(n_cells, vocab))
    order = np.argsort(-keys, axis=1, kind="stable")
    rows = np.repeat(np.arange(n_cells), n_expressed)
    cols = np.concatenate([order[cell, :k] for cell, k in enumerate(n_expressed)]) if n_cells else rows
    size_factor = np.random.default_rng([setup.seed, 4]).lognormal(0.0, 0.3, n_cells)
    counts = 1 + np.random.default_rng([setup.seed, 5]).poisson(np.exp(log_level[cols]) * size_factor[rows])
    matrix = sp.csr_matrix((counts.astype(np.float32), (rows, cols)), shape=(n_cells, vocab))
    return AnnData(
        X=matrix,
        var=pd.DataFrame(index=MODELS[setup.model].gene_names(vocab)),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]),
    )


def _gene_propensities(setup: Setup) -> tuple[np.ndarray, np.ndarray]:
    """Per vocabulary gene: log detection propensity and log expression level (seeded)."""
    genes_rng = np.random.default_rng([setup.seed, 1])
    return genes_rng.normal(0.0, 1.0, setup.vocab), genes_rng.normal(0.5, 1.0, setup.vocab)


def requested_genes(setup: Setup) -> list[str]:
    """The accumulated universe: the `genes` most often detected genes (highest propensity), in vocabulary
    order, as an HVG universe is drawn from detected genes."""
    chosen = np.sort(np.argsort(-_gene_propensities(setup)[0], kind="stable")[: setup.genes])
    names = MODELS[setup.model].gene_names(setup.vocab)
    return [names[i] for i in chosen]


def requested_sources(setup: Setup) -> list[str] | None:
    """The engine's per-head rows: a seeded subset of `sources` universe genes (the perturbed genes and
    reference TFs an analysis reads), or None for every gene (sources 0)."""
    if not setup.sources:
        return None
    genes = requested_genes(setup)
    chosen = np.random.default_rng([setup.seed, 6]).choice(len(genes), size=setup.sources, replace=False)
    return [genes[i] for i in np.sort(chosen)]


@dataclass(frozen=True)
class Accumulated:
    """What a method accumulated: per-head sums (L, H, S, G) of the rows `rows` (indices into the genes; None:
    every gene), pair counts (G, G), the head-mean sums of every pair (L, G, G; None: derived from the
    per-head sums) and the cells processed."""

    sum: np.ndarray
    count: np.ndarray
    n_cells: int
    rows: np.ndarray | None = None
    head_mean_sum: np.ndarray | None = None


def engine_result(scores) -> Accumulated:
    rows = None if scores.sources == scores.genes else scores.source_index
    return Accumulated(np.asarray(scores.sum), scores.count, scores.n_cells, rows,
                       None if rows is None else np.asarray(scores.head_mean_sum))


# ----------------------------------------------------------------------------------------------------------
# Shared pieces of the methods


def synchronise(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def naive_slot_table(model, adata, genes, vocab_size: int) -> np.ndarray:
    """int64 (vocab_size,): accumulator gene index of each token id, -1 for tokens not accumulated."""
    mapping = model.tokenizer.map_genes(adata)
    column = {str(name): i for i, name in enumerate(adata.var_names)}
    slot_of_token = np.full(vocab_size, -1, dtype=np.int64)
    for slot, gene in enumerate(genes):
        if mapping.owner[column[gene]]:
            slot_of_token[mapping.tokens[column[gene]]] = slot
    return slot_of_token


def add_cells_naively(
    total: np.ndarray, count: np.ndarray, attentions: list[np.ndarray], slots: np.ndarray
) -> None:
    """The naive reduction of one batch, one cell at a time, in numpy.

    total: float64 (L, H, G, G) sums; count: int64 (G, G) pair counts; attentions: L x float32 (B, H, n, n),
    query x key; slots: int64 (B, n) accumulator gene of each token position, -1 where nothing is accumulated
    (padding, special tokens, genes outside G).
    """
    for row in range(slots.shape[0]):
        positions = np.flatnonzero(slots[row] >= 0)
        slot = slots[row, positions]
        count[np.ix_(slot, slot)] += 1
        for layer, attention in enumerate(attentions):
            block = attention[row][:, positions[:, None], positions[None, :]]
            # distinct slots within a cell: the fancy-index += touches each pair once
            total[layer][:, slot[:, None], slot[None, :]] += block


# ----------------------------------------------------------------------------------------------------------
# Geneformer (V1 size: 6 layers x 4 heads x 256 wide)


# The released shapes (config.json of each release) and their context lengths
RELEASED_GENEFORMER: dict[str, tuple[dict[str, int], int]] = {
    "v1-10m": ({"layers": 6, "heads": 4, "hidden": 256, "intermediate": 512}, V1_MAX_POSITIONS),
    "v2-104m": ({"layers": 12, "heads": 12, "hidden": 768, "intermediate": 3072}, V2_MAX_POSITIONS),
    "v2-316m": ({"layers": 18, "heads": 18, "hidden": 1152, "intermediate": 4608}, V2_MAX_POSITIONS),
}


def ensembl_ids(n_genes: int) -> list[str]:
    return [f"ENSG{i:011d}" for i in range(1, n_genes + 1)]


def write_geneformer_checkpoint(folder: Path, setup: Setup) -> Path:
    """A seeded random BertForMaskedLM in Geneformer V1's folder layout: config.json, model.safetensors
    and the token_dictionary, gene_median_dictionary and gene_name_id_dict pickles (<pad> 0, <mask> 1,
    genes from 2; 2,048 positions)."""
    return _write_geneformer(folder, setup, ("<pad>", "<mask>"), V1_MAX_POSITIONS)


def write_geneformer_v2_checkpoint(folder: Path, setup: Setup) -> Path:
    """As `write_geneformer_checkpoint`, in V2's layout: <pad> 0, <mask> 1, <cls> 2, <eos> 3, genes from 4;
    4,096 positions (the tokeniser frames each cell with <cls> and <eos>)."""
    return _write_geneformer(folder, setup, ("<pad>", "<mask>", "<cls>", "<eos>"), V2_MAX_POSITIONS)


def _write_geneformer(folder: Path, setup: Setup, specials: tuple[str, ...], max_positions: int) -> Path:
    from scinterp_assets.core.models.pretrain import write_geneformer_dictionaries

    genes = ensembl_ids(setup.vocab)
    token_dictionary = {**{token: i for i, token in enumerate(specials)},
                        **{gene: i + len(specials) for i, gene in enumerate(genes)}}
    rng = np.random.default_rng([setup.seed, 0])
    medians = {gene: np.float32(m) for gene, m in zip(genes, rng.lognormal(0.0, 0.5, setup.vocab))}
    symbols = {f"GENE{i}": gene for i, gene in enumerate(genes, start=1)}
    shape = {key: getattr(setup, key) for key in ("layers", "heads", "hidden", "intermediate")}
    _write_random_bert(folder, len(token_dictionary), shape, max_positions, setup.seed)
    write_geneformer_dictionaries(folder, token_dictionary, medians, symbols)
    return folder


def write_released_geneformer(folder: Path, release: str, dictionary_folder: Path, seed: int = 0) -> Path:
    """A seeded random BertForMaskedLM of a released Geneformer shape (RELEASED_GENEFORMER) in the release's
    folder layout, around the real dictionaries found in `dictionary_folder` (copied byte for byte beside
    config.json, as Geneformer's own dictionaries): the real vocabulary, tokenisation and context length."""
    import shutil

    from scinterp_assets.core.models.dictionaries import load_pickled_dictionary
    from scinterp_assets.core.models.geneformer import find_dictionaries

    shape, max_positions = RELEASED_GENEFORMER[release]
    found = find_dictionaries(Path(dictionary_folder))
    _write_random_bert(folder, len(load_pickled_dictionary(found["token"])), shape, max_positions, seed)
    for path in found.values():
        shutil.copyfile(path, folder / path.name)
    return folder


def _write_random_bert(folder: Path, vocab_size: int, shape: Mapping[str, int], max_positions: int,
                       seed: int) -> None:
    """A seeded random BertForMaskedLM as Geneformer's (relu, pad token 0) saved into `folder`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"],
        max_position_embeddings=max_positions,
        hidden_act="relu",  # as Geneformer V1 and V2
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    _redraw_matrices(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)


def _redraw_matrices(module, seed: int) -> None:
    """Every 2-D parameter (projections, embeddings) drawn N(0, WEIGHT_STD) from a seeded generator."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0.0, WEIGHT_STD, generator=generator)


def _describe_geneformer(setup: Setup) -> str:
    return (
        f"model: random BertForMaskedLM in Geneformer V1 layout, {setup.layers} layers x {setup.heads} "
        f"heads, hidden {setup.hidden}, intermediate {setup.intermediate}, relu, {setup.vocab} genes + "
        f"<pad>/<mask>, weights N(0, {WEIGHT_STD}), seed {setup.seed}; tokens per cell = expressed genes "
        "(rank-value encoding, no special tokens)"
    )


def _describe_geneformer_v2(setup: Setup) -> str:
    return (
        f"model: random BertForMaskedLM in Geneformer V2 layout, {setup.layers} layers x {setup.heads} "
        f"heads, hidden {setup.hidden}, intermediate {setup.intermediate}, relu, {setup.vocab} genes + "
        f"<pad>/<mask>/<cls>/<eos>, {V2_MAX_POSITIONS} positions, weights N(0, {WEIGHT_STD}), seed "
        f"{setup.seed}; tokens per cell = <cls> + expressed genes (rank-value encoding) + <eos>"
    )


def _geneformer_cells(model, adata) -> list[np.ndarray]:
    return [cell for cell in model.tokenizer.tokenize(adata) if len(cell)]


def _geneformer_lengths(model, adata) -> list[int]:
    return [len(cell) for cell in _geneformer_cells(model, adata)]


def _geneformer_warm_up(model, device: str) -> None:
    import torch

    ids = (torch.arange(2, 34, dtype=torch.int64).reshape(2, 16) % model.bert.config.vocab_size).to(device)
    with torch.inference_mode():
        model.bert.to(device)
        model.bert.bert(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool))
    synchronise(device)


def run_geneformer_plain(model, adata, genes, setup: Setup) -> None:
    """Eager forward through every encoder layer without attention capture; same batching as the engine."""
    import torch

    from scinterp_assets.core.attention.streaming import pad_sequences, plan_batches

    del genes
    cells = _geneformer_cells(model, adata)
    device = torch.device(setup.device)
    with torch.inference_mode():
        model.bert.to(device)
        for batch in plan_batches([len(cell) for cell in cells], setup.batch_size, setup.token_budget or None):
            ids, mask = pad_sequences([cells[i] for i in batch], model.tokenizer.pad_token)
            model.bert.bert(
                input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device)
            )
    synchronise(setup.device)


def run_geneformer_naive(model, adata, genes, setup: Setup):
    """output_attentions=True for a batch (all layers kept), then per cell numpy fancy-index accumulation."""
    import torch

    from scinterp_assets.core.attention.streaming import pad_sequences, plan_batches

    cells = _geneformer_cells(model, adata)
    slot_of_token = naive_slot_table(model, adata, genes, model.bert.config.vocab_size)
    total = np.zeros((model.n_layers, model.n_heads, len(genes), len(genes)), dtype=np.float64)
    count = np.zeros((len(genes), len(genes)), dtype=np.int64)
    device = torch.device(setup.device)
    with torch.inference_mode():
        model.bert.to(device)
        for batch in plan_batches([len(cell) for cell in cells], setup.batch_size, setup.token_budget or None):
            ids, mask = pad_sequences([cells[i] for i in batch], model.tokenizer.pad_token)
            output = model.bert.bert(
                input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(mask).to(device),
                output_attentions=True,
            )
            attentions = [layer.cpu().numpy() for layer in output.attentions]  # L x (B, H, n, n) float32
            add_cells_naively(total, count, attentions, np.where(mask, slot_of_token[ids], -1))
            del output, attentions
    return Accumulated(total, count, len(cells))


def run_geneformer_engine(model, adata, genes, setup: Setup) -> Accumulated:
    scores = model.attention_scores(adata, genes, batch_size=setup.batch_size, device=setup.device,
                                    sources=requested_sources(setup), value_weighted=setup.value_weighted,
                                    token_budget=setup.token_budget or None)
    synchronise(setup.device)
    return engine_result(scores[0] if setup.value_weighted else scores)


# ----------------------------------------------------------------------------------------------------------
# scGPT (whole-human size: 12 layers x 8 heads x 512 wide, d_hid 512)


def gene_symbols(n_genes: int) -> list[str]:
    return [f"GENE{i}" for i in range(1, n_genes + 1)]


def write_scgpt_checkpoint(folder: Path, setup: Setup) -> Path:
    """A seeded random scGPT in the released folder layout: args.json (released key names), vocab.json (gene
    symbols, then <pad>, <cls>, <eoc>) and best_model.pt, a plain state dict whose q/k/v projections carry
    flash-attention names (`self_attn.Wqkv.*`) and which holds an expression decoder the adapter ignores.

    Vocabulary and state dict come from the package's scGPT checkpoint writer (scgpt_pretrain: build_vocab,
    MaskedValueModel.released_state_dict), untrained: matrices redrawn N(0, WEIGHT_STD) as for Geneformer.
    """
    import json

    import pandas as pd
    import torch
    from anndata import AnnData

    from scinterp_assets.core.models.scgpt import (
        ARGS_FILE,
        DEFAULT_MAX_SEQ_LEN,
        DEFAULT_N_BINS,
        DEFAULT_PAD_VALUE,
        PAD,
        VOCAB_FILE,
        WEIGHTS_FILE,
        EncoderShape,
    )
    from scinterp_assets.core.models.scgpt_pretrain import MaskedValueModel, build_vocab

    vocab = build_vocab([AnnData(var=pd.DataFrame(index=gene_symbols(setup.vocab)))])
    shape = EncoderShape(len(vocab), setup.hidden, setup.heads, setup.intermediate, setup.layers)
    torch.manual_seed(setup.seed)
    model = MaskedValueModel(shape)
    _redraw_matrices(model, setup.seed)
    args = {  # key names as in released args.json files
        "embsize": setup.hidden, "nheads": setup.heads, "d_hid": setup.intermediate, "nlayers": setup.layers,
        "dropout": 0.0, "n_bins": DEFAULT_N_BINS, "input_style": "binned", "input_emb_style": "continuous",
        "pad_token": PAD, "pad_value": DEFAULT_PAD_VALUE, "mask_value": -1,
        "max_seq_len": DEFAULT_MAX_SEQ_LEN, "fast_transformer": True, "pre_norm": False, "seed": setup.seed,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARGS_FILE).write_text(json.dumps(args, indent=2))
    (folder / VOCAB_FILE).write_text(json.dumps(vocab, indent=1))
    torch.save(model.released_state_dict(), folder / WEIGHTS_FILE)
    return folder


def _describe_scgpt(setup: Setup) -> str:
    from scinterp_assets.core.models.scgpt import DEFAULT_MAX_SEQ_LEN, DEFAULT_N_BINS

    return (
        f"model: random scGPT encoder in scGPT's released layout (args.json, vocab.json, best_model.pt with "
        f"flash-attention Wqkv names), {setup.layers} layers x {setup.heads} heads, width {setup.hidden}, "
        f"d_hid {setup.intermediate}, relu, post-norm, {setup.vocab} genes + <pad>/<cls>/<eoc>, weights "
        f"N(0, {WEIGHT_STD}), seed {setup.seed}; tokens per cell = <cls> + expressed genes (max_seq_len "
        f"{DEFAULT_MAX_SEQ_LEN}), values binned into {DEFAULT_N_BINS} per-cell quantile bins, tie-break seed "
        f"{TOKENISATION_SEED}"
    )


def _scgpt_cells(model, adata) -> list:
    """Binned cells as `attention_scores` makes them (all known genes, seed TOKENISATION_SEED), cells with
    no known expressed gene left out as it does."""
    has_cls = model.tokenizer.cls_id is not None
    cells = model.tokenizer.tokenize(adata, seed=TOKENISATION_SEED)
    return [cell for cell in cells if len(cell.ids) > has_cls]


def _scgpt_lengths(model, adata) -> list[int]:
    return [len(cell.ids) for cell in _scgpt_cells(model, adata)]


def _scgpt_batch(model, cells, batch, device):
    """One padded batch as numpy (ids, values, attend) and as tensors on `device`."""
    import torch

    arrays = model.tokenizer.pad([cells[i] for i in batch])
    return arrays, tuple(torch.from_numpy(array).to(device) for array in arrays)


def _scgpt_warm_up(model, device: str) -> None:
    import torch

    ids = (torch.arange(0, 32, dtype=torch.int64).reshape(2, 16) % model.encoder.shape.vocab_size).to(device)
    with torch.inference_mode():
        model.encoder.to(device)
        model.encoder(ids, torch.ones(ids.shape, device=device), torch.ones_like(ids, dtype=torch.bool))
    synchronise(device)


def run_scgpt_plain(model, adata, genes, setup: Setup) -> None:
    """The encoder's normal forward (fused scaled-dot-product attention, no probabilities); same binning,
    batching and length sorting as the engine."""
    import torch

    from scinterp_assets.core.attention.streaming import plan_batches

    del genes
    cells = _scgpt_cells(model, adata)
    with torch.inference_mode():
        model.encoder.to(setup.device)
        for batch in plan_batches([len(cell.ids) for cell in cells], setup.batch_size, setup.token_budget or None):
            _, tensors = _scgpt_batch(model, cells, batch, setup.device)
            model.encoder(*tensors)
    synchronise(setup.device)


def run_scgpt_eager(model, adata, genes, setup: Setup) -> None:
    """The encoder's layers with explicit attention (q.k, softmax, probabilities times v: what extraction
    computes), nothing captured; same binning, batching and length sorting as the engine."""
    import torch

    from scinterp_assets.core.attention.streaming import plan_batches

    del genes
    cells = _scgpt_cells(model, adata)
    with torch.inference_mode():
        model.encoder.to(setup.device)
        for batch in plan_batches([len(cell.ids) for cell in cells], setup.batch_size, setup.token_budget or None):
            _, (ids, values, attend) = _scgpt_batch(model, cells, batch, setup.device)
            hidden = model.encoder.embed(ids, values)
            for layer in model.encoder.transformer_encoder.layers:
                hidden = layer(hidden, attend, return_probs=True)[0]
    synchronise(setup.device)


def torch_encoder_layers(encoder) -> list:
    """The encoder's layers as torch's own nn.TransformerEncoderLayer (post-norm, relu, batch_first), the
    module scGPT itself is built from; each platform layer's state dict loads into it key for key."""
    from torch import nn

    shape = encoder.shape
    layers = []
    for layer in encoder.transformer_encoder.layers:
        twin = nn.TransformerEncoderLayer(
            shape.d_model, shape.n_heads, shape.d_hid, dropout=0.0, activation="relu", batch_first=True
        )
        twin.load_state_dict(layer.state_dict())  # strict: every key present on both sides
        layers.append(twin.to(next(encoder.parameters()).device).eval())
    return layers


def run_scgpt_naive(model, adata, genes, setup: Setup):
    """Each batch through torch's MultiheadAttention with need_weights=True, average_attn_weights=False, layer
    by layer (all layers' per-head attention of the batch kept), then per cell numpy accumulation."""
    import torch
    import torch.nn.functional as F

    from scinterp_assets.core.attention.streaming import plan_batches

    cells = _scgpt_cells(model, adata)
    slot_of_token = naive_slot_table(model, adata, genes, model.encoder.shape.vocab_size)
    total = np.zeros((model.n_layers, model.n_heads, len(genes), len(genes)), dtype=np.float64)
    count = np.zeros((len(genes), len(genes)), dtype=np.int64)
    with torch.inference_mode():
        model.encoder.to(setup.device)
        layers = torch_encoder_layers(model.encoder)
        for batch in plan_batches([len(cell.ids) for cell in cells], setup.batch_size, setup.token_budget or None):
            (ids, _, attend), (ids_t, values_t, attend_t) = _scgpt_batch(model, cells, batch, setup.device)
            hidden, padding, attentions = model.encoder.embed(ids_t, values_t), ~attend_t, []
            for layer in layers:  # TransformerEncoderLayer's post-norm blocks, asking for the weights
                attended, weights = layer.self_attn(
                    hidden, hidden, hidden, key_padding_mask=padding, need_weights=True,
                    average_attn_weights=False,
                )  # fmt: skip
                hidden = layer.norm1(hidden + attended)
                hidden = layer.norm2(hidden + layer.linear2(F.relu(layer.linear1(hidden))))
                attentions.append(weights.cpu().numpy())  # (B, H, n, n) float32
            # <cls> and <pad> are no requested gene: slot -1
            add_cells_naively(total, count, attentions, np.where(attend, slot_of_token[ids], -1))
            del attentions, weights
    return Accumulated(total, count, len(cells))


def run_scgpt_engine(model, adata, genes, setup: Setup) -> Accumulated:
    scores = model.attention_scores(
        adata, genes, batch_size=setup.batch_size, seed=TOKENISATION_SEED, device=setup.device,
        sources=requested_sources(setup), value_weighted=setup.value_weighted, token_budget=setup.token_budget or None,
    )
    synchronise(setup.device)
    return engine_result(scores[0] if setup.value_weighted else scores)


# ----------------------------------------------------------------------------------------------------------

# The study's workload: a 2,000-gene universe, ~400 query genes (perturbed genes and reference TFs) and cells
# expressing more genes than any context holds (a real cell fills the context; only universe genes among its
# tokens are accumulated). Vocabulary sizes are the released ones: Geneformer V1 gc30M 25,426 tokens and V2
# gc104M 20,275 (less <pad>/<mask>(/<cls>/<eos>)), scGPT whole-human 60,697 (less <pad>/<cls>/<eoc>).
STUDY_WORKLOAD = {"genes": 2000, "sources": 400, "min_expressed": 2500, "median_expressed": 4000,
                  "max_expressed": 8000}

GENEFORMER_RUNNERS = {"naive": run_geneformer_naive, "plain": run_geneformer_plain, "engine": run_geneformer_engine}

MODELS: dict[str, ModelFamily] = {
    "geneformer": ModelFamily(
        name="geneformer",
        title="Geneformer",
        shape={**RELEASED_GENEFORMER["v1-10m"][0], "vocab": 25_424, **STUDY_WORKLOAD},
        max_genes=V1_MAX_POSITIONS,
        cut="the highest-ranked",
        gene_names=ensembl_ids,
        write_checkpoint=write_geneformer_checkpoint,
        describe=_describe_geneformer,
        tokenised_lengths=_geneformer_lengths,
        warm_up=_geneformer_warm_up,
        runners=GENEFORMER_RUNNERS,
        time_target=1.3,
    ),
    "geneformer-v2": ModelFamily(
        name="geneformer-v2",
        title="Geneformer V2",
        shape={**RELEASED_GENEFORMER["v2-316m"][0], "vocab": 20_271,
               **STUDY_WORKLOAD, "min_expressed": 4500, "median_expressed": 6000, "max_expressed": 9000},
        max_genes=V2_MAX_POSITIONS - 2,
        cut="the highest-ranked",
        gene_names=ensembl_ids,
        write_checkpoint=write_geneformer_v2_checkpoint,
        describe=_describe_geneformer_v2,
        tokenised_lengths=_geneformer_lengths,
        warm_up=_geneformer_warm_up,
        runners=GENEFORMER_RUNNERS,
        time_target=1.3,
    ),
    "scgpt": ModelFamily(
        name="scgpt",
        title="scGPT",
        shape={"layers": 12, "heads": 8, "hidden": 512, "intermediate": 512, "vocab": 60_694, **STUDY_WORKLOAD},
        max_genes=1199,  # max_seq_len 1,200 tokens including <cls>
        cut="a seeded random subset, as scGPT's tokeniser draws one",
        gene_names=gene_symbols,
        write_checkpoint=write_scgpt_checkpoint,
        describe=_describe_scgpt,
        tokenised_lengths=_scgpt_lengths,
        warm_up=_scgpt_warm_up,
        runners={"naive": run_scgpt_naive, "plain": run_scgpt_plain, "eager": run_scgpt_eager,
                 "engine": run_scgpt_engine},
        time_target=1.5,
    ),
}
