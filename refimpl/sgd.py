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

With case.optimizer == "adam" the steps are Adam's (`revlearn.adam`, which derives its reverse):
the same two loops, each step's per-parameter work chosen by the optimizer (`_Momentum`, `_Adam`;
the backend's `lanes` or `adam` functions), Adam's reverse step with a gradient pass at w_t before
the Hessian's, since its direction dg depends on g_t.

method="reversible" runs Algorithm 1 in fixed point (`fixedpoint`) and undoes it step by step,
keeping only the bits momentum destroys; method="stored" runs it in float64, keeps w_t and the
optimizer's state for every step, and reads them back. Both share the reverse loop `_reverse`.
"""

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import adam, ans, blas, fixedpoint, lanes, wide
from .backends import BACKENDS, get_backend
from .case import Case, Result, require_case
from .errors import InputError, ReversalError, TrainingError
from .partition import row_chunks
from .threads import Workers

METHODS = ("reversible", "stored")

__all__ = ["BACKENDS", "METHODS", "Passes", "Trained", "get_backend", "hypergradient", "train",
           "valid_loss"]


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


class _Momentum:
    """SGD with momentum's step on every lane: its state v (fixed point, or (v,) in float64) and
    the backend's exact step (`lanes.forward`)."""

    def __init__(self, case, be):
        self.case, self.be = case, be

    def hyper(self, t):
        return _step_hyper(self.case, t)

    def zeros(self):
        return np.zeros(self.case.P, dtype=np.int64)

    def forward(self, t, W, V, buf, w, G, workers):
        h = self.hyper(t)
        return self.be.forward(W, V, buf, w, G, self.case.lam, h.alpha, h.gamma, h.n, workers)

    def float_zeros(self):
        return (np.zeros(self.case.P),)

    def float_step(self, t, w, state, g):
        """v_{t+1} = gamma v_t - (1 - gamma) g_t;  w_{t+1} = w_t + alpha v_{t+1}."""
        h = self.hyper(t)
        v = h.gamma * state[0] - (1.0 - h.gamma) * g
        return w + h.alpha * v, (v,)


class _Adam:
    """Adam's step on every lane: its state `adam.Moments` (`wide` fixed point, or float64) and
    the backend's exact step (`adam.forward`)."""

    def __init__(self, case, be):
        self.case, self.be, self.schedule = case, be, adam.Schedule(case)

    def hyper(self, t):
        return self.schedule.at(t)

    def zeros(self):
        return adam.Moments(wide.zeros(self.case.P), wide.zeros(self.case.P))

    def forward(self, t, W, state, buf, w, G, workers):
        return self.be.adam.forward(W, state, buf, w, G, self.case.lam, self.hyper(t), workers)

    def float_zeros(self):
        return adam.Moments(np.zeros(self.case.P), np.zeros(self.case.P))

    def float_step(self, t, w, state, g):
        return adam.float_step(w, state, g, self.hyper(t))


def _optimizer(case, be):
    """The per-step work of the case's optimizer on backend be."""
    return (_Adam if case.optimizer == "adam" else _Momentum)(case, be)


def _train_exact(case, be, workers):
    """Algorithm 1 in fixed point: the final (W, state, buffer) and the training losses (state: V
    for momentum, `adam.Moments` for Adam)."""
    W = _to_fixed_at(case, case.w0, "initialisation")
    opt = _optimizer(case, be)
    state, buf = opt.zeros(), ans.new_buffer(case.P)
    w = be.from_fixed(W)
    passes, losses = Passes(case, be, workers), np.empty(case.T)
    for t in range(case.T):
        with np.errstate(over="ignore", invalid="ignore"):  # caught below, with context
            losses[t] = passes.batch_grad(t, w)
            try:
                W, state, buf, w, bad = opt.forward(t, W, state, buf, w, passes.G, workers)
            except fixedpoint.RangeError as e:
                raise _range_error(case, f"step {t}", e) from None
        if bad >= 0:
            raise _not_finite(case, t, bad)
    return W, state, buf, losses


def _train_float(case, be, workers, keep):
    """Algorithm 1 in float64; with keep=True also every w_t and the optimizer's state, shape
    (T+1, 1 + state size, P): [t, 0] is w_t, [t, 1:] the state (v_t; or m_t, s_t)."""
    opt = _optimizer(case, be)
    w, state = case.w0, opt.float_zeros()
    passes, losses = Passes(case, be, workers), np.empty(case.T)
    kept = np.empty((case.T + 1, 1 + len(state), case.P)) if keep else None
    for t in range(case.T):
        if keep:
            kept[t] = (w, *state)
        with np.errstate(over="ignore", invalid="ignore"):
            losses[t] = passes.batch_grad(t, w)
            g, bad = lanes.penalized(passes.G, case.lam, w)
        if bad >= 0:
            raise _not_finite(case, t, bad)
        w, state = opt.float_step(t, w, state, g)
    if keep:
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
            W, _, _, losses = _train_exact(case, be, workers)
            return Trained(be.from_fixed(W), losses)
        w, losses, _ = _train_float(case, be, workers, keep=False)
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

class _MomentumReverse:
    """Algorithm 2's per-step work for SGD with momentum: the adjoints (`Adjoint`) and d_alpha_t,
    d_gamma_t; how w_t and v_t come back is the subclass's."""

    dX_update = np.subtract  # d_X[B_t] -= d/dX (grad L_t . u)

    def start(self, case, dw):
        self.case, self.offsets = case, case.layout.offsets
        self.adj = Adjoint(dw.copy(), np.zeros(case.P), np.zeros(case.P))
        self.d_alpha, self.d_gamma = np.zeros((case.T, case.G)), np.zeros((case.T, case.G))

    def outputs(self):
        return dict(d_alpha=self.d_alpha, d_gamma=self.d_gamma)


class _Reversal(_MomentumReverse):
    """Momentum's Algorithm 2 with w_t and v_t given back by undoing Algorithm 1's steps in fixed
    point (`lanes.reverse_before`, `lanes.reverse_after`)."""

    def __init__(self, be, workers, W, V, buf):
        self.be, self.workers, self.W, self.V, self.buf = be, workers, W, V, buf

    def before(self, t, passes):
        """d_alpha_t = dw . v_{t+1};  w_t;  dv += alpha dw;  u = (1 - gamma) dv: (w_t, u)."""
        self.h = _step_hyper(self.case, t)
        self.W, w, u, self.d_alpha[t] = self.be.reverse_before(
            self.W, self.V, self.adj, self.h.alpha, self.h.gamma, self.offsets, self.workers)
        return w, u

    def after(self, t, passes, w, u):
        """v_t;  d_gamma_t = dv . (v_t + g_t);  dw -= H u + lam u;  d_lam -= w u;  dv *= gamma."""
        self.V, self.buf, self.d_gamma[t] = self.be.reverse_after(
            self.V, self.buf, self.adj, passes.G, passes.H, self.case.lam, w, u, self.h.gamma,
            self.h.n, self.offsets, self.workers)

    def recovered(self, case):
        """True when the reversal gave back w_0 bit for bit, v_0 = 0 and the buffer as it
        started (every stack empty, every lane at its initial state)."""
        return bool(np.array_equal(self.W, _to_fixed_at(case, case.w0, "initialisation"))
                    and ans.is_initial(self.buf) and not self.V.any())


class _Stored(_MomentumReverse):
    """Momentum's Algorithm 2 with w_t and v_t read back from the trajectory kept in memory
    (`lanes` without its exact steps, the same for every backend): kept[t] = (w_t, v_t), an array
    (T+1, 2, P) or any mapping of the steps the reverse pass visits (and t + 1)."""

    def __init__(self, kept):
        self.kept = kept

    def before(self, t, passes):
        self.h = _step_hyper(self.case, t)
        self.d_alpha[t] = lanes.dots(self.adj.dw, self.kept[t + 1][1], self.offsets)
        return (self.kept[t][0],) + lanes.adjoint_before(self.adj, self.h.alpha, self.h.gamma)

    def after(self, t, passes, w, u):
        g, _ = lanes.penalized(passes.G, self.case.lam, w)
        self.d_gamma[t] = lanes.adjoint_after(self.adj, self.kept[t][1], g,
                                              lanes.total(passes.H), u, w, self.case.lam,
                                              self.h.gamma, self.offsets)


class _AdamReverse:
    """Algorithm 2's per-step work for Adam (`revlearn.adam`): the per-lane adjoints
    (`adam.Adjoint`), and per group d_alpha_t, d_beta1_t, d_beta2_t, d_epsilon and the sums S1,
    S2 of the paths through the bias corrections; how w_t, m_t and s_t come back is the
    subclass's (`undo_w`, `undo_moments`)."""

    dX_update = np.add  # d_X[B_t] += d/dX (grad L_t . dg)

    def start(self, case, dw):
        self.case, self.offsets, self.schedule = case, case.layout.offsets, adam.Schedule(case)
        T, G, P = case.T, case.G, case.P
        self.adj = adam.Adjoint(dw.copy(), np.zeros(P), np.zeros(P), np.zeros(P))
        self.d_alpha, self.d_beta1, self.d_beta2 = (np.zeros((T, G)) for _ in range(3))
        self.d_epsilon, self.S1, self.S2 = np.zeros(G), np.zeros(G), np.zeros(G)

    def before(self, t, passes):
        """w_t, the adjoints through u_t, g_t (a gradient pass), m_t and s_t, d_beta1_t and
        d_beta2_t: (w_t, dg), dg the direction of H_t."""
        sc, c = self.schedule, self.case
        self.h = sc.at(t)
        # w_t = w_{t+1} + alpha u;  d_alpha_t = -dw' . u;  dm' and ds' through u;  e = du . q;
        # k = du . q r
        w, d_alpha, e, k = self.undo_w(t, self.h)
        self.d_alpha[t] = d_alpha
        self.d_epsilon -= e
        self.S1 += sc.P1[t] * (-(c.alpha[t] * d_alpha) / sc.c1[t])  # P1_t sum_i dc1_i
        self.S2 += sc.P2[t] * (k / (2.0 * sc.c2[t]))  # P2_t sum_i dc2_i
        with np.errstate(over="ignore", invalid="ignore"):
            passes.batch_grad(t, w)  # g_t, recomputed bit for bit: dg needs it
        # m_t, s_t;  dg = (1 - beta1) dm' + 2 (1 - beta2) g ds'
        dg, d1, d2 = self.undo_moments(t, self.h, passes.G, w)
        self.d_beta1[t] = d1 - self.S1 / c.beta1[t]
        self.d_beta2[t] = d2 - self.S2 / c.beta2[t]
        return w, dg

    def after(self, t, passes, w, dg):
        """dw = dw' + H dg + lam dg;  d_lam += w dg;  dm = beta1 dm';  ds = beta2 ds'."""
        self.lanes.reverse_after(self.adj, passes.H, self.case.lam, w, dg, self.h, self.workers)

    def outputs(self):
        return dict(d_alpha=self.d_alpha, d_gamma=None, d_beta1=self.d_beta1,
                    d_beta2=self.d_beta2, d_epsilon=self.d_epsilon)


class _AdamReversal(_AdamReverse):
    """Adam's Algorithm 2 with w_t, m_t and s_t given back by undoing Algorithm 1's steps in
    fixed point (the backend's `adam.Lanes`)."""

    def __init__(self, be, workers, W, state, buf):
        self.lanes, self.workers, self.W, self.state, self.buf = be.adam, workers, W, state, buf

    def undo_w(self, t, h):
        self.W, w, d_alpha, e, k = self.lanes.reverse_before(self.W, self.state, self.adj, h,
                                                             self.offsets, self.workers)
        return w, d_alpha, e, k

    def undo_moments(self, t, h, G, w):
        self.state, self.buf, dg, d1, d2 = self.lanes.reverse_moments(
            self.state, self.buf, self.adj, G, self.case.lam, w, h, self.offsets, self.workers)
        return dg, d1, d2

    def recovered(self, case):
        """True when the reversal gave back w_0 bit for bit, m_0 = s_0 = 0 and the buffer as it
        started."""
        return bool(np.array_equal(self.W, _to_fixed_at(case, case.w0, "initialisation"))
                    and ans.is_initial(self.buf)
                    and not any(a.any() for part in self.state for a in part))


class _AdamStored(_AdamReverse):
    """Adam's Algorithm 2 with w_t, m_t and s_t read back from the float64 trajectory kept in
    memory (`adam`'s NumPy functions without the exact steps, the same for every backend):
    kept[t] = (w_t, m_t, s_t), as `_Stored`'s."""

    lanes, workers = adam.LANES, None

    def __init__(self, kept):
        self.kept = kept

    def undo_w(self, t, h):
        _, m, s = self.kept[t + 1]
        u, den, r = adam.increment(m, s, h)
        return (self.kept[t][0],) + adam.adjoint_before(self.adj, u, den, r, h, self.offsets)

    def undo_moments(self, t, h, G, w):
        _, m, s = self.kept[t]
        g, _ = lanes.penalized(G, self.case.lam, w)
        return adam.adjoint_moments(self.adj, m, s, g, h, self.offsets)


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
        is_adam = case.optimizer == "adam"
        if method == "reversible":
            W, state, buf, losses = _train_exact(case, be, workers)
            w_T = be.from_fixed(W)
            traj = (_AdamReversal if is_adam else _Reversal)(be, workers, W, state, buf)
            bits = ans.size_bits(buf)
        else:
            w_T, losses, kept = _train_float(case, be, workers, keep=True)
            traj = (_AdamStored if is_adam else _Stored)(kept)
            bits = 64 * kept.size
        valid_loss, dw = Passes(case, be, workers).grad(w_T, case.X_valid, case.y_valid)
        if trace is not None:
            trace(case.T, w_T, dw)
        grads = _reverse(case, be, workers, traj, dw, trace)
    recovered = traj.recovered(case) if method == "reversible" else None
    return Result(valid_loss=valid_loss, w_final=w_T, exact_recovery=recovered,
                  buffer_bits=int(bits), train_losses=losses, **grads)


def _reverse(case, be, workers, traj, dw, trace=None, stop=0):
    """Algorithm 2 from dw = grad f(w_T) over t = T-1 .. stop: the hypergradients, as a dict of
    Result fields (the per-step ones 0 before stop; with stop > 0, d_w0 is df/dw_stop and
    d_init_scale its dot with eps); trace(t, w_t, df/dw_t) after each step t, if given."""
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


def _check_trajectory_fits(case):
    """Refuse, before any work, a stored trajectory larger than this machine's memory."""
    need = (3 if case.optimizer == "adam" else 2) * 8 * (case.T + 1) * case.P
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


def _not_finite(case, t, i):
    group = case.layout.describe_group(case.layout.group_of(i))
    return TrainingError(f"step {t}: the gradient is not finite (first in {group}); training "
                         "diverged, use a smaller alpha or init_scale")


def _range_error(case, when, e):
    group = case.layout.describe_group(case.layout.group_of(e.index))
    return TrainingError(
        f"{when}: {group} left the fixed-point range |value| < {fixedpoint.LIMIT:g} "
        f"(entry {e.index}: {e.value}); use a smaller alpha or init_scale")
