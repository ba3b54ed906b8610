"""SGD with momentum as the object the engine drives (`Momentum`): its state, its step in float64
and exactly, Algorithm 2's per-step work (`Reversal`, `Stored`), forward mode's tangents, the
greedy one-step hypergradients and the Neumann series' step, each with its equations. The
per-lane work is `revlearn.lanes`'s; the whole algorithms are in `revlearn.sgd` (Algorithms 1 and
2) and `revlearn.approx` (forward mode, greedy, the implicit function theorem, DrMAD).

Algorithm 1 per step t (g_t the batch gradient with the penalty):

    v_{t+1} = gamma_t v_t - (1 - gamma_t) g_t
    w_{t+1} = w_t + alpha_t v_{t+1}
"""

from typing import NamedTuple

import numpy as np

from . import ans, fixedpoint, lanes


class StepHyper(NamedTuple):
    """Step t's hyperparameters for every lane: alpha, gamma and gamma's numerator
    n = gamma 2**16."""

    alpha: np.ndarray
    gamma: np.ndarray
    n: np.ndarray


def step_hyper(case, t):
    """alpha_t, gamma_t and n_t = gamma_t 2**16 for every entry of w."""
    expand = case.layout.expand
    return StepHyper(expand(case.alpha[t]), expand(case.gamma[t]),
                     expand(fixedpoint.quantize_gamma(case.gamma[t])))


class Adjoint(NamedTuple):
    """Algorithm 2's running adjoints, each of shape (P,): dw = df/dw_t, dv = df/dv_t, and the
    per-weight d_lam accumulated so far."""

    dw: np.ndarray
    dv: np.ndarray
    d_lam: np.ndarray


# --- Algorithm 2's per-step work -------------------------------------------------------------

class _Reverse:
    """Algorithm 2's per-step work for SGD with momentum: the adjoints (`Adjoint`) and d_alpha_t,
    d_gamma_t; how w_t and v_t come back is the subclass's."""

    dX_update = np.subtract  # d_X[B_t] -= d/dX (grad L_t . u)

    def start(self, case, dw):
        self.case, self.offsets = case, case.layout.offsets
        self.adj = Adjoint(dw.copy(), np.zeros(case.P), np.zeros(case.P))
        self.d_alpha, self.d_gamma = np.zeros((case.T, case.G)), np.zeros((case.T, case.G))

    def outputs(self):
        return dict(d_alpha=self.d_alpha, d_gamma=self.d_gamma)


class Reversal(_Reverse):
    """Momentum's Algorithm 2 with w_t and v_t given back by undoing Algorithm 1's steps in fixed
    point (the backend's `reverse_before`, `reverse_after`: `lanes`' or the kernels')."""

    def __init__(self, be, workers, W, V, buf):
        self.be, self.workers, self.W, self.V, self.buf = be, workers, W, V, buf

    def before(self, t, passes):
        """d_alpha_t = dw . v_{t+1};  w_t;  dv += alpha dw;  u = (1 - gamma) dv: (w_t, u)."""
        self.h = step_hyper(self.case, t)
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
        return bool(np.array_equal(self.W, fixedpoint.to_fixed(case.w0))
                    and ans.is_initial(self.buf) and not self.V.any())


class Stored(_Reverse):
    """Momentum's Algorithm 2 with w_t and v_t read back from the trajectory kept in memory
    (`lanes` without its exact steps, the same for every backend): kept[t] = (w_t, v_t), an array
    (T+1, 2, P) or any mapping of the steps the reverse pass visits (and t + 1)."""

    def __init__(self, kept):
        self.kept = kept

    def before(self, t, passes):
        self.h = step_hyper(self.case, t)
        self.d_alpha[t] = lanes.dots(self.adj.dw, self.kept[t + 1][1], self.offsets)
        return (self.kept[t][0],) + lanes.adjoint_before(self.adj, self.h.alpha, self.h.gamma)

    def after(self, t, passes, w, u):
        g, _ = lanes.penalized(passes.G, self.case.lam, w)
        self.d_gamma[t] = lanes.adjoint_after(self.adj, self.kept[t][1], g,
                                              lanes.total(passes.H), u, w, self.case.lam,
                                              self.h.gamma, self.offsets)


# --- the optimizer -----------------------------------------------------------------------------

class Momentum:
    """SGD with momentum on a case: the state v (int64 fixed point, or (v,) in float64), the
    exact step of a backend (its `forward`), the float64 step, and what `revlearn.approx` asks of
    an optimizer. `Reversal` and `Stored` are Algorithm 2's steps from the exact run and from a
    kept float64 trajectory."""

    title = "SGD with momentum"
    hypers = ("gamma",)  # its own hyperparameters (Case fields) besides alpha, init_scale, l2
    per_step = ("alpha", "gamma")  # those given per step and group, shape (T, G)
    state_names = ("v_t",)  # the state besides w_t, as a stored trajectory keeps it
    reversal, stored = Reversal, Stored

    def __init__(self, case):
        self.case = case

    def hyper(self, t):
        return step_hyper(self.case, t)

    def zeros(self):
        """v_0 = 0 in fixed point."""
        return np.zeros(self.case.P, dtype=np.int64)

    def forward(self, be, t, W, V, buf, w, G, workers):
        """Algorithm 1's step t, exactly, on backend be: (W, V, buf, w_{t+1}, bad)."""
        h = self.hyper(t)
        return be.forward(W, V, buf, w, G, self.case.lam, h.alpha, h.gamma, h.n, workers)

    def float_zeros(self):
        """(v_0,) = (0,) in float64."""
        return (np.zeros(self.case.P),)

    def float_step(self, t, w, state, g):
        """v_{t+1} = gamma v_t - (1 - gamma) g_t;  w_{t+1} = w_t + alpha v_{t+1}."""
        h = self.hyper(t)
        v = h.gamma * state[0] - (1.0 - h.gamma) * g
        return w + h.alpha * v, (v,)

    def tangent_zeros(self):
        """(v_0',) = (0,)."""
        return (np.zeros(self.case.P),)

    def tangent_step(self, t, d, w, state, dw, dstate, g, dg):
        """Forward mode's step t along the direction d (`approx.Direction`), with g_t' = dg:

            v_{t+1}' = gamma_t' (v_t + g_t) + gamma_t v_t' - (1 - gamma_t) g_t'
            w_{t+1}' = w_t' + alpha_t' v_{t+1} + alpha_t v_{t+1}'

        Returns (w_{t+1}, state_{t+1}, w_{t+1}', (v_{t+1}',))."""
        h, ex = self.hyper(t), self.case.layout.expand
        v, dv = state[0], dstate[0]
        dv = ex(d.gamma[t]) * (v + g) + h.gamma * dv - (1.0 - h.gamma) * dg
        w_next, state = self.float_step(t, w, state, g)
        return w_next, state, dw + ex(d.alpha[t]) * state[0] + h.alpha * dv, (dv,)

    def greedy(self, t, state, g, g_next, state_next):
        """Baydin et al.'s one-step hypergradients of step t, in `per_step` order:
        d_alpha_t = g_{t+1} . v_{t+1};  d_gamma_t = alpha_t g_{t+1} . (v_t + g_t)."""
        offsets = self.case.layout.offsets
        return (lanes.dots(g_next, state_next[0], offsets),
                self.case.alpha[t] * lanes.dots(g_next, state[0] + g, offsets))

    def eta(self, state_T):
        """The Neumann series' step per entry: alpha (1 - gamma) / (1 + gamma) of the last step,
        where that step's heavy-ball iteration is stable (`approx.ift`)."""
        alpha, gamma = self.case.alpha[-1], self.case.gamma[-1]
        return self.case.layout.expand(alpha * (1.0 - gamma) / (1.0 + gamma))

    def state_between(self, t, w, w_next):
        """The state that carries w_t to w_{t+1}, for DrMAD's line: (v_{t+1},) with
        v_{t+1} = (w_{t+1} - w_t) / alpha_t (0 where alpha_t = 0)."""
        alpha = self.case.layout.expand(self.case.alpha[t])
        return (np.divide(w_next - w, alpha, out=np.zeros(self.case.P), where=alpha > 0),)
