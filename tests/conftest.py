import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import revlearn

# The numpy-only environment (`pip install -e . pytest hypothesis autograd`, which CI also runs)
# has no numba: the kernel tests are not collected and the tests that name the numba backend skip.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
collect_ignore = [] if HAVE_NUMBA else ["test_kernels.py"]
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="needs numba: pip install 'revlearn[fast]'")

# Property tests take their number of cases from the profile. The default run (CI's) is quick and
# derandomized: the same 60 cases every time, so a red CI run is reproducible and never a draw of
# luck. Exploring is the long profile's job, with fresh random cases each time:
# `python -m pytest --hypothesis-profile=long tests/test_properties.py tests/test_independent.py
# tests/test_adam.py` runs 2,000 cases of each property test.
settings.register_profile("default", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", settings.get_profile("default"), max_examples=2000,
                          derandomize=False)
settings.load_profile("default")


def run(argv, capsys=None):
    """`revlearn run ARGV` in this process: its exit code, or with capsys (code, stdout,
    stderr)."""
    from revlearn import cli

    code = cli.main(["run", *argv])
    if capsys is None:
        return code
    out, err = capsys.readouterr()
    return code, out, err


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
