"""Adam, exactly reversible: its step in fixed point and its reverse, per parameter (lane).

Algorithm 1 for Adam (README, "Training"), per step t with the batch B_t, per entry, m_0 = s_0 = 0:

    g_t     = grad L_t(w_t)
    m_{t+1} = beta1_t m_t + (1 - beta1_t) g_t
    s_{t+1} = beta2_t s_t + (1 - beta2_t) g_t g_t
    c1_t    = 1 - P1_t,  P1_t = prod_{k <= t} beta1_k     (likewise c2_t, P2_t with beta2)
    u_t     = (m_{t+1} / c1_t) / (r_t + eps),   r_t = sqrt(s_{t+1} / c2_t)
    w_{t+1} = w_t - alpha_t u_t

In fixed point (`wide` for m and s, `fixedpoint` for w; fix(x) the rounding to each one's grid):

    forward   m <- beta1 m exactly, bits back (`wide.mul_beta`);  m <- m + fix((1 - beta1) g)
              s <- beta2 s exactly, bits back;                    s <- s + fix((1 - beta2) (g g))
              u = increment(m, s);  w <- w - fix(alpha u)
    reverse   u = increment(m, s);  w <- w + fix(alpha u)        (the very increment: same m, s)
              s <- s - fix((1 - beta2) (g g));  s <- s / beta2 exactly    (`wide.div_beta`)
              m <- m - fix((1 - beta1) g);      m <- m / beta1 exactly

`increment` is u = (m / c1) / (sqrt(s / c2) + eps) in float64, each operation correctly rounded
(sqrt included), so every backend computes the same u. The buffer's operations per lane are
pop(n1), push(D), pop(n2), push(D) forward and their inverses in the opposite order backwards,
strictly LIFO: m's decay first and s's second, undone s first. The bias corrections come from
P1_t = P1_{t-1} beta1_t, multiplied in step order (`products`).

Algorithm 2 for Adam (DESIGN §9.1, checked here by finite differences of whole runs): from
dw = grad f(w_T) and dm = ds = 0, backwards over t, with dw' = df/dw_{t+1}, dm' = df/dm_{t+1},
ds' = df/ds_{t+1} and den = r + eps, q = u / den:

    w_t       = w_{t+1} + alpha u                                 (u from m_{t+1}, s_{t+1})
    d_alpha_t = -dw' . u                                          (per group)
    du        = -alpha dw'
    dm'      += du / (c1 den)                                     (du/dm' = 1 / (c1 den))
    ds'      -= du q / (2 c2 r),   0 where s_{t+1} = 0            (du/ds' = -q / (2 c2 r))
    d_eps    -= du . q                                            (du/deps = -q)
    S1       += P1_t sum_i dc1_i,   dc1 = -du u / c1 : sum_i dc1_i = -alpha_t d_alpha_t / c1_t
    S2       += P2_t sum_i dc2_i,   dc2 = du q r / (2 c2): sum_i dc2_i = (du . q r) / (2 c2_t)
    g_t       = grad L_t(w_t)                                     (recomputed, bit for bit)
    m_t, s_t  = (m_{t+1} - (1 - beta1) g) / beta1,  (s_{t+1} - (1 - beta2) g g) / beta2
    d_beta1_t = dm' . (m_t - g) - S1 / beta1_t;   d_beta2_t = ds' . (s_t - g g) - S2 / beta2_t
    dg        = (1 - beta1) dm' + 2 (1 - beta2) g ds'
    dw        = dw' + H_t dg + lam dg;   d_lam += w_t dg;   d_X[B_t] += d/dX (grad L_t . dg)
    dm        = beta1 dm';   ds = beta2 ds'

then d_init_scale = eps0 . dw per group and d_w0 = dw (eps0 the unit initial noise). Derivation:
step t maps (w_t, m_t, s_t) to (w_{t+1}, m_{t+1}, s_{t+1}) and u is a function of m_{t+1},
s_{t+1}, c1_t, c2_t and eps, so the adjoint of m_{t+1} collects the later steps' dm' and this
step's du du/dm', and likewise s_{t+1}; du/dc1 = -u / c1 and du/dc2 = q r / (2 c2) since
dr/dc2 = -r / (2 c2). Each c_tau = 1 - P_tau depends on every beta_k with k <= tau through
dP_tau / dbeta_k = P_tau / beta_k, so d f / d beta1_k collects -(1 / beta1_k) sum_{tau >= k}
P1_tau sum_i dc1_tau,i = -S1 / beta1_k, S1 summed backwards from tau = T-1 down to k. The
moments' updates give dm' . (m_t - g) and the (1 - beta1) dm' into dg, and g_t = grad L_t(w_t)
carries dg to w_t through the Hessian of L_t (lam included) and to lam through d g / d lam = w.
(Adam subtracts alpha u and adds (1 - beta) g where momentum adds alpha v and subtracts
(1 - gamma) g: hence the signs, opposite to momentum's.) Where s_{t+1} = 0 (an entry whose
(1 - beta2) g g has rounded to 0 at every step so far) the derivative of the square root is
infinite; it is taken as 0.

dg needs g_t before the Hessian-vector product, so each reverse step runs a gradient pass at w_t
and then the usual gradient-and-Hessian-vector pass with the direction dg: still one
Hessian-vector product per step, one more gradient than momentum's reverse step.

`forward`, `reverse_before`, `reverse_moments` and `reverse_after` are the per-lane work of a step
(as `revlearn.lanes` for momentum, with its fixed-order group dot products); `revlearn.kernels.adam`
computes the same, bit for bit, block by block of lanes on several threads. `Adam` is the object the
engine (`revlearn.sgd`) and `revlearn.approx` drive, as `revlearn.momentum.Momentum` for momentum;
`Reversal` and `Stored` are its Algorithm 2 from the exact run and from a kept float64 trajectory.
"""

from functools import cached_property
from typing import NamedTuple

import numpy as np

from . import ans, fixedpoint, wide
from .lanes import dots, penalized, total

BETA_MIN = 1.0 / fixedpoint.D
BETA_MAX = 1.0 - 1.0 / fixedpoint.D


class StepHyper(NamedTuple):
    """Step t's hyperparameters for every lane: alpha, beta1 and beta2 (effective), their
    numerators n1, n2 (beta = n / 2**16), the bias corrections c1 = 1 - P1_t, c2 = 1 - P2_t, and
    epsilon."""

    alpha: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    n1: np.ndarray
    n2: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    eps: np.ndarray


class Moments(NamedTuple):
    """Adam's state besides w: m and s, each a `wide.Wide` (fixed point) or a float64 array."""

    m: object
    s: object


class Adjoint(NamedTuple):
    """Algorithm 2's per-lane adjoints for Adam, each (P,): dw = df/dw_t, dm = df/dm_t,
    ds = df/ds_t, and the per-weight d_lam accumulated so far (updated in place)."""

    dw: np.ndarray
    dm: np.ndarray
    ds: np.ndarray
    d_lam: np.ndarray


def products(beta):
    """P_t = prod_{k <= t} beta_k per group, shape (T, G): P_t = P_{t-1} beta_t in step order."""
    return np.multiply.accumulate(beta, axis=0)


class Schedule:
    """The per-step hyperparameters of an Adam case: per group (P1, P2 and the bias corrections
    c1, c2, each (T, G)) and per lane for step t (`at`)."""

    def __init__(self, case):
        self.case = case
        self.P1, self.P2 = products(case.beta1), products(case.beta2)
        self.c1, self.c2 = 1.0 - self.P1, 1.0 - self.P2
        self.eps = case.layout.expand(case.epsilon)

    def at(self, t):
        """StepHyper of step t for every lane."""
        c, ex = self.case, self.case.layout.expand
        return StepHyper(ex(c.alpha[t]), ex(c.beta1[t]), ex(c.beta2[t]),
                         ex(quantize(c.beta1[t])), ex(quantize(c.beta2[t])), ex(self.c1[t]),
                         ex(self.c2[t]), self.eps)


def quantize(beta):
    """n = round(beta 2**16), the integer numerator of the effective beta = n / 2**16."""
    return fixedpoint.quantize_gamma(beta)


def increment(m, s, h):
    """u = (m / c1) / (r + eps), r = sqrt(s / c2): (u, den = r + eps, r), m and s floats."""
    r = np.sqrt(s / h.c2)
    den = r + h.eps
    return (m / h.c1) / den, den, r


# --- the exact step and its inverse ------------------------------------------------------------

def exact_step(W, state, buf, g, h):
    """Algorithm 1's Adam update, exactly: (W, Moments(M, S), buf) after step t."""
    M, buf = wide.mul_beta(state.m, h.n1, buf)
    M = wide.add(M, wide.to_wide((1.0 - h.b1) * g))
    S, buf = wide.mul_beta(state.s, h.n2, buf)
    S = wide.add(S, wide.to_wide((1.0 - h.b2) * (g * g)))
    u = increment(wide.from_wide(M), wide.from_wide(S), h)[0]
    W = fixedpoint.sub(W, fixedpoint.to_fixed(h.alpha * u))
    return W, Moments(M, S), buf


def exact_unstep_w(W, state, h):
    """w_t = w_{t+1} + alpha u, adding back the very increment `exact_step` subtracted; and u,
    den, r (`increment`) for the adjoints."""
    u, den, r = increment(wide.from_wide(state.m), wide.from_wide(state.s), h)
    return fixedpoint.add(W, fixedpoint.to_fixed(h.alpha * u)), u, den, r


def exact_unstep_moments(state, buf, g, h):
    """m_t, s_t from m_{t+1}, s_{t+1} and g_t (recomputed bit for bit), exactly: s first."""
    S = wide.sub(state.s, wide.to_wide((1.0 - h.b2) * (g * g)))
    S, buf = wide.div_beta(S, h.n2, buf)
    M = wide.sub(state.m, wide.to_wide((1.0 - h.b1) * g))
    M, buf = wide.div_beta(M, h.n1, buf)
    return Moments(M, S), buf


# --- the per-lane work of one step (the numpy backend's; workers unused) ----------------------

def forward(W, state, buf, w, G, lam, h, workers):
    """Algorithm 1's step t on every lane: (W, state, buf, w_{t+1}, bad), bad the first lane whose
    gradient is not finite (-1 for none; then the step is not taken)."""
    g, bad = penalized(G, lam, w)
    if bad >= 0:
        return W, state, buf, w, bad
    W, state, buf = exact_step(W, state, buf, g, h)
    return W, state, buf, fixedpoint.from_fixed(W), -1


def reverse_before(W, state, adj, h, offsets, workers):
    """Algorithm 2's step t up to the gradient: (W_t, w_t, d_alpha_t, e_t, k_t) with the group
    sums e_t = du . q and k_t = du . q r; adj's dm and ds updated in place."""
    W, u, den, r = exact_unstep_w(W, state, h)
    return (W, fixedpoint.from_fixed(W)) + adjoint_before(adj, u, den, r, h, offsets)


def reverse_moments(state, buf, adj, G, lam, w, h, offsets, workers):
    """Algorithm 2's step t after the gradient g_t: (state_t, buf, dg, d1_t, d2_t) with the group
    sums d1_t = dm' . (m_t - g) and d2_t = ds' . (s_t - g g)."""
    g, _ = penalized(G, lam, w)
    state, buf = exact_unstep_moments(state, buf, g, h)
    m, s = wide.from_wide(state.m), wide.from_wide(state.s)
    return (state, buf) + adjoint_moments(adj, m, s, g, h, offsets)


def reverse_after(adj, H, lam, w, dg, h, workers):
    """Algorithm 2's step t after the Hessian-vector product H = H_t dg in parts:
    dw <- dw' + (H dg + lam dg);  d_lam <- d_lam + w dg;  dm <- beta1 dm';  ds <- beta2 ds'."""
    adj.dw[:] += total(H) + lam * dg
    adj.d_lam[:] += w * dg
    adj.dm[:] *= h.b1
    adj.ds[:] *= h.b2


def adjoint_before(adj, u, den, r, h, offsets):
    """d_alpha_t = -dots(dw', u);  du = -alpha dw';  q = u / den;  e_t = dots(du, q);
    k_t = dots(du, q r);  dm' += du / (c1 den);  ds' -= du q / (2 c2 r) where r > 0.
    Returns (d_alpha_t, e_t, k_t)."""
    d_alpha = -dots(adj.dw, u, offsets)
    du = -(h.alpha * adj.dw)
    q = u / den
    e, k = dots(du, q, offsets), dots(du, q * r, offsets)
    adj.dm[:] += du / (h.c1 * den)
    adj.ds[:] -= np.divide(du * q, (2.0 * h.c2) * r, out=np.zeros(len(r)), where=r > 0)
    return d_alpha, e, k


def adjoint_moments(adj, m, s, g, h, offsets):
    """d1_t = dots(dm', m_t - g);  d2_t = dots(ds', s_t - g g);
    dg = (1 - beta1) dm' + (2 (1 - beta2)) (g ds'). Returns (dg, d1_t, d2_t)."""
    d1 = dots(adj.dm, m - g, offsets)
    d2 = dots(adj.ds, s - g * g, offsets)
    dg = (1.0 - h.b1) * adj.dm + (2.0 * (1.0 - h.b2)) * (g * adj.ds)
    return dg, d1, d2


# --- float64 Adam (train(exact=False), method="stored") ----------------------------------------

def float_step(w, state, g, h):
    """Algorithm 1's Adam update in float64: (w_{t+1}, Moments(m_{t+1}, s_{t+1}))."""
    m = h.b1 * state.m + (1.0 - h.b1) * g
    s = h.b2 * state.s + (1.0 - h.b2) * (g * g)
    return w - h.alpha * increment(m, s, h)[0], Moments(m, s)


class Lanes(NamedTuple):
    """A backend's per-lane work of an Adam step (these functions, or revlearn.kernels.adam's)."""

    forward: object
    reverse_before: object
    reverse_moments: object
    reverse_after: object


LANES = Lanes(forward, reverse_before, reverse_moments, reverse_after)


# --- Algorithm 2's per-step work -----------------------------------------------------------------

class _Reverse:
    """Algorithm 2's per-step work for Adam: the per-lane adjoints (`Adjoint`), and per group
    d_alpha_t, d_beta1_t, d_beta2_t, d_epsilon and the sums S1, S2 of the paths through the bias
    corrections; how w_t, m_t and s_t come back is the subclass's (`undo_w`, `undo_moments`)."""

    dX_update = np.add  # d_X[B_t] += d/dX (grad L_t . dg)

    def start(self, case, dw):
        self.case, self.offsets, self.schedule = case, case.layout.offsets, Schedule(case)
        T, G, P = case.T, case.G, case.P
        self.adj = Adjoint(dw.copy(), np.zeros(P), np.zeros(P), np.zeros(P))
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


class Reversal(_Reverse):
    """Adam's Algorithm 2 with w_t, m_t and s_t given back by undoing Algorithm 1's steps in
    fixed point (the backend's `Lanes`: `LANES` or the kernels')."""

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
        return bool(np.array_equal(self.W, fixedpoint.to_fixed(case.w0))
                    and ans.is_initial(self.buf)
                    and not any(a.any() for part in self.state for a in part))


class Stored(_Reverse):
    """Adam's Algorithm 2 with w_t, m_t and s_t read back from the float64 trajectory kept in
    memory (this module's NumPy functions without the exact steps, the same for every backend):
    kept[t] = (w_t, m_t, s_t), an array (T+1, 3, P) or any mapping of the steps the reverse pass
    visits (and t + 1)."""

    lanes, workers = LANES, None

    def __init__(self, kept):
        self.kept = kept

    def undo_w(self, t, h):
        _, m, s = self.kept[t + 1]
        u, den, r = increment(m, s, h)
        return (self.kept[t][0],) + adjoint_before(self.adj, u, den, r, h, self.offsets)

    def undo_moments(self, t, h, G, w):
        _, m, s = self.kept[t]
        g, _ = penalized(G, self.case.lam, w)
        return adjoint_moments(self.adj, m, s, g, h, self.offsets)


# --- the optimizer -------------------------------------------------------------------------------

class Adam:
    """Adam on a case: the state `Moments` (`wide` fixed point, or float64), the exact step of a
    backend (its `adam.forward`), the float64 step, and what `revlearn.approx` asks of an
    optimizer (the equations of forward mode and greedy in its doc)."""

    title = "Adam"
    hypers = ("beta1", "beta2", "epsilon")  # its own hyperparameters (Case fields)
    per_step = ("alpha", "beta1", "beta2")  # those given per step and group, shape (T, G)
    state_names = ("m_t", "s_t")  # the state besides w_t, as a stored trajectory keeps it
    reversal, stored = Reversal, Stored
    state_between = None  # m_t and s_t do not follow from w_t and w_{t+1}: no DrMAD line

    def __init__(self, case):
        self.case = case

    @cached_property
    def schedule(self):
        return Schedule(self.case)

    def hyper(self, t):
        return self.schedule.at(t)

    def zeros(self):
        """m_0 = s_0 = 0 in wide fixed point."""
        return Moments(wide.zeros(self.case.P), wide.zeros(self.case.P))

    def forward(self, be, t, W, state, buf, w, G, workers):
        """Algorithm 1's step t, exactly, on backend be: (W, state, buf, w_{t+1}, bad)."""
        return be.adam.forward(W, state, buf, w, G, self.case.lam, self.hyper(t), workers)

    def float_zeros(self):
        """Moments(m_0, s_0) = (0, 0) in float64."""
        return Moments(np.zeros(self.case.P), np.zeros(self.case.P))

    def float_step(self, t, w, state, g):
        """Algorithm 1's step t in float64 (the module's `float_step`)."""
        return float_step(w, state, g, self.hyper(t))

    def tangent_zeros(self):
        """(m_0', s_0', P1_{-1}', P2_{-1}') = 0: per lane, then per group."""
        P, G = self.case.P, self.case.G
        return np.zeros(P), np.zeros(P), np.zeros(G), np.zeros(G)

    def tangent_step(self, t, d, w, state, dw, dstate, g, dg):
        """Forward mode's step t along the direction d (`approx.Direction`), with g_t' = dg and
        P1_{-1} = P2_{-1} = 1:

            P1_t' = P1_{t-1}' beta1_t + P1_{t-1} beta1_t'         (likewise P2')
            m_{t+1}' = beta1_t' (m_t - g_t) + beta1_t m_t' + (1 - beta1_t) g_t'
            s_{t+1}' = beta2_t' (s_t - g_t g_t) + beta2_t s_t' + 2 (1 - beta2_t) g_t g_t'
            r' = s_{t+1}' / (2 c2 r) + r P2_t' / (2 c2)           (0 where s_{t+1} = 0)
            u' = m_{t+1}' / (c1 den) + u P1_t' / c1 - (u / den) (r' + epsilon')
            w_{t+1}' = w_t' - alpha_t' u - alpha_t u'

        Returns (w_{t+1}, state_{t+1}, w_{t+1}', (m_{t+1}', s_{t+1}', P1_t', P2_t'))."""
        c, sc, ex = self.case, self.schedule, self.case.layout.expand
        dm, ds, dP1, dP2 = dstate
        h = sc.at(t)
        P1, P2 = (sc.P1[t - 1], sc.P2[t - 1]) if t > 0 else (np.ones(c.G), np.ones(c.G))
        dP1, dP2 = dP1 * c.beta1[t] + P1 * d.beta1[t], dP2 * c.beta2[t] + P2 * d.beta2[t]
        dm = ex(d.beta1[t]) * (state.m - g) + h.b1 * dm + (1.0 - h.b1) * dg
        ds = ex(d.beta2[t]) * (state.s - g * g) + h.b2 * ds + (2.0 * (1.0 - h.b2)) * (g * dg)
        w_next, state = float_step(w, state, g, h)
        u, den, r = increment(state.m, state.s, h)
        dr = (np.divide(ds, (2.0 * h.c2) * r, out=np.zeros(c.P), where=r > 0)
              + r * ex(dP2) / (2.0 * h.c2))
        du = dm / (h.c1 * den) + u * ex(dP1) / h.c1 - (u / den) * (dr + ex(d.epsilon))
        return w_next, state, dw - ex(d.alpha[t]) * u - h.alpha * du, (dm, ds, dP1, dP2)

    def greedy(self, t, state, g, g_next, state_next):
        """Baydin et al.'s one-step hypergradients of step t, in `per_step` order (Adam-HD for
        alpha; beta1 and beta2 alike), with u_t = u(m_{t+1}, s_{t+1}):

            d_alpha_t = -g_{t+1} . u_t,    d_beta_t = -alpha_t g_{t+1} . du_t/dbeta_t
            du_t/dbeta1_t = (m_t - g_t) / (c1 den) + u P1_t / (beta1_t c1)
            du_t/dbeta2_t = -(u / den) ((s_t - g_t g_t) / (2 c2 r) + r P2_t / (2 c2 beta2_t))

        (the last bracket's first term 0 where s_{t+1} = 0)."""
        c, sc, ex = self.case, self.schedule, self.case.layout.expand
        offsets, h = c.layout.offsets, sc.at(t)
        u, den, r = increment(state_next.m, state_next.s, h)
        du_b1 = (state.m - g) / (h.c1 * den) + u * ex(sc.P1[t] / c.beta1[t]) / h.c1
        dr_b2 = (np.divide(state.s - g * g, (2.0 * h.c2) * r, out=np.zeros(c.P), where=r > 0)
                 + r * ex(sc.P2[t] / c.beta2[t]) / (2.0 * h.c2))
        return (-dots(g_next, u, offsets),
                -c.alpha[t] * dots(g_next, du_b1, offsets),
                -c.alpha[t] * dots(g_next, -(u / den) * dr_b2, offsets))

    def eta(self, state_T):
        """The Neumann series' step per entry: the last step read as a heavy ball with den
        frozen (`approx.ift`), a (1 - beta1) / (1 + beta1) with a = alpha / (c1 den), den from
        m_T and s_T."""
        h = self.hyper(self.case.T - 1)
        den = increment(state_T.m, state_T.s, h)[1]
        return (h.alpha / (h.c1 * den)) * ((1.0 - h.b1) / (1.0 + h.b1))
