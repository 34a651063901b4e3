"""Reference networks: the one long schema, gene-identifier harmonisation, and restriction to a gene universe.

A reference table is a long pandas DataFrame, one row per reference relation:

    source      str      TF (relation "regulates"), first gene of a pair ("interacts"), or the gene-set
                         name ("member_of")
    target      str      target gene, second gene of a pair, or the member gene
    resource    str      name the caller gave the reference ("trrust", "dorothea_abc", "string_900", ...)
    sign        int64    +1 activation, -1 repression, 0 unsigned or unknown
    confidence  str      resource-specific evidence label ("" when none): DoRothEA level A-E, TRRUST mode,
                         ChIP cell line
    weight      float64  resource-specific strength, NaN when none: TRRUST PMID count, STRING combined
                         score / 1000 (0-1), OmniPath curation effort; after restriction of gene sets, the
                         number of sets the two genes share
    relation    str      "regulates" (directed TF -> target), "interacts" (undirected pair, listed once when
                         loaded), "member_of" (gene-set membership, expanded to pairs by restriction)

The readers for each published format live in `reference_formats`. `restrict_reference` turns loaded
tables into the ordered gene pairs the scoring compares attention with, and reports how many edges
survive each step.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

REFERENCE_COLUMNS: tuple[str, ...] = ("source", "target", "resource", "sign", "confidence", "weight", "relation")
REFERENCE_DTYPES: dict[str, str] = {
    "source": "object",
    "target": "object",
    "resource": "object",
    "sign": "int64",
    "confidence": "object",
    "weight": "float64",
    "relation": "object",
}
RELATIONS: tuple[str, ...] = ("regulates", "interacts", "member_of")
SIGNS: tuple[int, ...] = (-1, 0, 1)
SURVIVAL_COLUMNS: tuple[str, ...] = ("resource", "step", "edges")
OVERLAP_COLUMNS: tuple[str, ...] = ("resource", "reference_genes", "genes_in_universe")
HARMONISATION_COLUMNS: tuple[str, ...] = ("resource", "relation", "rows_read", "rows_changed", "rows_unmapped")

# Ensembl gene IDs of any species (ENSG, ENSMUSG, ...), with an optional version suffix.
ENSEMBL_GENE_ID = re.compile(r"^(ENS[A-Z]*G\d+)(\.\d+)?$")
# HGNC keeps "orf" lower case in open-reading-frame symbols (C1orf112, CXorf21); upper-casing must not break them.
OPEN_READING_FRAME = re.compile(r"^(C(?:\d+|X|Y))ORF(\d+.*)$")


class ReferenceFormatError(ValueError):
    """A reference file or table does not follow its format; the message names the file or table, the field
    and the fix."""


class ReferenceOverlapError(ValueError):
    """Too few reference edges survive restriction to the gene universe."""


def empty_reference() -> pd.DataFrame:
    """A reference table with no rows, in REFERENCE_COLUMNS order and REFERENCE_DTYPES."""
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in REFERENCE_DTYPES.items()})


def validate_reference(frame: pd.DataFrame, name: str = "reference") -> pd.DataFrame:
    """Check the reference schema and return the table in REFERENCE_COLUMNS order with REFERENCE_DTYPES.

    Raises ReferenceFormatError (a ValueError) naming the table, the column and the problem: missing columns,
    missing or non-string gene names, resources, confidences or relations, signs outside {-1, 0, 1}, weights
    that are not numbers, relations outside RELATIONS. Self pairs and duplicates are allowed here (a loaded
    table keeps one row per row read); `restrict_reference` removes them.
    """
    missing = [column for column in REFERENCE_COLUMNS if column not in frame.columns]
    if missing:
        raise ReferenceFormatError(
            f"{name}: missing column(s) {missing}; a reference table needs {list(REFERENCE_COLUMNS)}")
    for column in ("source", "target", "resource", "confidence", "relation"):
        kind = pd.api.types.infer_dtype(frame[column], skipna=False)
        if len(frame) and kind != "string":
            hint = "; use '' for no confidence" if column == "confidence" else ""
            raise ReferenceFormatError(f"{name}: column {column!r} must hold strings only (found {kind}){hint}")
    for column in ("source", "target", "resource"):
        if (frame[column] == "").any():
            raise ReferenceFormatError(f"{name}: column {column!r} holds empty strings; every row needs a value")
    unknown_relations = sorted(set(pd.unique(frame["relation"])) - set(RELATIONS))
    if unknown_relations:
        raise ReferenceFormatError(
            f"{name}: unknown relation(s) {unknown_relations} in column 'relation'; use one of {list(RELATIONS)}")
    if len(frame) and not pd.api.types.is_numeric_dtype(frame["sign"]):
        raise ReferenceFormatError(f"{name}: column 'sign' must be numeric -1, 0 or 1")
    unknown_signs = sorted(set(pd.unique(frame["sign"].dropna()).tolist()) - set(SIGNS))
    if frame["sign"].isna().any() or unknown_signs:
        raise ReferenceFormatError(
            f"{name}: column 'sign' holds {unknown_signs or 'missing values'}; use -1 (repression), "
            "1 (activation) or 0 (unsigned)")
    if len(frame) and not pd.api.types.is_numeric_dtype(frame["weight"]):
        raise ReferenceFormatError(f"{name}: column 'weight' must be numeric (NaN where a resource has none)")
    return frame.loc[:, list(REFERENCE_COLUMNS)].astype(REFERENCE_DTYPES).reset_index(drop=True)


@dataclass(frozen=True)
class HarmonisedReference:
    """A reference table with harmonised gene names, and per resource what harmonisation did.

    edges   reference table (REFERENCE_COLUMNS) without the rows whose Ensembl ID had no symbol
    counts  one row per resource: relation, rows_read (before), rows_changed (source or target renamed),
            rows_unmapped (dropped: an Ensembl ID absent from the symbol mapping)
    """

    edges: pd.DataFrame
    counts: pd.DataFrame

    def __post_init__(self) -> None:
        _require_columns(self.edges, REFERENCE_COLUMNS, "HarmonisedReference.edges")
        _require_columns(self.counts, HARMONISATION_COLUMNS, "HarmonisedReference.counts")


def harmonise_gene_ids(
    reference: pd.DataFrame,
    *,
    symbol_of_id: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
    case: Literal["upper", "keep"] = "upper",
) -> HarmonisedReference:
    """Rename genes to current official symbols so that they can match a universe of symbols.

    For each gene name (source and target; only the target of "member_of" rows, whose source is a set name):
    1. an Ensembl gene ID (ENSG00000141510.17) loses its version suffix and becomes its symbol when
       `symbol_of_id` is given (keys may carry versions); rows with an ID missing from it are dropped;
    2. case "upper" upper-cases human symbols, keeping HGNC's lower-case "orf" (C1orf112);
    3. an alias becomes its official symbol when `aliases` (alias -> symbol) is given; names that are
       themselves official symbols (values of `aliases`) are never renamed, because many aliases are
       ambiguous with another gene's symbol.
    Ensembl IDs are left untouched when no `symbol_of_id` is given.
    """
    if case not in ("upper", "keep"):
        raise ValueError(f"case must be 'upper' or 'keep', not {case!r}")
    table = validate_reference(reference, "reference to harmonise")
    symbols = None if symbol_of_id is None else {_strip_version(key): value for key, value in symbol_of_id.items()}
    alias_map = None
    if aliases is not None:
        official = {_apply_case(symbol, case) for symbol in aliases.values()}
        alias_map = {_apply_case(alias, case): _apply_case(symbol, case) for alias, symbol in aliases.items()}
        alias_map = {alias: symbol for alias, symbol in alias_map.items() if alias not in official}

    def harmonised_name(name: str) -> str | None:
        ensembl = ENSEMBL_GENE_ID.match(name)
        if ensembl and symbols is None:
            return name
        if ensembl:
            name = symbols.get(ensembl.group(1))
            if name is None:
                return None
        name = _apply_case(name, case)
        return alias_map.get(name, name) if alias_map else name

    is_membership = table["relation"].eq("member_of").to_numpy()
    names = pd.unique(np.concatenate([table["source"].to_numpy()[~is_membership], table["target"].to_numpy()]))
    renamed = {name: harmonised_name(name) for name in names}
    new_source = table["source"].map(renamed).where(~is_membership, table["source"])
    new_target = table["target"].map(renamed)
    unmapped = new_source.isna() | new_target.isna()
    changed = ~unmapped & ((new_source != table["source"]) | (new_target != table["target"]))
    per_resource = pd.DataFrame({"resource": table["resource"], "relation": table["relation"],
                                 "changed": changed, "unmapped": unmapped})
    counts = (per_resource.groupby(["resource", "relation"], sort=False)
              .agg(rows_read=("changed", "size"), rows_changed=("changed", "sum"),
                   rows_unmapped=("unmapped", "sum"))
              .reset_index())
    edges = table.assign(source=new_source, target=new_target)[~unmapped.to_numpy()]
    return HarmonisedReference(edges=validate_reference(edges, "harmonised reference"),
                               counts=counts.loc[:, list(HARMONISATION_COLUMNS)].astype(
                                   {"rows_read": "int64", "rows_changed": "int64", "rows_unmapped": "int64"}))


@dataclass(frozen=True)
class RestrictedReference:
    """Reference edges inside a gene universe, with what survived each step.

    edges          ordered gene pairs (REFERENCE_COLUMNS), unique per (source, target, resource), no self
                   pairs, both genes in the universe; relation "regulates" or "interacts" (gene sets become
                   "interacts" with weight = number of shared sets)
    survival       resource, step, edges: the row count after each step (see `restrict_reference`)
    overlap        resource, reference_genes (distinct genes of the reference after harmonisation),
                   genes_in_universe (how many of them are in the universe)
    universe_size  distinct genes in the universe
    """

    edges: pd.DataFrame
    survival: pd.DataFrame
    overlap: pd.DataFrame
    universe_size: int

    def __post_init__(self) -> None:
        _require_columns(self.edges, REFERENCE_COLUMNS, "RestrictedReference.edges")
        _require_columns(self.survival, SURVIVAL_COLUMNS, "RestrictedReference.survival")
        _require_columns(self.overlap, OVERLAP_COLUMNS, "RestrictedReference.overlap")
        if self.edges.duplicated(["source", "target", "resource"]).any():
            raise ReferenceFormatError("RestrictedReference.edges: duplicate (source, target, resource) rows")
        if (self.edges["source"] == self.edges["target"]).any():
            raise ReferenceFormatError("RestrictedReference.edges: self pairs (source == target)")


def restrict_reference(
    reference: pd.DataFrame | HarmonisedReference,
    universe: Sequence[str],
    *,
    min_targets_per_tf: int = 3,
    tfs: Collection[str] | None = None,
    gene_set_size: tuple[int, int] = (5, 500),
) -> RestrictedReference:
    """Restrict every resource of a reference table to the gene universe and count what survives each step.

    Each resource must hold one relation (load OmniPath transcriptional and post-translational rows as two
    resources). Steps recorded in `survival`, in order:
      all relations:  "read" (rows before harmonisation), "harmonised" (only when `reference` is a
                      HarmonisedReference)
      "regulates":    "in_universe" (both genes), "self_pairs_dropped", "duplicates_dropped" (first row kept;
                      sign +1 and -1 both present -> 0, otherwise the non-zero sign if any), "tf_list"
                      (sources in `tfs`; only when given), "tf_min_targets" (sources with >= min_targets_per_tf
                      targets left)
      "interacts":    "in_universe", "self_pairs_dropped", "duplicates_dropped" (unordered pairs, signs merged
                      as above), "both_orientations" (each pair as two ordered pairs)
      "member_of":    "set_size" (membership rows of sets whose library size, in distinct genes, lies in
                      `gene_set_size` inclusive), "in_universe" (membership rows), "duplicates_dropped"
                      (membership rows), "co_membership_pairs" (ordered pairs of genes sharing a set, one row
                      per pair, weight = number of shared sets, relation "interacts", sign 0)
    A resource with no gene in the universe yields no edges; `reference_evaluability` reports it.
    """
    if isinstance(reference, HarmonisedReference):
        table, counts = reference.edges, reference.counts
    else:
        table = validate_reference(reference, "reference to restrict")
        counts = None
    relations_per_resource = table.groupby("resource", sort=False)["relation"].unique()
    mixed = {resource: list(values) for resource, values in relations_per_resource.items() if len(values) > 1}
    if mixed:
        raise ReferenceFormatError(
            f"reference to restrict: resource(s) {mixed} mix relations; load each relation as its own resource")
    universe_genes = pd.Index(pd.unique(np.asarray(universe, dtype=object)))
    tf_set = None if tfs is None else set(tfs)

    pieces, survival, overlap = [], [], []
    if counts is None:
        plan = [(resource, relations[0], None) for resource, relations in relations_per_resource.items()]
    else:
        plan = list(zip(counts["resource"], counts["relation"], counts["rows_read"]))
    for resource, relation, rows_read in plan:
        edges = table[table["resource"] == resource]
        steps = [("read", len(edges) if rows_read is None else int(rows_read))]
        if rows_read is not None:
            steps.append(("harmonised", len(edges)))
        genes = _reference_genes(edges, relation)
        overlap.append((resource, len(genes), int(genes.isin(universe_genes).sum())))
        if relation == "member_of":
            restricted = _restrict_gene_sets(edges, universe_genes, gene_set_size, steps)
        else:
            restricted = _restrict_pairs(edges, relation, universe_genes, min_targets_per_tf, tf_set, steps)
        pieces.append(restricted)
        survival.extend((resource, step, count) for step, count in steps)

    edges = pd.concat([empty_reference(), *pieces], ignore_index=True)
    return RestrictedReference(
        edges=validate_reference(edges, "restricted reference"),
        survival=pd.DataFrame(survival, columns=list(SURVIVAL_COLUMNS)).astype({"edges": "int64"}),
        overlap=pd.DataFrame(overlap, columns=list(OVERLAP_COLUMNS)),
        universe_size=len(universe_genes),
    )


EVALUABILITY_COLUMNS = ("resource", "edges", "reference_genes", "genes_in_universe", "evaluable", "reason")


UNIVERSE_FIX = ("Check that the reference and the screen use the same identifiers (symbols vs Ensembl ids) and "
                "species, or use a larger universe (preprocessing.n_hvg)")


def reference_evaluability(edges: pd.DataFrame, resources: Sequence[str], min_edges: int, *, where: str,
                           overlap: pd.DataFrame | None = None, fix: str = UNIVERSE_FIX) -> pd.DataFrame:
    """One row per resource (EVALUABILITY_COLUMNS): a resource is evaluable when it keeps at least
    `min_edges` edges; otherwise `reason` says how many it keeps `where` (e.g. "in a universe of 290
    genes"), how many of its genes are in the universe (from `overlap`, a RestrictedReference.overlap, when
    given) and `fix`, what to check.

    edges: restricted reference edges (REFERENCE_COLUMNS); resources: every configured resource, including
    those with no edge left."""
    counts = edges["resource"].value_counts()
    genes_of = {} if overlap is None else {row.resource: (int(row.reference_genes), int(row.genes_in_universe))
                                           for row in overlap.itertuples()}
    records = []
    for resource in resources:
        n_edges = int(counts.get(resource, 0))
        reference_genes, genes_in_universe = genes_of.get(resource, (None, None))
        reason = ""
        if n_edges < min_edges:
            found = ("" if reference_genes is None
                     else f": {genes_in_universe:,} of its {reference_genes:,} genes are in the universe (the "
                          "`survival` metadata of reference_edges shows the step that removed its edges)")
            reason = f"keeps {n_edges} edges (minimum {min_edges}) {where}{found}. {fix}"
        records.append((resource, n_edges, reference_genes, genes_in_universe, not reason, reason))
    return pd.DataFrame.from_records(records, columns=list(EVALUABILITY_COLUMNS)).astype(
        {"edges": "int64", "reference_genes": "Int64", "genes_in_universe": "Int64", "evaluable": "bool"})


def require_evaluable(evaluability: pd.DataFrame, required: Collection[str], where: str) -> None:
    """Raise ReferenceOverlapError naming every resource in `required` that `evaluability` marks not
    evaluable, with its reason. where: the cell type (or universe) the evaluation is for."""
    failing = evaluability[evaluability["resource"].isin(list(required)) & ~evaluability["evaluable"]]
    if len(failing):
        reasons = "; ".join(f"{row.resource!r} {row.reason}" for row in failing.itertuples())
        raise ReferenceOverlapError(
            f"required reference(s) not evaluable for {where}: {reasons}. Set `required: false` on the reference "
            "to report it as not evaluable instead and evaluate the others")


def _restrict_pairs(edges: pd.DataFrame, relation: str, universe: pd.Index, min_targets_per_tf: int,
                    tfs: set[str] | None, steps: list[tuple[str, int]]) -> pd.DataFrame:
    """Steps for "regulates" and "interacts" resources; appends (step, rows) to `steps`."""
    edges = edges[edges["source"].isin(universe) & edges["target"].isin(universe)]
    steps.append(("in_universe", len(edges)))
    edges = edges[edges["source"] != edges["target"]]
    steps.append(("self_pairs_dropped", len(edges)))
    if relation == "regulates":
        edges = _drop_duplicate_pairs(edges, edges["source"].to_numpy(), edges["target"].to_numpy())
        steps.append(("duplicates_dropped", len(edges)))
        if tfs is not None:
            edges = edges[edges["source"].isin(tfs)]
            steps.append(("tf_list", len(edges)))
        targets_per_tf = edges.groupby("source")["target"].transform("size")
        edges = edges[targets_per_tf >= min_targets_per_tf]
        steps.append(("tf_min_targets", len(edges)))
        return edges
    source, target = edges["source"].to_numpy(), edges["target"].to_numpy()
    first_is_lower = source < target
    edges = _drop_duplicate_pairs(edges, np.where(first_is_lower, source, target),
                                  np.where(first_is_lower, target, source))
    steps.append(("duplicates_dropped", len(edges)))
    edges = pd.concat([edges, edges.assign(source=edges["target"], target=edges["source"])], ignore_index=True)
    steps.append(("both_orientations", len(edges)))
    return edges


def _drop_duplicate_pairs(edges: pd.DataFrame, first: np.ndarray, second: np.ndarray) -> pd.DataFrame:
    """Keep the first row of each (first, second) key; its sign becomes 0 when the duplicates hold both +1
    and -1, otherwise the non-zero sign among them (0 when none)."""
    keys = pd.DataFrame({"first": first, "second": second,
                         "positive": edges["sign"].to_numpy() > 0, "negative": edges["sign"].to_numpy() < 0})
    grouped = keys.groupby(["first", "second"], sort=False)
    any_positive = grouped["positive"].transform("any").to_numpy()
    any_negative = grouped["negative"].transform("any").to_numpy()
    merged_sign = np.where(any_positive & any_negative, 0, np.where(any_positive, 1, np.where(any_negative, -1, 0)))
    keep = ~keys.duplicated(["first", "second"]).to_numpy()
    return edges.assign(sign=merged_sign)[keep]


def _restrict_gene_sets(memberships: pd.DataFrame, universe: pd.Index, gene_set_size: tuple[int, int],
                        steps: list[tuple[str, int]]) -> pd.DataFrame:
    """Steps for "member_of" resources: size filter on the full library, universe, then co-membership pairs."""
    smallest, largest = gene_set_size
    library_size = memberships.groupby("source")["target"].transform("nunique")
    memberships = memberships[(library_size >= smallest) & (library_size <= largest)]
    steps.append(("set_size", len(memberships)))
    memberships = memberships[memberships["target"].isin(universe)]
    steps.append(("in_universe", len(memberships)))
    memberships = memberships.drop_duplicates(["source", "target"])
    steps.append(("duplicates_dropped", len(memberships)))
    pairs = co_membership_pairs(memberships["source"].to_numpy(), memberships["target"].to_numpy())
    steps.append(("co_membership_pairs", len(pairs)))
    resource = memberships["resource"].iloc[0] if len(memberships) else ""
    return pairs.assign(resource=resource, sign=0, confidence="", relation="interacts")


def co_membership_pairs(set_names: np.ndarray, genes: np.ndarray) -> pd.DataFrame:
    """Ordered pairs of distinct genes that share at least one set.

    set_names, genes  equal-length arrays, one (set, member gene) membership per position, without duplicates
    returns           DataFrame with source, target (str) and weight (float64, number of sets holding both),
                      sorted by (source, target) codes; n members of a set give n * (n - 1) ordered pairs
    Vectorised: every membership is repeated once per member of its set, so the cost is the sum of squared
    set sizes.
    """
    if len(genes) == 0:
        return pd.DataFrame({"source": pd.Series(dtype=object), "target": pd.Series(dtype=object),
                             "weight": pd.Series(dtype=np.float64)})
    set_codes, _ = pd.factorize(pd.Series(set_names, dtype=object))
    gene_codes, gene_names = pd.factorize(pd.Series(genes, dtype=object))
    order = np.argsort(set_codes, kind="stable")
    set_codes, gene_codes = set_codes[order], gene_codes[order]
    set_sizes = np.bincount(set_codes)
    set_starts = np.cumsum(set_sizes) - set_sizes
    partners_per_row = set_sizes[set_codes]
    row_of_pair = np.repeat(np.arange(len(gene_codes)), partners_per_row)
    pair_offsets = np.cumsum(partners_per_row) - partners_per_row
    position_in_set = np.arange(len(row_of_pair)) - pair_offsets[row_of_pair]
    partner_row = set_starts[set_codes[row_of_pair]] + position_in_set
    source_codes, target_codes = gene_codes[row_of_pair], gene_codes[partner_row]
    distinct = source_codes != target_codes
    n_genes = len(gene_names)
    pair_codes = source_codes[distinct].astype(np.int64) * n_genes + target_codes[distinct]
    unique_codes, shared_sets = np.unique(pair_codes, return_counts=True)
    names = np.asarray(gene_names, dtype=object)
    return pd.DataFrame({"source": names[unique_codes // n_genes], "target": names[unique_codes % n_genes],
                         "weight": shared_sets.astype(np.float64)})


def _reference_genes(edges: pd.DataFrame, relation: str) -> pd.Index:
    """Distinct genes of one resource (members only for gene sets, whose sources are set names)."""
    if relation == "member_of":
        return pd.Index(pd.unique(edges["target"].to_numpy()))
    return pd.Index(pd.unique(np.concatenate([edges["source"].to_numpy(), edges["target"].to_numpy()])))


def _strip_version(identifier: str) -> str:
    match = ENSEMBL_GENE_ID.match(identifier)
    return match.group(1) if match else identifier


def _apply_case(symbol: str, case: Literal["upper", "keep"]) -> str:
    if case == "keep":
        return symbol
    return OPEN_READING_FRAME.sub(r"\1orf\2", symbol.upper())


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ReferenceFormatError(f"{name}: missing column(s) {missing}; expected {list(columns)}")
