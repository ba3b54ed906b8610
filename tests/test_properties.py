"""Property-based: over random nets, horizons, schedules and seeds, reversal is exact and the
hypergradients are finite."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import revlearn
from revlearn.fixedpoint import D


@st.composite
def specs(draw):
    sizes = [draw(st.integers(1, 6))] + draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    sizes.append(draw(st.integers(2, 4)))
    T, G = draw(st.integers(1, 60)), 2 * (len(sizes) - 1)
    n_train = draw(st.integers(4, 20))
    gamma_n = draw(arrays(np.int64, (T, G), elements=st.integers(1, D)))
    return dict(
        layer_sizes=sizes, activation=draw(st.sampled_from(["tanh", "relu"])),
        n_train=n_train, n_valid=draw(st.integers(1, 10)), n_iters=T,
        batch_size=draw(st.integers(1, n_train)), seed=draw(st.integers(0, 2**32 - 1)),
        alpha=draw(arrays(np.float64, (T, G), elements=st.floats(0, 0.5))).tolist(),
        gamma=(gamma_n / D).tolist(),
        init_scale=draw(arrays(np.float64, (G,), elements=st.floats(0, 1))).tolist(),
        l2=draw(st.floats(0, 0.1)), grad_train_inputs=draw(st.booleans()))


@given(specs())
def test_reversal_is_exact_and_hypergradients_finite(spec):
    case = revlearn.make_case(spec)
    res = revlearn.hypergradient(case)
    assert res.exact_recovery
    for key in ("d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0"):
        assert np.all(np.isfinite(getattr(res, key))), key
    if spec["grad_train_inputs"]:
        assert np.all(np.isfinite(res.d_X_train))
    assert np.array_equal(res.w_final, revlearn.train(case).w_final)
