"""Geneformer: checkpoint folder loading, rank-value tokenisation, and streaming attention extraction.

A Geneformer checkpoint is a Hugging Face BertForMaskedLM folder (config.json + model.safetensors or
pytorch_model.bin) with three pickled dictionaries beside it: token ids, gene medians, gene names.
Tokenisation (FRAMEWORK.md section 4): counts / total counts * 10,000 / gene median, zeros and unknown
genes dropped, sorted descending, truncated to the model input size; V2 adds <cls> and <eos>.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

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
from scinterp_assets.core.models.dictionaries import ModelLoadError, load_pickled_dictionary
from scinterp_assets.core.models.interventions import LayerSites
from scinterp_assets.core.models.random_weights import seeded_initialisation
from scinterp_assets.core.models.readouts import ForwardStates, ReadoutCell

TARGET_SUM = 10_000.0
V1_INPUT_SIZE = 2048  # genes per cell, no special tokens
V2_INPUT_SIZE = 4096  # tokens per cell including <cls> and <eos>
TOKENISE_CHUNK = 256  # cells tokenised at a time when only their lengths are needed
PAD, MASK, CLS, EOS = "<pad>", "<mask>", "<cls>", "<eos>"
DICTIONARY_STEMS = {
    "token": "token_dictionary",
    "median": "gene_median_dictionary",
    "name": "gene_name_id_dict",
}
# Maps retired or alternative Ensembl ids to the id the model was trained on (V2 releases ship it).
OPTIONAL_DICTIONARY_STEMS = {"ensembl_mapping": "ensembl_mapping_dict"}
# Released file names carry the training-corpus suffix (e.g. token_dictionary_gc104M.pkl).
RELEASE_SUFFIXES = ("", "_gc30M", "_gc95M", "_gc104M")
_VERSION_SUFFIX = re.compile(r"\.\d+$")


class CountDataError(ValueError):
    """The expression matrix is not raw counts, which rank-value tokenisation needs."""


class GeneCoverageError(ValueError):
    """Too few of a data set's genes map to the model's vocabulary to extract attention."""


@dataclass(frozen=True)
class GeneCoverage:
    """How many of a data set's genes the model's vocabulary holds.

    unmapped: var names with no token of their own (not in the vocabulary or without a median, or a repeat
    of an earlier var's Ensembl id, whose counts are merged into that var as Geneformer's tokeniser does).
    """

    n_genes: int
    n_mapped: int
    fraction: float
    unmapped: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.n_mapped + len(self.unmapped) != self.n_genes:
            raise ValueError(f"GeneCoverage: {self.n_mapped} mapped + {len(self.unmapped)} unmapped != total")
        expected = self.n_mapped / self.n_genes if self.n_genes else 0.0
        if not np.isclose(self.fraction, expected):
            raise ValueError(f"GeneCoverage.fraction {self.fraction} != n_mapped / n_genes = {expected}")

    def require(self, minimum: float, what: str) -> None:
        """Raise GeneCoverageError unless at least `minimum` of the genes map to the vocabulary. Called before
        any forward pass: evaluable genes are a subset of the mapped ones, so a shortfall here means the
        extraction could only fail its coverage check afterwards."""
        if self.fraction < minimum:
            raise GeneCoverageError(
                f"{what}: {self.n_mapped} of {self.n_genes} genes ({self.fraction:.1%}) map to the model's "
                f"vocabulary, below the configured minimum {minimum:.0%} (contracts.min_evaluable_fraction); "
                f"e.g. unmapped: {', '.join(self.unmapped[:10])}. Nothing was computed or stored. Fix: give the "
                "genes as the model names them (Ensembl ids in var['ensembl_id'] for Geneformer, symbols for "
                "scGPT), or use a checkpoint whose vocabulary covers this screen")


@dataclass(frozen=True)
class GeneMapping:
    """Token of each var of a data set.

    tokens:  int64 (n_vars,) token id of each var, -1 where the var has none
    owner:   bool (n_vars,) True for the var that owns its token (first var of a repeated Ensembl id)
    """

    var_names: tuple[str, ...]
    tokens: np.ndarray
    owner: np.ndarray

    def __post_init__(self) -> None:
        n_vars = len(self.var_names)
        if self.tokens.shape != (n_vars,) or self.owner.shape != (n_vars,):
            raise ValueError(f"GeneMapping arrays must be ({n_vars},)")
        if np.any(self.owner & (self.tokens < 0)):
            raise ValueError("GeneMapping: a var without a token cannot own one")

    def coverage(self) -> GeneCoverage:
        n_genes, n_mapped = len(self.var_names), int(self.owner.sum())
        unmapped = tuple(name for name, own in zip(self.var_names, self.owner) if not own)
        return GeneCoverage(n_genes, n_mapped, n_mapped / n_genes if n_genes else 0.0, unmapped)


def count_matrix(adata: AnnData, layer: str | None = None) -> sp.csr_matrix:
    """adata.X (or a layer) as float64 CSR after checking it holds raw counts; raises CountDataError."""
    field = "X" if layer is None else f"layers[{layer!r}]"
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise CountDataError(f"adata.{field} is empty; the Geneformer tokeniser needs raw counts there")
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    values = matrix.data
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0):
        raise CountDataError(
            f"adata.{field} holds negative or non-finite values; rank-value tokenisation needs raw counts "
            f"(non-negative integers): pass the raw-count matrix as {field}"
        )
    if values.size and np.any(values != np.floor(values)):
        raise CountDataError(
            f"adata.{field} holds non-integer values (looks normalised or log-transformed); a raw-count "
            "layer is required: put the raw counts in X or pass layer='<name of the raw-count layer>'"
        )
    return matrix


class RankValueTokenizer:
    """Geneformer's rank-value encoding over one vocabulary.

    token_ids:  Ensembl id -> token id (special tokens are named <...>)
    medians:    Ensembl id -> median normalised expression (counts per 10,000) of the training corpus
    symbol_ids: gene symbol -> Ensembl id
    max_genes:  genes kept per cell (highest ranks)
    ensembl_mapping: optional Ensembl id -> the id the model was trained on; ids mapped to the same
                 target are collapsed into one token (their counts summed), as Geneformer's V2 tokeniser does
    """

    def __init__(self, token_ids: dict, medians: dict, symbol_ids: dict, max_genes: int,
                 ensembl_mapping: dict | None = None):
        self.token_ids = {str(key): int(value) for key, value in token_ids.items()}
        self.medians = {str(key): float(value) for key, value in medians.items()}
        self.symbol_ids = {str(key): str(value) for key, value in symbol_ids.items()}
        self.max_genes = int(max_genes)
        self.ensembl_mapping = {str(key): str(value) for key, value in (ensembl_mapping or {}).items()}
        self.pad_token = self.token_ids[PAD]
        self.cls_token = self.token_ids.get(CLS)
        self.eos_token = self.token_ids.get(EOS)
        self.is_v2 = self.cls_token is not None and self.eos_token is not None
        # A gene can be ranked only with a positive median (it is the divisor of its normalised expression).
        self._gene_tokens = {
            gene: token
            for gene, token in self.token_ids.items()
            if not gene.startswith("<") and 0 < self.medians.get(gene, np.nan) < np.inf
        }

    def _ensembl_ids(self, adata: AnnData) -> list[str | None]:
        """Ensembl id of each var: var["ensembl_id"], else var_names as ids or as symbols (whichever fits)."""
        if "ensembl_id" in adata.var.columns:
            return [None if pd.isna(value) else str(value) for value in adata.var["ensembl_id"]]
        names = [str(name) for name in adata.var_names]
        as_ids = sum(self._lookup(name) is not None for name in names)
        as_symbols = sum(self._lookup(self.symbol_ids.get(name)) is not None for name in names)
        return names if as_ids >= as_symbols and as_ids > 0 else [self.symbol_ids.get(name) for name in names]

    def _lookup(self, ensembl_id: str | None) -> int | None:
        """Token of an Ensembl id (through the Ensembl mapping when the model ships one), trying it without a
        version suffix (ENSG...12.3 -> ENSG...12) too, and upper-cased, as Geneformer's tokeniser looks ids
        up (V2's mapping lists gene symbols in upper case, so a symbol such as C1orf198 maps as C1ORF198)."""
        if ensembl_id is None:
            return None
        for candidate in (ensembl_id, _VERSION_SUFFIX.sub("", ensembl_id)):
            for key in (candidate, candidate.upper()):
                token = self._gene_tokens.get(self.ensembl_mapping.get(key, key))
                if token is not None:
                    return token
        return None

    def map_genes(self, adata: AnnData) -> GeneMapping:
        looked_up = [self._lookup(ensembl_id) for ensembl_id in self._ensembl_ids(adata)]
        tokens = np.array([-1 if token is None else token for token in looked_up], dtype=np.int64)
        owner = np.zeros(len(tokens), dtype=bool)
        seen: set[int] = set()
        for column, token in enumerate(tokens):
            if token >= 0 and token not in seen:
                owner[column] = True
                seen.add(int(token))
        return GeneMapping(tuple(str(name) for name in adata.var_names), tokens, owner)

    def tokenize(
        self,
        adata: AnnData,
        mapping: GeneMapping | None = None,
        *,
        layer: str | None = None,
        context: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Token ids of each cell (int64 (n_tokens,), highest normalised expression first).

        Ties are broken by token id so the order is deterministic. `context` (bool (n_vars,)) restricts which
        genes may appear; total counts are always taken over all genes of `adata`.
        """
        mapping = mapping if mapping is not None else self.map_genes(adata)
        counts = count_matrix(adata, layer)
        usable = mapping.tokens >= 0 if context is None else (mapping.tokens >= 0) & context
        used_tokens, column_of_var = np.unique(mapping.tokens[usable], return_inverse=True)
        # Sparse projection var -> used token: sums repeated Ensembl ids, drops unknown genes, in one product.
        projection = sp.csr_matrix(
            (np.ones(usable.sum()), (np.flatnonzero(usable), column_of_var)),
            shape=(counts.shape[1], len(used_tokens)),
        )
        token_gene = {token: gene for gene, token in self._gene_tokens.items()}
        medians = np.array([self.medians[token_gene[token]] for token in used_tokens], dtype=np.float64)
        totals = np.asarray(counts.sum(axis=1)).ravel()
        scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
        expression = sp.csr_matrix(sp.diags(scale) @ (counts @ projection) @ sp.diags(1.0 / medians))
        cells = []
        for row in range(expression.shape[0]):
            start, stop = expression.indptr[row], expression.indptr[row + 1]
            values, tokens = expression.data[start:stop], used_tokens[expression.indices[start:stop]]
            keep = values > 0
            values, tokens = values[keep], tokens[keep]
            ranked = tokens[np.lexsort((tokens, -values))][: self.max_genes]
            if self.is_v2:
                ranked = np.concatenate([[self.cls_token], ranked, [self.eos_token]])
            cells.append(ranked.astype(np.int64))
        return cells


    def token_counts(self, adata: AnnData, mapping: GeneMapping | None = None, *, layer: str | None = None,
                     context: np.ndarray | None = None, chunk: int = TOKENISE_CHUNK) -> np.ndarray:
        """int64 (n_cells,): the length `tokenize` gives each cell, computed `chunk` cells at a time so that
        memory does not grow with the number of cells (the tokens themselves are not kept)."""
        mapping = mapping if mapping is not None else self.map_genes(adata)
        return np.array([len(cell) for start in range(0, adata.n_obs, chunk)
                         for cell in self.tokenize(adata[start : start + chunk], mapping, layer=layer, context=context)],
                        dtype=np.int64)  # fmt: skip


def find_dictionaries(folder: Path, dictionary_dir: Path | None = None) -> dict[str, Path]:
    """Paths of the model's dictionaries, beside config.json or else in `dictionary_dir` (Geneformer's
    repository keeps them in its package folder, apart from the model folders). The three of
    DICTIONARY_STEMS are required; the Ensembl mapping dictionary (V2 releases) is used when present.
    ModelLoadError names any that is missing or ambiguous."""
    found, problems = {}, []
    places = [folder] + ([Path(dictionary_dir)] if dictionary_dir is not None else [])
    for kind, stem in {**DICTIONARY_STEMS, **OPTIONAL_DICTIONARY_STEMS}.items():
        for place in places:
            present = [place / f"{stem}{suffix}.pkl" for suffix in RELEASE_SUFFIXES]
            present = [path for path in present if path.is_file()]
            if present:
                break
        if len(present) == 1:
            found[kind] = present[0]
        elif len(present) > 1:
            problems.append(f"several {stem} files {[p.name for p in present]}: keep only the model's own")
        elif kind in DICTIONARY_STEMS:
            problems.append(f"missing {stem}.pkl (or a released variant such as {stem}_gc104M.pkl)")
    if problems:
        where = " or ".join(str(place) for place in places)
        raise ModelLoadError(
            f"{folder}: {'; '.join(problems)} (looked in {where}). Fix: copy the dictionaries that ship with the "
            "model (token_dictionary, gene_median_dictionary, gene_name_id_dict pickles) next to config.json, "
            "or set model_dictionary_dir in the configuration to the folder that holds them."
        )
    return found


def read_gene_vocabulary(folder: Path) -> tuple[dict, dict]:
    """(symbol -> Ensembl id, Ensembl id -> token) of the Geneformer dictionaries in `folder`, read without
    executing code, the tokens restricted to the genes the tokeniser can rank under their own id: a positive
    median, and an Ensembl mapping (where shipped) that keeps the id. ModelLoadError names a missing file."""
    try:
        found = find_dictionaries(Path(folder))
    except ModelLoadError as error:
        raise ModelLoadError(f"gene vocabulary {folder}: {error}. A synthetic cell type's gene_dictionaries "
                             "must name folders holding a Geneformer release's dictionaries") from error
    medians = load_pickled_dictionary(found["median"])
    mapping = load_pickled_dictionary(found["ensembl_mapping"]) if "ensembl_mapping" in found else {}
    tokens = {gene: token for gene, token in load_pickled_dictionary(found["token"]).items()
              if 0 < float(medians.get(gene, np.nan)) < np.inf and mapping.get(gene, gene) == gene}
    return load_pickled_dictionary(found["name"]), tokens


def read_bert_config(folder: Path) -> dict:
    """config.json of a folder as a dict; raises ModelLoadError when unreadable."""
    path = folder / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: cannot read the model configuration ({err})") from err


def _weights_are_safetensors(folder: Path) -> bool:
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return True
    if (folder / "pytorch_model.bin").is_file() or (folder / "pytorch_model.bin.index.json").is_file():
        return False
    raise ModelLoadError(
        f"{folder}: no weights found ({sorted(p.name for p in folder.iterdir())}); a Geneformer folder holds "
        "model.safetensors (preferred) or pytorch_model.bin beside config.json"
    )


def _check_generation(folder: Path, config: dict, token_path: Path, token_ids: dict) -> None:
    """V1 models read 2,048 genes without special tokens; V2 models 4,096 tokens with <cls> and <eos>.
    Dictionaries of one generation next to a model of the other would tokenise cells wrongly."""
    positions = config.get("max_position_embeddings")
    # Released V1 configs say 2,048 positions and V2 configs 4,096; other sizes (tiny models) say nothing.
    if not isinstance(positions, int) or positions < V1_INPUT_SIZE:
        return
    model_generation = "V2" if positions > V1_INPUT_SIZE else "V1"
    dictionary_generation = "V2" if CLS in token_ids and EOS in token_ids else "V1"
    if model_generation != dictionary_generation:
        raise ModelLoadError(
            f"{folder}: config.json describes a {model_generation} model (max_position_embeddings {positions}) "
            f"but {token_path.name} is a {dictionary_generation} dictionary "
            f"({'with' if dictionary_generation == 'V2' else 'without'} <cls>/<eos>, {len(token_ids)} tokens). "
            f"Fix: use the dictionaries released with the model (V1: unsuffixed or _gc30M; V2: _gc104M)"
        )


def load_geneformer(folder: str | Path, dictionary_dir: str | Path | None = None) -> GeneformerModel:
    """Load a Geneformer checkpoint folder without executing code from it (safetensors or weights-only).

    Dictionaries are read beside config.json, else from `dictionary_dir`."""
    from transformers import BertForMaskedLM  # deferred: importing transformers costs seconds

    folder = Path(folder)
    config = read_bert_config(folder)
    if config.get("model_type") != "bert":
        raise ModelLoadError(
            f"{folder / 'config.json'}: model_type is {config.get('model_type')!r}, expected 'bert'"
        )
    paths = find_dictionaries(folder, None if dictionary_dir is None else Path(dictionary_dir))
    token_ids = load_pickled_dictionary(paths["token"])
    if PAD not in token_ids:
        raise ModelLoadError(f"{paths['token']}: no {PAD} token; this is not a Geneformer token dictionary")
    _check_generation(folder, config, paths["token"], token_ids)
    vocab_size = config.get("vocab_size")
    top_token = max(int(token) for token in token_ids.values())
    if not isinstance(vocab_size, int) or len(token_ids) != vocab_size or top_token >= vocab_size:
        raise ModelLoadError(
            f"{folder}: the token dictionary {paths['token'].name} has {len(token_ids)} tokens but "
            f"config.json vocab_size is {vocab_size}; the dictionaries belong to a different model version"
        )
    is_v2 = CLS in token_ids and EOS in token_ids
    max_positions = int(config.get("max_position_embeddings", V2_INPUT_SIZE if is_v2 else V1_INPUT_SIZE))
    max_genes = min(V2_INPUT_SIZE, max_positions) - 2 if is_v2 else min(V1_INPUT_SIZE, max_positions)
    tokenizer = RankValueTokenizer(
        token_ids, load_pickled_dictionary(paths["median"]), load_pickled_dictionary(paths["name"]), max_genes,
        load_pickled_dictionary(paths["ensembl_mapping"]) if "ensembl_mapping" in paths else None,
    )
    try:
        bert, report = BertForMaskedLM.from_pretrained(
            folder,
            attn_implementation="eager",  # the only implementation that returns attention probabilities
            dtype=torch.float32,  # transformers 5 defaults to the checkpoint's own dtype ("auto")
            use_safetensors=_weights_are_safetensors(folder),
            weights_only=True,
            local_files_only=True,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{folder}: cannot load the BERT weights ({type(err).__name__}: {err})") from err
    # from_pretrained re-initialises absent weights at random and only prints a report; an encoder with
    # random layers would yield plausible-looking but meaningless attention. (A missing MLM head is fine.)
    absent = [key for key in report["missing_keys"] if key.startswith("bert.")]
    absent += list(report["mismatched_keys"])
    if absent:
        examples = sorted(map(str, absent))[:3]
        raise ModelLoadError(
            f"{folder}: the weights lack or mis-shape {len(absent)} encoder tensor(s), e.g. {examples}; the "
            "weight file does not match config.json"
        )
    # the masked-language-model head (cls.predictions.*) serves only the output readouts of interventions
    has_mlm_head = not any(str(key).startswith("cls.") for key in report["missing_keys"])
    return GeneformerModel(folder, bert.eval(), tokenizer, has_mlm_head)


class GeneformerModel:
    """A loaded Geneformer checkpoint: tokeniser, BERT encoder and attention extraction."""

    family = "geneformer"
    needs_raw_counts = True  # rank-value encoding divides counts by totals and corpus medians

    def __init__(self, checkpoint_dir: Path, bert, tokenizer: RankValueTokenizer, has_mlm_head: bool = True,
                 random_weights_seed: int | None = None):
        self.checkpoint_dir = checkpoint_dir
        self.has_mlm_head = has_mlm_head
        self.random_weights_seed = random_weights_seed  # None: the checkpoint's trained weights
        self.bert = bert
        self.tokenizer = tokenizer
        self.n_layers = int(bert.config.num_hidden_layers)
        self.n_heads = int(bert.config.num_attention_heads)
        self.version = "V2" if tokenizer.is_v2 else "V1"

    def coverage(self, adata: AnnData) -> GeneCoverage:
        return self.tokenizer.map_genes(adata).coverage()

    def with_random_weights(self, seed: int) -> GeneformerModel:
        """The random-weights twin (core/models/random_weights.py): a BertForMaskedLM of the same config,
        initialised by transformers as an untrained model (normal(0, initializer_range), zero biases), with the
        same tokeniser. Its MLM head is random too, present where the checkpoint has one."""
        from transformers import BertForMaskedLM

        with seeded_initialisation(seed):
            bert = BertForMaskedLM(copy.deepcopy(self.bert.config))
        return GeneformerModel(self.checkpoint_dir, bert.eval(), self.tokenizer, self.has_mlm_head,
                               random_weights_seed=int(seed))

    def _require_coverage(self, adata: AnnData, mapping: GeneMapping) -> None:
        """No gene of the data in the vocabulary means wrong identifiers, not a biological result: say so."""
        coverage = mapping.coverage()
        if coverage.n_mapped:
            return
        ids = "var['ensembl_id']" if "ensembl_id" in adata.var.columns else "var_names (as Ensembl ids or symbols)"
        raise GeneCoverageError(
            f"0 of {coverage.n_genes} genes (0.0%) map to a token of {self.checkpoint_dir}: genes are read from "
            f"{ids}, e.g. {list(mapping.var_names[:5])}, and looked up as Ensembl ids or, through "
            "gene_name_id_dict, as symbols. Fix: add var['ensembl_id'] with Ensembl gene ids (ENSG...) or use "
            "HGNC symbols as var_names"
        )

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
        value_weighted: bool = False,
        groups: CellGroups | None = None,
    ) -> AttentionScores | tuple[AttentionScores, ...]:
        """Summed attention and pair counts over the cells of `adata` for the G `genes` (var names), in
        batches of at most `batch_size` cells and `token_budget` attention entries per head (`plan_batches`).

        Each cell is tokenised over all genes the model knows (`restrict_context=True`: over `genes` only);
        rows and columns are accumulated for `genes` only: per head for the `sources` rows (default every
        gene; the analyses' query genes keep memory at S x G per head), the head mean for every pair. `layer` names a raw-count layer to use instead of
        X. `seed` is accepted for parity with stochastic tokenisers; Geneformer's is deterministic. The
        model is moved to `device`.

        value_weighted=True returns `(attention, value_weighted)`: the second accumulates, over the same cells
        and pairs, the head mean of the cosine similarity of the two genes' per-head context vectors (softmax(QK^T/sqrt(d)) V,
        BertSelfAttention's output before BertSelfOutput). `provenance["score"]` tells the two apart.

        groups (`CellGroups`, membership by input row): also sums one layer's head-mean rows per group of cells in
        the same pass (FRAMEWORK A20-A21); the `GroupedScores` come last in the returned tuple.
        """
        mapping = self.tokenizer.map_genes(adata)
        self._require_coverage(adata, mapping)
        plan = plan_extraction(
            adata.var_names, genes, layers, self.n_layers, var_tokens=mapping.tokens, var_owns_token=mapping.owner,
            vocab_size=self.bert.config.vocab_size, restrict_context=restrict_context,
        )  # fmt: skip
        # Cells are tokenised when their batch runs, so memory does not grow with their number: first only
        # their lengths (for length-sorted batches), then each batch's cells from their rows.
        lengths = self.tokenizer.token_counts(adata, mapping, layer=layer, context=plan.context)
        rows = np.flatnonzero(lengths > 0)  # a cell with no known gene has nothing to attend to

        def encode_batch(batch: np.ndarray):
            cells = self.tokenizer.tokenize(adata[rows[batch]], mapping, layer=layer, context=plan.context)
            ids, mask = pad_sequences(cells, self.tokenizer.pad_token)
            slots = np.where(mask, plan.slot_of_token[ids], NOT_ACCUMULATED)  # specials and padding excluded
            return slots, self.layer_attention(
                torch.from_numpy(ids), torch.from_numpy(mask), plan.layers[-1], with_context=value_weighted
            )

        with torch.inference_mode(), torch_threads(num_threads):
            self.bert.to(device)
            accumulator = AttentionAccumulator(plan.genes, plan.layers, self.n_heads, device,
                                               value_weighted=value_weighted, sources=sources, groups=groups)
            scores = stream_attention(accumulator, lengths[rows].tolist(), batch_size, encode_batch, progress,
                                      token_budget, cell_rows=rows)
        # rank-value encoding and eval-mode BERT are deterministic: the seed changes nothing, but is recorded
        provenance = {"family": self.family, "version": self.version, "seed": int(seed), "layer": layer,
                      "restrict_context": restrict_context, "max_genes": self.tokenizer.max_genes}
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
    ) -> CellEmbeddings:
        """One embedding per cell of `adata` from the final layer's hidden states (a plain forward pass).

        pooling: "auto" (V1: "mean"; V2: "cls"), "cls" (the <cls> position; V2 only) or "mean" (mean over
        the cell's gene tokens, never padding, <cls> or <eos>). Cells are tokenised over all genes the model
        knows, as for attention; cells without any known expressed gene are left out and listed in
        `skipped`. `layer` names a raw-count layer to use instead of X; `seed` is recorded only (the
        tokeniser is deterministic). Batches as `attention_scores` does.
        """
        pooling = resolve_pooling(pooling, "cls" if self.tokenizer.is_v2 else "mean", self.tokenizer.is_v2,
                                  f"a Geneformer {self.version} model")  # fmt: skip
        cells = self.tokenizer.tokenize(adata, layer=layer)
        specials = [t for t in (self.tokenizer.cls_token, self.tokenizer.eos_token) if t is not None]
        has_genes = [bool(np.any(~np.isin(cell, specials))) for cell in cells]
        names = [str(name) for name in adata.obs_names]
        embedded = [cell for cell, keep in zip(cells, has_genes) if keep]

        def embed_batch(batch: np.ndarray) -> torch.Tensor:
            ids, mask = pad_sequences([embedded[i] for i in batch], self.tokenizer.pad_token)
            genes = mask & ~np.isin(ids, specials)
            ids_t, mask_t = torch.from_numpy(ids).to(device), torch.from_numpy(mask).long().to(device)
            hidden = self.bert.bert(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            return pool_hidden(hidden, torch.from_numpy(genes), pooling)

        with torch.inference_mode(), torch_threads(num_threads):
            self.bert.to(device)
            lengths = [len(cell) for cell in embedded]
            values = stream_embeddings(lengths, batch_size, self.bert.config.hidden_size, embed_batch, progress,
                                       token_budget)
        provenance = {"family": self.family, "version": self.version, "seed": int(seed), "layer": layer,
                      "max_genes": self.tokenizer.max_genes, "pooling": pooling,
                      "hidden_states": "final_layer"}  # fmt: skip
        return CellEmbeddings(
            cell_ids=tuple(name for name, keep in zip(names, has_genes) if keep),
            values=values,
            pooling=pooling,
            skipped=tuple(name for name, keep in zip(names, has_genes) if not keep),
            provenance=provenance,
        )

    def intervention_sites(self, layer: int) -> LayerSites:
        """Layer `layer`'s modules for `interventions.intervene`: BertSelfAttention (its value projection
        gives the heads' values), BertSelfOutput.dense (input: the heads' context vectors concatenated) and
        BertOutput.dense (the feed-forward block's output before the residual sum and LayerNorm)."""
        bert_layer = self.bert.bert.encoder.layer[layer]
        return LayerSites(
            attention=bert_layer.attention.self,
            read_call=_bert_attention_call,
            values=bert_layer.attention.self.value,
            head_projection=bert_layer.attention.output.dense,
            mlp_output=bert_layer.output.dense,
        )

    # readouts of interventions (core/models/readouts.py)
    in_silico_readout = "embedding_shift"

    def readout_cells(self, adata: AnnData, *, seed: int = 0, layer: str | None = None) -> list[ReadoutCell]:
        """The cells of `adata` tokenised as for attention, those without a known expressed gene left out;
        `genes` is False at <cls> and <eos>. `seed` is accepted for parity with scGPT (rank-value encoding is
        deterministic)."""
        mapping = self.tokenizer.map_genes(adata)
        self._require_coverage(adata, mapping)
        specials = [t for t in (self.tokenizer.cls_token, self.tokenizer.eos_token) if t is not None]
        cells = [ReadoutCell(cell, None, ~np.isin(cell, specials)) for cell in self.tokenizer.tokenize(adata, mapping, layer=layer)]
        return [cell for cell in cells if cell.genes.any()]

    def token_slots(self, adata: AnnData, genes: Sequence[str]) -> np.ndarray:
        """int64 (vocab,): the index in `genes` (var names of `adata`) of each token, NOT_ACCUMULATED elsewhere."""
        mapping = self.tokenizer.map_genes(adata)
        return plan_extraction(adata.var_names, genes, None, self.n_layers, var_tokens=mapping.tokens,
                               var_owns_token=mapping.owner, vocab_size=self.bert.config.vocab_size,
                               restrict_context=False).slot_of_token  # fmt: skip

    def forward_states(self, cells: Sequence[ReadoutCell], device: str = "cpu") -> ForwardStates:
        """Every layer's output for a batch of cells; outputs are the masked-language-model logits (which need
        the checkpoint's MLM head; hidden states do not)."""
        ids, mask = (torch.from_numpy(array).to(device) for array in pad_sequences([cell.ids for cell in cells], self.tokenizer.pad_token))
        self.bert.to(device)
        output = self.bert.bert(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        return ForwardStates(tuple(output.hidden_states[1:]), mask, self._logits)

    def _logits(self, states: torch.Tensor) -> torch.Tensor:
        if not self.has_mlm_head:
            raise ModelLoadError(
                f"{self.checkpoint_dir}: the weights hold no masked-language-model head (cls.predictions.*), "
                "which this readout needs. Fix: use the BertForMaskedLM checkpoint as released")
        return self.bert.cls(states)

    def layer_probabilities(self, cells: Sequence[ReadoutCell], device: str = "cpu"):
        """(real bool (B, n), a stream of (layer, probabilities (B, H, n, n))) for a batch of cells."""
        ids, mask = (torch.from_numpy(array).to(device) for array in pad_sequences([cell.ids for cell in cells], self.tokenizer.pad_token))
        self.bert.to(device)
        return mask, self.layer_attention(ids, mask, self.n_layers - 1)

    def mask(self, cell: ReadoutCell, positions: np.ndarray) -> tuple[ReadoutCell, np.ndarray]:
        """The cell with the tokens at `positions` replaced by <mask>; targets: the true token ids."""
        ids = cell.ids.copy()
        ids[positions] = self.tokenizer.token_ids[MASK]
        return ReadoutCell(ids, None, cell.genes), cell.ids[positions]

    def masked_errors(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of each masked gene's true token under the logits, and whether it is the top token."""
        targets = targets.to(outputs.device)
        return torch.nn.functional.cross_entropy(outputs, targets, reduction="none"), outputs.argmax(-1) == targets

    def silence(self, cell: ReadoutCell, position: int) -> tuple[ReadoutCell, np.ndarray]:
        """The cell with the gene at `position` deleted (Geneformer's in-silico deletion); kept[i] is the new
        position of original position i (-1 for the deleted one)."""
        kept = np.arange(len(cell.ids)) - (np.arange(len(cell.ids)) > position)
        kept[position] = -1
        return ReadoutCell(np.delete(cell.ids, position), None, np.delete(cell.genes, position)), kept

    def layer_attention(
        self, ids: torch.Tensor, mask: torch.Tensor, last_layer: int, with_context: bool = False
    ):
        """Run the encoder up to `last_layer`, yielding (layer index, probabilities (B, H, n, n)) per layer,
        or with `with_context` (layer index, probabilities, per-head context vectors (B, H, n, d_head)).

        ids: int64 (B, n) token ids; mask: bool (B, n), False at padding. Each layer's probabilities (and
        context vectors: BertSelfAttention's output before BertSelfOutput projects it) are captured from its
        self-attention module by a hook that is removed after the layer has run, so only one layer's
        attention is alive at a time.
        """
        device = self.bert.device
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.bert.bert.embeddings(input_ids=ids)
        # Additive key mask (B, 1, 1, n) as transformers' eager path builds it: dtype minimum at padding.
        key_mask = (~mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        for index, bert_layer in enumerate(self.bert.bert.encoder.layer[: last_layer + 1]):
            captured: list[torch.Tensor] = []
            # BertSelfAttention returns (context (B, n, H * d_head), probabilities); BertLayer drops the
            # probabilities.
            if with_context:
                hook = bert_layer.attention.self.register_forward_hook(
                    lambda _module, _inputs, output, captured=captured: captured.extend(output[:2])
                )
            else:
                hook = bert_layer.attention.self.register_forward_hook(
                    lambda _module, _inputs, output, captured=captured: captured.append(output[1])
                )
            try:
                hidden = bert_layer(hidden, key_mask)
            finally:
                hook.remove()
            if with_context:
                probs, context = captured.pop(), captured.pop()
                batch, length = context.shape[:2]
                yield index, probs, context.view(batch, length, self.n_heads, -1).transpose(1, 2)
                del probs, context  # not alive while the next layer runs
            else:
                yield index, captured.pop()


def _bert_attention_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """BertSelfAttention's (hidden_states, attention_mask) -> (hidden_states, bool (B, n) True at real tokens).

    The eager mask is additive (0 where a key may be attended, the dtype's minimum at padding), (B, 1, 1, n)
    or (B, 1, n, n) with identical rows for a padding mask (row 0, the first token, is never padding); a
    boolean mask is True where a key may be attended; no mask means no padding."""
    hidden = args[0] if args else kwargs["hidden_states"]
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    batch, length = hidden.shape[:2]
    if mask is None:
        return hidden, torch.ones(batch, length, dtype=torch.bool, device=hidden.device)
    keys = mask.reshape(batch, -1, mask.shape[-1])[:, 0, :]
    return hidden, keys if keys.dtype == torch.bool else keys > torch.finfo(keys.dtype).min / 2
