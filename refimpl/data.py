"""Data sets: a seeded synthetic problem and user .npz files.

Every loader returns ``(X_train, y_train, X_valid, y_valid)`` as float64 (N, D) and int64 (N,)
arrays, rows in file order.
"""

import numpy as np

from .errors import InputError
from .npzfile import read_npz

SPLIT_KEYS = ("X_train", "y_train", "X_valid", "y_valid")


def synthetic(D, K, n_train, n_valid, rng):
    """A learnable K-class problem in D dimensions: x ~ N(0, I_D), y = argmax_k (x A)_k for a random
    linear teacher A ~ N(0, 1)^(D x K). Training and validation rows come from the same draw."""
    A = rng.standard_normal((D, K))
    X = rng.standard_normal((n_train + n_valid, D))
    y = np.argmax(X @ A, axis=1).astype(np.int64)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def load_npz(path):
    """The four arrays X_train, y_train, X_valid, y_valid of an .npz file (`npzfile.read_npz`)."""
    arrays = read_npz(path, "dataset")
    missing = [k for k in SPLIT_KEYS if k not in arrays]
    if missing:
        raise InputError(f"dataset {path} lacks {', '.join(missing)}; an .npz dataset needs the "
                         f"arrays {', '.join(SPLIT_KEYS)} (it has {', '.join(arrays) or 'none'})")
    return tuple(_split_array(path, k, arrays[k]) for k in SPLIT_KEYS)


def _split_array(path, key, a):
    if key.startswith("X"):
        if a.ndim != 2 or a.dtype.kind not in "biuf":
            raise InputError(f"{key} in {path} is {a.dtype} with shape {a.shape}; "
                             "expected a 2-d numeric array (rows x features)")
        return a.astype(np.float64, copy=False)
    if a.ndim != 1 or a.dtype.kind not in "biu":
        raise InputError(f"{key} in {path} is {a.dtype} with shape {a.shape}; "
                         "expected a 1-d integer array of class labels")
    return a.astype(np.int64, copy=False)
