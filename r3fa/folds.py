"""Disjoint folds of AFLW2000-3D, so that a model trained on part of it is evaluated on the rest.

AFLW2000-3D is the only 300W-LP-format source available here, so the demo and the tests train on one fold
and evaluate on another. The rule is fixed and documented: sort the 2000 image names (the row order of
every `test.configs` array and of `AFLW2000-3D_crop.list`); the image at position i belongs to fold
i % n_folds. Neighbouring names are spread over the folds, so each fold covers every |yaw| bin.
"""

from __future__ import annotations

import numpy as np


def fold_of_index(index: int | np.ndarray, n_folds: int = 2):
    """Fold of the image at sorted position `index`."""
    return np.asarray(index) % n_folds


def fold_indices(total: int, fold: int, n_folds: int = 2) -> np.ndarray:
    """Sorted positions (rows of the benchmark arrays) that belong to `fold`."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} out of range for {n_folds} folds")
    return np.arange(fold, total, n_folds)
