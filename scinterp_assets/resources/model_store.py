"""The checkpoint directory as a store of model partitions.

Each sub-folder of the checkpoint directory is one model; its partition key is the folder name
sanitised to Dagster's safe alphabet [A-Za-z0-9._-]. The fingerprint is a content hash of the files that
define the model (weights, configuration, vocabulary, pickled dictionaries), so it is the same on every
machine for the same bytes and ignores training logs such as pretraining.json. File digests are cached
in memory by (path, size, mtime_ns, inode): a sensor tick re-hashes only files that were rewritten,
replaced or touched, and a touch that keeps the bytes keeps the fingerprint.

A folder is ready to register once nothing in it has changed for a quiet period (a multi-GB copy is not
fingerprinted half-written), or as soon as it holds the completion marker `COMPLETION_MARKER`, written
after every other file (by tools that know when they are done, such as the tiny-checkpoint trainer).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from scinterp_assets.core.files import file_sha256
from scinterp_assets.core.provenance import package_version

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")
# What the loaders read from a checkpoint folder (core.models.geneformer / scgpt): Hugging Face weights,
# sharded or not, with their index; scGPT's state dict; configuration and vocabulary; Geneformer's pickled
# dictionaries. Anything else (pretraining.json, trainer_state.json, training_args.bin, READMEs) is a record
# of how the model was made, not part of it.
_DEFINING_FILE = re.compile(
    r"(?:model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)"
    r"|(?:model\.safetensors|pytorch_model\.bin)\.index\.json"
    r"|best_model\.pt|config\.json|args\.json|vocab\.json|.+\.pkl"
)
COMPLETION_MARKER = ".complete"  # an empty file in a checkpoint folder: its writer has finished
# A checkpoint's random-weights twin (FRAMEWORK A25) is the model partition "<key>.random-weights"; no folder
# may end so.
RANDOM_WEIGHTS_SUFFIX = ".random-weights"
_MARKER_SLACK_SECONDS = 2.0


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
    """sha256 over (file name, sha256 of its bytes) of the model-defining files directly in `folder`, in
    sorted name order; first 16 hex digits. The loaders read only the folder's top level, so sub-folders
    (e.g. a Trainer's checkpoint-500/) are not part of the model."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and _DEFINING_FILE.fullmatch(p.name)):
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def _last_change(folder: Path, ignore: str) -> float:
    """Newest modification time of the folder (files added, removed, renamed) and of every file in it,
    sub-folders included (a copy may write them last), except the file named `ignore`; now when something
    vanishes while scanning (the folder is still changing)."""
    try:
        newest = folder.stat().st_mtime
        for path in folder.rglob("*"):
            if path.name != ignore:
                newest = max(newest, path.lstat().st_mtime)
    except FileNotFoundError:
        return time.time()
    return newest


def _marked_complete(folder: Path, last_change: float) -> bool:
    """The folder holds COMPLETION_MARKER, written after everything else in it (a marker left from an
    earlier copy does not vouch for new files)."""
    try:
        # creating the marker also stamps the folder, within the file system's time granularity
        return (folder / COMPLETION_MARKER).stat().st_mtime >= last_change - _MARKER_SLACK_SECONDS
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class Checkpoint:
    """A model partition: a checkpoint folder, or (random_weights_seed set) the random-weights twin of the
    folder's checkpoint: same architecture and tokeniser, seeded random weights."""

    key: str
    path: Path
    fingerprint: str
    random_weights_seed: int | None = None

    @property
    def trained_key(self) -> str:
        """The key of the checkpoint whose weights this partition holds or stands in for."""
        return self.key.removesuffix(RANDOM_WEIGHTS_SUFFIX) if self.random_weights_seed is not None else self.key

    def random_weights_twin(self, seed: int) -> Checkpoint:
        """The twin partition of this checkpoint. Its fingerprint follows the checkpoint's (any change of the
        folder re-evaluates the twin too: cautious, since retrained weights of the same shape draw the same
        twin), the seed, and the versions of the libraries whose initialisers draw the weights."""
        drawn_by = "\0".join(f"{library}={package_version(library)}" for library in ("torch", "transformers"))
        digest = hashlib.sha256(f"{self.fingerprint}\0random-weights\0{int(seed)}\0{drawn_by}".encode())
        return Checkpoint(self.key + RANDOM_WEIGHTS_SUFFIX, self.path, digest.hexdigest()[:16], int(seed))


@dataclass(frozen=True)
class ModelStore:
    """checkpoint_dir: one sub-folder per model. dictionary_dir: where Geneformer dictionaries live when
    they are not beside a model's config.json (Geneformer's repository keeps them in its package folder).
    random_weights_seed: None, or the seed of a random-weights twin partition for every checkpoint."""

    checkpoint_dir: Path
    dictionary_dir: Path | None = None
    random_weights_seed: int | None = None

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Every checkpoint folder, by key, with its twin where twins are on. Hidden folders and in-progress
        writes (".tmp") are skipped."""
        return self._with_twins({key: Checkpoint(key, folder, fingerprint_folder(folder))
                                 for key, folder in self._folders().items()})

    def _with_twins(self, checkpoints: dict[str, Checkpoint]) -> dict[str, Checkpoint]:
        if self.random_weights_seed is None:
            return checkpoints
        twins = [checkpoint.random_weights_twin(self.random_weights_seed) for checkpoint in checkpoints.values()]
        return {**checkpoints, **{twin.key: twin for twin in twins}}

    def ready_checkpoints(self, quiet_seconds: float, now: float | None = None) -> tuple[dict[str, Checkpoint],
                                                                                          dict[str, float]]:
        """(checkpoints ready to register, {key: seconds since the last change} of those still settling).

        Ready: the folder holds COMPLETION_MARKER written after its other files, or neither it nor any file in
        it changed in the last `quiet_seconds`. Settling folders are not fingerprinted."""
        now = time.time() if now is None else now
        ready, settling = {}, {}
        for key, folder in self._folders().items():
            last_change = _last_change(folder, ignore=COMPLETION_MARKER)
            quiet_for = now - last_change
            if _marked_complete(folder, last_change) or quiet_for >= quiet_seconds:
                ready[key] = Checkpoint(key, folder, fingerprint_folder(folder))
            else:
                settling[key] = quiet_for
        return self._with_twins(ready), settling

    def _folders(self) -> dict[str, Path]:
        if not self.checkpoint_dir.is_dir():
            return {}
        found: dict[str, Path] = {}
        for folder in sorted(p for p in self.checkpoint_dir.iterdir() if p.is_dir()):
            if folder.name.startswith(".") or folder.name.endswith(".tmp"):
                continue
            key = sanitize_model_key(folder.name)
            if key.endswith(RANDOM_WEIGHTS_SUFFIX):
                raise CheckpointKeyError(
                    f"checkpoint folder '{folder.name}' in {self.checkpoint_dir} ends with '{RANDOM_WEIGHTS_SUFFIX}', "
                    "which names the random-weights twins of checkpoints; rename the folder"
                )
            if key in found:
                raise CheckpointKeyError(
                    f"checkpoint folders '{found[key].name}' and '{folder.name}' in {self.checkpoint_dir} "
                    f"both become model key '{key}'; rename one of them"
                )
            found[key] = folder
        return found

    def load(self, key: str):
        """The loaded model of a partition key (nothing from the checkpoint is executed); for a twin, the
        checkpoint's architecture and tokeniser with seeded random weights."""
        from scinterp_assets.core.models import load_model  # deferred: torch and transformers cost seconds

        checkpoint = self.resolve(key)
        model = load_model(checkpoint.path, self.dictionary_dir)
        if checkpoint.random_weights_seed is not None:
            model = model.with_random_weights(checkpoint.random_weights_seed)
        return model

    def resolve(self, key: str) -> Checkpoint:
        checkpoints = self.checkpoints()
        if key not in checkpoints:
            raise FileNotFoundError(
                f"no checkpoint folder for model key '{key}' in {self.checkpoint_dir}; "
                f"found {sorted(checkpoints)}. Put the model folder back or delete the partition"
            )
        return checkpoints[key]
