"""Forward mode, a second exact method, and the approximate hypergradients people use instead of
the exact one, all on the engine's passes (`sgd.Passes`) and per-parameter steps (`lanes`).

Every method runs Algorithm 1 in float64, with the operations of `sgd.train_float` (the same w_t,
bit for bit), and differentiates f(w_T) = ell(w_T; X_valid, y_valid). What differs between
optimizers (their steps, tangents, one-step hypergradients, the series' step) is the case's
optimizer object's (`sgd.optimizer_of`: `momentum.Momentum`, `adam.Adam`).

**Forward mode** (`forward`) propagates tangents along a direction (alpha', gamma', s', lam', w_0')
in hyperparameter space, one Hessian-vector product per step, O(P) memory, no reversal:

    w_0' = s'[group] eps + w_0',   v_0' = 0
    g_t' = H_t w_t' + lam w_t' + lam' w_t                      (H_t: Hessian of ell on batch B_t)
    v_{t+1}' = gamma_t' (v_t + g_t) + gamma_t v_t' - (1 - gamma_t) g_t'
    w_{t+1}' = w_t' + alpha_t' v_{t+1} + alpha_t v_{t+1}'
    f' = grad f(w_T) . w_T'

It gives the directional derivative sum_k d f / d h_k h_k' that the reverse mode's gradient gives
as a dot product (`directional`), to the float64 run's difference from the fixed-point one.
For a case trained with Adam (`revlearn.adam`'s notation; the direction moves alpha', beta1',
beta2', epsilon', s', lam', w_0'), with P1', P2' the tangents of the products P1_t, P2_t per
group and m_0' = s_0' = 0:

    P1_t' = P1_{t-1}' beta1_t + P1_{t-1} beta1_t'     (P1_{-1} = 1, P1_{-1}' = 0; likewise P2')
    m_{t+1}' = beta1_t' (m_t - g_t) + beta1_t m_t' + (1 - beta1_t) g_t'
    s_{t+1}' = beta2_t' (s_t - g_t g_t) + beta2_t s_t' + 2 (1 - beta2_t) g_t g_t'
    r' = s_{t+1}' / (2 c2 r) + r P2_t' / (2 c2)         (0 where s_{t+1} = 0, as the reverse's)
    u' = m_{t+1}' / (c1 den) + u P1_t' / c1 - (u / den) (r' + epsilon')
    w_{t+1}' = w_t' - alpha_t' u - alpha_t u'

**The approximations** (`Hypergrads`, None for a hyperparameter a method does not give):

- `truncated(case, K)`: Algorithm 2 over the last K steps only, from the float64 run's last K + 1
  states (O(K P) memory). d_alpha_t and d_gamma_t (Adam: d_beta1_t, d_beta2_t) of those steps
  are exact (they depend on later steps only) and the earlier ones 0; d_l2 (and Adam's
  d_epsilon) keeps the last K steps' share; d_init_scale and d_w0 need all T steps (K = T: the
  stored method's answer, bit for bit).
- `drmad(case)`: Algorithm 2 over all T steps on the straight line from w_0 to w_T instead of the
  trajectory (Fu et al. 2016), O(P) memory:
      w_t = (1 - t/T) w_0 + (t/T) w_T,   v_{t+1} = (w_{t+1} - w_t) / alpha_t   (0 where alpha_t = 0)
  SGD with momentum only: the line gives w_t and v_t, but not Adam's m_t and s_t.
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
  For Adam (where the theorem says 0 for beta1, beta2 and epsilon too), eta comes from the last
  step read as a heavy ball: with den frozen, w_{t+1} = w_t - a m_{t+1},
  m_{t+1} = beta1 m_t + (1 - beta1) g_t, a = alpha / (c1 den) per entry, is momentum's iteration
  (v = -m) with gamma = beta1 and step a, hence
      eta = a_{T-1} (1 - beta1_{T-1}) / (1 + beta1_{T-1}),   den from m_T, s_T
  a preconditioned series (eta differs per entry), with the same limit H^{-1} grad f(w_T).
- `greedy(case)`: one-step hypergradients (Baydin et al. 2018): the derivative of the next step's
  training objective with respect to this step's alpha and gamma, free during training,
      d_alpha_t = g_{t+1} . v_{t+1},   d_gamma_t = alpha_t g_{t+1} . (v_t + g_t)   (per group)
  with grad f(w_T) in place of g_T at the last step (which makes that step's entries exact).
  init_scale and l2 are not per step, so a one-step derivative does not exist for them. For Adam
  (Baydin et al.'s Adam-HD for alpha; beta1 and beta2 alike), with u_t = u(m_{t+1}, s_{t+1}):
      d_alpha_t = -g_{t+1} . u_t,    d_beta_t = -alpha_t g_{t+1} . du_t/dbeta_t
      du_t/dbeta1_t = (m_t - g_t) / (c1 den) + u P1_t / (beta1_t c1)
      du_t/dbeta2_t = -(u / den) ((s_t - g_t g_t) / (2 c2 r) + r P2_t / (2 c2 beta2_t))
  (the last bracket's first term 0 where s_{t+1} = 0); epsilon is not per step either.
"""

from typing import NamedTuple

import numpy as np

from . import backends, blas, lanes, sgd
from .adam import Adam
from .case import Case, require_case
from .errors import InputError
from .momentum import Momentum
from .threads import Workers


def _kinds(optimizer):
    """alpha, the optimizer's own hyperparameters, init_scale, l2 and w0 (the initial weights, an
    independent input)."""
    return ("alpha", *optimizer.hypers, "init_scale", "l2", "w0")


KINDS = _kinds(Momentum)
"""The hyperparameters a direction may move, SGD with momentum."""
ADAM_KINDS = _kinds(Adam)
"""The same for a case trained with Adam."""


def kinds_of(case: Case) -> tuple:
    """The hyperparameter kinds of the case's optimizer: KINDS, or ADAM_KINDS for Adam."""
    return _kinds(sgd.optimizer_of(case))


class Hypergrads(NamedTuple):
    """A hypergradient, exact or approximate, shaped like `Result`'s; None where the method does
    not give that hyperparameter."""

    d_alpha: np.ndarray | None
    d_gamma: np.ndarray | None
    d_init_scale: np.ndarray | None
    d_l2: np.ndarray | None
    d_w0: np.ndarray | None
    d_X_train: np.ndarray | None
    d_beta1: np.ndarray | None = None
    d_beta2: np.ndarray | None = None
    d_epsilon: np.ndarray | None = None


class Forward(NamedTuple):
    """What forward mode returns: f(w_T), its derivative along the direction, and w_T."""

    valid_loss: float
    derivative: float
    w_final: np.ndarray


class Direction(NamedTuple):
    """A checked direction in hyperparameter space: every kind of the case's optimizer present
    (zeros where not given), the other optimizer's kinds None."""

    alpha: np.ndarray
    gamma: np.ndarray | None = None
    beta1: np.ndarray | None = None
    beta2: np.ndarray | None = None
    epsilon: np.ndarray | None = None
    init_scale: np.ndarray | None = None
    l2: np.ndarray | None = None
    w0: np.ndarray | None = None


# --- directions ----------------------------------------------------------------------------

def check_direction(case: Case, given) -> Direction:
    """The Direction a dict {kind: array} describes, checked against the case: keys among
    `kinds_of(case)`, each array shaped like the case's (alpha, gamma, beta1, beta2 (T, G),
    epsilon and init_scale (G,), l2 as case.l2, w0 (P,)) and finite; kinds not given are 0."""
    require_case(case, "revlearn.approx.check_direction")
    names = kinds_of(case)
    if not isinstance(given, dict):
        raise InputError(f"a direction is a dict of arrays keyed by {', '.join(names)}; received "
                         f"{type(given).__name__}")
    unknown = sorted(set(given) - set(names), key=str)
    if unknown:
        raise InputError(f"unknown direction key(s) {', '.join(map(repr, unknown))}; the keys "
                         f"are {', '.join(names)}")
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


def random_direction(case: Case, rng: np.random.Generator, kinds=None) -> dict:
    """A direction with standard normal entries in `kinds` (default: every kind of the case's
    optimizer; the others 0)."""
    require_case(case, "revlearn.approx.random_direction")
    shapes = _shapes(case)
    kinds = kinds_of(case) if kinds is None else kinds
    unknown = [k for k in kinds if k not in shapes]
    if unknown:
        raise InputError(f"unknown kind(s) {', '.join(map(repr, unknown))}; this case's are "
                         f"{', '.join(shapes)}")
    return {k: rng.standard_normal(shapes[k]) for k in kinds}


def directional(grads, direction: Direction) -> float:
    """sum over the kinds of d_kind . direction.kind: a gradient's (a `Result`'s or a
    `Hypergrads`') derivative along a checked direction, summed in the order of Direction's
    fields."""
    return float(sum(float(np.sum(getattr(grads, f"d_{k}") * d))
                     for k, d in zip(Direction._fields, direction, strict=True) if d is not None))


def _shapes(case):
    """The shape of each kind of the case's optimizer, in `kinds_of` order: the case's array's,
    and (P,) for w0."""
    return {k: (case.P,) if k == "w0" else getattr(case, k).shape for k in kinds_of(case)}


# --- Algorithm 1 in float64, and forward mode ----------------------------------------------

class _Engine(NamedTuple):
    case: Case
    passes: sgd.Passes
    workers: Workers
    opt: object  # the case's optimizer object (`sgd.optimizer_of`)


def drmad_applies(case: Case) -> bool:
    """Whether DrMAD's line gives the case's optimizer state: SGD with momentum's v_t follows
    from w_t and w_{t+1}; Adam's m_t and s_t do not."""
    return sgd.optimizer_of(case).state_between is not None


def require_line(case, where):
    """Refuse, for DrMAD (written for SGD with momentum), a case whose optimizer's state does not
    follow from the line (`drmad_applies`)."""
    require_case(case, where)
    if not drmad_applies(case):
        opt = sgd.optimizer_of(case)
        raise InputError(f"{where} takes a case trained with SGD with momentum; this one is "
                         f"trained with {case.optimizer!r} (DrMAD's straight line gives w_t and "
                         f"v_t, not {opt.title}'s {' and '.join(opt.state_names)})")


def _engine(case, backend, threads, where):
    require_case(case, where)
    be, workers = backends.get_backend(backend), Workers(threads)
    return _Engine(case, sgd.Passes(case, be, workers), workers, sgd.optimizer_of(case))


def _train(eng, each=None):
    """Algorithm 1 in float64 (`sgd.train_float`): (w_T, state_T), calling each(t, w_t, state_t,
    g_t) at every step before its update; state (v,) for momentum, `adam.Moments` (m, s) for
    Adam."""
    w, state, _ = sgd.train_float(eng.case, eng.passes.be, eng.workers, each)
    return w, state


def _valid_grad(eng, w):
    """(f(w), grad f(w)) on the validation set."""
    return eng.passes.grad(w, eng.case.X_valid, eng.case.y_valid)


def _dot(x, y, offsets):
    """sum_i x_i y_i: the per-group dots of `lanes.dots` (a fixed order), added in group order."""
    return float(sum(float(d) for d in lanes.dots(x, y, offsets)))


def forward(case: Case, direction: dict, backend: str = "auto",
            threads: int | None = None) -> Forward:
    """The directional derivative of f(w_T) along `direction` (a dict keyed by `kinds_of(case)`;
    see `check_direction`) by forward mode: the module's equations, one Hessian-vector product per
    step."""
    eng = _engine(case, backend, threads, "revlearn.approx.forward")
    d = check_direction(case, direction)
    with blas.single_threaded():
        w, dw = _tangents(eng, d)
        loss, df = _valid_grad(eng, w)
    return Forward(float(loss), _dot(df, dw, case.layout.offsets), w)


def _start(case, d):
    """(w_0', lam'): the tangents of the initial weights and of the per-weight penalty."""
    lay = case.layout
    d_lam = d.l2 if d.l2.shape == (case.P,) else lay.expand(d.l2)
    return lay.expand(d.init_scale) * case.eps + d.w0, d_lam


def _gradient_and_tangent(eng, t, w, dw, d_lam):
    """(g_t, g_t') at w_t: the batch gradient with the penalty, and its tangent
    g_t' = H_t w_t' + lam w_t' + lam' w_t (one Hessian-vector product)."""
    case, passes = eng.case, eng.passes
    with np.errstate(over="ignore", invalid="ignore"):
        passes.batch_grad_hvp(t, w, dw, None)
        g, bad = lanes.penalized(passes.G, case.lam, w)
    if bad >= 0:
        raise sgd.not_finite(case, t, bad)
    return g, lanes.total(passes.H) + case.lam * dw + d_lam * w


def _tangents(eng, d):
    """(w_T, w_T') by the module's equations: the optimizer's step and its tangent
    (`tangent_step`) after each step's gradient and its tangent."""
    case, opt = eng.case, eng.opt
    dw, d_lam = _start(case, d)
    w, state, dstate = case.w0, opt.float_zeros(), opt.tangent_zeros()
    for t in range(case.T):
        g, dg = _gradient_and_tangent(eng, t, w, dw, d_lam)
        w, state, dw, dstate = opt.tangent_step(t, d, w, state, dw, dstate, g, dg)
    return w, dw


# --- Algorithm 2 over given states: truncated, DrMAD -----------------------------------------

class Kept:
    """kept[t] = (w_t, *state_t) from a function of t: the states Algorithm 2 reads, computed
    when asked for (DrMAD's line)."""

    def __init__(self, state):
        self.state = state

    def __getitem__(self, t):
        return self.state(t)


def _reverse(eng, dw, kept, stop):
    """Algorithm 2 (`sgd.reverse` with the stored method's steps: with the true states and
    stop = 0 its answer bit for bit) from dw = grad f(w_T) over t = T-1 .. stop, reading w_t and
    the optimizer's state from kept[t] = (w_t, *state_t) (a dict, or `Kept`): a dict of
    `Result` fields, d_w0 being df/dw_stop and d_l2 (d_epsilon) the steps' share."""
    return sgd.reverse(eng.case, eng.passes.be, eng.workers, eng.opt.stored(kept), dw, stop=stop)


def _hypergrads(got, whole=True):
    """Hypergrads of a dict of some of its fields (`_reverse`'s), None for the others;
    d_init_scale and d_w0 only when whole."""
    given = got if whole else dict(got, d_init_scale=None, d_w0=None)
    return Hypergrads(**{f: given.get(f) for f in Hypergrads._fields})


def truncated(case: Case, K: int, backend: str = "auto", threads: int | None = None) -> Hypergrads:
    """Algorithm 2 over the last K steps (1 <= K <= T) from the float64 run's last K + 1 states;
    see the module's doc. d_init_scale and d_w0 only for K = T (None otherwise)."""
    eng = _engine(case, backend, threads, "revlearn.approx.truncated")
    K = _steps("K", K, 1, case.T)
    kept = {}

    def keep(t, w, state, g):
        if t >= case.T - K:
            kept[t] = (w, *state)

    with blas.single_threaded():
        w_T, state_T = _train(eng, keep)
        kept[case.T] = (w_T, *state_T)
        got = _reverse(eng, _valid_grad(eng, w_T)[1], kept, case.T - K)
    return _hypergrads(got, whole=K == case.T)


def drmad(case: Case, backend: str = "auto", threads: int | None = None) -> Hypergrads:
    """Algorithm 2 over all T steps on the straight line from w_0 to w_T (DrMAD; SGD with
    momentum only); see the module's doc."""
    require_line(case, "revlearn.approx.drmad")
    eng = _engine(case, backend, threads, "revlearn.approx.drmad")
    with blas.single_threaded():
        w_T, _ = _train(eng)
        got = _reverse(eng, _valid_grad(eng, w_T)[1], line(case, w_T), 0)
    return _hypergrads(got)


def line(case: Case, w_T: np.ndarray) -> Kept:
    """DrMAD's states: w_t = (1 - t/T) w_0 + (t/T) w_T and the state that carries w_{t-1} to w_t
    (the optimizer's `state_between`: momentum's v_t = (w_t - w_{t-1}) / alpha_{t-1}, 0 where
    alpha_{t-1} = 0), the optimizer's zeros at t = 0."""
    T, w_0, opt = case.T, case.w0, sgd.optimizer_of(case)

    def on_line(t):
        return (1.0 - t / T) * w_0 + (t / T) * w_T

    def state(t):
        if t == 0:
            return (w_0, *opt.float_zeros())
        return (on_line(t), *opt.state_between(t - 1, on_line(t - 1), on_line(t)))

    return Kept(state)


def _per_shape(case, d_lam):
    """d_lam per weight, or summed per group for a per-group l2."""
    return d_lam if case.l2_per_weight else case.layout.group_sum(d_lam)


# --- the implicit function theorem ---------------------------------------------------------

def ift(case: Case, K: int, backend: str = "auto", threads: int | None = None) -> Hypergrads:
    """The implicit hypergradient at w_T with a K-term Neumann series (K >= 1); see the module's
    doc. Gives d_l2 (and d_X_train when the case asks for it); the rest is None."""
    require_case(case, "revlearn.approx.ift")
    K = _steps("K", K, 1, None)
    return next(ift_series(case, [K], backend, threads))[1]


def ift_series(case: Case, Ks, backend: str = "auto", threads: int | None = None):
    """`ift` at each K of the increasing list Ks from one Neumann series: yields (K, Hypergrads)
    as soon as the series has K terms (so the time to each yield is what `ift(case, K)` takes)."""
    eng = _engine(case, backend, threads, "revlearn.approx.ift_series")
    Ks = [_steps("K", K, 1, None) for K in Ks]
    if any(b <= a for a, b in zip(Ks, Ks[1:], strict=False)):
        raise InputError(f"the K of an ift series must increase; received {Ks}")
    with blas.single_threaded():
        w_T, state_T = _train(eng)
        eta = eng.opt.eta(state_T)
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
    """Baydin et al.'s one-step hypergradients of alpha and gamma (Adam: alpha, beta1 and
    beta2), from the training run alone; see the module's doc. The other kinds are None."""
    eng = _engine(case, backend, threads, "revlearn.approx.greedy")
    T, G, opt = case.T, case.G, eng.opt
    out = {k: np.empty((T, G)) for k in opt.per_step}
    prev = {}

    def one_step(t, state, g, g_next, state_next):
        for k, d in zip(opt.per_step, opt.greedy(t, state, g, g_next, state_next), strict=True):
            out[k][t] = d

    def each(t, w, state, g):
        prev[t] = (state, g)
        if t > 0:
            one_step(t - 1, *prev.pop(t - 1), g, state)

    with blas.single_threaded():
        w_T, state_T = _train(eng, each)
        one_step(T - 1, *prev.pop(T - 1), _valid_grad(eng, w_T)[1], state_T)
    return _hypergrads({f"d_{k}": d for k, d in out.items()})


def _steps(name, K, least, most):
    """K checked: an integer in [least, most] (no upper bound for most = None)."""
    ok = isinstance(K, (int, np.integer)) and not isinstance(K, (bool, np.bool_))
    if not ok or K < least or (most is not None and K > most):
        bound = f"an integer >= {least}" + (f" and <= T = {most}" if most is not None else "")
        raise InputError(f"{name} must be {bound}; received {K!r}")
    return int(K)
