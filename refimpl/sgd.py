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
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import ans, blas, fixedpoint, lanes, mlp
from .case import Case, Result, require_case
from .errors import InputError, TrainingError
from .partition import row_chunks
from .threads import Workers

METHODS = ("reversible", "stored")
BACKENDS = ("auto", "numpy", "numba")


class Backend(NamedTuple):
    """The hot loops one backend provides: the MLP passes over chunks of rows (summed, or in parts
    one row per chunk), and the per-parameter work of one step of each algorithm (`lanes`), on
    `workers`. The numba backend updates the fixed-point state and the adjoints in place, so
    callers pass the current state on and keep no other reference to it."""

    name: str
    loss_and_error: object
    loss_grad: object
    loss_grad_hvp: object
    grad_parts: object
    grad_hvp_parts: object
    forward: object
    reverse_before: object
    reverse_after: object
    from_fixed: object


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


NUMPY = Backend("numpy", mlp.loss_and_error, mlp.loss_grad, mlp.loss_grad_hvp,
                mlp.grad_parts, mlp.grad_hvp_parts, lanes.forward, lanes.reverse_before,
                lanes.reverse_after, fixedpoint.from_fixed)


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


MAX_PARTS_BYTES = 1 << 28  # beyond, a step's gradient parts are added up as they come


class Passes:
    """The case's model on `workers`: the MLP passes of the backend, or case.model's own.

    `batch_grad` and `batch_grad_hvp` give a step's gradient (and H u) in parts, one row per
    chunk of the batch's rows, in arrays kept for the whole run; `grad` is the summed gradient
    (the validation set's). A model of its own, or parts too large to keep, give one row: the sum
    in chunk order, the same bits as the parts added in order."""

    def __init__(self, case, be, workers):
        self.case, self.be, self.workers = case, be, workers
        B, P = case.batches.shape[1], case.P
        k = len(row_chunks(B)) - 1
        self.in_parts = case.model is None and k * P * 8 <= MAX_PARTS_BYTES
        self.G = np.empty((k if self.in_parts else 1, P))
        self.H = None

    def grad(self, w, X, y):
        """(ell, grad ell) over all rows of X."""
        c, wk = self.case, self.workers
        if c.model is not None:
            return c.model.loss_grad(w, X, y, workers=wk)
        return self.be.loss_grad(w, X, y, c.layout, c.activation, workers=wk)

    def batch_grad(self, t, w):
        """ell on step t's batch, and its gradient in parts (self.G)."""
        c, rows = self.case, self.case.batches[t]
        if not self.in_parts:
            ell, self.G[0] = self.grad(w, c.X_train[rows], c.y_train[rows])
            return ell
        return self.be.grad_parts(w, c.X_train, c.y_train, rows, c.layout, c.activation, self.G,
                                  workers=self.workers)

    def batch_grad_hvp(self, t, w, u, dX):
        """ell on step t's batch, its gradient and H u in parts (self.G, self.H), and
        d/dX (grad . u) of the batch's rows into dX unless None."""
        c, rows, wk = self.case, self.case.batches[t], self.workers
        if self.H is None:
            self.H = np.empty_like(self.G)
        if c.model is not None or not self.in_parts:
            X, y = c.X_train[rows], c.y_train[rows]
            if c.model is not None:
                ell, self.G[0], self.H[0], dX_u = c.model.loss_grad_hvp(
                    w, u, X, y, dX is not None, workers=wk)
            else:
                ell, self.G[0], self.H[0], dX_u = self.be.loss_grad_hvp(
                    w, u, X, y, c.layout, c.activation, dX is not None, workers=wk)
            if dX is not None:
                dX[:] = dX_u
            return ell
        return self.be.grad_hvp_parts(w, u, c.X_train, c.y_train, rows, c.layout, c.activation,
                                      self.G, self.H, dX, workers=wk)


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


def _train_exact(case, be, workers):
    """Algorithm 1 in fixed point: the final (W, V, buffer) and the training losses."""
    W = _to_fixed_at(case, case.w0, "initialisation")
    V = np.zeros(case.P, dtype=np.int64)
    buf = ans.new_buffer(case.P)
    w = be.from_fixed(W)
    passes, losses = Passes(case, be, workers), np.empty(case.T)
    for t in range(case.T):
        with np.errstate(over="ignore", invalid="ignore"):  # caught below, with context
            losses[t] = passes.batch_grad(t, w)
            h = _step_hyper(case, t)
            try:
                W, V, buf, w, bad = be.forward(W, V, buf, w, passes.G, case.lam, h.alpha,
                                               h.gamma, h.n, workers)
            except fixedpoint.RangeError as e:
                raise _range_error(case, f"step {t}", e) from None
        if bad >= 0:
            raise _not_finite(case, t, bad)
    return W, V, buf, losses


def _train_float(case, be, workers, keep):
    """Algorithm 1 in float64; with keep=True also every w_t and v_t, shape (T+1, P)."""
    w, v = case.w0, np.zeros(case.P)
    passes, losses = Passes(case, be, workers), np.empty(case.T)
    ws = np.empty((case.T + 1, case.P)) if keep else None
    vs = np.empty((case.T + 1, case.P)) if keep else None
    for t in range(case.T):
        if keep:
            ws[t], vs[t] = w, v
        with np.errstate(over="ignore", invalid="ignore"):
            losses[t] = passes.batch_grad(t, w)
            g, bad = lanes.penalized(passes.G, case.lam, w)
        if bad >= 0:
            raise _not_finite(case, t, bad)
        h = _step_hyper(case, t)
        v = h.gamma * v - (1.0 - h.gamma) * g
        w = w + h.alpha * v
    if keep:
        ws[-1], vs[-1] = w, v
    return w, losses, ws, vs


def train(case: Case, exact: bool = True, backend: str = "auto",
          threads: int | None = None) -> Trained:
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
            return Trained(be.from_fixed(W), losses)
        w, losses, _, _ = _train_float(case, be, workers, keep=False)
    return Trained(w, losses)


def valid_loss(case: Case, backend: str = "auto", threads: int | None = None) -> float:
    """f(w_T) = ell(w_T; X_valid, y_valid) after the exact training run: what `hypergradient`
    differentiates, as a plain function of the case (for finite differences and line searches)."""
    require_case(case, "revlearn.valid_loss")
    be, workers = get_backend(backend), Workers(threads)
    with blas.single_threaded():
        w_T = train(case, backend=backend, threads=workers.threads).w_final
        if case.model is not None:
            return case.model.loss_grad(w_T, case.X_valid, case.y_valid, workers=workers)[0]
        return be.loss_and_error(w_T, case.X_valid, case.y_valid, case.layout, case.activation,
                                 workers)[0]


# --- Algorithm 2 ---------------------------------------------------------------------------

class _Reversal:
    """Algorithm 2's per-parameter work with w_t and v_t given back by undoing Algorithm 1's
    steps in fixed point (`lanes.reverse_before`, `lanes.reverse_after`)."""

    def __init__(self, be, workers, W, V, buf):
        self.be, self.workers, self.W, self.V, self.buf = be, workers, W, V, buf

    def before(self, t, h, adj, offsets):
        self.W, w, u, d_alpha = self.be.reverse_before(self.W, self.V, adj, h.alpha, h.gamma,
                                                       offsets, self.workers)
        return w, u, d_alpha

    def recovered(self, case):
        """True when the reversal gave back w_0 bit for bit, v_0 = 0 and the buffer as it
        started (every stack empty, every lane at its initial state)."""
        return bool(np.array_equal(self.W, _to_fixed_at(case, case.w0, "initialisation"))
                    and ans.is_initial(self.buf) and not self.V.any())

    def after(self, t, h, adj, G, H, lam, w, u, offsets):
        self.V, self.buf, d_gamma = self.be.reverse_after(self.V, self.buf, adj, G, H, lam, w, u,
                                                          h.gamma, h.n, offsets, self.workers)
        return d_gamma


class _Stored:
    """Algorithm 2's per-parameter work with w_t and v_t read back from the trajectory kept in
    memory (`lanes` without its exact steps, the same for every backend)."""

    def __init__(self, ws, vs):
        self.ws, self.vs = ws, vs

    def before(self, t, h, adj, offsets):
        d_alpha = lanes.dots(adj.dw, self.vs[t + 1], offsets)
        return (self.ws[t],) + lanes.adjoint_before(adj, h.alpha, h.gamma) + (d_alpha,)

    def after(self, t, h, adj, G, H, lam, w, u, offsets):
        g, _ = lanes.penalized(G, lam, w)
        return lanes.adjoint_after(adj, self.vs[t], g, lanes.total(H), u, w, lam, h.gamma,
                                   offsets)


def hypergradient(case: Case, method: str = "reversible", backend: str = "auto",
                  threads: int | None = None,
                  trace: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> Result:
    """The gradient of f(w_T) = ell(w_T; X_valid, y_valid) with respect to every hyperparameter.

    Returns a `Result`: valid_loss, w_final, d_alpha, d_gamma, d_init_scale, d_l2, d_w0,
    d_X_train (when case.grad_train_inputs), exact_recovery, buffer_bits, train_losses.
    backend: "auto" (numba when installed), "numpy" or "numba"; threads: how many threads share
    the work (None: every core this process may use). Every backend and thread count gives the
    same bits. trace: None, or a callable trace(t, w_t, dw_t) that Algorithm 2 calls at
    t = T, T-1, ..., 0 with w_t and dw_t = df/dw_t, the gradient of f(w_T) when training restarts
    from (w_t, v_t) (grad f(w_T) at T, d_w0 at 0); both arrays change after the call, so it
    copies what it keeps (`revlearn.trace.Recorder`).
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
            w_T = be.from_fixed(W)
            traj = _Reversal(be, workers, W, V, buf)
            bits = ans.size_bits(buf)
        else:
            w_T, losses, ws, vs = _train_float(case, be, workers, keep=True)
            traj = _Stored(ws, vs)
            bits = 64 * (ws.size + vs.size)
        valid_loss, dw = Passes(case, be, workers).grad(w_T, case.X_valid, case.y_valid)
        if trace is not None:
            trace(case.T, w_T, dw)
        grads = _reverse(case, be, workers, traj, dw, trace)
    recovered = traj.recovered(case) if method == "reversible" else None
    return Result(valid_loss=valid_loss, w_final=w_T, exact_recovery=recovered,
                  buffer_bits=int(bits), train_losses=losses, **grads)


def _reverse(case, be, workers, traj, dw, trace=None):
    """Algorithm 2 from dw = grad f(w_T): the hypergradients, as a dict of Result fields; trace(t,
    w_t, df/dw_t) after each step t, if given."""
    lay, T = case.layout, case.T
    offsets = lay.offsets
    adj = Adjoint(dw.copy(), np.zeros(case.P), np.zeros(case.P))
    d_alpha, d_gamma = np.empty((T, lay.G)), np.empty((T, lay.G))
    d_X = np.zeros_like(case.X_train) if case.grad_train_inputs else None
    passes = Passes(case, be, workers)
    dX_u = np.empty((case.batches.shape[1], case.X_train.shape[1])) if d_X is not None else None
    for t in range(T - 1, -1, -1):
        h = _step_hyper(case, t)
        # d_alpha_t = dw . v_{t+1};  w_t;  dv += alpha dw;  u = (1 - gamma) dv
        w, u, d_alpha[t] = traj.before(t, h, adj, offsets)
        with np.errstate(over="ignore", invalid="ignore"):
            passes.batch_grad_hvp(t, w, u, dX_u)  # g_t and H_t u, recomputed bit for bit
            # v_t;  d_gamma_t = dv . (v_t + g_t);  dw -= H u + lam u;  d_lam -= w u;  dv *= gamma
            d_gamma[t] = traj.after(t, h, adj, passes.G, passes.H, case.lam, w, u, offsets)
        if d_X is not None:
            np.subtract.at(d_X, case.batches[t], dX_u)
        if trace is not None:
            trace(t, w, adj.dw)  # dw is now df/dw_t, v_t held fixed
    dw, d_lam = adj.dw, adj.d_lam
    return dict(d_alpha=d_alpha, d_gamma=d_gamma, d_init_scale=lanes.dots(dw, case.eps, offsets),
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


def _not_finite(case, t, i):
    group = case.layout.describe_group(case.layout.group_of(i))
    return TrainingError(f"step {t}: the gradient is not finite (first in {group}); training "
                         "diverged, use a smaller alpha or init_scale")


def _range_error(case, when, e):
    group = case.layout.describe_group(case.layout.group_of(e.index))
    return TrainingError(
        f"{when}: {group} left the fixed-point range |value| < {fixedpoint.LIMIT:g} "
        f"(entry {e.index}: {e.value}); use a smaller alpha or init_scale")
