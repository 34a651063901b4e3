"""Readers for the published reference-network formats, each returning the long reference table.

Every reader takes a path (plain text or gzip, recognised by its magic bytes, whatever the suffix) and the
resource name the caller wants in the `resource` column, and returns one row per row read (after the
reader's own filters) in the schema of `references` (source, target, resource, sign, confidence, weight,
relation). Readers that drop rows they cannot use record how many in `frame.attrs[DROPPED_ROWS]`
({reason: rows}). Any problem with a file raises one ReferenceFormatError naming the file, the field and
the fix.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from scinterp_assets.core.networks.references import ReferenceFormatError, validate_reference

GZIP_MAGIC = b"\x1f\x8b"
DROPPED_ROWS = "dropped_rows"
TRRUST_SIGN_OF_MODE = {"Activation": 1, "Repression": -1, "Unknown": 0}
DOROTHEA_LEVELS = ("A", "B", "C", "D", "E")
OMNIPATH_RELATION_OF_TYPE = {
    "transcriptional": "regulates",
    "mirna_transcriptional": "regulates",
    "post_transcriptional": "regulates",
    "post_translational": "interacts",
}
# UniProt accession pattern (uniprot.org/help/accession_numbers), with an optional isoform suffix.
UNIPROT_ACCESSION = r"^(?:[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9](?:[A-Z][A-Z0-9]{2}[0-9]){1,2})(?:-\d+)?$"
CHUNK_ROWS = 1_000_000

PathLike = str | Path


def read_trrust(path: PathLike, resource: str) -> pd.DataFrame:
    """TRRUST raw download (`trrust_rawdata.human.tsv`): no header; TF, target, mode, ';'-separated PMIDs.

    relation "regulates"; sign +1 Activation, -1 Repression, 0 Unknown; confidence = mode;
    weight = number of PMIDs.
    """
    frame = _read_headerless(path, fields=("tf", "target", "mode", "pmids"))
    unknown_modes = sorted(set(frame["mode"]) - set(TRRUST_SIGN_OF_MODE))
    if unknown_modes:
        raise ReferenceFormatError(
            f"{path}: field 3 (mode) holds {unknown_modes[:5]}, not one of {list(TRRUST_SIGN_OF_MODE)}; "
            "the raw TRRUST download has no header line and tab-separated fields: remove any header and "
            "check the separator")
    return _reference(path, resource, frame["tf"], frame["target"], relation="regulates",
                      sign=frame["mode"].map(TRRUST_SIGN_OF_MODE), confidence=frame["mode"],
                      weight=frame["pmids"].str.findall(r"[^;\s]+").str.len().astype(float))


def read_dorothea(path: PathLike, resource: str, *, levels: Sequence[str] = ("A", "B", "C")) -> pd.DataFrame:
    """DoRothEA regulons (`tf, confidence, target, mor`), keeping the confidence `levels` (A best ... E).

    relation "regulates"; sign = mor; confidence = level; weight NaN.
    """
    unknown_levels = sorted(set(levels) - set(DOROTHEA_LEVELS))
    if unknown_levels:
        raise ReferenceFormatError(f"{path}: unknown DoRothEA level(s) {unknown_levels}; use {list(DOROTHEA_LEVELS)}")
    frame = _read_columns(path, sep="\t", required=("tf", "confidence", "target", "mor"))
    frame = frame[frame["confidence"].isin(levels)]
    return _reference(path, resource, frame["tf"], frame["target"], relation="regulates",
                      sign=np.sign(_numbers(frame, "mor", path)), confidence=frame["confidence"])


def read_collectri(path: PathLike, resource: str) -> pd.DataFrame:
    """CollecTRI as decoupler returns it (`source, target, weight` with weight +1/-1).

    relation "regulates"; sign = sign of weight; weight = |weight|. Complex sources (AP1, NFKB) are kept.
    """
    frame = _read_columns(path, sep="\t", required=("source", "target", "weight"))
    weight = _numbers(frame, "weight", path)
    return _reference(path, resource, frame["source"], frame["target"], relation="regulates",
                      sign=np.sign(weight), weight=weight.abs())


def read_string_symbols(path: PathLike, resource: str, *, min_score: float = 700) -> pd.DataFrame:
    """STRING links already mapped to symbols (`protein1, protein2, score`), score on the 0-1 or the 0-1000
    scale (a file whose scores are all <= 1 is taken as 0-1).

    min_score  lowest combined score kept, on the 0-1000 scale (700 high, 900 highest confidence)
    relation "interacts" (rows as listed); sign 0; weight = score on the 0-1 scale.
    """
    _check_string_min_score(min_score)
    frame = _read_columns(path, sep="\t", required=("protein1", "protein2", "score"))
    score = _numbers(frame, "score", path)
    score_per_mille = score * 1000 if score.max() <= 1 else score
    kept = (score_per_mille >= min_score).to_numpy()
    return _reference(path, resource, frame["protein1"][kept], frame["protein2"][kept], relation="interacts",
                      weight=score_per_mille[kept] / 1000)


def read_string_download(links_path: PathLike, info_path: PathLike, resource: str, *,
                         min_score: float = 700) -> pd.DataFrame:
    """The official STRING download: `<taxon>.protein.links.<version>.txt.gz` (space-separated `protein1
    protein2 combined_score`, ids like 9606.ENSP00000000233, each link listed in both orientations) and
    `<taxon>.protein.info.<version>.txt.gz` (tab-separated, `#string_protein_id`, `preferred_name`, ...).

    min_score  lowest combined_score kept (0-1000)
    relation "interacts", one row per undirected link; sign 0; weight = combined_score / 1000. Links with a
    protein missing from the info file are dropped and counted under attrs[DROPPED_ROWS].
    """
    _check_string_min_score(min_score)

    def strong(chunk: pd.DataFrame) -> pd.DataFrame:
        return chunk[_numbers(chunk, "combined_score", links_path) >= min_score]

    links = _read_columns(links_path, sep=" ", required=("protein1", "protein2", "combined_score"),
                          chunk_filter=strong)
    first, second = links["protein1"].to_numpy(), links["protein2"].to_numpy()
    first_is_lower = first < second
    links = links.assign(protein1=np.where(first_is_lower, first, second),
                         protein2=np.where(first_is_lower, second, first)).drop_duplicates(["protein1", "protein2"])
    info = _read_columns(info_path, sep="\t", required=("#string_protein_id", "preferred_name"))
    symbol_of_protein = pd.Series(info["preferred_name"].to_numpy(), index=info["#string_protein_id"].to_numpy())
    symbol1, symbol2 = links["protein1"].map(symbol_of_protein), links["protein2"].map(symbol_of_protein)
    mapped = (symbol1.notna() & symbol2.notna()).to_numpy()
    table = _reference(links_path, resource, symbol1[mapped], symbol2[mapped], relation="interacts",
                       weight=_numbers(links, "combined_score", links_path)[mapped] / 1000)
    table.attrs[DROPPED_ROWS] = {"protein_missing_from_info_file": int((~mapped).sum())}
    return table


def read_omnipath(path: PathLike, resource: str, *, types: Sequence[str] = ("transcriptional",),
                  resources: Sequence[str] | None = None) -> pd.DataFrame:
    """OmniPath interactions table (source, target, consensus_stimulation, consensus_inhibition,
    curation_effort, sources, type, ...).

    types      interaction types kept: transcriptional, mirna_transcriptional, post_transcriptional
               (relation "regulates"), post_translational (relation "interacts"); one call should pick
               types of one relation, since a resource holds one relation
    resources  keep rows whose ';'-separated `sources` contain any of these names exactly (secondary
               resources are named like "TRRUST_CollecTRI"); None keeps all
    sign +1 consensus stimulation only, -1 consensus inhibition only, else 0; weight = curation_effort.
    Rows whose source or target is still a UniProt accession or a `COMPLEX:` id are dropped and counted
    under attrs[DROPPED_ROWS].
    """
    unknown_types = sorted(set(types) - set(OMNIPATH_RELATION_OF_TYPE))
    if unknown_types:
        raise ReferenceFormatError(
            f"{path}: unknown OmniPath type(s) {unknown_types}; use {list(OMNIPATH_RELATION_OF_TYPE)}")
    frame = _read_columns(path, sep="\t", required=("source", "target", "consensus_stimulation",
                                                    "consensus_inhibition", "curation_effort", "sources", "type"))
    frame = frame[frame["type"].isin(types)]
    if resources is not None:
        listed = frame["sources"].str.split(";")
        frame = frame[listed.map(lambda names: not set(names).isdisjoint(resources)).astype(bool)]
    unusable = np.zeros(len(frame), dtype=bool)
    for column in ("source", "target"):
        unusable |= (frame[column].str.match(UNIPROT_ACCESSION) | frame[column].str.startswith("COMPLEX:")).to_numpy()
    frame = frame[~unusable]
    stimulation = _booleans(frame, "consensus_stimulation", path)
    inhibition = _booleans(frame, "consensus_inhibition", path)
    table = _reference(path, resource, frame["source"], frame["target"],
                       relation=frame["type"].map(OMNIPATH_RELATION_OF_TYPE),
                       sign=stimulation.astype(int) - inhibition.astype(int),
                       weight=_numbers(frame, "curation_effort", path, allow_empty=True))
    table.attrs[DROPPED_ROWS] = {"uniprot_or_complex_identifier": int(unusable.sum())}
    return table


def read_beeline_network(path: PathLike, resource: str, *, relation: str) -> pd.DataFrame:
    """A BEELINE reference network CSV (`Gene1, Gene2`).

    relation  "regulates" for the ChIP-seq networks (Gene1 TF -> Gene2 target), "interacts" for the STRING
              network
    sign 0; confidence ""; weight NaN.
    """
    if relation not in ("regulates", "interacts"):
        raise ReferenceFormatError(
            f"{path}: unknown relation {relation!r} for a BEELINE network; use 'regulates' (ChIP-seq networks) "
            "or 'interacts' (STRING network)")
    frame = _read_columns(path, sep=",", required=("Gene1", "Gene2"))
    return _reference(path, resource, frame["Gene1"], frame["Gene2"], relation=relation)


def read_beeline_tfs(path: PathLike) -> set[str]:
    """BEELINE's human TF list (`human-tfs.csv`, column TF) as a set of symbols."""
    frame = _read_columns(path, sep=",", required=("TF",))
    return set(frame["TF"].str.strip()) - {""}


def read_gene_aliases(path: PathLike) -> dict[str, str]:
    """Alias -> official symbol, from HGNC's complete set (tab-separated `symbol`, `alias_symbol`,
    `prev_symbol`, the last two '|'-separated) or a two-column tab-separated table `alias`, `symbol`.
    An alias claimed by several symbols is ambiguous and left out."""
    with _translated_errors(path), _opened(path) as handle:
        header = set(pd.read_csv(handle, sep="\t", nrows=0).columns)
    if {"symbol", "alias_symbol", "prev_symbol"} <= header:
        table = _read_columns(path, sep="\t", required=("symbol", "alias_symbol", "prev_symbol"))
        pairs = pd.concat([
            table.assign(alias=table[column].str.split("|")).explode("alias")[["alias", "symbol"]]
            for column in ("alias_symbol", "prev_symbol")
        ])
    else:
        pairs = _read_columns(path, sep="\t", required=("alias", "symbol"))
    pairs = pairs[(pairs["alias"].str.strip() != "") & (pairs["alias"] != pairs["symbol"])].drop_duplicates()
    claimed = pairs.groupby("alias")["symbol"].transform("nunique")
    unique = pairs[claimed == 1]
    return dict(zip(unique["alias"].str.strip(), unique["symbol"].str.strip()))


def read_chip_target_sets(path: PathLike, resource: str, *, cell_lines: Sequence[str] | None = None) -> pd.DataFrame:
    """ChIP-seq TF target sets as a long table (`tf, cell_line, target`), one set per TF and cell line.

    cell_lines  keep these cell lines (e.g. ("K562",)); None keeps all
    relation "regulates"; sign 0; confidence = cell line; weight NaN.
    """
    frame = _read_columns(path, sep="\t", required=("tf", "cell_line", "target"))
    if cell_lines is not None:
        available = set(frame["cell_line"])
        absent = sorted(set(cell_lines) - available)
        if absent:
            raise ReferenceFormatError(
                f"{path}: no target sets for cell line(s) {absent} in field 'cell_line'; the file holds "
                f"{sorted(available)}")
        frame = frame[frame["cell_line"].isin(cell_lines)]
    return _reference(path, resource, frame["tf"], frame["target"], relation="regulates",
                      confidence=frame["cell_line"])


def read_gmt(path: PathLike, resource: str) -> pd.DataFrame:
    """A GMT gene-set library: one set per line, `name<TAB>description<TAB>gene<TAB>gene...`.

    relation "member_of": one row per (set, gene), source = set name, target = gene; sign 0; weight NaN.
    """
    set_names: list[str] = []
    genes: list[str] = []
    with _translated_errors(path), _opened(path) as handle:
        for line_number, line in enumerate(io.TextIOWrapper(handle, encoding="utf-8"), start=1):
            fields = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            members = [gene.strip() for gene in fields[2:] if gene.strip()]
            if not fields[0].strip() or not members:
                raise ReferenceFormatError(
                    f"{path}: line {line_number} has no set name or no genes; a GMT line is "
                    "name<TAB>description<TAB>gene<TAB>gene... (tab-separated)")
            set_names.extend([fields[0].strip()] * len(members))
            genes.extend(members)
    if not genes:
        raise ReferenceFormatError(f"{path}: the file is empty; a GMT library needs one gene set per line")
    return _reference(path, resource, pd.Series(set_names, dtype=object), pd.Series(genes, dtype=object),
                      relation="member_of")


def _reference(path: PathLike, resource: str, source: pd.Series, target: pd.Series, *, relation: str | pd.Series,
               sign: pd.Series | int = 0, confidence: pd.Series | str = "",
               weight: pd.Series | float = np.nan) -> pd.DataFrame:
    """Assemble and validate the reference table; gene names are stripped and must not be empty."""
    columns = {"source": source.str.strip().to_numpy(), "target": target.str.strip().to_numpy()}
    for field, values in columns.items():
        empty = values == ""
        if empty.any():
            raise ReferenceFormatError(
                f"{path}: {int(empty.sum())} row(s) have an empty {field} gene (first: data row "
                f"{int(np.flatnonzero(empty)[0]) + 1} after filtering); fill or remove those rows")
    table = pd.DataFrame(columns).assign(
        resource=resource,
        sign=sign if np.isscalar(sign) else np.asarray(sign),
        confidence=confidence if isinstance(confidence, str) else np.asarray(confidence, dtype=object),
        weight=weight if np.isscalar(weight) else np.asarray(weight, dtype=float),
        relation=relation if isinstance(relation, str) else np.asarray(relation, dtype=object),
    )
    return validate_reference(table, str(path))


def _read_columns(path: PathLike, *, sep: str, required: Sequence[str],
                  chunk_filter: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Read the `required` columns of a delimited file with a header line, as strings.

    chunk_filter  applied to chunks of CHUNK_ROWS rows as they are read, so that a large file never
                  sits in memory whole (the STRING download holds 13.7 million human links)
    """
    options = {"sep": sep, "dtype": str, "keep_default_na": False}
    with _translated_errors(path):
        with _opened(path) as handle:
            header = pd.read_csv(handle, nrows=0, **options).columns.str.strip()
        missing = [column for column in required if column not in header]
        if missing:
            raise ReferenceFormatError(
                f"{path}: missing required column(s) {missing} (found {list(header)[:12]}); the file needs a "
                f"header line with {list(required)}, separated by {sep!r}")
        positions = [header.get_loc(column) for column in required]
        rows_read, kept = 0, []
        with _opened(path) as handle:
            for chunk in pd.read_csv(handle, usecols=positions, chunksize=CHUNK_ROWS, **options):
                chunk.columns = chunk.columns.str.strip()
                rows_read += len(chunk)
                kept.append(chunk_filter(chunk) if chunk_filter else chunk)
    if rows_read == 0:
        raise ReferenceFormatError(f"{path}: the file has a header but no rows; re-download it")
    return pd.concat(kept).loc[:, list(required)]


def _read_headerless(path: PathLike, *, fields: Sequence[str]) -> pd.DataFrame:
    """Read a tab-separated file without a header line, as strings; every line must hold the `fields`."""
    with _translated_errors(path), _opened(path) as handle:
        frame = pd.read_csv(handle, sep="\t", header=None, dtype=str, keep_default_na=False)
    if frame.shape[1] != len(fields):
        raise ReferenceFormatError(
            f"{path}: found {frame.shape[1]} tab-separated field(s) per line, expected {len(fields)} "
            f"({', '.join(fields)}); check the separator and that this is the raw download")
    frame.columns = list(fields)
    return frame


@contextmanager
def _opened(path: PathLike) -> Iterator[BinaryIO]:
    """Open for binary reading, decompressing when the file starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
        yield handle


@contextmanager
def _translated_errors(path: PathLike) -> Iterator[None]:
    """Turn the errors of truncated, empty or garbled files into one ReferenceFormatError naming the file."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ReferenceFormatError(
            f"{path}: the gzip file is truncated or corrupt ({error}); re-download it") from error
    except pd.errors.EmptyDataError as error:
        raise ReferenceFormatError(f"{path}: the file is empty; re-download it") from error
    except UnicodeDecodeError as error:
        raise ReferenceFormatError(f"{path}: not a UTF-8 text file ({error}); check that the path points to "
                                   "the reference table") from error
    except pd.errors.ParserError as error:
        raise ReferenceFormatError(f"{path}: cannot parse the table ({error}); check the separator and "
                                   "that every line has the same number of fields") from error


def _numbers(frame: pd.DataFrame, column: str, path: PathLike, *, allow_empty: bool = False) -> pd.Series:
    """The field as float64; empty fields become NaN when `allow_empty`, else an error (short lines read as
    empty fields)."""
    text = frame[column].str.strip()
    empty = text.eq("")
    if empty.any() and not allow_empty:
        raise ReferenceFormatError(
            f"{path}: field {column!r} is empty in {int(empty.sum())} row(s) (first: data row "
            f"{int(frame.index[empty.to_numpy()][0]) + 1}); every row needs a number there: the file may be cut "
            "short, re-download it")
    values = pd.to_numeric(text.mask(empty), errors="coerce")
    bad = values.isna() & ~empty
    if bad.any():
        raise ReferenceFormatError(
            f"{path}: field {column!r} holds non-numbers such as {frame[column][bad].iloc[0]!r}; "
            "it must hold numbers")
    return values.astype(np.float64)


def _booleans(frame: pd.DataFrame, column: str, path: PathLike) -> np.ndarray:
    text = frame[column].str.strip().str.lower()
    unknown = sorted(set(text) - {"true", "false", "1", "0"})
    if unknown:
        raise ReferenceFormatError(f"{path}: field {column!r} holds {unknown[:5]}; it must hold True or False")
    return text.isin(("true", "1")).to_numpy()


def _check_string_min_score(min_score: float) -> None:
    if not 0 <= min_score <= 1000:
        raise ReferenceFormatError(
            f"min_score {min_score} is outside 0-1000; STRING scores are given per mille (700 high, 900 highest)")


READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "trrust": read_trrust,
    "dorothea": read_dorothea,
    "collectri": read_collectri,
    "string": read_string_symbols,
    "string_download": lambda path, resource, *, protein_info, **options: read_string_download(
        path, protein_info, resource, **options),
    "omnipath": read_omnipath,
    "beeline": read_beeline_network,
    "chip": read_chip_target_sets,
    "gmt": read_gmt,
}


def read_reference(format_name: str, path: PathLike, resource: str, **options) -> pd.DataFrame:
    """Dispatch to the reader of a published format (READERS' keys) with its format options."""
    if format_name not in READERS:
        raise ReferenceFormatError(f"{path}: unknown reference format {format_name!r}; use one of {sorted(READERS)}")
    return READERS[format_name](path, resource, **options)
