"""Specs: the JSON form of a problem (the keys of `make_case`'s dict and of a case file's `spec`),
their schema and checks, and the Case a spec describes (`make_case`).

A spec is checked in full, key by key, before any data is read or any array made (`complete_spec`,
`check_memory`); the arrays of the Case it builds are checked again by `Case` itself, as every
Case is, however it is made.
"""

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import data, memory
from .case import GAMMA_MIN, OPTIMIZER_KEYS, OPTIMIZERS, Case, type_name
from .errors import InputError
from .memory import describe_bytes
from .mlp import Layout
from .npzfile import inspect_npz

DATASETS = ("synthetic", "mnist", "PATH.npz")
SYNTHETIC_ROWS = 1000
MAX_DATA_BYTES = 4 << 30
MNIST_ROWS, MNIST_TEST_ROWS, MNIST_PIXELS = 20_000, 5_000, 784  # the embedded subset (mnist.py)

REQUIRED = object()
SPEC_FIELDS = {
    "layer_sizes": ("a list of positive integers", REQUIRED),
    "activation": ("a string", "tanh"),
    "dataset": ("a string", "synthetic"),
    "n_train": ("a positive integer or null", None),
    "n_valid": ("a positive integer or null", None),
    "n_iters": ("a positive integer", REQUIRED),
    "batch_size": ("a positive integer", REQUIRED),
    "seed": ("a non-negative integer", 0),
    "optimizer": ("a string", "momentum"),
    "alpha": ("a number or an array (nested lists) of numbers", REQUIRED),
    "gamma": ("a number or an array (nested lists) of numbers", REQUIRED),
    "beta1": ("a number or an array (nested lists) of numbers", 0.9),
    "beta2": ("a number or an array (nested lists) of numbers", 0.999),
    "epsilon": ("a number or an array (nested lists) of numbers", 1e-8),
    "init_scale": ("a number or an array (nested lists) of numbers", REQUIRED),
    "l2": ("a number or an array (nested lists) of numbers", 0.0),
    "l2_per_weight": ("true or false", False),
    "grad_train_inputs": ("true or false", False),
}


def complete_spec(spec):
    """The spec with every default filled in, after checking keys and types (no data is read)."""
    if not isinstance(spec, dict):
        raise InputError(f"a spec is a JSON object (dict); received {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        raise InputError(f"unknown spec key(s) {', '.join(map(repr, unknown))}; "
                         f"the keys are {', '.join(SPEC_FIELDS)}")
    fields = _fields_of(spec)
    missing = [k for k, (_, d) in fields.items() if d is REQUIRED and k not in spec]
    if missing:
        raise InputError(f"the spec needs {', '.join(map(repr, missing))}")
    full = {k: spec.get(k, d) for k, (_, d) in fields.items()}
    for key, value in full.items():
        full[key] = _plain(value, key == "dataset")
        if not _spec_type_ok(key, full[key]):
            raise InputError(f"spec key {key!r} must be {SPEC_FIELDS[key][0]}; "
                             f"received {_received(value)}")
    L = len(full["layer_sizes"]) - 1
    if L < 1:
        raise InputError(f"layer_sizes {full['layer_sizes']} needs at least an input and an "
                         "output size")
    if full["optimizer"] == "momentum":  # completed as before Adam: the same spec in case files
        del full["optimizer"]
    return full


def optimizer_of(spec):
    """The optimizer a (completed) spec trains with: "momentum" unless it says "adam"."""
    return spec.get("optimizer", "momentum")


def _fields_of(spec):
    """SPEC_FIELDS without the other optimizer's keys, after refusing a spec that gives them."""
    optimizer = _plain(spec.get("optimizer", "momentum"))
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise InputError(f"spec key 'optimizer' must be one of {', '.join(map(repr, OPTIMIZERS))}; "
                         f"received {_received(spec.get('optimizer'))}")
    other = [k for o, keys in OPTIMIZER_KEYS.items() if o != optimizer for k in keys]
    given = [k for k in other if k in spec]
    if given:
        own = ", ".join(map(repr, OPTIMIZER_KEYS[optimizer]))
        raise InputError(f"spec key(s) {', '.join(map(repr, given))} belong to another optimizer; "
                         f"optimizer {optimizer!r} takes {own} instead")
    return {k: v for k, v in SPEC_FIELDS.items() if k not in other}


def _spec_type_ok(key, v):
    kind = SPEC_FIELDS[key][0]
    is_int = isinstance(v, int) and not isinstance(v, bool)
    if kind.startswith("a list"):
        return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i > 0
                                           for i in v)
    if kind == "a string":
        return isinstance(v, str)
    if kind == "a positive integer or null":
        return v is None or (is_int and v > 0)
    if kind == "a positive integer":
        return is_int and v > 0
    if kind == "a non-negative integer":
        return is_int and v >= 0
    if kind == "true or false":
        return isinstance(v, bool)
    return _is_numeric_tree(v)


def _plain(v, path_ok=False):
    """v with what NumPy users pass turned into plain JSON values: NumPy scalars (np.int64,
    np.float32, np.bool_, np.str_) into int, float, bool, str; arrays and tuples into (nested)
    lists; a path (path_ok) into a string. Anything else is left for the type check to refuse."""
    if isinstance(v, np.ndarray):
        return v.tolist() if v.dtype.kind in "biufU" else v
    if isinstance(v, np.generic):
        return v.item() if v.dtype.kind in "biufU" else v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if path_ok and isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def _received(v):
    """What a spec value is, for messages: its type and (short) value."""
    if isinstance(v, np.ndarray):
        return f"a {v.dtype} array of shape {v.shape}"
    return f"{type_name(v)} {_short_repr(_plain(v))}"


def _short_repr(v):
    try:
        text = json.dumps(v)
    except TypeError:
        text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_numeric_tree(v):
    if isinstance(v, list):
        return len(v) > 0 and all(_is_numeric_tree(i) for i in v)
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def make_case(spec: Mapping[str, Any]) -> Case:
    """Build every input of DESIGN §5 from a spec dict (the keys of the oracle's spec JSON).

    Randomness comes from ``seed`` through three independent streams: the synthetic data, the
    initial noise eps ~ N(0, 1) and the batches (one random permutation of the training rows per
    epoch, cut into consecutive batches; a last partial batch is dropped).
    """
    spec = complete_spec(spec)
    check_memory(spec)
    sizes = tuple(spec["layer_sizes"])
    data_rng, eps_rng, batch_rng = (np.random.default_rng(s)
                                    for s in np.random.SeedSequence(spec["seed"]).spawn(3))
    X_train, y_train, X_valid, y_valid = _dataset(spec, sizes, data_rng)
    T, B = spec["n_iters"], spec["batch_size"]
    if B > len(X_train):
        raise InputError(f"batch_size {B} is larger than the {len(X_train)} training rows")
    layout = Layout(sizes)
    G, P = layout.G, layout.P
    l2_shape = (P,) if spec["l2_per_weight"] else (G,)
    own = {"gamma": (T, G), "beta1": (T, G), "beta2": (T, G), "epsilon": (G,)}
    return Case(
        layer_sizes=sizes, activation=spec["activation"],
        X_train=X_train, y_train=y_train, X_valid=X_valid, y_valid=y_valid,
        batches=sample_batches(len(X_train), T, B, batch_rng),
        eps=eps_rng.standard_normal(P),
        alpha=_broadcast("alpha", spec["alpha"], (T, G)), optimizer=optimizer_of(spec),
        **{k: _broadcast(k, spec[k], own[k]) for k in OPTIMIZER_KEYS[optimizer_of(spec)]},
        init_scale=_broadcast("init_scale", spec["init_scale"], (G,)),
        l2=_broadcast("l2", spec["l2"], l2_shape),
        grad_train_inputs=spec["grad_train_inputs"], spec=spec)


def memory_needed(spec):
    """The bytes building the case of a completed spec and one hypergradient of it need, estimated
    from the spec alone (no array is made): a dict part -> bytes."""
    sizes = spec["layer_sizes"]
    T, B, G = spec["n_iters"], spec["batch_size"], 2 * (len(sizes) - 1)
    P = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=False))
    N, M, data_bytes = _data_needed(spec, sizes)
    adam = optimizer_of(spec) == "adam"
    decays = (spec["beta1"], spec["beta2"]) if adam else (spec["gamma"],)
    parts = {
        "data": data_bytes,
        "batches (T x B)": 2 * 8 * T * B,          # int64, cut from epochs of permutations
        "per-step hyperparameters and their gradients (T x G)": (16 if adam else 6) * 8 * T * G,
        "per-parameter vectors (P)": (26 if adam else 16) * 8 * P,  # eps, lam, w, v, g, dw, ...
        "information buffer": int(2 * T * P * sum(map(_bits_per_step, decays)) / 8),
        "activations": 6 * 8 * max(B, M) * sum(sizes),
        "training losses (T)": 8 * T,
    }
    if spec["grad_train_inputs"]:
        parts["d_X_train"] = 8 * N * sizes[0]
    return parts


def check_memory(spec):
    """Refuse, before any array is made, a spec whose case and hypergradient would need more
    memory than this machine has (`memory_needed`)."""
    have = memory.physical_memory()
    if have is None:
        return
    parts = memory_needed(spec)
    need = sum(parts.values())
    if need > have:
        largest = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
        detail = ", ".join(f"{k} {describe_bytes(v)}" for k, v in largest if v)
        raise InputError(f"this spec needs an estimated {describe_bytes(need)} of memory "
                         f"({detail}), more than this machine's {describe_bytes(have)}; use fewer "
                         "steps (n_iters), a smaller batch_size, smaller layer_sizes or less data")


def _data_needed(spec, sizes):
    """(training rows, validation rows, bytes) of the spec's data set, from the spec and, for a
    file, the shapes its headers declare."""
    name, n_train, n_valid = spec["dataset"], spec["n_train"], spec["n_valid"]
    D, K = sizes[0], sizes[-1]
    if name == "synthetic":
        N, M = n_train or SYNTHETIC_ROWS, n_valid or SYNTHETIC_ROWS
        return N, M, 8 * (N + M) * (D + K + 1)
    if name == "mnist":
        rows = MNIST_ROWS // 2
        held = (MNIST_ROWS + MNIST_TEST_ROWS) * MNIST_PIXELS * 9  # uint8 and float64 copies
        return min(n_train or rows, rows), min(n_valid or rows, rows), held
    if name.endswith(".npz") and Path(name).is_file():
        declared = inspect_npz(name, "dataset")
        rows = {k: shape[0] if shape else 0 for k, (shape, _) in declared.items()}
        held = sum(math.prod(shape) * (dtype.itemsize + 8) for shape, dtype in declared.values())
        return rows.get("X_train", 0), rows.get("X_valid", 0), held
    return 0, 0, 0  # unknown or missing: _dataset says so


def _bits_per_step(gamma):
    """Bits per parameter per step the information buffer keeps for one decay, log2(1 / gamma)
    on average over the spec's gamma (or beta1, beta2: a number or nested lists)."""
    try:
        g = np.asarray(gamma, dtype=np.float64)
    except (TypeError, ValueError):
        return 16.0
    g = np.where(np.isfinite(g), np.clip(g, GAMMA_MIN, 1.0), 1.0)
    return float(np.mean(-np.log2(g))) if g.size else 0.0


def sample_batches(N, T, B, rng):
    """(T, B) row indices: per epoch a permutation of range(N) cut into N div B batches."""
    per_epoch = N // B
    epochs = [rng.permutation(N)[:per_epoch * B].reshape(per_epoch, B)
              for _ in range(math.ceil(T / per_epoch))]
    return np.concatenate(epochs)[:T].astype(np.int64)


def _dataset(spec, sizes, rng):
    name, D, K = spec["dataset"], sizes[0], sizes[-1]
    n_train, n_valid = spec["n_train"], spec["n_valid"]
    if name == "synthetic":
        n_train, n_valid = n_train or SYNTHETIC_ROWS, n_valid or SYNTHETIC_ROWS
        need = (n_train + n_valid) * D * 8
        if need > MAX_DATA_BYTES:
            raise InputError(f"a synthetic data set of {n_train + n_valid} rows x {D} inputs needs "
                             f"{need / 2**30:.1f} GiB; keep it under {MAX_DATA_BYTES >> 30} GiB")
        return data.synthetic(D, K, n_train, n_valid, rng)
    if name == "mnist":
        from .mnist import embedded
        arrays = embedded()
    elif name.endswith(".npz"):
        if not Path(name).is_file():
            raise InputError(f"dataset file {name} does not exist")
        arrays = data.load_npz(name)
    else:
        raise InputError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
    X_train, y_train, X_valid, y_valid = arrays
    for what, n, avail in (("n_train", n_train, len(X_train)), ("n_valid", n_valid, len(X_valid))):
        if n is not None and n > avail:
            raise InputError(f"{what} = {n} but dataset {name} has {avail} rows for it")
    return (X_train[:n_train], y_train[:n_train], X_valid[:n_valid], y_valid[:n_valid])


def _broadcast(name, value, shape):
    try:
        a = np.asarray(value, dtype=np.float64)
    except ValueError:
        raise InputError(f"{name} is a ragged nested list; give a single number or an array of "
                         f"shape {shape}") from None
    if a.ndim == 0:
        return np.full(shape, float(a))
    if a.shape != shape:
        raise InputError(f"{name} has shape {a.shape}; give a single number or an array of shape "
                         f"{shape}")
    return a
