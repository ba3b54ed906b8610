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

The two loops are the same for every optimizer: each step's work is the case's optimizer object's
(`optimizer_of`: `momentum.Momentum`, or `adam.Adam` for case.optimizer == "adam", which derives
its reverse), on the backend's per-parameter functions. Adam's reverse step runs a gradient pass
at w_t before the Hessian's, since its direction dg depends on g_t.

method="reversible" runs Algorithm 1 in fixed point (`fixedpoint`, `train_exact`) and undoes it
step by step, keeping only the bits momentum destroys; method="stored" runs it in float64
(`train_float`), keeps w_t and the optimizer's state for every step, and reads them back. Both
share the reverse loop `reverse`, which `revlearn.approx` runs too.
"""

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import ans, blas, fixedpoint, lanes
from .adam import Adam
from .backends import BACKENDS, get_backend
from .case import Case, Result, require_case
from .errors import InputError, ReversalError, TrainingError
from .momentum import Momentum
from .partition import row_chunks
from .threads import Workers

METHODS = ("reversible", "stored")

OPTIMIZERS = {"momentum": Momentum, "adam": Adam}  # the object of each `case.OPTIMIZERS` name

__all__ = ["BACKENDS", "METHODS", "OPTIMIZERS", "Passes", "Trained", "get_backend", "hypergradient",
           "not_finite", "optimizer_of", "reverse", "train", "train_exact", "train_float",
           "trajectory_bytes", "valid_loss"]


class Trained(NamedTuple):
    """What Algorithm 1 alone returns: w_T and the data loss ell on each step's batch."""

    w_final: np.ndarray
    train_losses: np.ndarray


MAX_PARTS_BYTES = 1 << 28  # beyond, a step's gradient parts are added up as they come


class Passes:
    """The case's model on `workers`: the MLP passes of the backend, or case.model's own.

    `batch_grad` and `batch_grad_hvp` give a step's gradient (and H u) in parts, one row per
    chunk of the batch's rows, in arrays made at their first use and kept for the whole run;
    `grad` is the summed gradient (the validation set's). A model of its own, or parts too large
    to keep, give one row: the sum in chunk order, the same bits as the parts added in order."""

    def __init__(self, case, be, workers):
        self.case, self.be, self.workers = case, be, workers
        B, P = case.batches.shape[1], case.P
        k = len(row_chunks(B)) - 1
        self.in_parts = case.model is None and k * P * 8 <= MAX_PARTS_BYTES
        self.rows = k if self.in_parts else 1
        self.G = self.H = None

    def _parts(self, hvp):
        """Make G, and H if hvp, unless they are made."""
        if self.G is None:
            self.G = np.empty((self.rows, self.case.P))
        if hvp and self.H is None:
            self.H = np.empty_like(self.G)

    def grad(self, w, X, y):
        """(ell, grad ell) over all rows of X."""
        c, wk = self.case, self.workers
        if c.model is not None:
            return c.model.loss_grad(w, X, y, workers=wk)
        return self.be.loss_grad(w, X, y, c.layout, c.activation, workers=wk)

    def batch_grad(self, t, w):
        """ell on step t's batch, and its gradient in parts (self.G)."""
        c, rows = self.case, self.case.batches[t]
        self._parts(hvp=False)
        if not self.in_parts:
            ell, self.G[0] = self.grad(w, c.X_train[rows], c.y_train[rows])
            return ell
        return self.be.grad_parts(w, c.X_train, c.y_train, rows, c.layout, c.activation, self.G,
                                  workers=self.workers)

    def batch_grad_hvp(self, t, w, u, dX):
        """ell on step t's batch, its gradient and H u in parts (self.G, self.H), and
        d/dX (grad . u) of the batch's rows into dX unless None."""
        c, rows, wk = self.case, self.case.batches[t], self.workers
        self._parts(hvp=True)
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

def optimizer_of(case):
    """The object of the case's optimizer (`OPTIMIZERS`): every step's work, both algorithms."""
    return OPTIMIZERS[case.optimizer](case)


def train_exact(case, be, workers):
    """Algorithm 1 in fixed point: the final (W, state, buffer) and the training losses (state: V
    for momentum, `adam.Moments` for Adam)."""
    W = _to_fixed_at(case, case.w0, "initialisation")
    opt = optimizer_of(case)
    state, buf = opt.zeros(), ans.new_buffer(case.P)
    w = be.from_fixed(W)
    passes, losses = Passes(case, be, workers), np.empty(case.T)
    for t in range(case.T):
        with np.errstate(over="ignore", invalid="ignore"):  # caught below, with context
            losses[t] = passes.batch_grad(t, w)
            try:
                W, state, buf, w, bad = opt.forward(be, t, W, state, buf, w, passes.G, workers)
            except fixedpoint.RangeError as e:
                raise _range_error(case, f"step {t}", e) from None
        if bad >= 0:
            raise not_finite(case, t, bad)
    return W, state, buf, losses


def train_float(case, be, workers, each=None):
    """Algorithm 1 in float64: (w_T, state_T, training losses), state (v,) for momentum,
    `adam.Moments` (m, s) for Adam; each(t, w_t, state_t, g_t), if given, at every step before
    its update."""
    opt = optimizer_of(case)
    w, state = case.w0, opt.float_zeros()
    passes, losses = Passes(case, be, workers), np.empty(case.T)
    for t in range(case.T):
        with np.errstate(over="ignore", invalid="ignore"):
            losses[t] = passes.batch_grad(t, w)
            g, bad = lanes.penalized(passes.G, case.lam, w)
        if bad >= 0:
            raise not_finite(case, t, bad)
        if each is not None:
            each(t, w, state, g)
        w, state = opt.float_step(t, w, state, g)
    return w, state, losses


def _train_kept(case, be, workers):
    """`train_float` keeping every w_t and the optimizer's state: (w_T, losses, kept), kept of
    shape (T+1, 1 + state size, P): [t, 0] is w_t, [t, 1:] the state (v_t; or m_t, s_t)."""
    kept = np.empty((case.T + 1, 1 + len(optimizer_of(case).state_names), case.P))

    def keep(t, w, state, g):
        kept[t] = (w, *state)

    w, state, losses = train_float(case, be, workers, keep)
    kept[-1] = (w, *state)
    return w, losses, kept


def train(case: Case, exact: bool = True, backend: str = "auto",
          threads: int | None = None) -> Trained:
    """Algorithm 1 alone: w_T and the per-step training losses (data loss on each batch).

    exact=True runs the fixed-point arithmetic the reversible hypergradient differentiates;
    exact=False is plain float64 SGD with momentum (or Adam), the baseline a user would otherwise
    run.
    threads: how many threads share the work (None: every core this process may use); the
    results are the same bits for every thread count and backend.
    """
    require_case(case, "revlearn.train")
    be, workers = get_backend(backend), Workers(threads)
    with blas.single_threaded():
        if exact:
            W, _, _, losses = train_exact(case, be, workers)
            return Trained(be.from_fixed(W), losses)
        w, _, losses = train_float(case, be, workers)
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

def hypergradient(case: Case, method: str = "reversible", backend: str = "auto",
                  threads: int | None = None,
                  trace: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> Result:
    """The gradient of f(w_T) = ell(w_T; X_valid, y_valid) with respect to every hyperparameter.

    Returns a `Result`: valid_loss, w_final, d_alpha, d_gamma (momentum) or d_beta1, d_beta2,
    d_epsilon (Adam), d_init_scale, d_l2, d_w0, d_X_train (when case.grad_train_inputs),
    exact_recovery, buffer_bits, train_losses.
    backend: "auto" (numba when installed), "numpy" or "numba"; threads: how many threads share
    the work (None: every core this process may use). Every backend and thread count gives the
    same bits. trace: None, or a callable trace(t, w_t, dw_t) that Algorithm 2 calls at
    t = T, T-1, ..., 0 with w_t and dw_t = df/dw_t, the gradient of f(w_T) when training restarts
    from (w_t, v_t) (Adam: from (w_t, m_t, s_t); grad f(w_T) at T, d_w0 at 0); both arrays
    change after the call, so it copies what it keeps (`revlearn.trace.Recorder`).
    """
    require_case(case, "revlearn.hypergradient")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(map(repr, METHODS))}")
    be, workers = get_backend(backend), Workers(threads)
    if method == "stored":
        _check_trajectory_fits(case)
    with blas.single_threaded():
        opt = optimizer_of(case)
        if method == "reversible":
            W, state, buf, losses = train_exact(case, be, workers)
            w_T = be.from_fixed(W)
            traj = opt.reversal(be, workers, W, state, buf)
            bits = ans.size_bits(buf)
        else:
            w_T, losses, kept = _train_kept(case, be, workers)
            traj = opt.stored(kept)
            bits = 64 * kept.size
        valid_loss, dw = Passes(case, be, workers).grad(w_T, case.X_valid, case.y_valid)
        if trace is not None:
            trace(case.T, w_T, dw)
        grads = reverse(case, be, workers, traj, dw, trace)
    recovered = traj.recovered(case) if method == "reversible" else None
    return Result(valid_loss=valid_loss, w_final=w_T, exact_recovery=recovered,
                  buffer_bits=int(bits), train_losses=losses, **grads)


def reverse(case, be, workers, traj, dw, trace=None, stop=0):
    """Algorithm 2 from dw = grad f(w_T) over t = T-1 .. stop, with the per-step work of traj
    (the optimizer's `reversal` of the exact run, or its `stored` of a kept trajectory): the
    hypergradients, as a dict of Result fields (the per-step ones 0 before stop; with stop > 0,
    d_w0 is df/dw_stop and d_init_scale its dot with eps); trace(t, w_t, df/dw_t) after each
    step t, if given."""
    traj.start(case, dw)
    d_X = np.zeros_like(case.X_train) if case.grad_train_inputs else None
    passes = Passes(case, be, workers)
    dX_u = np.empty((case.batches.shape[1], case.X_train.shape[1])) if d_X is not None else None
    for t in range(case.T - 1, stop - 1, -1):
        try:
            # w_t and the direction the Hessian acts on: u = (1 - gamma) dv, or Adam's dg
            w, u = traj.before(t, passes)
            with np.errstate(over="ignore", invalid="ignore"):
                passes.batch_grad_hvp(t, w, u, dX_u)  # g_t and H_t u, recomputed bit for bit
                traj.after(t, passes, w, u)
        except (fixedpoint.RangeError, ans.Underflow) as e:
            raise ReversalError(f"step {t} of the reverse pass: {e}; an exact reversal of the "
                                "run never does this, so its state was not the one training "
                                "ended in (corrupted memory?); no hypergradient") from None
        if d_X is not None:
            traj.dX_update.at(d_X, case.batches[t], dX_u)
        if trace is not None:
            trace(t, w, traj.adj.dw)  # dw is now df/dw_t, v_t (or m_t, s_t) held fixed
    dw, d_lam, lay = traj.adj.dw, traj.adj.d_lam, case.layout
    return dict(traj.outputs(), d_init_scale=lanes.dots(dw, case.eps, lay.offsets),
                d_l2=d_lam if case.l2_per_weight else lay.group_sum(d_lam), d_w0=dw,
                d_X_train=d_X)


def trajectory_bytes(case):
    """The size of a stored trajectory: w_t and the optimizer's state for every t = 0 .. T."""
    return (1 + len(optimizer_of(case).state_names)) * 8 * (case.T + 1) * case.P


def _check_trajectory_fits(case):
    """Refuse, before any work, a stored trajectory larger than this machine's memory."""
    need = trajectory_bytes(case)
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise InputError(f"method='stored' keeps w_t and its state for all {case.T} steps: "
                         f"{need / 2**30:.1f} GiB, more than this machine's "
                         f"{have / 2**30:.1f} GiB; use method='reversible'")


# --- errors --------------------------------------------------------------------------------

def _to_fixed_at(case, x, when):
    try:
        return fixedpoint.to_fixed(x)
    except fixedpoint.RangeError as e:
        raise _range_error(case, when, e) from None


def not_finite(case, t, i):
    """The TrainingError of step t, whose gradient is not finite, first at entry i."""
    group = case.layout.describe_group(case.layout.group_of(i))
    return TrainingError(f"step {t}: the gradient is not finite (first in {group}); training "
                         "diverged, use a smaller alpha or init_scale")


def _range_error(case, when, e):
    group = case.layout.describe_group(case.layout.group_of(e.index))
    return TrainingError(
        f"{when}: {group} left the fixed-point range |value| < {fixedpoint.LIMIT:g} "
        f"(entry {e.index}: {e.value}); use a smaller alpha or init_scale")
