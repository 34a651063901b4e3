"""The checkpoint directory as a store of model partitions.

Each sub-folder of the checkpoint directory is one model; its partition key is the folder name
sanitised to Dagster's safe alphabet [A-Za-z0-9._-]. The fingerprint (sizes and modification times of
every file) is cheap enough for a sensor tick even for multi-GB weights, and changes when a checkpoint is
overwritten.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")


class CheckpointKeyError(ValueError):
    """A checkpoint folder name cannot become a model partition key."""


def sanitize_model_key(folder_name: str) -> str:
    """Folder name -> partition key: runs of unsafe characters become '-', ends trimmed."""
    key = _UNSAFE.sub("-", folder_name).strip("-.")
    if not key:
        raise CheckpointKeyError(
            f"checkpoint folder '{folder_name}' has no letters or digits to build a model key from; "
            "rename it to use letters, digits, '.', '_' or '-'"
        )
    return key


def validate_model_key(key: str) -> str:
    """Refuse a key Dagster cannot use as a partition key, naming the characters at fault."""
    if not _SAFE_KEY.match(key):
        bad = sorted(set(_UNSAFE.findall(key)))
        raise CheckpointKeyError(
            f"model key {key!r} contains characters Dagster partition keys cannot hold ({bad}); "
            f"use {sanitize_model_key(key)!r} (letters, digits, '.', '_', '-')"
        )
    return key


def fingerprint_folder(folder: Path) -> str:
    """sha256 over (relative path, size, mtime_ns) of every file below `folder`, first 16 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    key: str
    path: Path
    fingerprint: str


@dataclass(frozen=True)
class ModelStore:
    """checkpoint_dir: one sub-folder per model. dictionary_dir: where Geneformer dictionaries live when
    they are not beside a model's config.json (Geneformer's repository keeps them in its package folder)."""

    checkpoint_dir: Path
    dictionary_dir: Path | None = None

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Every checkpoint folder, by key. Hidden folders and in-progress writes (".tmp") are skipped."""
        if not self.checkpoint_dir.is_dir():
            return {}
        found: dict[str, Checkpoint] = {}
        for folder in sorted(p for p in self.checkpoint_dir.iterdir() if p.is_dir()):
            if folder.name.startswith(".") or folder.name.endswith(".tmp"):
                continue
            key = sanitize_model_key(folder.name)
            if key in found:
                raise CheckpointKeyError(
                    f"checkpoint folders '{found[key].path.name}' and '{folder.name}' in {self.checkpoint_dir} "
                    f"both become model key '{key}'; rename one of them"
                )
            found[key] = Checkpoint(key, folder, fingerprint_folder(folder))
        return found

    def load(self, key: str):
        """The loaded model of a partition key (nothing from the checkpoint is executed)."""
        from scinterp_assets.core.models import load_model  # deferred: torch and transformers cost seconds

        return load_model(self.resolve(key).path, self.dictionary_dir)

    def resolve(self, key: str) -> Checkpoint:
        checkpoints = self.checkpoints()
        if key not in checkpoints:
            raise FileNotFoundError(
                f"no checkpoint folder for model key '{key}' in {self.checkpoint_dir}; "
                f"found {sorted(checkpoints)}. Put the model folder back or delete the partition"
            )
        return checkpoints[key]
