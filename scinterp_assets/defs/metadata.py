"""Metadata helpers shared by the assets: shapes, counts and a Markdown preview."""


import dagster as dg
import pandas as pd


def frame_metadata(frame: pd.DataFrame, preview_rows: int = 8) -> dict:
    return {
        "rows": dg.MetadataValue.int(len(frame)),
        "columns": dg.MetadataValue.text(", ".join(map(str, frame.columns))),
        "preview": dg.MetadataValue.md(frame.head(preview_rows).to_markdown(index=False) if len(frame) else "(empty)"),
    }
