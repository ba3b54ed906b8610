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
computes the same, bit for bit, block by block of lanes on several threads.
"""

from typing import NamedTuple

import numpy as np

from . import fixedpoint, wide
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
