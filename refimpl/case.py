"""Case (every input of one problem) and Result (every output), DESIGN §5; input checks live here.

A Case is checked in full when it is built, whichever way (a spec, a case file, the meta-optimizer
swapping hyperparameters): nothing downstream checks user input again. `gamma` is stored quantised,
as the effective values n / 2**16 the engine uses and reports.
"""

import json
import math
import os
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from . import data, fixedpoint, memory
from .errors import InputError
from .memory import describe_bytes
from .mlp import ACTIVATIONS, Layout
from .npzfile import inspect_npz

GAMMA_MIN = 1.0 / fixedpoint.D
DATASETS = ("synthetic", "mnist", "PATH.npz")
SYNTHETIC_ROWS = 1000
MAX_DATA_BYTES = 4 << 30
MAX_PARAMETERS = 2**53
MNIST_ROWS, MNIST_TEST_ROWS, MNIST_PIXELS = 20_000, 5_000, 784  # the embedded subset (mnist.py)


@dataclass(frozen=True, eq=False)
class Case:
    """The inputs of DESIGN §5: data, batches, unit initial noise and hyperparameters.

    Shapes: X_train (N, D), y_train (N,), X_valid (M, D), y_valid (M,), batches (T, B) row indices
    into X_train, eps (P,), alpha and gamma (T, G), init_scale (G,), l2 (G,) or (P,).
    Arrays are converted to float64/int64 (without a copy when they already are) and not copied.

    model: None for the MLP of DESIGN §1 (layer_sizes, activation); or an object that replaces it
    with `layout` (the groups of w: P, G, expand, group_sum, group_dot, group_of,
    describe_group), `n_labels` (labels lie in [0, n_labels)), and the passes
    ``loss_grad(w, X, y) -> (ell, g)`` and ``loss_grad_hvp(w, dv, X, y, input_grad) ->
    (ell, g, H dv, dX or None)``, the g of both bit-identical (e.g. `multitask.MultiTaskMLP`).
    Inputs still have layer_sizes[0] columns.
    """

    layer_sizes: tuple
    activation: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    batches: np.ndarray
    eps: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray
    init_scale: np.ndarray
    l2: np.ndarray
    grad_train_inputs: bool = False
    spec: dict = field(default=None, repr=False)
    model: object = field(default=None, repr=False)

    def __post_init__(self):
        set_ = object.__setattr__.__get__(self)
        set_("layer_sizes", _layer_sizes(self.layer_sizes))
        if self.activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {self.activation!r}; "
                             f"use one of {', '.join(map(repr, ACTIVATIONS))}")
        D = self.layer_sizes[0]
        K = self.layer_sizes[-1] if self.model is None else self.model.n_labels
        for split in ("train", "valid"):
            X = _inputs(f"X_{split}", getattr(self, f"X_{split}"), D)
            y = _labels(f"y_{split}", getattr(self, f"y_{split}"), len(X), K)
            set_(f"X_{split}", X)
            set_(f"y_{split}", y)
        set_("batches", _batches(self.batches, len(self.X_train)))
        T, G, P = self.T, self.G, self.P
        set_("eps", _floats("eps", self.eps, (P,), "one unit-normal draw per parameter"))
        alpha = _floats("alpha", self.alpha, (T, G), "one step size per step and group")
        if np.any(alpha < 0):
            raise InputError(f"alpha has negative values (min {alpha.min():g}); "
                             "step sizes are >= 0")
        set_("alpha", alpha)
        set_("gamma", _gamma(self.gamma, (T, G)))
        scale = _floats("init_scale", self.init_scale, (G,), "one initial scale per group")
        if np.any(scale < 0):
            raise InputError(f"init_scale has negative values (min {scale.min():g}); "
                             "scales are >= 0")
        set_("init_scale", scale)
        set_("l2", _l2(self.l2, G, P))
        set_("grad_train_inputs", _flag("grad_train_inputs", self.grad_train_inputs))

    @cached_property
    def layout(self):
        return Layout(self.layer_sizes) if self.model is None else self.model.layout

    @property
    def T(self):
        return self.batches.shape[0]

    @property
    def G(self):
        return self.layout.G

    @property
    def P(self):
        return self.layout.P

    @property
    def l2_per_weight(self):
        return self.l2.shape == (self.P,) and self.P != self.G

    @cached_property
    def lam(self):
        """The penalty per weight, shape (P,)."""
        return self.l2 if self.l2.shape == (self.P,) else self.layout.expand(self.l2)

    @property
    def w0(self):
        """w_0 = s[group] * eps."""
        return self.layout.expand(self.init_scale) * self.eps

    def replace(self, **changes):
        """A new Case with some inputs replaced (checked again in full)."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        kwargs.update(changes)
        return Case(**kwargs)


@dataclass(frozen=True, eq=False)
class Result:
    """The outputs of DESIGN §5 (same names), plus the per-step training losses.

    d_X_train is None unless the case asks for it. buffer_bits is the information buffer's size at
    its largest for method="reversible", and the stored trajectory's size for method="stored";
    exact_recovery is True when the reverse pass gave back w_0 bit for bit with the buffer back at
    its start (for "stored" it reads w_0 back from memory, so it is True by construction).
    """

    valid_loss: float
    w_final: np.ndarray
    d_alpha: np.ndarray
    d_gamma: np.ndarray
    d_init_scale: np.ndarray
    d_l2: np.ndarray
    d_w0: np.ndarray
    d_X_train: np.ndarray
    exact_recovery: bool
    buffer_bits: int
    train_losses: np.ndarray


def require_case(obj, where):
    """Refuse, before any work, anything but a Case where one is needed (`where`: the function)."""
    if not isinstance(obj, Case):
        what = "a dict (a spec?)" if isinstance(obj, dict) else _type_name(obj)
        raise InputError(f"{where} takes a revlearn.Case; received {what}. Build one from a spec "
                         "with revlearn.make_case(spec) first")


# --- specs ----------------------------------------------------------------------------------

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
    "alpha": ("a number or an array (nested lists) of numbers", REQUIRED),
    "gamma": ("a number or an array (nested lists) of numbers", REQUIRED),
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
    missing = [k for k, (_, d) in SPEC_FIELDS.items() if d is REQUIRED and k not in spec]
    if missing:
        raise InputError(f"the spec needs {', '.join(map(repr, missing))}")
    full = {k: spec.get(k, d) for k, (_, d) in SPEC_FIELDS.items()}
    for key, value in full.items():
        full[key] = _plain(value, key == "dataset")
        if not _spec_type_ok(key, full[key]):
            raise InputError(f"spec key {key!r} must be {SPEC_FIELDS[key][0]}; "
                             f"received {_received(value)}")
    L = len(full["layer_sizes"]) - 1
    if L < 1:
        raise InputError(f"layer_sizes {full['layer_sizes']} needs at least an input and an "
                         "output size")
    return full


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
    return f"{_type_name(v)} {_short_repr(_plain(v))}"


def _type_name(v):
    t = type(v)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


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


def make_case(spec):
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
    return Case(
        layer_sizes=sizes, activation=spec["activation"],
        X_train=X_train, y_train=y_train, X_valid=X_valid, y_valid=y_valid,
        batches=sample_batches(len(X_train), T, B, batch_rng),
        eps=eps_rng.standard_normal(P),
        alpha=_broadcast("alpha", spec["alpha"], (T, G)),
        gamma=_broadcast("gamma", spec["gamma"], (T, G)),
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
    parts = {
        "data": data_bytes,
        "batches (T x B)": 2 * 8 * T * B,          # int64, cut from epochs of permutations
        "alpha, gamma and their gradients (T x G)": 6 * 8 * T * G,
        "per-parameter vectors (P)": 16 * 8 * P,   # eps, lam, w, v, g, dw, dv, H u, lanes, ...
        "information buffer": int(2 * T * P * _bits_per_step(spec["gamma"]) / 8),
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
    """Bits per parameter per step the information buffer keeps, log2(1 / gamma) on average over
    the spec's gamma (a number or nested lists)."""
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


# --- checks on the arrays of a Case --------------------------------------------------------

def _layer_sizes(sizes):
    try:
        out = tuple(int(s) for s in sizes)
        ok = len(out) >= 2 and all(s >= 1 and s == t for s, t in zip(out, sizes, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"layer_sizes {sizes!r} must be at least two positive integers "
                         "[D, H1, ..., K]")
    if out[-1] < 2:
        raise InputError(f"layer_sizes {list(out)} ends in {out[-1]} classes; softmax needs K >= 2")
    P = sum(i * o + o for i, o in zip(out[:-1], out[1:], strict=False))
    if P > MAX_PARAMETERS:
        raise InputError(f"layer_sizes {list(out)} describe {P} parameters; revlearn handles at "
                         f"most 2**53")
    return out


def _inputs(name, X, D):
    X = np.asarray(X, dtype=np.float64) if _numeric(X) else X
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise InputError(f"{name} must be a 2-d numeric array (rows x {D} inputs); received "
                         f"{_describe(X)}")
    if X.shape[1] != D:
        raise InputError(f"{name} has {X.shape[1]} inputs per row but layer_sizes starts with {D}; "
                         "make them match")
    if len(X) == 0:
        raise InputError(f"{name} has no rows")
    if not np.all(np.isfinite(X)):
        raise InputError(f"{name} has NaN or infinite entries (first at row "
                         f"{np.argwhere(~np.isfinite(X))[0][0]})")
    return X


def _labels(name, y, N, K):
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != N or y.dtype.kind not in "iu":
        raise InputError(f"{name} must be {N} integer class labels, one per row; received "
                         f"{_describe(y)}")
    bad = (y < 0) | (y >= K)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}[{i}] = {y[i]} is not a class label in [0, {K}) "
                         f"(K = layer_sizes[-1] = {K})")
    return y.astype(np.int64)


def _batches(b, N):
    b = np.asarray(b)
    if b.ndim != 2 or b.dtype.kind not in "iu" or b.size == 0:
        raise InputError(f"batches must be a non-empty 2-d integer array (T steps x B rows); "
                         f"received {_describe(b)}")
    bad = (b < 0) | (b >= N)
    if bad.any():
        t, r = np.argwhere(bad)[0]
        raise InputError(f"batches[{t}, {r}] = {b[t, r]} is not a row of X_train (0 <= i < {N})")
    return b.astype(np.int64)


def _floats(name, a, shape, meaning):
    a = np.asarray(a, dtype=np.float64) if _numeric(a) else a
    if not isinstance(a, np.ndarray) or a.shape != shape:
        raise InputError(f"{name} must have shape {shape} ({meaning}); received {_describe(a)}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has NaN or infinite entries (first at index "
                         f"{tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])})")
    return a


def _gamma(gamma, shape):
    g = np.asarray(gamma, dtype=np.float64) if _numeric(gamma) else gamma
    if not isinstance(g, np.ndarray) or g.shape != shape:
        raise InputError(f"gamma must have shape {shape} (one momentum per step and group); "
                         f"received {_describe(g)}")
    bad = ~((g >= GAMMA_MIN) & (g <= 1.0))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"gamma{list(idx)} = {g[idx]!r} is outside [2**-16, 1]; momentum must lie "
                         "in that range (it is quantised to n / 2**16)")
    return fixedpoint.quantize_gamma(g) / fixedpoint.D


def _l2(l2, G, P):
    a = np.asarray(l2, dtype=np.float64) if _numeric(l2) else l2
    if not isinstance(a, np.ndarray) or a.shape not in ((G,), (P,)):
        raise InputError(f"l2 must have shape ({G},) (one per group) or ({P},) (one per weight); "
                         f"received {_describe(a)}")
    a = _floats("l2", a, a.shape, "one penalty per group or per weight")
    if np.any(a < 0):
        raise InputError(f"l2 has negative values (min {a.min():g}); penalties are >= 0")
    return a


def _flag(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False; received {v!r}")
    return bool(v)


def _numeric(a):
    try:
        return np.asarray(a).dtype.kind in "biuf"
    except (TypeError, ValueError):
        return False


def _describe(a):
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return f"{type(a).__name__}"
