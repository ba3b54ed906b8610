"""Omniglot: the five-alphabet subset embedded in this package, and the paper's ten tasks.

`datasets/omniglot_subset.xz` (built by `scripts/build_omniglot_subset.py` from Omniglot's
`images_background_small1.zip`) holds every drawing (20 per character) of the alphabets
Balinese, Early_Aramaic, Greek, Korean and Latin, down-sampled to 28x28 by area averaging,
ink = 1. The paper's ten tasks are these five alphabets and the same five rotated by 90
degrees. Omniglot is by Brenden Lake, Ruslan Salakhutdinov and Joshua Tenenbaum, MIT licence.
"""

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .embedded import load as load_embedded

SIDE = 28
SUBSET = "omniglot_subset"
DRAWINGS = 20


class Omniglot(NamedTuple):
    """images (N, 784) float64 in [0, 1], read-only; task, character and drawing (N,) int64;
    names of the tasks."""

    images: np.ndarray
    task: np.ndarray
    character: np.ndarray
    drawing: np.ndarray
    task_names: tuple


@lru_cache(maxsize=1)
def tasks():
    """The ten tasks: the five alphabets, then the same five rotated by 90 degrees (counter-
    clockwise), each row labelled by its task, character (0-based within the alphabet) and drawing
    (0..19, file order)."""
    arrays, manifest = load_embedded(SUBSET)
    alphabets = manifest["alphabets"]
    images = arrays["images"].astype(np.float64).reshape(-1, SIDE, SIDE) / 255.0
    alphabet, character = (arrays["labels"][:, i].astype(np.int64) for i in (0, 1))
    drawing = np.zeros(len(alphabet), dtype=np.int64)
    for i in range(1, len(alphabet)):
        same = alphabet[i] == alphabet[i - 1] and character[i] == character[i - 1]
        drawing[i] = drawing[i - 1] + 1 if same else 0
    n = len(alphabets)
    X = np.concatenate([images, np.rot90(images, 1, axes=(1, 2))]).reshape(-1, SIDE * SIDE)
    X.flags.writeable = False
    return Omniglot(X, np.concatenate([alphabet, alphabet + n]), np.tile(character, 2),
                    np.tile(drawing, 2),
                    tuple(alphabets) + tuple(f"{a} rotated" for a in alphabets))
