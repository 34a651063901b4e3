"""Metadata helpers shared by the assets: shapes, counts and a Markdown preview."""


from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import BaseModel

from scinterp_assets.core.files import file_sha256

from scinterp_assets.core.attention.scores import AttentionScores

MB = 1e6


def frame_metadata(frame: pd.DataFrame, preview_rows: int = 8) -> dict:
    return {
        "rows": dg.MetadataValue.int(len(frame)),
        "columns": dg.MetadataValue.text(", ".join(map(str, frame.columns))),
        "preview": dg.MetadataValue.md(frame.head(preview_rows).to_markdown(index=False) if len(frame) else "(empty)"),
    }


def accumulator_reads(attention_scores: AttentionScores, value_weighted_scores: AttentionScores | None = None) -> dict:
    """`accumulators_read_mb`: per input, megabytes of the attention accumulators the step read (the
    layers its score sets used, and the pair counts) against the megabytes stored (AttentionScores.bytes_read,
    .nbytes). Stored arrays are memory-mapped, so what was not read was never loaded."""
    inputs = {"attention_scores": attention_scores, "value_weighted_scores": value_weighted_scores}
    inputs = {name: scores for name, scores in inputs.items() if scores is not None}
    return {"accumulators_read_mb": dg.MetadataValue.json({
        name: {"read": round(scores.bytes_read / MB, 3), "stored": round(scores.nbytes / MB, 3)}
        for name, scores in inputs.items()
    })}


def source_file_hashes(entry: BaseModel) -> dict[str, str]:
    """{path: sha256} of every file a configuration entry names (a folder: each file in it, recursively), so
    that what a screen or a reference was read from can be told from a changed copy (`scinterp trace`)."""
    hashes = {}
    for value in vars(entry).values():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, BaseModel):
                hashes |= source_file_hashes(item)
            elif isinstance(item, Path) and item.exists():
                files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
                hashes |= {str(path): file_sha256(path) for path in files}
    return hashes
