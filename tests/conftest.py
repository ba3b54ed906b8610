import numpy as np
import pytest

import revlearn


def small_spec(**changes):
    """A spec small enough for whole-run finite differences: 2 hidden layers, T = 24."""
    spec = dict(layer_sizes=[6, 8, 7, 3], dataset="synthetic", n_train=60, n_valid=50, n_iters=24,
                batch_size=10, seed=3, alpha=0.3, gamma=0.9, init_scale=0.4, l2=0.01)
    spec.update(changes)
    return spec


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["tanh", "relu"])
def activation(request):
    return request.param


@pytest.fixture
def small_case(activation):
    return revlearn.make_case(small_spec(activation=activation))
