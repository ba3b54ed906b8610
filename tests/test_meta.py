"""The meta-optimizer: the chain rule through the parametrisations against finite differences of
whole training runs, the Adam and gradient-descent steps, frozen hyperparameters, fresh seeds, the
training-loss objective, bit-for-bit resumption, and refused configurations."""

import numpy as np
import pytest

import revlearn
from revlearn import check_grad, meta
from revlearn.meta import MetaConfig

from conftest import small_spec

RTOL = 1e-5


@pytest.fixture
def case():
    return revlearn.make_case(small_spec(l2=0.02, grad_train_inputs=True))


def objective(case, state, config, name, theta):
    """f as a function of one meta-parameter array: the meta-objective of the case at theta."""
    moved = meta.MetaState(state.i, dict(state.theta, **{name: theta}), state.m, state.s)
    case_i = meta.case_at(case, moved, config)
    return revlearn.valid_loss(case_i)


@pytest.mark.parametrize("name, objective_name", [
    ("alpha", "valid"), ("alpha", "train"), ("init_scale", "valid"), ("init_scale", "train"),
    ("l2", "valid"), ("l2", "train"), ("X_train", "valid")])
def test_meta_gradient_matches_finite_differences_of_training_runs(case, name, objective_name):
    config = MetaConfig(learn=(name,), objective=objective_name)
    state = meta.init(case, config)
    _, step = meta.step(case, state, config)
    theta = state.theta[name]
    last = tuple(s - 1 for s in theta.shape)
    check_grad(lambda t: objective(case, state, config, name, t), theta, step.grad[name],
               directions=2, coords=[(0,) * theta.ndim, last], rtol=RTOL, name=f"theta[{name}]")


def test_gamma_chain_rule_through_the_logit(rng):
    # gamma is quantised by the Case, so the logit chain is checked on a smooth function of gamma
    theta = rng.normal(1.0, 2.0, (5, 4))
    c = rng.standard_normal((5, 4))
    f = lambda t: float(np.sum(c * meta.LOGIT.forward(t) ** 2))  # noqa: E731
    h = meta.LOGIT.forward(theta)
    check_grad(f, theta, meta.LOGIT.chain(theta, h, 2 * c * h), directions=3, coords=[(0, 0)],
               rtol=1e-8, name="theta[gamma]")


def test_gamma_meta_gradient_is_the_hypergradient_times_the_sigmoid_slope(case):
    config = MetaConfig(learn=("gamma",))
    state = meta.init(case, config)
    _, step = meta.step(case, state, config)
    p = 1.0 / (1.0 + np.exp(-state.theta["gamma"]))
    assert np.allclose(step.grad["gamma"], step.result.d_gamma * p * (1 - p), rtol=1e-12, atol=0)
    assert np.allclose(meta.LOGIT.inverse(meta.LOGIT.forward(state.theta["gamma"])),
                       state.theta["gamma"], rtol=1e-12)


def test_a_wrong_chain_rule_is_caught(case):
    # negative control: the plain hypergradient (no factor alpha) fails the check against theta
    config = MetaConfig(learn=("alpha",))
    state = meta.init(case, config)
    _, step = meta.step(case, state, config)
    with pytest.raises(revlearn.GradientCheckError):
        check_grad(lambda t: objective(case, state, config, "alpha", t), state.theta["alpha"],
                   step.result.d_alpha, directions=1, rtol=RTOL, name="theta[alpha]")


def test_adam_and_gradient_descent_steps(case):
    grad = {"alpha": np.linspace(-2, 3, case.alpha.size).reshape(case.alpha.shape)}
    for optimizer in ("adam", "sgd"):
        config = MetaConfig(learn=("alpha",), optimizer=optimizer, step_size=0.1)
        state = meta.init(case, config)
        new = meta.update(state, grad, config)
        move = new.theta["alpha"] - state.theta["alpha"]
        if optimizer == "sgd":
            assert np.allclose(move, -0.1 * grad["alpha"], rtol=1e-12, atol=1e-15)
        else:  # Adam's first step has m_hat = g and s_hat = g**2: a step of eta against sign(g)
            expected = -0.1 * grad["alpha"] / (np.abs(grad["alpha"]) + config.eps)
            assert np.allclose(move, expected, rtol=1e-12, atol=1e-15)
            assert np.allclose(new.m["alpha"], 0.1 * grad["alpha"])
            assert np.allclose(new.s["alpha"], 0.001 * grad["alpha"] ** 2)
        assert new.i == 1


def test_frozen_hyperparameters_stay_put_and_learned_ones_move(case):
    config = MetaConfig(learn=("alpha", "init_scale"), step_size=0.05)
    state = meta.init(case, config)
    for _ in range(2):
        state, step = meta.step(case, state, config)
    moved = meta.case_at(case, state, config)
    assert np.array_equal(moved.gamma, case.gamma) and np.array_equal(moved.l2, case.l2)
    assert np.array_equal(moved.X_train, case.X_train) and np.array_equal(moved.eps, case.eps)
    assert not np.array_equal(moved.alpha, case.alpha)
    assert not np.array_equal(moved.init_scale, case.init_scale)
    assert set(state.theta) == {"alpha", "init_scale"}


def test_fresh_seed_draws_eps_and_batches_from_seed_and_iteration(case):
    config = MetaConfig(fresh_seed=True, seed=7)
    state = meta.init(case, config)
    a = meta.case_at(case, state, config)
    b = meta.case_at(case, meta.MetaState(1, state.theta, state.m, state.s), config)
    again = meta.case_at(case, state, config)
    assert not np.array_equal(a.eps, case.eps) and not np.array_equal(a.eps, b.eps)
    assert not np.array_equal(a.batches, b.batches)
    assert np.array_equal(a.eps, again.eps) and np.array_equal(a.batches, again.batches)
    assert a.batches.shape == case.batches.shape
    fixed = meta.case_at(case, state, MetaConfig())
    assert np.array_equal(fixed.eps, case.eps) and np.array_equal(fixed.batches, case.batches)


def test_training_objective_evaluates_on_the_training_set(case):
    config = MetaConfig(objective="train")
    state = meta.init(case, config)
    _, step = meta.step(case, state, config)
    assert step.case.X_valid is step.case.X_train
    w = step.result.w_final
    assert step.result.valid_loss == revlearn.mlp.loss(w, case.X_train, case.y_train,
                                                       case.layout, case.activation)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_meta_objective_goes_down(optimizer):
    case = revlearn.make_case(small_spec(n_iters=30, alpha=0.05, gamma=0.5, init_scale=0.3))
    config = MetaConfig(optimizer=optimizer, step_size=0.1 if optimizer == "adam" else 1.0)
    state, losses = meta.init(case, config), []
    for _ in range(8):
        state, step = meta.step(case, state, config)
        losses.append(step.result.valid_loss)
    assert losses[-1] < 0.9 * losses[0], losses


def test_state_round_trips_and_resuming_repeats_the_run_bit_for_bit(case):
    config = MetaConfig(fresh_seed=True, learn=("alpha", "gamma", "init_scale", "l2"))
    state = meta.init(case, config)
    states = []
    for _ in range(3):
        state, _ = meta.step(case, state, config)
        states.append(state)
    resumed = meta.MetaState.from_arrays(dict(states[0].to_arrays()))
    for _ in range(2):
        resumed, _ = meta.step(case, resumed, config)
    assert resumed.i == states[-1].i == 3
    for part in ("theta", "m", "s"):
        for k, v in getattr(states[-1], part).items():
            assert np.array_equal(getattr(resumed, part)[k], v), (part, k)


@pytest.mark.parametrize("kwargs, match", [
    (dict(learn=("alpha", "beta")), "learn = .*'beta'.*alpha, gamma"),
    (dict(learn=()), "learn = \\[\\]"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'.*'adam'"),
    (dict(objective="test"), "unknown objective 'test'"),
    (dict(step_size=0.0), "step_size = 0.0"),
    (dict(step_size=float("nan")), "step_size = nan"),
    (dict(b1=1.0), "b1=1.0"),
    (dict(seed=-1), "seed = -1"),
    (dict(backend="cuda"), "unknown backend 'cuda'"),
    (dict(learn=("X_train",), objective="train"), "ill-posed"),
])
def test_bad_configurations_are_refused(kwargs, match):
    with pytest.raises(revlearn.InputError, match=match):
        MetaConfig(**kwargs)


def test_init_refuses_what_the_parametrisation_cannot_represent():
    with pytest.raises(revlearn.InputError, match="grad_train_inputs=True"):
        meta.init(revlearn.make_case(small_spec()), MetaConfig(learn=("X_train",)))
    with pytest.raises(revlearn.InputError, match="l2 is learned on a log scale and is 0"):
        meta.init(revlearn.make_case(small_spec(l2=0.0)), MetaConfig(learn=("l2",)))


def test_entries_at_zero_stay_zero_on_a_log_scale():
    # how a per-weight l2 leaves the biases unpenalised while the weights' penalties move
    case = revlearn.make_case(small_spec(l2_per_weight=True))
    l2 = case.layout.expand(np.array([0.02, 0.0] * 3))
    config = MetaConfig(learn=("l2",), step_size=0.5)
    state = meta.init(case.replace(l2=l2), config)
    for _ in range(2):
        state, _ = meta.step(case.replace(l2=l2), state, config)
    learned = state.hyper(case.T)["l2"]
    assert np.all(learned[l2 == 0] == 0)
    assert np.all(learned[l2 > 0] > 0) and not np.allclose(learned[l2 > 0], 0.02)


@pytest.fixture
def adam_case():
    spec = small_spec(optimizer="adam", alpha=0.02, beta2=0.99, epsilon=1e-4, l2=0.02)
    del spec["gamma"]
    return revlearn.make_case(spec)


@pytest.mark.parametrize("name", ["alpha", "epsilon", "init_scale"])
def test_adams_meta_gradient_matches_finite_differences_of_training_runs(adam_case, name):
    config = MetaConfig(learn=(name,))
    state = meta.init(adam_case, config)
    _, step = meta.step(adam_case, state, config)
    theta = state.theta[name]
    last = tuple(s - 1 for s in theta.shape)
    check_grad(lambda t: objective(adam_case, state, config, name, t), theta, step.grad[name],
               directions=2, coords=[(0,) * theta.ndim, last], step=1e-4 if name == "epsilon"
               else 1e-3, rtol=RTOL, name=f"theta[{name}]")


@pytest.mark.parametrize("name", ["beta1", "beta2"])
def test_beta_meta_gradient_is_the_hypergradient_times_the_sigmoid_slope(adam_case, name, rng):
    # the betas are quantised by the Case, so the logit's chain is checked on a smooth function
    config = MetaConfig(learn=(name,))
    state = meta.init(adam_case, config)
    _, step = meta.step(adam_case, state, config)
    p = 1.0 / (1.0 + np.exp(-state.theta[name]))
    assert np.allclose(step.grad[name], getattr(step.result, "d_" + name) * p * (1 - p),
                       rtol=1e-12, atol=0)
    theta = rng.normal(2.0, 2.0, (5, 4))
    c = rng.standard_normal((5, 4))
    f = lambda t: float(np.sum(c * meta.BETA_LOGIT.forward(t) ** 2))  # noqa: E731
    h = meta.BETA_LOGIT.forward(theta)
    check_grad(f, theta, meta.BETA_LOGIT.chain(theta, h, 2 * c * h), directions=3,
               coords=[(0, 0)], rtol=1e-8, name=f"theta[{name}]")
    assert meta.BETA_LOGIT.forward(np.array([40.0]))[0] == 1 - 2.0**-16  # inside Adam's range


def test_learning_another_optimizers_hyperparameters_is_refused(case, adam_case):
    with pytest.raises(revlearn.InputError, match="learn names gamma, which a case trained with "
                                                  "adam does not have"):
        meta.init(adam_case, MetaConfig(learn=("alpha", "gamma")))
    with pytest.raises(revlearn.InputError, match="beta1, epsilon, which a case trained with "
                                                  "momentum"):
        meta.init(case, MetaConfig(learn=("beta1", "epsilon")))


# --- schedules on knots --------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 5])
def test_the_knots_chain_rule_matches_finite_differences_of_training_runs(case, k):
    # d f / d theta on k knots per group: the per-step hypergradient through the interpolation
    config = MetaConfig(learn=("alpha", "gamma"), knots=k)
    state = meta.init(case, config)
    assert state.theta["alpha"].shape == state.theta["gamma"].shape == (k, case.G)
    _, step = meta.step(case, state, config)
    check_grad(lambda t: objective(case, state, config, "alpha", t), state.theta["alpha"],
               step.grad["alpha"], directions=2, coords=[(0, 0), (k - 1, case.G - 1)],
               rtol=RTOL, name=f"theta[alpha] on {k} knots")
    # gamma is quantised by the Case (finite differences see its lattice): the same transpose
    # of the interpolation, applied to the logit's chain (checked above) at every step
    knots = meta.Knots(case.T, k)
    full = knots.expand(state.theta["gamma"])
    per_step = meta.LOGIT.chain(full, meta.LOGIT.forward(full), step.result.d_gamma)
    assert np.array_equal(step.grad["gamma"], knots.chain(per_step))


def test_a_wrong_knots_chain_rule_is_caught(case):
    # negative control: the knot values' gradient taken as the per-step one at the knots' steps
    config = MetaConfig(learn=("alpha",), knots=3)
    state = meta.init(case, config)
    _, step = meta.step(case, state, config)
    per_step = step.result.d_alpha * state.hyper(case.T)["alpha"]
    wrong = per_step[[0, case.T // 2, case.T - 1]]
    with pytest.raises(revlearn.GradientCheckError):
        check_grad(lambda t: objective(case, state, config, "alpha", t), state.theta["alpha"],
                   wrong, directions=1, rtol=RTOL, name="theta[alpha]")


def test_knots_interpolate_linearly_between_evenly_spaced_steps():
    knots = meta.Knots(T=7, k=4)  # knots at steps 0, 2, 4, 6
    theta = np.array([[0.0], [2.0], [-2.0], [4.0]])
    assert np.array_equal(knots.expand(theta)[:, 0], [0.0, 1.0, 2.0, 0.0, -2.0, 1.0, 4.0])
    values = np.linspace(0, 1, 7)[:, None] ** 2
    assert np.allclose(knots.expand(knots.fit(values))[[0, 2, 4, 6]], values[[0, 2, 4, 6]])
    assert np.array_equal(meta.Knots(T=5, k=1).expand(np.array([[3.0, 1.0]])),
                          np.tile([[3.0, 1.0]], (5, 1)))
    rng = np.random.default_rng(0)  # chain is expand's transpose: <d, E theta> = <E^T d, theta>
    for T, k in ((7, 4), (10, 3), (5, 1), (9, 9)):
        kn, theta, d = meta.Knots(T, k), rng.normal(size=(k, 2)), rng.normal(size=(T, 2))
        assert np.isclose(np.sum(d * kn.expand(theta)), np.sum(kn.chain(d) * theta), rtol=1e-13)


def test_per_step_knots_are_the_per_step_run_bit_for_bit(case):
    # knots = T is one value per step: the same meta-steps, bit for bit, as without knots
    runs = []
    for knots in (None, case.T):
        config = MetaConfig(learn=("alpha", "gamma", "init_scale"), knots=knots)
        state = meta.init(case, config)
        for _ in range(2):
            state, _ = meta.step(case, state, config)
        runs.append(state)
    for name in runs[0].theta:
        assert np.array_equal(runs[0].theta[name], runs[1].theta[name]), name


@pytest.mark.parametrize("knots, message", [
    (0, r"knots = 0; use an integer >= 1"), (2.5, r"knots = 2.5; use an integer >= 1"),
    (True, r"knots = True; use an integer >= 1")])
def test_bad_knots_are_refused(knots, message):
    with pytest.raises(revlearn.InputError, match=message):
        MetaConfig(knots=knots)


def test_more_knots_than_steps_are_refused(case):
    with pytest.raises(revlearn.InputError, match=r"knots = 25; a schedule of T = 24 steps takes "
                                                   r"at most 24 knots"):
        meta.init(case, MetaConfig(knots=25))
