"""Case (every input of one problem) and Result (every output), DESIGN §5; the checks of a Case's
arrays live here (those of a spec in `revlearn.spec`).

A Case is checked in full when it is built, whichever way (a spec, a case file, the meta-optimizer
swapping hyperparameters): nothing downstream checks user input again. `gamma` (momentum) and
`beta1`, `beta2` (Adam) are stored quantised, as the effective values n / 2**16 the engine uses and
reports.
"""

from dataclasses import dataclass, field, fields
from functools import cached_property

import numpy as np

from . import fixedpoint
from .errors import InputError
from .mlp import ACTIVATIONS, Layout

GAMMA_MIN = 1.0 / fixedpoint.D
BETA_MAX = 1.0 - 1.0 / fixedpoint.D
MAX_PARAMETERS = 2**53
OPTIMIZERS = ("momentum", "adam")
OPTIMIZER_KEYS = {"momentum": ("gamma",), "adam": ("beta1", "beta2", "epsilon")}


@dataclass(frozen=True, eq=False, kw_only=True)
class Case:
    """The inputs of DESIGN §5: data, batches, unit initial noise and hyperparameters.

    Shapes: X_train (N, D), y_train (N,), X_valid (M, D), y_valid (M,), batches (T, B) row indices
    into X_train, eps (P,), alpha (T, G), init_scale (G,), l2 (G,) or (P,); and the optimizer's
    own: gamma (T, G) for optimizer="momentum" (the default), beta1 and beta2 (T, G) and epsilon
    (G,) for optimizer="adam" (the other's are None).
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
    gamma: np.ndarray = None
    init_scale: np.ndarray
    l2: np.ndarray
    grad_train_inputs: bool = False
    optimizer: str = "momentum"
    beta1: np.ndarray = None
    beta2: np.ndarray = None
    epsilon: np.ndarray = None
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
        for name, value in _optimizer(self, T, G).items():
            set_(name, value)
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
    exact_recovery is True when the reverse pass gave back w_0 bit for bit, v_0 = 0 and the
    buffer as it started, False when it did not (it does not happen: see the tests' negative
    controls), and None for method="stored", which reverses nothing: it reads w_t back from
    memory (its case files say False)."""

    valid_loss: float
    w_final: np.ndarray
    d_alpha: np.ndarray
    d_gamma: np.ndarray  # None for Adam
    d_init_scale: np.ndarray
    d_l2: np.ndarray
    d_w0: np.ndarray
    d_X_train: np.ndarray
    exact_recovery: object  # bool, or None for method="stored"
    buffer_bits: int
    train_losses: np.ndarray
    d_beta1: np.ndarray = None  # Adam's (T, G), (T, G) and (G,); None for momentum
    d_beta2: np.ndarray = None
    d_epsilon: np.ndarray = None


def require_case(obj, where):
    """Refuse, before any work, anything but a Case where one is needed (`where`: the function)."""
    if not isinstance(obj, Case):
        what = "a dict (a spec?)" if isinstance(obj, dict) else type_name(obj)
        raise InputError(f"{where} takes a revlearn.Case; received {what}. Build one from a spec "
                         "with revlearn.make_case(spec) first")


def type_name(v):
    """The name of v's type for messages: `int`, or `numpy.float32` for a non-builtin."""
    t = type(v)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


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


def _optimizer(case, T, G):
    """The optimizer's own hyperparameters, checked: {name: value} for every one of
    OPTIMIZER_KEYS, the other optimizer's None."""
    if not isinstance(case.optimizer, str) or case.optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {case.optimizer!r}; use one of "
                         f"{', '.join(map(repr, OPTIMIZERS))}")
    for other, keys in OPTIMIZER_KEYS.items():
        given = [k for k in keys if getattr(case, k) is not None]
        if other != case.optimizer and given:
            raise InputError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} "
                             f"{other}'s; optimizer {case.optimizer!r} takes "
                             f"{', '.join(OPTIMIZER_KEYS[case.optimizer])} instead")
    if case.optimizer == "momentum":
        return {"gamma": _decay("gamma", case.gamma, (T, G), "momentum", 1.0)}
    epsilon = _floats("epsilon", case.epsilon, (G,), "one epsilon per group")
    if np.any(epsilon <= 0):
        i = int(np.flatnonzero(epsilon <= 0)[0])
        raise InputError(f"epsilon[{i}] = {float(epsilon[i])!r} is not > 0; Adam's epsilon must be "
                         "positive (1e-8 is usual)")
    return {"beta1": _decay("beta1", case.beta1, (T, G), "Adam's first-moment decay", BETA_MAX),
            "beta2": _decay("beta2", case.beta2, (T, G), "Adam's second-moment decay", BETA_MAX),
            "epsilon": epsilon}


def _decay(name, value, shape, meaning, top):
    """A decay factor per step and group in [2**-16, top], quantised to n / 2**16."""
    if value is None:
        raise InputError(f"this case's optimizer needs {name} ({meaning}, shape {shape})")
    g = np.asarray(value, dtype=np.float64) if _numeric(value) else value
    if not isinstance(g, np.ndarray) or g.shape != shape:
        raise InputError(f"{name} must have shape {shape} (one {meaning} per step and group); "
                         f"received {_describe(g)}")
    bad = ~((g >= GAMMA_MIN) & (g <= top))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        span = "[2**-16, 1]" if top == 1.0 else "[2**-16, 1 - 2**-16]"
        raise InputError(f"{name}{list(idx)} = {float(g[idx])!r} is outside {span}; {meaning} "
                         "must lie in that range (it is quantised to n / 2**16)")
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
