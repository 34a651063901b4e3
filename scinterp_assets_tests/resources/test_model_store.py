import hashlib
import os

import pytest

from scinterp_assets.resources.model_store import (
    RANDOM_WEIGHTS_SUFFIX,
    CheckpointKeyError,
    ModelStore,
    fingerprint_folder,
    sanitize_model_key,
    validate_model_key,
)


def test_sanitize_keeps_safe_names_and_repairs_others():
    assert sanitize_model_key("geneformer-v1-10m") == "geneformer-v1-10m"
    assert sanitize_model_key("Geneformer V2 (104M)!") == "Geneformer-V2-104M"


def test_key_without_usable_characters():
    with pytest.raises(CheckpointKeyError, match="rename it"):
        sanitize_model_key("***")


def test_validate_names_the_bad_characters_and_the_fix():
    with pytest.raises(CheckpointKeyError, match=r"\[' \(', '\)'\].*'scGPT-human'"):
        validate_model_key("scGPT (human)")


def test_store_lists_folders_with_fingerprints_and_detects_collisions(tmp_path):
    (tmp_path / "model a").mkdir()
    (tmp_path / "model a" / "config.json").write_text("{}")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "partial.tmp").mkdir()
    store = ModelStore(tmp_path)
    checkpoints = store.checkpoints()
    assert list(checkpoints) == ["model-a"]
    before = checkpoints["model-a"].fingerprint
    (tmp_path / "model a" / "config.json").write_text('{"changed": true}')
    assert store.resolve("model-a").fingerprint != before
    (tmp_path / "model_a!").mkdir()
    (tmp_path / "model-a").mkdir()
    with pytest.raises(CheckpointKeyError, match="both become model key 'model-a'"):
        store.checkpoints()


def test_random_weights_twins_are_partitions_beside_their_checkpoints(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert list(ModelStore(tmp_path).checkpoints()) == ["m"]  # twins are off unless a seed is given
    store = ModelStore(tmp_path, random_weights_seed=5)
    checkpoints = store.checkpoints()
    twin = checkpoints["m" + RANDOM_WEIGHTS_SUFFIX]
    assert sorted(checkpoints) == ["m", "m.random-weights"]
    assert (twin.path, twin.random_weights_seed, twin.trained_key) == (tmp_path / "m", 5, "m")
    assert checkpoints["m"].random_weights_seed is None and checkpoints["m"].trained_key == "m"
    assert twin.fingerprint != checkpoints["m"].fingerprint
    assert ModelStore(tmp_path, random_weights_seed=6).checkpoints()[twin.key].fingerprint != twin.fingerprint
    ready, settling = store.ready_checkpoints(quiet_seconds=0)
    assert ready == checkpoints and settling == {}
    # a changed checkpoint changes its twin's fingerprint: the twin is evaluated again with it
    (tmp_path / "m" / "config.json").write_text('{"changed": true}')
    assert store.resolve(twin.key).fingerprint != twin.fingerprint
    (tmp_path / "x.random-weights").mkdir()
    with pytest.raises(CheckpointKeyError, match="ends with '.random-weights'.*rename the folder"):
        store.checkpoints()


def test_resolve_unknown_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder for model key 'x'"):
        ModelStore(tmp_path).resolve("x")


def _geneformer_like_folder(folder):
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 16}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (folder / "token_dictionary.pkl").write_bytes(b"pickled tokens")
    (folder / "pretraining.json").write_text('{"steps": 60}')
    return folder


def test_fingerprint_is_the_content_of_the_defining_files(tmp_path):
    folder = _geneformer_like_folder(tmp_path / "m")
    before = fingerprint_folder(folder)
    assert fingerprint_folder(_geneformer_like_folder(tmp_path / "same bytes elsewhere")) == before

    os.utime(folder / "model.safetensors", ns=(1, 1))  # a touch: new mtime, same bytes
    assert fingerprint_folder(folder) == before
    (folder / "pretraining.json").write_text('{"steps": 60, "seconds": 12.5}')  # a training record
    (folder / "README.md").write_text("notes")
    assert fingerprint_folder(folder) == before

    weights = bytearray((folder / "model.safetensors").read_bytes())
    weights[100] ^= 1  # one bit of one weight byte, same size
    (folder / "model.safetensors").write_bytes(bytes(weights))
    assert fingerprint_folder(folder) != before
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    assert fingerprint_folder(folder) == before
    (folder / "token_dictionary.pkl").write_bytes(b"pickled tokens, edited")
    assert fingerprint_folder(folder) != before


def test_fingerprint_hashes_a_file_again_only_when_it_changed(tmp_path, monkeypatch):
    folder = _geneformer_like_folder(tmp_path / "m")
    first = fingerprint_folder(folder)  # fills the cache
    hashed, file_digest = [], hashlib.file_digest

    def counting_file_digest(handle, name):
        hashed.append(os.path.basename(handle.name))
        return file_digest(handle, name)

    monkeypatch.setattr(hashlib, "file_digest", counting_file_digest)
    assert fingerprint_folder(folder) == first
    assert hashed == []  # a repeated sensor tick reads no file
    os.utime(folder / "config.json", ns=(5, 5))
    assert fingerprint_folder(folder) == first and hashed == ["config.json"]
