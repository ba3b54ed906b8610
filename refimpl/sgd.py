"""Algorithm 1 (SGD with momentum) and Algorithm 2 (its reverse, giving the hypergradient).

Algorithm 1, DESIGN §2, per step t with the batch B_t:

    g_t     = grad L_t(w_t),   L_t(w) = ell(w; X[B_t], y[B_t]) + 1/2 sum_i lam_i w_i^2
    v_{t+1} = gamma_t v_t - (1 - gamma_t) g_t
    w_{t+1} = w_t + alpha_t v_{t+1}

Algorithm 2, DESIGN §3, from dw = grad f(w_T), dv = 0, backwards over t, with u = (1 - gamma_t) dv:

    d_alpha_t = dw . v_{t+1}                       (per group)
    w_t       = w_{t+1} - alpha_t v_{t+1}
    v_t       = (v_{t+1} + (1 - gamma_t) g_t) / gamma_t
    dv       += alpha_t dw
    d_gamma_t = dv . (v_t + g_t)                   (per group)
    dw       -= H_t u                              (H_t = Hessian of L_t at w_t)
    d_lam    -= w_t u                              (per weight)
    d_X[B_t] -= d/dX (grad L_t . u)
    dv       *= gamma_t

then d_init_scale = eps . dw per group and d_w0 = dw. DESIGN §3 writes (1 - gamma_t) H_t dv, which
is the same for a single gamma; with one gamma per group the factor must act on dv before H_t, since
d v_{t+1} / d w_t = -diag(1 - gamma_t) H_t and its transpose is -H_t diag(1 - gamma_t).

method="reversible" runs Algorithm 1 in fixed point (`fixedpoint`) and undoes it step by step,
keeping only the bits momentum destroys; method="stored" runs it in float64, keeps w_t and v_t for
every step, and reads them back. Both share the reverse loop `_reverse`.
"""

import os
from typing import NamedTuple

import numpy as np

from . import ans, blas, fixedpoint, mlp
from .case import Result, require_case
from .errors import InputError, TrainingError
from .exact import exact_step, exact_unstep_v, exact_unstep_w
from .threads import Workers

METHODS = ("reversible", "stored")
BACKENDS = ("auto", "numpy", "numba")


class Backend(NamedTuple):
    """The hot loops one backend provides: the MLP passes (over chunks of rows, on `workers`),
    the exact momentum steps (`revlearn.exact`) and the elementwise adjoint updates of Algorithm 2.

    The exact steps take the fixed-point state (W, V, buffer) and return the next one; a backend
    may update the arrays it is given in place (the numba backend does), so callers pass the
    current state on and keep no other reference to it. The adjoint updates work in place.
    """

    name: str
    loss_grad: object
    loss_grad_hvp: object
    exact_step: object
    exact_unstep_w: object
    exact_unstep_v: object
    adjoint_v: object
    adjoint_w: object


class Adjoint(NamedTuple):
    """Algorithm 2's running adjoints, each of shape (P,): dw = df/dw_t, dv = df/dv_t, and the
    per-weight d_lam accumulated so far."""

    dw: np.ndarray
    dv: np.ndarray
    d_lam: np.ndarray


class Trained(NamedTuple):
    """What Algorithm 1 alone returns: w_T and the data loss ell on each step's batch."""

    w_final: np.ndarray
    train_losses: np.ndarray


# --- the adjoint updates of Algorithm 2 (per-entry alpha, gamma, lam), in place -----------

def adjoint_v(adj, alpha, gamma):
    """dv <- dv + alpha dw, then the direction the Hessian acts on:  u = (1 - gamma) dv."""
    dw, dv, _ = adj
    dv += alpha * dw
    return (1.0 - gamma) * dv


def adjoint_w(adj, Hu, u, w, lam, gamma):
    """dw <- dw - (H u + lam u);  d_lam <- d_lam - w u;  dv <- gamma dv."""
    dw, dv, d_lam = adj
    dw -= Hu + lam * u
    d_lam -= w * u
    dv *= gamma


NUMPY = Backend("numpy", mlp.loss_grad, mlp.loss_grad_hvp, exact_step, exact_unstep_w,
                exact_unstep_v, adjoint_v, adjoint_w)


def get_backend(name):
    """The Backend called `name`: "numpy" (this package), "numba" (revlearn.kernels), or "auto"
    (numba when it can be imported, else numpy: the results are the same bits, only faster)."""
    if name == "numpy":
        return NUMPY
    if name in ("numba", "auto"):
        try:
            from revlearn.kernels import NUMBA
        except ImportError as e:
            if name == "auto":
                return NUMPY
            raise InputError(f"backend='numba' needs numba ({e}); install it with "
                             "`pip install 'revlearn[fast]'`, or use backend='numpy'") from None
        return NUMBA
    raise InputError(f"unknown backend {name!r}; use one of {', '.join(map(repr, BACKENDS))}")


def passes(case, be, workers):
    """(loss_grad(w, X, y), loss_grad_hvp(w, dv, X, y, input_grad)) of the case's model: the
    backend's MLP passes, or case.model's own when the case has one, on `workers`."""
    if case.model is not None:
        m = case.model
        return (lambda w, X, y: m.loss_grad(w, X, y, workers=workers),
                lambda w, dv, X, y, input_grad: m.loss_grad_hvp(w, dv, X, y, input_grad,
                                                                workers=workers))
    lay, act = case.layout, case.activation
    return (lambda w, X, y: be.loss_grad(w, X, y, lay, act, workers=workers),
            lambda w, dv, X, y, input_grad: be.loss_grad_hvp(w, dv, X, y, lay, act,
                                                             input_grad=input_grad,
                                                             workers=workers))


# --- Algorithm 1 ---------------------------------------------------------------------------

class _StepHyper(NamedTuple):
    alpha: np.ndarray
    gamma: np.ndarray
    n: np.ndarray


def _step_hyper(case, t):
    """alpha_t, gamma_t and n_t = gamma_t 2**16 for every entry of w."""
    expand = case.layout.expand
    return _StepHyper(expand(case.alpha[t]), expand(case.gamma[t]),
                      expand(fixedpoint.quantize_gamma(case.gamma[t])))


def _batch_grad(be, workers, case, t, w):
    """L_t's data loss and gradient at w (penalty included), refusing a non-finite gradient."""
    rows = case.batches[t]
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught below, with context
        ell, g = passes(case, be, workers)[0](w, case.X_train[rows], case.y_train[rows])
        g += case.lam * w
    if not np.all(np.isfinite(g)):
        group = case.layout.describe_group(case.layout.group_of(np.flatnonzero(~np.isfinite(g))[0]))
        raise TrainingError(f"step {t}: the gradient is not finite (first in {group}); training "
                            "diverged, use a smaller alpha or init_scale")
    return ell, g


def _train_exact(case, be, workers):
    """Algorithm 1 in fixed point: the final (W, V, buffer) and the training losses."""
    W = _to_fixed_at(case, case.w0, "initialisation")
    V = np.zeros(case.P, dtype=np.int64)
    buf = ans.new_buffer(case.P)
    losses = np.empty(case.T)
    for t in range(case.T):
        losses[t], g = _batch_grad(be, workers, case, t, fixedpoint.from_fixed(W))
        h = _step_hyper(case, t)
        try:
            W, V, buf = be.exact_step(W, V, buf, g, h.alpha, h.gamma, h.n, workers)
        except fixedpoint.RangeError as e:
            raise _range_error(case, f"step {t}", e) from None
    return W, V, buf, losses


def _train_float(case, be, workers, keep):
    """Algorithm 1 in float64; with keep=True also every w_t and v_t, shape (T+1, P)."""
    w, v = case.w0, np.zeros(case.P)
    losses = np.empty(case.T)
    ws = np.empty((case.T + 1, case.P)) if keep else None
    vs = np.empty((case.T + 1, case.P)) if keep else None
    for t in range(case.T):
        if keep:
            ws[t], vs[t] = w, v
        losses[t], g = _batch_grad(be, workers, case, t, w)
        h = _step_hyper(case, t)
        v = h.gamma * v - (1.0 - h.gamma) * g
        w = w + h.alpha * v
    if keep:
        ws[-1], vs[-1] = w, v
    return w, losses, ws, vs


def train(case, exact=True, backend="auto", threads=None):
    """Algorithm 1 alone: w_T and the per-step training losses (data loss on each batch).

    exact=True runs the fixed-point arithmetic the reversible hypergradient differentiates;
    exact=False is plain float64 SGD with momentum, the baseline a user would otherwise run.
    threads: how many threads share the work (None: every core this process may use); the
    results are the same bits for every thread count and backend.
    """
    require_case(case, "revlearn.train")
    be, workers = get_backend(backend), Workers(threads)
    with blas.single_threaded():
        if exact:
            W, _, _, losses = _train_exact(case, be, workers)
            return Trained(fixedpoint.from_fixed(W), losses)
        w, losses, _, _ = _train_float(case, be, workers, keep=False)
    return Trained(w, losses)


def valid_loss(case, backend="auto", threads=None):
    """f(w_T) = ell(w_T; X_valid, y_valid) after the exact training run: what `hypergradient`
    differentiates, as a plain function of the case (for finite differences and line searches)."""
    require_case(case, "revlearn.valid_loss")
    workers = Workers(threads)
    with blas.single_threaded():
        w_T = train(case, backend=backend, threads=workers.threads).w_final
        if case.model is not None:
            return case.model.loss_grad(w_T, case.X_valid, case.y_valid, workers=workers)[0]
        return mlp.loss(w_T, case.X_valid, case.y_valid, case.layout, case.activation, workers)


# --- Algorithm 2 ---------------------------------------------------------------------------

class _Reversal:
    """Gives back w_t, v_{t+1} and then v_t by undoing Algorithm 1 in fixed point."""

    def __init__(self, be, workers, W, V, buf):
        self.be, self.workers, self.W, self.V, self.buf = be, workers, W, V, buf

    def w_and_v_next(self, t, h):
        v_next = fixedpoint.from_fixed(self.V)
        self.W = self.be.exact_unstep_w(self.W, self.V, h.alpha, self.workers)
        return fixedpoint.from_fixed(self.W), v_next

    def v(self, t, h, g):
        self.V, self.buf = self.be.exact_unstep_v(self.V, self.buf, g, h.gamma, h.n, self.workers)
        return fixedpoint.from_fixed(self.V)


class _Stored:
    """Gives back w_t, v_{t+1} and v_t from the trajectory kept in memory."""

    def __init__(self, ws, vs):
        self.ws, self.vs = ws, vs

    def w_and_v_next(self, t, h):
        return self.ws[t], self.vs[t + 1]

    def v(self, t, h, g):
        return self.vs[t]


def hypergradient(case, method="reversible", backend="auto", threads=None):
    """The gradient of f(w_T) = ell(w_T; X_valid, y_valid) with respect to every hyperparameter.

    Returns a `Result`: valid_loss, w_final, d_alpha, d_gamma, d_init_scale, d_l2, d_w0,
    d_X_train (when case.grad_train_inputs), exact_recovery, buffer_bits, train_losses.
    backend: "auto" (numba when installed), "numpy" or "numba"; threads: how many threads share
    the work (None: every core this process may use). Every backend and thread count gives the
    same bits.
    """
    require_case(case, "revlearn.hypergradient")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(map(repr, METHODS))}")
    be, workers = get_backend(backend), Workers(threads)
    if method == "stored":
        _check_trajectory_fits(case)
    with blas.single_threaded():
        if method == "reversible":
            W, V, buf, losses = _train_exact(case, be, workers)
            w_T = fixedpoint.from_fixed(W)
            traj = _Reversal(be, workers, W, V, buf)
            bits = ans.size_bits(buf)
        else:
            w_T, losses, ws, vs = _train_float(case, be, workers, keep=True)
            traj = _Stored(ws, vs)
            bits = 64 * (ws.size + vs.size)
        valid_loss, dw = passes(case, be, workers)[0](w_T, case.X_valid, case.y_valid)
        grads = _reverse(case, be, workers, traj, dw)
    if method == "reversible":
        recovered = bool(np.array_equal(traj.W, _to_fixed_at(case, case.w0, "initialisation"))
                      and ans.is_initial(traj.buf) and not traj.V.any())
    else:
        recovered = True
    return Result(valid_loss=valid_loss, w_final=w_T, exact_recovery=recovered,
                  buffer_bits=int(bits), train_losses=losses, **grads)


def _reverse(case, be, workers, traj, dw):
    """Algorithm 2 from dw = grad f(w_T): the hypergradients, as a dict of Result fields."""
    lay, T = case.layout, case.T
    adj = Adjoint(dw.copy(), np.zeros(case.P), np.zeros(case.P))
    d_alpha, d_gamma = np.empty((T, lay.G)), np.empty((T, lay.G))
    d_X = np.zeros_like(case.X_train) if case.grad_train_inputs else None
    loss_grad_hvp = passes(case, be, workers)[1]
    for t in range(T - 1, -1, -1):
        h = _step_hyper(case, t)
        rows = case.batches[t]
        w, v_next = traj.w_and_v_next(t, h)
        d_alpha[t] = lay.group_dot(adj.dw, v_next)
        u = be.adjoint_v(adj, h.alpha, h.gamma)  # dv += alpha dw;  u = (1 - gamma) dv
        _, g, Hu, dX_u = loss_grad_hvp(w, u, case.X_train[rows], case.y_train[rows],
                                       input_grad=d_X is not None)
        g += case.lam * w
        v = traj.v(t, h, g)
        d_gamma[t] = lay.group_dot(adj.dv, v + g)
        # dw -= H u + lam u;  d_lam -= w u;  dv *= gamma
        be.adjoint_w(adj, Hu, u, w, case.lam, h.gamma)
        if d_X is not None:
            np.subtract.at(d_X, rows, dX_u)
    dw, d_lam = adj.dw, adj.d_lam
    return dict(d_alpha=d_alpha, d_gamma=d_gamma, d_init_scale=lay.group_dot(dw, case.eps),
                d_l2=d_lam if case.l2_per_weight else lay.group_sum(d_lam), d_w0=dw, d_X_train=d_X)


def _check_trajectory_fits(case):
    """Refuse, before any work, a stored trajectory larger than this machine's memory."""
    need = 2 * 8 * (case.T + 1) * case.P
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise InputError(f"method='stored' keeps w_t and v_t for all {case.T} steps: "
                         f"{need / 2**30:.1f} GiB, more than this machine's "
                         f"{have / 2**30:.1f} GiB; use method='reversible'")


# --- errors --------------------------------------------------------------------------------

def _to_fixed_at(case, x, when):
    try:
        return fixedpoint.to_fixed(x)
    except fixedpoint.RangeError as e:
        raise _range_error(case, when, e) from None


def _range_error(case, when, e):
    group = case.layout.describe_group(case.layout.group_of(e.index))
    return TrainingError(
        f"{when}: {group} left the fixed-point range |value| < {fixedpoint.LIMIT:g} "
        f"(entry {e.index}: {e.value}); use a smaller alpha or init_scale")
