"""The restricted unpickler: plain dictionaries and numpy scalars load; anything that could run code fails."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from scinterp_assets.core.models.dictionaries import ModelLoadError, load_pickled_dictionary


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_scalars_and_plain_values_load(tmp_path, protocol):
    stored = {
        "ENSG1": np.float64(1.25),
        "ENSG2": np.float32(0.5),
        "ENSG3": np.int64(7),
        "<pad>": 0,
        "nested": [1.5, "x", (True, None)],
    }
    path = tmp_path / "gene_median_dictionary.pkl"
    path.write_bytes(pickle.dumps(stored, protocol=protocol))
    loaded = load_pickled_dictionary(path)
    assert loaded == stored
    assert isinstance(loaded["ENSG2"], np.float32) and isinstance(loaded["ENSG3"], np.int64)


def test_numpy1_module_path_loads(tmp_path):
    # Files written under numpy 1.x name the reconstructor numpy.core.multiarray.scalar.
    payload = pickle.dumps({"ENSG1": np.float64(2.5)}, protocol=2).replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray"
    )
    assert b"numpy.core.multiarray" in payload
    path = tmp_path / "old.pkl"
    path.write_bytes(payload)
    assert load_pickled_dictionary(path) == {"ENSG1": 2.5}


def test_reduce_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "token_dictionary.pkl"
    path.write_bytes(pickle.dumps({"ENSG1": _RunsShell(marker)}))
    with pytest.raises(ModelLoadError) as raised:
        load_pickled_dictionary(path)
    message = str(raised.value)
    assert str(path) in message and "system" in message and "Nothing from the file was executed" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "value",
    [_CallsEval(), np.arange(3), np.array(["a"], dtype=object)[0:1], {1, 2}, b"raw bytes"],
    ids=["eval", "ndarray", "object-array", "set", "bytes"],
)
def test_other_types_are_refused(tmp_path, value):
    path = tmp_path / "gene_name_id_dict.pkl"
    path.write_bytes(pickle.dumps({"key": value}))
    with pytest.raises(ModelLoadError, match="gene_name_id_dict.pkl"):
        load_pickled_dictionary(path)


def test_non_dict_and_corrupt_files_are_refused(tmp_path):
    listing = tmp_path / "list.pkl"
    listing.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ModelLoadError, match="expected a dict"):
        load_pickled_dictionary(listing)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(ModelLoadError, match="truncated.pkl"):
        load_pickled_dictionary(truncated)
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_pickled_dictionary(tmp_path / "absent.pkl")


def test_a_self_referencing_pickle_is_refused_not_walked_forever(tmp_path):
    cycle = []
    cycle.append(cycle)
    path = tmp_path / "token_dictionary.pkl"
    path.write_bytes(pickle.dumps({"<pad>": cycle}))
    with pytest.raises(ModelLoadError, match=r"token_dictionary\.pkl: nests containers more than 32 levels"):
        load_pickled_dictionary(path)


def test_a_tiny_pickle_of_exponentially_many_shared_references_is_refused(tmp_path):
    """40 levels of a list holding its predecessor twice: a few hundred bytes, 2^40 leaves when walked."""
    nested = [0]
    for _ in range(40):
        nested = [nested, nested]
    path = tmp_path / "gene_median_dictionary.pkl"
    path.write_bytes(pickle.dumps({"ENSG1": nested}))
    assert path.stat().st_size < 1000
    with pytest.raises(ModelLoadError, match="gene_median_dictionary.pkl: (holds more than|nests containers)"):
        load_pickled_dictionary(path)
    wide = [[0] * 10 for _ in range(10)]
    for _ in range(7):  # shallow but huge: 10^9 references
        wide = [wide] * 10
    path.write_bytes(pickle.dumps({"ENSG1": wide}))
    with pytest.raises(ModelLoadError, match=r"holds more than 5,000,000 values"):
        load_pickled_dictionary(path)
