"""The benchmark grid for pytest-benchmark (not part of the default test run):

    pytest bench                                 # every cell
    pytest bench -k "step and 1000000"           # one row
    pytest bench --benchmark-compare             # against a saved run (--benchmark-autosave)

problem size x implementation, JIT warmed first (the session fixture `warm`). Memory and the
horizon scaling need a fresh process per configuration: `python -m bench` measures those.
"""

import numpy as np
import pytest

import revlearn
from revlearn import ans, fixedpoint
from revlearn.threads import Workers

from . import peers, problem
from .worker import exact_steps, warm_jit

IMPLS = ["numpy", "numba"]


@pytest.fixture(scope="session", autouse=True)
def warm():
    warm_jit()


@pytest.fixture(scope="session")
def mnist_case():
    return problem.case(100)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("P", [10**4, 10**5, 10**6])
def test_exact_step(benchmark, P, impl, threads):
    """The exact update plus buffer: v <- gamma v - (1 - gamma) g, w <- w + alpha v, bits back."""
    be, workers = exact_steps(impl), Workers(threads)
    rng = np.random.default_rng(0)
    alpha, gamma = np.full(P, 0.1), np.full(P, 0.9)
    n, g = fixedpoint.quantize_gamma(gamma), 1e-3 * rng.standard_normal(P)
    state = [fixedpoint.to_fixed(rng.standard_normal(P)), np.zeros(P, np.int64),
             ans.new_buffer(P)]

    def step():
        state[:] = be.exact_step(*state, g, alpha, gamma, n, workers)

    for _ in range(20):
        step()
    benchmark(step)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("backend", IMPLS)
@pytest.mark.parametrize("method", ["reversible", "stored"])
def test_hypergradient(benchmark, mnist_case, method, backend, threads):
    """The full hypergradient, 784-50-50-50-10 tanh, batch 200, T = 100."""
    res = benchmark.pedantic(revlearn.hypergradient, args=(mnist_case,),
                             kwargs=dict(method=method, backend=backend, threads=threads),
                             rounds=3)
    assert res.exact_recovery


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("backend", IMPLS)
def test_plain_training(benchmark, mnist_case, backend, threads):
    """Plain float64 SGD with momentum on the same batches: the baseline."""
    benchmark.pedantic(revlearn.train, args=(mnist_case,),
                       kwargs=dict(exact=False, backend=backend, threads=threads), rounds=3)


@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_peer(benchmark, mnist_case, peer):
    """The same hypergradient by PyTorch (eager) or JAX (steady state, after one compiling run)."""
    pytest.importorskip(peer)
    run = (peers.torch_hypergradient if peer == "torch" else peers.jax_hypergradient)(mnist_case)
    run()
    benchmark.pedantic(run, rounds=3)
