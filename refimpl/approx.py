"""Forward mode, a second exact method, and the approximate hypergradients people use instead of
the exact one, all on the engine's passes (`sgd.Passes`) and per-parameter steps (`lanes`).

Every method runs Algorithm 1 in float64, with the operations of `sgd._train_float` (the same w_t,
bit for bit), and differentiates f(w_T) = ell(w_T; X_valid, y_valid).

**Forward mode** (`forward`) propagates tangents along a direction (alpha', gamma', s', lam', w_0')
in hyperparameter space, one Hessian-vector product per step, O(P) memory, no reversal:

    w_0' = s'[group] eps + w_0',   v_0' = 0
    g_t' = H_t w_t' + lam w_t' + lam' w_t                      (H_t: Hessian of ell on batch B_t)
    v_{t+1}' = gamma_t' (v_t + g_t) + gamma_t v_t' - (1 - gamma_t) g_t'
    w_{t+1}' = w_t' + alpha_t' v_{t+1} + alpha_t v_{t+1}'
    f' = grad f(w_T) . w_T'

It gives the directional derivative sum_k d f / d h_k h_k' that the reverse mode's gradient gives
as a dot product (`directional`), to the float64 run's difference from the fixed-point one.

**The approximations** (`Hypergrads`, None for a hyperparameter a method does not give):

- `truncated(case, K)`: Algorithm 2 over the last K steps only, from the float64 run's last K + 1
  states (O(K P) memory). d_alpha_t and d_gamma_t of those steps are exact (they depend on later
  steps only) and the earlier ones 0; d_l2 keeps the last K steps' share; d_init_scale and d_w0
  need all T steps (K = T: the stored method's answer, bit for bit).
- `drmad(case)`: Algorithm 2 over all T steps on the straight line from w_0 to w_T instead of the
  trajectory (Fu et al. 2016), O(P) memory:
      w_t = (1 - t/T) w_0 + (t/T) w_T,   v_{t+1} = (w_{t+1} - w_t) / alpha_t   (0 where alpha_t = 0)
- `ift(case, K)`: the implicit function theorem at w_T, as if w_T were a stationary point of the
  training objective L(w) = ell(w; X_train, y_train) + 1/2 sum_i lam_i w_i^2 (all training rows;
  Lorraine et al. 2020), with H = grad^2 L(w_T) inverted by a K-term Neumann series:
      q_K = sum_{j<K} (I - eta H)^j eta grad f(w_T),
      eta = alpha_{T-1} (1 - gamma_{T-1}) / (1 + gamma_{T-1})          (per entry)
      d_lam = -q_K w_T  (per weight),   d_X_train = -d/dX (grad_w ell . q_K)
  q_K -> H^{-1} grad f(w_T) wherever 0 < eta h < 2 for every eigenvalue h of H, which is where the
  last step's heavy-ball iteration is stable (alpha (1 - gamma) h < 2 (1 + gamma)). It cannot give
  alpha, gamma, init_scale or w_0: a stationary point does not depend on the optimizer or where
  it started, so the theorem says 0 for them; their whole effect is through not having converged.
- `greedy(case)`: one-step hypergradients (Baydin et al. 2018): the derivative of the next step's
  training objective with respect to this step's alpha and gamma, free during training,
      d_alpha_t = g_{t+1} . v_{t+1},   d_gamma_t = alpha_t g_{t+1} . (v_t + g_t)   (per group)
  with grad f(w_T) in place of g_T at the last step (which makes that step's entries exact).
  init_scale and l2 are not per step, so a one-step derivative does not exist for them.
"""

from typing import NamedTuple

import numpy as np

from . import blas, lanes, sgd
from .case import Case, require_case
from .errors import InputError
from .threads import Workers

KINDS = ("alpha", "gamma", "init_scale", "l2", "w0")
"""The hyperparameters a direction may move (w0: the initial weights, an independent input)."""


class Hypergrads(NamedTuple):
    """A hypergradient, exact or approximate, shaped like `Result`'s; None where the method does
    not give that hyperparameter."""

    d_alpha: np.ndarray | None
    d_gamma: np.ndarray | None
    d_init_scale: np.ndarray | None
    d_l2: np.ndarray | None
    d_w0: np.ndarray | None
    d_X_train: np.ndarray | None


class Forward(NamedTuple):
    """What forward mode returns: f(w_T), its derivative along the direction, and w_T."""

    valid_loss: float
    derivative: float
    w_final: np.ndarray


class Direction(NamedTuple):
    """A checked direction in hyperparameter space, every kind present (zeros where not given)."""

    alpha: np.ndarray
    gamma: np.ndarray
    init_scale: np.ndarray
    l2: np.ndarray
    w0: np.ndarray


# --- directions ----------------------------------------------------------------------------

def check_direction(case: Case, given) -> Direction:
    """The Direction a dict {kind: array} describes, checked against the case: keys among KINDS,
    each array shaped like the case's (alpha and gamma (T, G), init_scale (G,), l2 as case.l2,
    w0 (P,)) and finite; kinds not given are 0."""
    require_momentum(case, "revlearn.approx.check_direction")
    if not isinstance(given, dict):
        raise InputError(f"a direction is a dict of arrays keyed by {', '.join(KINDS)}; received "
                         f"{type(given).__name__}")
    unknown = sorted(set(given) - set(KINDS), key=str)
    if unknown:
        raise InputError(f"unknown direction key(s) {', '.join(map(repr, unknown))}; the keys "
                         f"are {', '.join(KINDS)}")
    out = {}
    for kind, shape in _shapes(case).items():
        try:
            a = np.asarray(given.get(kind, np.zeros(shape)), dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"direction[{kind!r}] is not an array of numbers; give one of "
                             f"shape {shape}") from None
        if a.shape != shape:
            raise InputError(f"direction[{kind!r}] has shape {a.shape}; this case needs {shape}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"direction[{kind!r}] has NaN or infinite entries")
        out[kind] = a
    return Direction(**out)


def random_direction(case: Case, rng: np.random.Generator, kinds=KINDS) -> dict:
    """A direction with standard normal entries in `kinds` (the others 0)."""
    require_momentum(case, "revlearn.approx.random_direction")
    shapes = _shapes(case)
    return {k: rng.standard_normal(shapes[k]) for k in kinds}


def directional(grads, direction: Direction) -> float:
    """sum over the kinds of d_kind . direction.kind: a gradient's (a `Result`'s or a
    `Hypergrads`') derivative along a checked direction, summed in the order of KINDS."""
    return float(sum(float(np.sum(getattr(grads, f"d_{k}") * getattr(direction, k)))
                     for k in KINDS))


def _shapes(case):
    return dict(alpha=case.alpha.shape, gamma=case.gamma.shape, init_scale=case.init_scale.shape,
                l2=case.l2.shape, w0=(case.P,))


# --- Algorithm 1 in float64, and forward mode ----------------------------------------------

class _Engine(NamedTuple):
    case: Case
    passes: sgd.Passes
    workers: Workers


def require_momentum(case, where):
    """Refuse a case trained with Adam: every method here is written for SGD with momentum."""
    require_case(case, where)
    if case.optimizer != "momentum":
        raise InputError(f"{where} takes a case trained with SGD with momentum; this one is "
                         f"trained with {case.optimizer!r} (use revlearn.hypergradient, exact for "
                         "Adam too)")


def _engine(case, backend, threads, where):
    require_momentum(case, where)
    be, workers = sgd.get_backend(backend), Workers(threads)
    return _Engine(case, sgd.Passes(case, be, workers), workers)


def _hyper(case, t):
    """alpha_t and gamma_t for every entry of w."""
    return case.layout.expand(case.alpha[t]), case.layout.expand(case.gamma[t])


def _train(eng, each=None):
    """Algorithm 1 in float64 (the operations of `sgd._train_float`): (w_T, v_T), calling
    each(t, w_t, v_t, g_t) at every step before its update."""
    case, passes = eng.case, eng.passes
    w, v = case.w0, np.zeros(case.P)
    for t in range(case.T):
        with np.errstate(over="ignore", invalid="ignore"):
            passes.batch_grad(t, w)
            g, bad = lanes.penalized(passes.G, case.lam, w)
        if bad >= 0:
            raise sgd._not_finite(case, t, bad)
        if each is not None:
            each(t, w, v, g)
        alpha, gamma = _hyper(case, t)
        v = gamma * v - (1.0 - gamma) * g
        w = w + alpha * v
    return w, v


def _valid_grad(eng, w):
    """(f(w), grad f(w)) on the validation set."""
    return eng.passes.grad(w, eng.case.X_valid, eng.case.y_valid)


def _dot(x, y, offsets):
    """sum_i x_i y_i: the per-group dots of `lanes.dots` (a fixed order), added in group order."""
    return float(sum(float(d) for d in lanes.dots(x, y, offsets)))


def forward(case: Case, direction: dict, backend: str = "auto",
            threads: int | None = None) -> Forward:
    """The directional derivative of f(w_T) along `direction` (a dict keyed by KINDS; see
    `check_direction`) by forward mode: the module's equations, one Hessian-vector product per
    step."""
    eng = _engine(case, backend, threads, "revlearn.approx.forward")
    d = check_direction(case, direction)
    lay, passes = case.layout, eng.passes
    d_lam = d.l2 if d.l2.shape == (case.P,) else lay.expand(d.l2)
    with blas.single_threaded():
        w, v = case.w0, np.zeros(case.P)
        dw, dv = lay.expand(d.init_scale) * case.eps + d.w0, np.zeros(case.P)
        for t in range(case.T):
            with np.errstate(over="ignore", invalid="ignore"):
                passes.batch_grad_hvp(t, w, dw, None)
                g, bad = lanes.penalized(passes.G, case.lam, w)
            if bad >= 0:
                raise sgd._not_finite(case, t, bad)
            alpha, gamma = _hyper(case, t)
            d_alpha, d_gamma = lay.expand(d.alpha[t]), lay.expand(d.gamma[t])
            dg = lanes.total(passes.H) + case.lam * dw + d_lam * w
            dv = d_gamma * (v + g) + gamma * dv - (1.0 - gamma) * dg
            v = gamma * v - (1.0 - gamma) * g
            dw = dw + d_alpha * v + alpha * dv
            w = w + alpha * v
        loss, df = _valid_grad(eng, w)
    return Forward(float(loss), _dot(df, dw, lay.offsets), w)


# --- Algorithm 2 over given states: truncated, DrMAD -----------------------------------------

def _reverse(eng, dw, state, stop):
    """Algorithm 2 from dw = grad f(w_T), dv = 0, over t = T-1 .. stop, with (w_t, v_t) =
    state(t): the per-parameter steps of `lanes` in the order `sgd._Stored` takes them, so that
    with the true states and stop = 0 it is the stored method's answer bit for bit. Returns
    (d_alpha, d_gamma, dw, d_lam, d_X) with dw = df/dw_stop and d_lam the steps' share."""
    case, passes = eng.case, eng.passes
    T, offsets = case.T, case.layout.offsets
    adj = sgd.Adjoint(dw.copy(), np.zeros(case.P), np.zeros(case.P))
    d_alpha, d_gamma = np.zeros((T, case.G)), np.zeros((T, case.G))
    d_X = np.zeros_like(case.X_train) if case.grad_train_inputs else None
    dX_u = np.empty((case.batches.shape[1], case.X_train.shape[1])) if d_X is not None else None
    v_next = state(T)[1]
    for t in range(T - 1, stop - 1, -1):
        w, v = state(t)
        alpha, gamma = _hyper(case, t)
        d_alpha[t] = lanes.dots(adj.dw, v_next, offsets)
        u = lanes.adjoint_before(adj, alpha, gamma)[0]
        with np.errstate(over="ignore", invalid="ignore"):
            passes.batch_grad_hvp(t, w, u, dX_u)
            g, _ = lanes.penalized(passes.G, case.lam, w)
            d_gamma[t] = lanes.adjoint_after(adj, v, g, lanes.total(passes.H), u, w, case.lam,
                                             gamma, offsets)
        if d_X is not None:
            np.subtract.at(d_X, case.batches[t], dX_u)
        v_next = v
    return d_alpha, d_gamma, adj.dw, adj.d_lam, d_X


def _per_shape(case, d_lam):
    """d_lam per weight, or summed per group for a per-group l2."""
    return d_lam if case.l2_per_weight else case.layout.group_sum(d_lam)


def truncated(case: Case, K: int, backend: str = "auto", threads: int | None = None) -> Hypergrads:
    """Algorithm 2 over the last K steps (1 <= K <= T) from the float64 run's last K + 1 states;
    see the module's doc. d_init_scale and d_w0 only for K = T (None otherwise)."""
    eng = _engine(case, backend, threads, "revlearn.approx.truncated")
    K = _steps("K", K, 1, case.T)
    kept = {}

    def keep(t, w, v, g):
        if t >= case.T - K:
            kept[t] = (w, v)

    with blas.single_threaded():
        kept[case.T] = _train(eng, keep)
        dw = _valid_grad(eng, kept[case.T][0])[1]
        d_alpha, d_gamma, dw, d_lam, d_X = _reverse(eng, dw, kept.__getitem__, case.T - K)
    whole = K == case.T
    return Hypergrads(d_alpha, d_gamma,
                      lanes.dots(dw, case.eps, case.layout.offsets) if whole else None,
                      _per_shape(case, d_lam), dw if whole else None, d_X)


def drmad(case: Case, backend: str = "auto", threads: int | None = None) -> Hypergrads:
    """Algorithm 2 over all T steps on the straight line from w_0 to w_T (DrMAD); see the
    module's doc."""
    eng = _engine(case, backend, threads, "revlearn.approx.drmad")
    T, lay, w_0 = case.T, case.layout, case.w0
    with blas.single_threaded():
        w_T, _ = _train(eng)

        def on_line(t):
            return (1.0 - t / T) * w_0 + (t / T) * w_T

        def state(t):
            if t == 0:
                return w_0, np.zeros(case.P)
            alpha = lay.expand(case.alpha[t - 1])
            v = np.divide(on_line(t) - on_line(t - 1), alpha, out=np.zeros(case.P),
                          where=alpha > 0)
            return on_line(t), v

        dw = _valid_grad(eng, w_T)[1]
        d_alpha, d_gamma, dw, d_lam, d_X = _reverse(eng, dw, state, 0)
    return Hypergrads(d_alpha, d_gamma, lanes.dots(dw, case.eps, lay.offsets),
                      _per_shape(case, d_lam), dw, d_X)


# --- the implicit function theorem ---------------------------------------------------------

def ift(case: Case, K: int, backend: str = "auto", threads: int | None = None) -> Hypergrads:
    """The implicit hypergradient at w_T with a K-term Neumann series (K >= 1); see the module's
    doc. Gives d_l2 (and d_X_train when the case asks for it); the rest is None."""
    require_momentum(case, "revlearn.approx.ift")
    K = _steps("K", K, 1, None)
    return next(ift_series(case, [K], backend, threads))[1]


def ift_series(case: Case, Ks, backend: str = "auto", threads: int | None = None):
    """`ift` at each K of the increasing list Ks from one Neumann series: yields (K, Hypergrads)
    as soon as the series has K terms (so the time to each yield is what `ift(case, K)` takes)."""
    eng = _engine(case, backend, threads, "revlearn.approx.ift_series")
    Ks = [_steps("K", K, 1, None) for K in Ks]
    if any(b <= a for a, b in zip(Ks, Ks[1:], strict=False)):
        raise InputError(f"the K of an ift series must increase; received {Ks}")
    lay, T = case.layout, case.T
    alpha, gamma = case.alpha[T - 1], case.gamma[T - 1]
    eta = lay.expand(alpha * (1.0 - gamma) / (1.0 + gamma))
    with blas.single_threaded():
        w_T, _ = _train(eng)
        p = eta * _valid_grad(eng, w_T)[1]  # p_0 = eta grad f(w_T);  q_1 = p_0
        q, terms = p.copy(), 1
        for K in Ks:
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging series is an answer
                while terms < K:  # p_j = p_{j-1} - eta H p_{j-1};  q_{j+1} = q_j + p_j
                    p = p - eta * (_hvp_all(eng, w_T, p)[0] + case.lam * p)
                    q += p
                    terms += 1
                d_lam = _per_shape(case, -q * w_T)
                d_X = (-_hvp_all(eng, w_T, q, input_grad=True)[1] if case.grad_train_inputs
                       else None)
            yield K, Hypergrads(None, None, None, d_lam, None, d_X)


def _hvp_all(eng, w, u, input_grad=False):
    """(H u, d/dX (grad_w ell . u) or None) of the data loss over every training row."""
    case, passes, wk = eng.case, eng.passes, eng.workers
    X, y = case.X_train, case.y_train
    with np.errstate(over="ignore", invalid="ignore"):
        if case.model is not None:
            _, _, Hu, dX = case.model.loss_grad_hvp(w, u, X, y, input_grad, workers=wk)
        else:
            _, _, Hu, dX = passes.be.loss_grad_hvp(w, u, X, y, case.layout, case.activation,
                                                   input_grad, workers=wk)
    return Hu, dX


# --- greedy one-step hypergradients --------------------------------------------------------

def greedy(case: Case, backend: str = "auto", threads: int | None = None) -> Hypergrads:
    """Baydin et al.'s one-step hypergradients of alpha and gamma, from the training run alone;
    see the module's doc. d_init_scale, d_l2, d_w0 and d_X_train are None."""
    eng = _engine(case, backend, threads, "revlearn.approx.greedy")
    T, offsets = case.T, case.layout.offsets
    d_alpha, d_gamma = np.empty((T, case.G)), np.empty((T, case.G))
    prev = {}

    def one_step(t, g_next, v_next):
        """d_alpha_t = g_{t+1} . v_{t+1};  d_gamma_t = alpha_t g_{t+1} . (v_t + g_t)."""
        v, g = prev[t]
        d_alpha[t] = lanes.dots(g_next, v_next, offsets)
        d_gamma[t] = case.alpha[t] * lanes.dots(g_next, v + g, offsets)

    def each(t, w, v, g):
        prev[t] = (v, g)
        if t > 0:
            one_step(t - 1, g, v)
            del prev[t - 1]

    with blas.single_threaded():
        w_T, v_T = _train(eng, each)
        one_step(T - 1, _valid_grad(eng, w_T)[1], v_T)
    return Hypergrads(d_alpha, d_gamma, None, None, None, None)


def _steps(name, K, least, most):
    """K checked: an integer in [least, most] (no upper bound for most = None)."""
    ok = isinstance(K, (int, np.integer)) and not isinstance(K, (bool, np.bool_))
    if not ok or K < least or (most is not None and K > most):
        bound = f"an integer >= {least}" + (f" and <= T = {most}" if most is not None else "")
        raise InputError(f"{name} must be {bound}; received {K!r}")
    return int(K)
