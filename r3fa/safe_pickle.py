"""Loading third-party pickles without running their code.

The 3DDFA release ships `.pkl` files. A pickle can name any importable callable, so these are read
through an unpickler that admits only what plain numeric data needs: numpy arrays and dtypes, dicts,
lists, tuples and scalars. Anything else is refused with `UnsafePickleError`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than plain numeric data."""


class _NumericUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load '{module}.{name}': only numpy arrays, dicts, lists and scalars are allowed"
        )


def load_numeric_pickle(path: str | Path) -> Any:
    """Load a pickle of plain numeric data (numpy arrays, dicts, lists, scalars) from `path`.

    Raises:
        UnsafePickleError: the pickle references any other global (it could run code).
    """
    path = Path(path)
    with path.open("rb") as fh:
        try:
            return _NumericUnpickler(fh, encoding="latin1").load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
