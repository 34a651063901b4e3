"""Read a checkpoint's pickled dictionaries without executing code, and the checkpoint error type.

Geneformer ships its token, gene-median and gene-name dictionaries as Python pickles. A pickle can name any
importable callable and make the loader call it, so a plain `pickle.load` of a downloaded file runs whatever
the file says. `load_pickled_dictionary` admits only the plain containers these files hold and numpy
scalars; any other global stops the load before anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy < 2 keeps the reconstructor under numpy.core
    from numpy.core.multiarray import scalar as _numpy_scalar

# Numeric dtype kinds a numpy scalar in a dictionary may have: bool, int, uint, float.
_SCALAR_KINDS = frozenset("biuf")
_PLAIN_TYPES = (str, int, float, bool, type(None))
# Released dictionaries are flat (one entry per gene or alias: at most a few hundred thousand keys and values).
MAX_DICTIONARY_NODES = 5_000_000
MAX_DICTIONARY_DEPTH = 32


class ModelLoadError(ValueError):
    """A checkpoint folder, its weights or its dictionaries cannot be loaded as they are."""


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


def _numeric_dtype(*args: Any) -> np.dtype:
    """`numpy.dtype` as numpy's scalar pickles call it (e.g. ("f8", False, True)), numeric kinds only."""
    dtype = np.dtype(*args)
    if dtype.kind not in _SCALAR_KINDS:
        raise pickle.UnpicklingError(f"numpy dtype {dtype!r} is not a numeric scalar dtype")
    return dtype


def _numeric_scalar(dtype: Any, data: Any) -> np.generic:
    """numpy's scalar reconstructor, for numeric dtypes built from raw bytes only."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _SCALAR_KINDS or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar with a non-numeric dtype or non-bytes payload")
    return _numpy_scalar(dtype, data)


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """`_codecs.encode`, which protocol-2 pickles use to carry a numpy scalar's raw bytes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is admitted only as str.encode('latin1')")
    return text.encode("latin1")


# Exactly what numpy scalars need: the reconstructor (numpy 2 and numpy 1 module paths), the dtype
# constructor, and the bytes encoder of protocol <= 2 pickles.
_ADMITTED_GLOBALS = {
    ("numpy._core.multiarray", "scalar"): _numeric_scalar,
    ("numpy.core.multiarray", "scalar"): _numeric_scalar,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _DictionaryUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        admitted = _ADMITTED_GLOBALS.get((module, name))
        if admitted is None:
            raise _RefusedGlobal(module, name)
        return admitted


def _check_plain(value: Any, path: Path) -> None:
    """Second line of defence: the loaded object holds only the admitted types (sets, bytes are refused),
    nests at most MAX_DICTIONARY_DEPTH levels and holds at most MAX_DICTIONARY_NODES values counted with
    repetition. A pickle's memo lets a few hundred bytes refer to one list from itself (a cycle) or build
    2^40 references to shared leaves; both are refused here instead of walked forever."""
    stack = [(value, 0)]
    visited = 0
    while stack:
        item, depth = stack.pop()
        visited += 1
        if visited > MAX_DICTIONARY_NODES:
            raise ModelLoadError(
                f"{path}: holds more than {MAX_DICTIONARY_NODES:,} values (counting shared references); a "
                "checkpoint dictionary has one entry per gene. Replace the file with the dictionary that ships "
                "with the model.")
        if isinstance(item, (dict, list, tuple)):
            if depth >= MAX_DICTIONARY_DEPTH:
                raise ModelLoadError(
                    f"{path}: nests containers more than {MAX_DICTIONARY_DEPTH} levels deep (or refers to itself); "
                    "a checkpoint dictionary maps names to values. Replace the file with the dictionary that "
                    "ships with the model.")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, np.generic):
            if item.dtype.kind not in _SCALAR_KINDS:
                raise ModelLoadError(f"{path}: holds a numpy {item.dtype} value; only numeric scalars pass")
        elif not isinstance(item, _PLAIN_TYPES):
            raise ModelLoadError(
                f"{path}: holds a {type(item).__name__}; a checkpoint dictionary may hold only dict, list, "
                "tuple, str, int, float, bool, None and numpy numeric scalars"
            )


def load_pickled_dictionary(path: str | Path) -> dict:
    """Unpickle a checkpoint dictionary (token ids, gene medians, gene names) without running its code.

    Returns the dict as stored (values may be numpy scalars, as in Geneformer's released files).
    Raises ModelLoadError naming the file and the refused global when the pickle asks for anything beyond
    plain containers and numpy numeric scalars; in that case nothing from the file was called.
    """
    path = Path(path)
    try:
        payload = path.read_bytes()
    except OSError as err:
        raise ModelLoadError(f"{path}: cannot read the dictionary ({err})") from err
    try:
        value = _DictionaryUnpickler(io.BytesIO(payload)).load()
    except _RefusedGlobal as err:
        raise ModelLoadError(
            f"{path}: refused to unpickle: it references the global {err.qualified_name!r}, which a "
            "checkpoint dictionary has no need for (only dict/list/tuple/str/int/float/bool/None and numpy "
            "scalars are admitted). Nothing from the file was executed. Replace the file with the dictionary "
            "that ships with the model."
        ) from None
    except Exception as err:  # any malformed pickle: one clear message naming the file
        raise ModelLoadError(
            f"{path}: not a readable pickled dictionary ({type(err).__name__}: {err}). Nothing from the file "
            "was executed."
        ) from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: holds a {type(value).__name__}, expected a dict")
    _check_plain(value, path)
    return value
