import pytest

from scinterp_assets.resources.model_store import (
    CheckpointKeyError,
    ModelStore,
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


def test_resolve_unknown_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder for model key 'x'"):
        ModelStore(tmp_path).resolve("x")
