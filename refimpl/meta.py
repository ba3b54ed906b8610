"""Meta-optimization: gradient descent on hyperparameters through their exact hypergradients.

Each learned hyperparameter is a smooth map of an unconstrained meta-parameter theta, and the
hypergradient d f / d h (with respect to the value h the Case uses) is chained through it:

    alpha      = exp(theta)        d f / d theta = d f / d alpha      * alpha
    gamma      = sigmoid(theta)    d f / d theta = d f / d gamma      * gamma (1 - gamma)
    beta1      = sigmoid(theta)    d f / d theta = d f / d beta1      * beta1 (1 - beta1)
    beta2      = sigmoid(theta)    (likewise; beta1, beta2 and epsilon for a case trained with Adam)
    epsilon    = exp(theta)        d f / d theta = d f / d epsilon    * epsilon
    init_scale = exp(theta)        d f / d theta = d f / d init_scale * init_scale
    l2 (lam)   = exp(theta)        d f / d theta = d f / d lam        * lam
    X_train    = theta             d f / d theta = d f / d X_train

A schedule (alpha, gamma, beta1, beta2: one value per step t and group) is learned per step, or on
k knots (`knots`): theta then holds k values per group at the steps tau_j = j (T - 1) / (k - 1)
and the schedule is piecewise linear between them on the unconstrained scale; with t between
tau_j and tau_{j+1} and phi_t = (t - tau_j) / (tau_{j+1} - tau_j),

    alpha_t = exp((1 - phi_t) theta_j + phi_t theta_{j+1})
    d f / d theta_j = sum_t (d f / d alpha_t) alpha_t [(1 - phi_t) (t's left knot is j)
                                                       + phi_t (t's right knot is j)]

(k = 1: one constant per group; k = T: one value per step, as without knots).

gamma, beta1 and beta2 are kept unquantised in theta; the Case quantises sigmoid(theta) to
n / 2**16 (clipped to gamma's range [2**-16, 1], the betas' [2**-16, 1 - 2**-16]) and the chain
treats that rounding as the identity (the hypergradient is taken at the effective value).

Meta-steps on g = d f / d theta, per learned array, with i the number of steps already taken and
eta = step_size, or step_size / (1 + i / tau) with a decay time tau (`step_decay`):

    gradient descent   theta <- theta - eta g
    Adam               m <- b1 m + (1 - b1) g,   s <- b2 s + (1 - b2) g**2
                       m_hat = m / (1 - b1**(i+1)),   s_hat = s / (1 - b2**(i+1))
                       theta <- theta - eta m_hat / (sqrt(s_hat) + eps)

The meta-objective f is the validation loss ell(w_T; X_valid, y_valid), or the training loss
ell(w_T; X_train, y_train) (the paper's choice for learning schedules): the Case of a meta-iteration
then holds the training set as its validation set. With `fresh_seed`, meta-iteration i draws its own
unit initial noise eps and batches from ``np.random.default_rng([seed, i])``, so any meta-iteration
can be recomputed from (seed, i) alone and a resumed run repeats an uninterrupted one bit for bit.

A meta-batch of K > 1 (`meta_batch`) computes K hypergradients per meta-iteration, member k on its
own eps and batches from ``np.random.default_rng([seed, i, k])`` (with or without `fresh_seed`: K
copies of one case would give one hypergradient K times), and steps on their mean

    g = ((g_0 + g_1) + ... + g_{K-1}) / K        (summed in the order k = 0, 1, ...)

The members are independent: `step` takes an optional dask client and computes them on its
workers (`revlearn.distributed`), the same bits as without one.
"""

from dataclasses import dataclass

import numpy as np

from . import distributed
from .case import BETA_MAX, GAMMA_MIN
from .errors import InputError
from .sgd import BACKENDS, METHODS, hypergradient
from .spec import sample_batches
from .threads import resolve as resolve_threads

LEARNABLE = ("alpha", "gamma", "beta1", "beta2", "epsilon", "init_scale", "l2", "X_train")
SCHEDULES = ("alpha", "gamma", "beta1", "beta2")  # shape (T, G): per step, or on knots
OPTIMIZERS = ("adam", "sgd")
OBJECTIVES = ("valid", "train")


def _sigmoid(theta):
    return 0.5 * (1.0 + np.tanh(0.5 * theta))


def _logit(p):
    return np.log(p) - np.log1p(-p)


class Transform:
    """h = forward(theta), theta = inverse(h), and d f / d theta = chain(theta, h, d f / d h)."""

    def __init__(self, name, forward, inverse, chain):
        self.name, self.forward, self.inverse, self.chain = name, forward, inverse, chain


def _log(h):
    with np.errstate(divide="ignore"):  # log 0 = -inf: an entry at 0 stays there (see init)
        return np.log(h)


LOG = Transform("log", np.exp, _log, lambda theta, h, dh: dh * h)
LOGIT = Transform("logit", lambda t: np.clip(_sigmoid(t), GAMMA_MIN, 1.0),
                  lambda h: _logit(np.clip(h, GAMMA_MIN, 1.0 - 2.0**-40)),
                  lambda theta, h, dh: dh * _sigmoid(theta) * _sigmoid(-theta))
BETA_LOGIT = Transform("logit", lambda t: np.clip(_sigmoid(t), GAMMA_MIN, BETA_MAX),
                       lambda h: _logit(np.clip(h, GAMMA_MIN, BETA_MAX)), LOGIT.chain)
IDENTITY = Transform("identity", lambda t: t.copy(), lambda h: np.array(h, dtype=np.float64),
                     lambda theta, h, dh: dh)
TRANSFORMS = {"alpha": LOG, "gamma": LOGIT, "beta1": BETA_LOGIT, "beta2": BETA_LOGIT,
              "epsilon": LOG, "init_scale": LOG, "l2": LOG, "X_train": IDENTITY}


class Knots:
    """k knots over T steps: step t lies between knot j_t and j_t + 1, at phi_t of the way."""

    def __init__(self, T, k):
        self.T, self.k = T, k
        x = np.arange(T) * (k - 1) / max(T - 1, 1)  # step t in knot units (exact at the knots)
        self.j = np.minimum(np.floor(x).astype(np.int64), max(k - 2, 0))
        self.phi = (x - self.j)[:, None]

    def expand(self, theta):
        """The per-step values (T, G) of knot values theta (k, G), linear between knots."""
        if self.k == 1:
            return np.repeat(theta, self.T, axis=0)
        return (1.0 - self.phi) * theta[self.j] + self.phi * theta[self.j + 1]

    def chain(self, d):
        """d f / d theta (k, G) from d f / d (the expanded values) (T, G): expand's transpose,
        summed over the steps in order."""
        out = np.zeros((self.k, d.shape[1]))
        if self.k == 1:
            np.add.at(out, np.zeros(self.T, np.int64), d)
            return out
        np.add.at(out, self.j, (1.0 - self.phi) * d)
        np.add.at(out, self.j + 1, self.phi * d)
        return out

    def fit(self, values):
        """Knot values whose expansion runs through `values` (T, G) at the knots: values at the
        steps tau_j, interpolated linearly where tau_j falls between steps."""
        tau = np.arange(self.k) * (self.T - 1) / max(self.k - 1, 1)
        lo = np.minimum(np.floor(tau).astype(np.int64), self.T - 1)
        hi = np.minimum(lo + 1, self.T - 1)
        w = (tau - lo)[:, None]
        return (1.0 - w) * values[lo] + w * values[hi]


def knots_of(name, theta, T):
    """The Knots a learned array is on (None: one value per step, or not a schedule)."""
    if name in SCHEDULES and len(theta) != T:
        return Knots(T, len(theta))
    return None


@dataclass(frozen=True)
class MetaConfig:
    """How to meta-optimize.

    learn: names of the learned hyperparameters (a subset of LEARNABLE that the Case has: gamma
    for a case trained with momentum, beta1, beta2, epsilon for one trained with Adam; the others
    stay frozen at the Case's values); optimizer (the meta-optimizer, whatever the case trains
    with) "adam" or "sgd" (plain gradient descent) with meta step size `step_size` (eta), divided
    by 1 + i / step_decay at meta-iteration i when step_decay is given (in meta-iterations; None:
    constant); Adam's b1, b2, eps; objective "valid" or "train"; fresh_seed: draw new eps and
    batches each meta-iteration from (seed, i); meta_batch: K hypergradients per meta-iteration,
    each on its own draws from (seed, i, k), the step on their mean; method, backend and threads
    as in `hypergradient` (backend and threads change the speed, never the results); knots:
    None (schedules learned per step) or k >= 1, schedules learned on k knots per group.
    """

    learn: tuple = ("alpha", "gamma", "init_scale")
    optimizer: str = "adam"
    step_size: float = 0.04
    step_decay: float = None
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    objective: str = "valid"
    fresh_seed: bool = False
    seed: int = 0
    method: str = "reversible"
    backend: str = "auto"
    threads: int = None
    meta_batch: int = 1
    knots: int = None

    def __post_init__(self):
        learn = tuple(self.learn) if not isinstance(self.learn, str) else (self.learn,)
        object.__setattr__(self, "learn", learn)
        unknown = [n for n in learn if n not in LEARNABLE]
        if unknown or not learn or len(set(learn)) != len(learn):
            raise InputError(f"learn = {list(learn)}; give distinct names among "
                             f"{', '.join(LEARNABLE)}")
        for key, allowed in (("optimizer", OPTIMIZERS), ("objective", OBJECTIVES),
                             ("method", METHODS), ("backend", BACKENDS)):
            if getattr(self, key) not in allowed:
                raise InputError(f"unknown {key} {getattr(self, key)!r}; use one of "
                                 f"{', '.join(map(repr, allowed))}")
        if not (np.isfinite(self.step_size) and self.step_size > 0):
            raise InputError(f"step_size = {self.step_size!r}; the meta step size is a number > 0")
        decay = self.step_decay
        if decay is not None and not (isinstance(decay, (int, float, np.integer, np.floating))
                                      and not isinstance(decay, (bool, np.bool_))
                                      and np.isfinite(decay) and decay > 0):
            raise InputError(f"step_decay = {decay!r}; give a number of meta-iterations > 0, or "
                             "None for a constant meta step")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1 and self.eps > 0):
            raise InputError(f"Adam needs 0 <= b1, b2 < 1 and eps > 0; received b1={self.b1}, "
                             f"b2={self.b2}, eps={self.eps}")
        resolve_threads(self.threads)
        if not (isinstance(self.seed, (int, np.integer)) and self.seed >= 0):
            raise InputError(f"seed = {self.seed!r}; use a non-negative integer")
        if not (isinstance(self.meta_batch, (int, np.integer))
                and not isinstance(self.meta_batch, (bool, np.bool_)) and self.meta_batch >= 1):
            raise InputError(f"meta_batch = {self.meta_batch!r}; use an integer >= 1 (the number "
                             "of hypergradients averaged per meta-iteration)")
        k = self.knots
        if k is not None and not (isinstance(k, (int, np.integer)) and not isinstance(
                k, (bool, np.bool_)) and k >= 1):
            raise InputError(f"knots = {k!r}; use an integer >= 1 (values per group of each "
                             "learned schedule), or None for one per step")
        if "X_train" in learn and self.objective == "train":
            raise InputError("learning X_train against the training loss is ill-posed (the "
                             "objective would move with the data); use objective='valid'")


@dataclass(frozen=True, eq=False)
class MetaState:
    """What the meta-optimizer carries from one meta-iteration to the next.

    i: meta-iterations completed; theta: name -> unconstrained meta-parameter array, one entry per
    learned hyperparameter; m, s: Adam's first and second moment estimates, same shapes (zeros for
    gradient descent). Invariant: meta-iteration i trains with the hyperparameters
    ``TRANSFORMS[name].forward(theta[name])`` (a schedule on knots expanded to its T steps first:
    theta of shape (k, G), k < T) and everything else from the base Case.
    """

    i: int
    theta: dict
    m: dict
    s: dict

    def to_arrays(self):
        """A flat dict of arrays (for np.savez) that `from_arrays` reads back exactly."""
        out = {"i": np.array(self.i, dtype=np.int64)}
        for part in ("theta", "m", "s"):
            out.update({f"{part}/{k}": v for k, v in getattr(self, part).items()})
        return out

    @classmethod
    def from_arrays(cls, arrays):
        parts = {"theta": {}, "m": {}, "s": {}}
        for key, value in arrays.items():
            if "/" in key:
                part, name = key.split("/", 1)
                parts[part][name] = np.array(value, dtype=np.float64)
        return cls(i=int(arrays["i"]), **parts)

    def hyper(self, T):
        """The constrained hyperparameter values of a case of T steps, name -> array."""
        return {k: TRANSFORMS[k].forward(_expand(k, t, T)) for k, t in self.theta.items()}


def _expand(name, theta, T):
    knots = knots_of(name, theta, T)
    return theta if knots is None else knots.expand(theta)


def _norm(grad):
    return float(np.sqrt(sum(np.sum(g * g) for g in grad.values())))


class MetaStep:
    """One meta-iteration's outcome: the Case its first member (k = 0) trained and that member's
    Result, the meta-gradient g = d f / d theta (name -> array; the mean over the members) and
    its norm over all learned arrays; and per member k its meta-objective f_k
    (`objectives`) and the norm of its own meta-gradient (`grad_norms`)."""

    def __init__(self, case, result, grad, objectives, grad_norms):
        self.case, self.result, self.grad = case, result, grad
        self.grad_norm = _norm(grad)
        self.objectives, self.grad_norms = objectives, grad_norms


def init(case, config):
    """The state before the first meta-iteration: theta = inverse transforms of case's values.

    On a log scale an entry at exactly 0 has theta = -inf, a zero meta-gradient (d f/d theta =
    d f/d h * h) and a zero Adam step, so it stays 0: that freezes single entries, e.g. the biases'
    penalties in a per-weight l2."""
    if "X_train" in config.learn and not case.grad_train_inputs:
        raise InputError("learning X_train needs a case built with grad_train_inputs=True")
    absent = [name for name in config.learn if getattr(case, name) is None]
    if absent:
        raise InputError(f"learn names {', '.join(absent)}, which a case trained with "
                         f"{case.optimizer} does not have")
    for name in ("alpha", "init_scale", "l2"):
        if name in config.learn and not np.any(getattr(case, name) > 0):
            raise InputError(f"{name} is learned on a log scale and is 0 everywhere in the case, "
                             "so nothing would move; start it > 0")
    theta = {k: TRANSFORMS[k].inverse(getattr(case, k)) for k in config.learn}
    if config.knots is not None:
        if config.knots > case.T:
            raise InputError(f"knots = {config.knots}; a schedule of T = {case.T} steps takes "
                             f"at most {case.T} knots")
        theta.update({k: Knots(case.T, config.knots).fit(t) for k, t in theta.items()
                      if k in SCHEDULES and config.knots < case.T})
    zeros = {k: np.zeros_like(v) for k, v in theta.items()}
    return MetaState(0, theta, zeros, {k: v.copy() for k, v in zeros.items()})


def draw(case, key):
    """The case's unit initial noise eps and batches drawn afresh from default_rng(key): a new
    draw of everything random in a training run, its hyperparameters and data unchanged."""
    rng = np.random.default_rng(key)
    T, B = case.batches.shape
    return dict(eps=rng.standard_normal(case.P),
                batches=sample_batches(len(case.X_train), T, B, rng))


def case_at(case, state, config, k=0):
    """The Case member k of meta-iteration state.i trains: learned hyperparameters from theta,
    fresh eps and batches (`draw`) from default_rng([seed, i, k]) in a meta-batch of K > 1, else
    from default_rng([seed, i]) when asked, and the objective's evaluation set."""
    changes = state.hyper(case.T)
    if config.fresh_seed or config.meta_batch > 1:
        key = [config.seed, state.i] if config.meta_batch == 1 else [config.seed, state.i, k]
        changes.update(draw(case, key))
    X_train = changes.get("X_train", case.X_train)
    if config.objective == "train":
        changes.update(X_valid=X_train, y_valid=case.y_train)
    return case.replace(**changes)


def chain(state, result):
    """d f / d theta from the hypergradient `result` (a Result) of the case at `state`."""
    T = len(result.train_losses)
    h, grad = state.hyper(T), {}
    for k, t in state.theta.items():
        knots, full = knots_of(k, t, T), _expand(k, t, T)
        d = TRANSFORMS[k].chain(full, h[k], getattr(result, "d_" + k))
        grad[k] = d if knots is None else knots.chain(d)
    return grad


def update(state, grad, config):
    """One meta-step (Adam or gradient descent) from state with meta-gradient grad."""
    eta, i = config.step_size, state.i
    if config.step_decay is not None:
        eta = eta / (1 + i / config.step_decay)
    if config.optimizer == "sgd":
        theta = {k: t - eta * grad[k] for k, t in state.theta.items()}
        return MetaState(i + 1, theta, state.m, state.s)
    b1, b2 = config.b1, config.b2
    m = {k: b1 * state.m[k] + (1 - b1) * grad[k] for k in state.theta}
    s = {k: b2 * state.s[k] + (1 - b2) * grad[k] ** 2 for k in state.theta}
    theta = {k: t - eta * (m[k] / (1 - b1 ** (i + 1)))
             / (np.sqrt(s[k] / (1 - b2 ** (i + 1))) + config.eps)
             for k, t in state.theta.items()}
    return MetaState(i + 1, theta, m, s)


def member(case, state, config, k, threads):
    """Member k of the meta-batch at `state`: (its meta-gradient, and its Result for k = 0 or
    else its meta-objective alone; on a cluster only the first member's w_T comes back)."""
    result = hypergradient(case_at(case, state, config, k), method=config.method,
                           backend=config.backend, threads=threads)
    return chain(state, result), result if k == 0 else result.valid_loss


def step(case, state, config, client=None):
    """One meta-iteration: train and reverse the config.meta_batch cases at `state`, chain their
    hypergradients, update on their mean.

    client: None (here, the members one after another on config.threads threads) or a dask
    client (the members on its workers, one thread each, the base case shipped to each worker
    once). Returns (next state, MetaStep). A pure function of case, state and config: the same
    inputs give the same outputs bit for bit, with or without a client.
    """
    K = config.meta_batch
    threads = config.threads if client is None else 1
    members = distributed.starmap(member, case, [(state, config, k, threads) for k in range(K)],
                                  client)
    objectives, norms = [], []
    for k, (grad_k, out) in enumerate(members):
        if k == 0:
            result, total = out, grad_k
        else:
            total = {name: total[name] + g for name, g in grad_k.items()}
        objectives.append(out.valid_loss if k == 0 else out)
        norms.append(_norm(grad_k))
    grad = {name: g / K for name, g in total.items()}
    outcome = MetaStep(case_at(case, state, config), result, grad, objectives, norms)
    return update(state, grad, config), outcome
