"""MNIST: the canonical IDX files, and the subset embedded in this package.

The embedded subset (`datasets/mnist_subset.xz`, 3.3 MB, built by
`scripts/build_mnist_subset.py` from the canonical files) holds the first 20,000 images of the
canonical training set (the paper's 10,000 training and 10,000 validation images) and every other
image of the canonical test set (5,000, both of its halves alike). MNIST is by Yann LeCun, Corinna
Cortes and Christopher Burges, redistributed under CC BY-SA 3.0.
"""

import gzip
import zlib
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .embedded import load as load_embedded
from .errors import InputError

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
SIDE = 28
N_CLASSES = 10
N_TRAIN = N_VALID = 10_000
SUBSET = "mnist_subset"


class MNIST(NamedTuple):
    """Images as uint8 (N, 784) rows, labels as int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_mnist(directory):
    """The four canonical IDX files in `directory`, each gzip-compressed (``.gz``) or plain."""
    directory = Path(directory)
    arrays = {key: _read_idx(_find(directory, name), key.endswith("images"))
              for key, name in FILES.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise InputError(f"MNIST {split} set in {directory} has {n_img} images but {n_lab} "
                             "labels; the files come from different releases or are damaged")
    return MNIST(**arrays)


def _find(directory, name):
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise InputError(f"MNIST file {name}[.gz] is missing from {directory}; it needs "
                     f"{', '.join(FILES.values())} (each .gz or plain)")


def read_bytes(path):
    """A file's bytes, gunzipped when it is gzip-compressed."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path} is not a readable gzip file: {e}") from None


def _read_idx(path, images):
    """An IDX file's payload after checking its magic number, dimensions and length."""
    raw = read_bytes(path)
    magic, header = (IMAGE_MAGIC, 16) if images else (LABEL_MAGIC, 8)
    if len(raw) < header:
        raise InputError(f"{path} is {len(raw)} bytes long, shorter than an IDX header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise InputError(f"{path} starts with magic number {got:#010x}; an IDX "
                         f"{'image' if images else 'label'} file starts with {magic:#010x}")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range((header - 4) // 4)]
    if images and dims[1:] != [SIDE, SIDE]:
        raise InputError(f"{path} holds {dims[1]}x{dims[2]} images; MNIST images are 28x28")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise InputError(f"{path} is {len(raw)} bytes but its header announces {dims} "
                         f"({expected} bytes); the file is truncated or damaged")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if images:
        return data.reshape(dims[0], SIDE * SIDE)
    if data.size and data.max() >= N_CLASSES:
        row = int(np.argmax(data >= N_CLASSES))
        raise InputError(f"{path} holds label {data[row]} at row {row}; MNIST labels are 0 to "
                         f"{N_CLASSES - 1}, so the file is damaged")
    return data.astype(np.int64)


def _subset():
    """The embedded arrays (decompressed once, checksum checked)."""
    return load_embedded(SUBSET)[0]


def _frozen_pixels(images):
    x = images.astype(np.float64) / 255.0
    x.flags.writeable = False
    return x


def _frozen_labels(labels):
    y = labels.astype(np.int64)
    y.flags.writeable = False
    return y


@lru_cache(maxsize=1)
def embedded():
    """(X_train, y_train, X_valid, y_valid): the paper's 10,000 + 10,000 images (canonical training
    images 0-9,999 and 10,000-19,999), pixels scaled to [0, 1], read-only float64."""
    s = _subset()
    X, y = _frozen_pixels(s["train_images"]), _frozen_labels(s["train_labels"])
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


@lru_cache(maxsize=1)
def embedded_test():
    """(X_test, y_test): 5,000 test images (every other one of the canonical 10,000), in [0, 1]."""
    s = _subset()
    return _frozen_pixels(s["test_images"]), _frozen_labels(s["test_labels"])
