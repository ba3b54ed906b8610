"""The numba backend against refimpl, the oracle: bit-identical fixed-point state, buffer, weights
and hypergradients, on any number of threads; the one JIT policy on every kernel; the kernels'
bodies run once without the JIT; revlearn without numba."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

import revlearn
from revlearn import adam, ans, backends, kernels, lanes, mlp, momentum, multitask, sgd, wide
from revlearn import exact as refexact
from revlearn import fixedpoint as fp
from revlearn.case import Case
from revlearn.kernels import adam as kadam
from revlearn.kernels import blocks, exact, jit, rans
from revlearn.kernels import elementary as kelementary
from revlearn.kernels import lanes as klanes
from revlearn.kernels import mlp as kmlp
from revlearn.partition import LANES
from revlearn.spec import sample_batches
from revlearn.threads import SERIAL, Workers

from conftest import small_spec

ROOT = Path(__file__).resolve().parents[1]
FLOATS = ("d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0", "d_X_train")


def assert_same_buffer(a, b):
    assert np.array_equal(a.x, b.x)
    assert np.array_equal(a.top, b.top) and np.array_equal(a.peak, b.peak)
    for block, top in enumerate(a.top):
        assert np.array_equal(a.stack[block, :top], b.stack[block, :top])


def assert_same(a, b, name):
    """The same bits: floats compared as their int64 patterns (so -0.0 != 0.0, NaN == NaN)."""
    assert a.shape == b.shape, name
    assert np.array_equal(np.asarray(a, np.float64).view(np.int64),
                          np.asarray(b, np.float64).view(np.int64)), name


def copy_buffer(buf):
    return ans.Buffer(buf.x.copy(), buf.stack.copy(), buf.top.copy(), buf.peak.copy())


def one_block(x, words):
    """A buffer of one block whose stack holds `words`."""
    stack = np.asarray(words, np.uint32).reshape(1, -1)
    return ans.Buffer(np.asarray(x, np.int64), stack, np.array([stack.shape[1]]),
                      np.array([stack.shape[1]]))


def random_n(rng, P):
    """Per-lane numerators n of gamma = n / 2**16, with 1, 2 and 2**16 present (where P >= 3)."""
    n = rng.integers(1, fp.D + 1, P)
    edges = np.array([1, 2, fp.D])
    n[:3] = edges[:P]
    return n


# --- the exact step and its inverse ---------------------------------------------------------

@pytest.mark.parametrize("P, threads", [(1, 1), (5, 2), (257, 1), (2 * LANES + 3, 2),
                                        (2 * blocks.PART * LANES + 5, 2),
                                        (3 * blocks.PART * LANES, 3)])
def test_exact_steps_forward_and_back_are_bit_identical_to_refimpl(P, threads, rng):
    workers = Workers(threads)
    W0 = fp.to_fixed(rng.normal(size=P))
    W, V, buf = W0, np.zeros(P, np.int64), ans.new_buffer(P)
    Wk, Vk, bufk = W0.copy(), np.zeros(P, np.int64), ans.new_buffer(P)
    history = []
    for _ in range(200 if P < LANES else 40):
        g, alpha, n = rng.normal(size=P), rng.uniform(0, 0.5, P), random_n(rng, P)
        gamma = n / fp.D
        history.append((g, alpha, gamma, n))
        W, V, buf = refexact.exact_step(W, V, buf, g, alpha, gamma, n)
        Wk, Vk, bufk = exact.exact_step(Wk, Vk, bufk, g, alpha, gamma, n, workers)
        assert np.array_equal(W, Wk) and np.array_equal(V, Vk)
        assert_same_buffer(buf, bufk)
    assert buf.peak.min() > 0
    for g, alpha, gamma, n in reversed(history):
        W = refexact.exact_unstep_w(W, V, alpha)
        Wk = exact.exact_unstep_w(Wk, Vk, alpha, workers)
        assert np.array_equal(W, Wk)
        V, buf = refexact.exact_unstep_v(V, buf, g, gamma, n)
        Vk, bufk = exact.exact_unstep_v(Vk, bufk, g, gamma, n, workers)
        assert np.array_equal(V, Vk)
        assert_same_buffer(buf, bufk)
    assert np.array_equal(Wk, W0) and not Vk.any() and ans.is_initial(bufk)


def test_exact_step_matches_on_full_range_states(rng):
    # lane states anywhere in [2**31, 2**63), stack words on hand, |v| up to the range limit
    P = 300
    x = rng.integers(ans.LOW, 2**63 - 1, P, dtype=np.int64)
    buf = one_block(x, rng.integers(0, 2**32, 2 * P, dtype=np.int64))
    V = rng.integers(-2**62, 2**62, P, dtype=np.int64)
    W = rng.integers(-2**62, 2**62, P, dtype=np.int64)
    for _ in range(20):
        g, alpha, n = rng.normal(size=P) * 1e-3, rng.uniform(0, 1e-3, P), random_n(rng, P)
        gamma = n / fp.D
        # both sides write the stack in place: each call gets its own copy of the state
        new = refexact.exact_step(W.copy(), V.copy(), copy_buffer(buf), g, alpha, gamma, n)
        Wk, Vk, bufk = exact.exact_step(W.copy(), V.copy(), copy_buffer(buf), g, alpha, gamma, n)
        assert np.array_equal(new[0], Wk) and np.array_equal(new[1], Vk)
        assert_same_buffer(new[2], bufk)
        back = refexact.exact_unstep_v(V.copy(), copy_buffer(buf), g, gamma, n)
        Vk, bufk = exact.exact_unstep_v(V.copy(), copy_buffer(buf), g, gamma, n)
        assert np.array_equal(back[0], Vk)
        assert_same_buffer(back[1], bufk)
        W, V, buf = new


def test_float_division_shortcuts_are_exact_at_their_limits():
    # div(a, b) = a div b for a + b < 2**53; floor_divmod(v, n) floors for every int64 v
    a = np.array([0, 1, 2**24, 2**24 - 1, 2**32 - 1, 2**48 + 12345, 2**52 - 3], np.int64)
    for b in (1, 2, 3, 255, 257, 65535, 65536, 2**24 + 1):
        for ai in a:
            if ai + b < 2**53:
                assert blocks.div(ai, b) == ai // b
    v = np.array([-2**63, -2**63 + 1, -2**32 - 1, -1, 0, 1, 2**32, 2**63 - 1], np.int64)
    for n in (1, 2, 7, 58982, 65535, 65536):
        for vi in v:
            assert blocks.floor_divmod(vi, n) == (vi // n, vi % n)


@pytest.mark.parametrize("where", ["gradient", "v wraps", "alpha v", "w wraps"])
def test_exact_step_raises_what_refimpl_raises(where):
    P = 6
    W, V = np.zeros(P, np.int64), np.zeros(P, np.int64)
    g, alpha, n = np.zeros(P), np.full(P, 0.5), np.full(P, fp.D // 2)
    if where == "gradient":
        g[[2, 4]] = 1e5  # (1 - gamma) g = 5e4 is out of range
    elif where == "v wraps":
        V[[1, 3]] = 2**62
        g[:] = -3.5e3  # 1024 / 2 + 1750 leaves the range
    elif where == "alpha v":
        alpha[[3, 5]] = 1e9
        g[:] = -1.0
    else:
        W[[0, 5]] = 2**63 - 2**40
        g[:] = -1.0
    with pytest.raises(fp.RangeError) as ref:
        refexact.exact_step(W, V, ans.new_buffer(P), g, alpha, n / fp.D, n)
    with pytest.raises(fp.RangeError) as ker:
        exact.exact_step(W.copy(), V.copy(), ans.new_buffer(P), g, alpha, n / fp.D, n)
    assert (ker.value.index, ker.value.value) == (ref.value.index, ref.value.value)


def test_unsteps_raise_what_refimpl_raises():
    P = 4
    W, V = np.zeros(P, np.int64), np.full(P, 2**52)
    alpha = np.array([0.0, 3e3, 0.0, 0.0])
    with pytest.raises(fp.RangeError) as ref:
        refexact.exact_unstep_w(W, V, alpha)
    with pytest.raises(fp.RangeError) as ker:
        exact.exact_unstep_w(W.copy(), V, alpha)
    assert (ker.value.index, ker.value.value) == (ref.value.index, ref.value.value)
    g, n = np.array([0.0, 0.0, 1e6, 0.0]), np.full(P, 2)
    with pytest.raises(fp.RangeError) as ref:
        refexact.exact_unstep_v(V, ans.new_buffer(P), g, n / fp.D, n)
    with pytest.raises(fp.RangeError) as ker:
        exact.exact_unstep_v(V.copy(), ans.new_buffer(P), g, n / fp.D, n)
    assert (ker.value.index, ker.value.value) == (ref.value.index, ref.value.value)


def test_a_dry_stack_is_refused():
    # negative control for the start state, as in test_ans: lanes below 2**47 need words
    buf = one_block(np.full(3, ans.LOW), [])
    with pytest.raises(RuntimeError, match="underflow"):
        exact.exact_unstep_v(np.zeros(3, np.int64), buf, np.zeros(3), np.ones(3), np.full(3, fp.D))


def copy_adjoint(adj):
    return momentum.Adjoint(*(a.copy() for a in adj))


@pytest.mark.parametrize("P, parts, threads", [(1001, 1, 1), (3 * LANES + 17, 2, 2),
                                               (9 * LANES + 5, 3, 3)])
def test_lane_passes_are_bit_identical_to_refimpl(P, parts, threads, rng):
    # a whole step of each algorithm on every lane: the gradient in parts, the exact steps, the
    # blocked dot products and the adjoint updates; several blocks, several threads
    workers = Workers(threads)
    offsets = np.array([0, 7, min(LANES + 3, P // 2), P - 40, P])  # groups across the blocks
    lam, alpha = rng.uniform(0, 0.1, P), rng.uniform(0, 0.5, P)
    n = random_n(rng, P)
    gamma = n / fp.D
    W, V = fp.to_fixed(rng.normal(size=P)), np.zeros(P, np.int64)
    state = [(W, V, ans.new_buffer(P), fp.from_fixed(W)),
             (W.copy(), V.copy(), ans.new_buffer(P), fp.from_fixed(W))]
    history = []
    for _ in range(30):
        G = rng.standard_normal((parts, P))
        history.append(G)
        state[0] = lanes.forward(*state[0], G, lam, alpha, gamma, n, SERIAL)[:4]
        state[1] = klanes.forward(*state[1], G, lam, alpha, gamma, n, workers)[:4]
        assert np.array_equal(state[0][0], state[1][0]) and np.array_equal(state[0][1], state[1][1])
        assert_same_buffer(state[0][2], state[1][2])
        assert_same(state[0][3], state[1][3], "w_{t+1}")
    adj = momentum.Adjoint(*rng.standard_normal((3, P)))
    adjs = [copy_adjoint(adj), copy_adjoint(adj)]
    for G in reversed(history):
        H = rng.standard_normal((parts, P))
        out = [lanes.reverse_before(state[0][0], state[0][1], adjs[0], alpha, gamma, offsets,
                                    SERIAL),
               klanes.reverse_before(state[1][0], state[1][1], adjs[1], alpha, gamma, offsets,
                                     workers)]
        for a, b, name in zip(out[0], out[1], ("W", "w", "u", "d_alpha"), strict=True):
            assert_same(np.asarray(a, np.float64) if name != "W" else a.astype(np.float64),
                        np.asarray(b, np.float64) if name != "W" else b.astype(np.float64), name)
        (W0, w0, u0, _), (W1, w1, u1, _) = out
        after = [lanes.reverse_after(state[0][1], state[0][2], adjs[0], G, H, lam, w0, u0, gamma,
                                     n, offsets, SERIAL),
                 klanes.reverse_after(state[1][1], state[1][2], adjs[1], G, H, lam, w1, u1, gamma,
                                      n, offsets, workers)]
        assert np.array_equal(after[0][0], after[1][0])
        assert_same_buffer(after[0][1], after[1][1])
        assert_same(after[0][2], after[1][2], "d_gamma")
        for a, b in zip(adjs[0], adjs[1], strict=True):
            assert_same(a, b, "adjoint")
        state = [(W0, after[0][0], after[0][1], None), (W1, after[1][0], after[1][1], None)]
    assert ans.is_initial(state[1][2]) and not state[1][1].any()
    assert np.array_equal(state[1][0], W)


def test_blocked_dots_are_the_same_bits_in_every_backend_and_can_differ_from_ddot(rng):
    P = 2 * LANES + 999
    offsets = np.array([0, 5, 13, LANES + 1, P])
    x, y = rng.standard_normal(P) * 1e3, rng.standard_normal(P)
    segs = blocks.segments(offsets, P)
    seg_dots = np.empty(len(segs.list))
    for b in range(3):
        blocks.segment_dots(x, y, segs.arrays, b, seg_dots)
    ours = lanes.by_group(seg_dots, segs.list, len(offsets) - 1)
    assert_same(ours, lanes.dots(x, y, offsets), "dots")
    pairs = list(zip(offsets[:-1], offsets[1:], strict=True))
    assert np.allclose(ours, [x[a:b] @ y[a:b] for a, b in pairs], rtol=1e-12)
    # negative control: the same products summed in another order (left to right, the same on
    # every machine, unlike a BLAS dot) differ in some last bits
    assert any(ours[g] != np.cumsum(x[a:b] * y[a:b])[-1] for g, (a, b) in enumerate(pairs))


def test_a_non_finite_gradient_is_reported_at_its_first_lane(rng):
    P = 2 * LANES + 9
    G = rng.standard_normal((2, P))
    G[1, [LANES + 4, 2 * LANES + 1]] = np.nan, np.inf
    W = fp.to_fixed(rng.normal(size=P))
    args = (G, np.zeros(P), np.full(P, 0.1), np.full(P, 0.5), np.full(P, fp.D // 2))
    ref = lanes.forward(W, np.zeros(P, np.int64), ans.new_buffer(P), fp.from_fixed(W), *args,
                        SERIAL)
    ker = klanes.forward(W.copy(), np.zeros(P, np.int64), ans.new_buffer(P), fp.from_fixed(W),
                         *args, Workers(2))
    assert ref[4] == ker[4] == LANES + 4
    assert_same(fp.from_fixed(W), klanes.from_fixed(W), "from_fixed")


# --- Adam's exact step, its inverse and its adjoints ----------------------------------------

def random_adam_hyper(rng, P):
    """A StepHyper with betas anywhere on their lattice (1, 2 and 2**16 - 1 present), bias
    corrections c = 1 - beta x, x in [0, 1) (at least 1 - beta, as every c_t), and epsilons from
    1e-12 to 1."""
    n1, n2 = random_n(rng, P), random_n(rng, P)
    n1[n1 == fp.D], n2[n2 == fp.D] = fp.D - 1, fp.D - 1
    n2[-1] = fp.D - 1
    b1, b2 = n1 / fp.D, n2 / fp.D
    return adam.StepHyper(rng.uniform(0, 0.05, P), b1, b2, n1, n2,
                          1 - b1 * rng.uniform(0, 1, P), 1 - b2 * rng.uniform(0, 1, P),
                          np.exp(rng.uniform(np.log(1e-12), 0, P)))


def copy_moments(state):
    return adam.Moments(*(wide.Wide(a.H.copy(), a.L.copy()) for a in state))


def assert_same_moments(a, b):
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.H, y.H) and np.array_equal(x.L, y.L)


@pytest.mark.parametrize("P, parts, threads", [(1001, 1, 1), (3 * LANES + 17, 2, 2),
                                               (9 * LANES + 5, 3, 3)])
def test_adam_lane_passes_are_bit_identical_to_refimpl(P, parts, threads, rng):
    # a whole step of Adam's each way on every lane: the gradient in parts, both decays and their
    # inverses on one buffer, the fixed-point updates, the blocked dot products and the adjoints
    workers = Workers(threads)
    offsets = np.array([0, 7, min(LANES + 3, P // 2), P - 40, P])  # groups across the blocks
    lam = rng.uniform(0, 0.1, P)
    W = fp.to_fixed(rng.normal(size=P))
    zeros = adam.Moments(wide.zeros(P), wide.zeros(P))
    state = [(W, zeros, ans.new_buffer(P), fp.from_fixed(W)),
             (W.copy(), copy_moments(zeros), ans.new_buffer(P), fp.from_fixed(W))]
    history = []
    for _ in range(30):
        G, h = rng.standard_normal((parts, P)) * 0.1, random_adam_hyper(rng, P)
        history.append((G, h))
        state[0] = adam.forward(*state[0], G, lam, h, SERIAL)[:4]
        state[1] = kadam.forward(*state[1], G, lam, h, workers)[:4]
        assert np.array_equal(state[0][0], state[1][0])
        assert_same_moments(state[0][1], state[1][1])
        assert_same_buffer(state[0][2], state[1][2])
        assert_same(state[0][3], state[1][3], "w_{t+1}")
    assert state[1][2].peak.min() > 0
    adj = adam.Adjoint(*rng.standard_normal((4, P)))
    adjs = [adam.Adjoint(*(a.copy() for a in adj)), adam.Adjoint(*(a.copy() for a in adj))]
    (W0, st0, buf0, _), (W1, st1, buf1, _) = state
    for G, h in reversed(history):
        ref = adam.reverse_before(W0, st0, adjs[0], h, offsets, SERIAL)
        ker = kadam.reverse_before(W1, st1, adjs[1], h, offsets, workers)
        assert np.array_equal(ref[0], ker[0])
        for a, b, name in zip(ref[1:], ker[1:], ("w", "d_alpha", "e", "k"), strict=True):
            assert_same(a, b, name)
        W0, w0, W1, w1 = ref[0], ref[1], ker[0], ker[1]
        ref = adam.reverse_moments(st0, buf0, adjs[0], G, lam, w0, h, offsets, SERIAL)
        ker = kadam.reverse_moments(st1, buf1, adjs[1], G, lam, w1, h, offsets, workers)
        (st0, buf0), (st1, buf1) = ref[:2], ker[:2]
        assert_same_moments(st0, st1)
        assert_same_buffer(buf0, buf1)
        for a, b, name in zip(ref[2:], ker[2:], ("dg", "d1", "d2"), strict=True):
            assert_same(a, b, name)
        H = rng.standard_normal((parts, P))
        adam.reverse_after(adjs[0], H, lam, w0, ref[2], h, SERIAL)
        kadam.reverse_after(adjs[1], H, lam, w1, ker[2], h, workers)
        for a, b in zip(adjs[0], adjs[1], strict=True):
            assert_same(a, b, "adjoint")
    assert ans.is_initial(buf1) and np.array_equal(W1, W)
    assert not any(a.any() for part in st1 for a in part)


@pytest.mark.parametrize("where", ["m increment", "m wraps", "s increment", "s wraps",
                                   "alpha u", "w wraps"])
def test_adam_step_raises_what_refimpl_raises(where, rng):
    P = 6
    W, G = np.zeros(P, np.int64), np.full((1, P), 0.5)
    state = adam.Moments(wide.zeros(P), wide.zeros(P))
    h = adam.StepHyper(np.full(P, 0.01), np.full(P, 0.5), np.full(P, 0.5),
                       np.full(P, fp.D // 2), np.full(P, fp.D // 2), np.full(P, 0.5),
                       np.full(P, 0.5), np.full(P, 1e-8))
    if where == "m increment":
        G[0, [2, 4]] = 1e5  # (1 - beta1) g = 5e4 is out of range
    elif where == "m wraps":
        state.m.H[[1, 3]] = 2**62
        G[0, :] = 3.5e3  # 1024 + 1750 leaves the range
    elif where == "s increment":
        G[0, [3, 5]] = 1e2  # (1 - beta2) g g = 5e3
    elif where == "s wraps":
        state.s.H[[0, 4]] = 2**62
        G[0, :] = 59.0  # 1024 + 1740.5
    elif where == "alpha u":
        h.alpha[[3, 5]] = 1e9
    else:
        W[[0, 5]] = -2**63 + 2**40
    args = (G, np.zeros(P), h)
    with pytest.raises(fp.RangeError) as ref:
        adam.forward(W.copy(), copy_moments(state), ans.new_buffer(P), fp.from_fixed(W), *args,
                     SERIAL)
    with pytest.raises(fp.RangeError) as ker:
        kadam.forward(W.copy(), copy_moments(state), ans.new_buffer(P), fp.from_fixed(W), *args,
                      Workers(2))
    assert (ker.value.index, ker.value.value) == (ref.value.index, ref.value.value)


def adam_grid_spec(activation, T, schedule, rng):
    spec = small_spec(activation=activation, n_iters=T, grad_train_inputs=True,
                      optimizer="adam", alpha=0.02, l2_per_weight=schedule == "per-weight l2")
    del spec["gamma"]
    G = 6
    if schedule == "per step and group":
        beta1 = rng.integers(1, fp.D, (T, G)) / fp.D
        beta1[::3] = 1 - 2.0**-16
        beta1[1::4, ::2] = 2.0**-16
        spec.update(alpha=rng.uniform(0.005, 0.05, (T, G)).tolist(), beta1=beta1.tolist(),
                    beta2=(rng.integers(1, fp.D, (T, G)) / fp.D).tolist(),
                    epsilon=np.exp(rng.uniform(np.log(1e-10), 0, G)).tolist(),
                    l2=rng.uniform(0, 0.05, G).tolist())
    return spec


@pytest.mark.parametrize("T", [1, 24, 150])
@pytest.mark.parametrize("schedule", ["per step and group", "torch defaults", "per-weight l2"])
def test_adam_hypergradient_is_identical_to_refimpl(T, schedule, activation, rng):
    case = revlearn.make_case(adam_grid_spec(activation, T, schedule, rng))
    ref = revlearn.hypergradient(case, backend="numpy", threads=1)
    ker = revlearn.hypergradient(case, backend="numba", threads=2)
    assert ref.exact_recovery and ker.exact_recovery
    assert ref.valid_loss == ker.valid_loss and ref.buffer_bits == ker.buffer_bits
    for key in ("w_final", "train_losses", "d_alpha", "d_beta1", "d_beta2", "d_epsilon",
                "d_init_scale", "d_l2", "d_w0", "d_X_train"):
        assert_same(getattr(ref, key), getattr(ker, key), key)
    for exact_ in (True, False):
        a, b = (revlearn.train(case, exact=exact_, backend=be) for be in ("numpy", "numba"))
        assert_same(a.w_final, b.w_final, "w_final")


# --- the MLP passes ---------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [(5, 3), (5, 7, 3), (4, 6, 5, 4), (9, 16, 12, 10), (3, 1, 2)])
@pytest.mark.parametrize("batch, threads", [(1, 1), (13, 2), (250, 3)])
def test_mlp_passes_are_bit_identical_to_refimpl(sizes, batch, threads, activation, rng):
    # 250 rows are three chunks, shared out among three threads by the numba backend
    lay, workers = mlp.Layout(sizes), Workers(threads)
    w, dv = 0.8 * rng.standard_normal(lay.P), rng.standard_normal(lay.P)
    X, y = rng.standard_normal((batch, sizes[0])), rng.integers(0, sizes[-1], batch)
    ell, g = mlp.loss_grad(w, X, y, lay, activation)
    ell_k, g_k = kmlp.loss_grad(w, X, y, lay, activation, workers)
    assert ell == ell_k
    assert_same(g, g_k, "g")
    ref = mlp.loss_grad_hvp(w, dv, X, y, lay, activation, input_grad=True)
    ker = kmlp.loss_grad_hvp(w, dv, X, y, lay, activation, input_grad=True, workers=workers)
    assert ref[0] == ker[0]
    for name, a, b in zip(("g", "Hdv", "dX"), ref[1:], ker[1:], strict=True):
        assert_same(a, b, name)
    assert kmlp.loss_grad_hvp(w, dv, X, y, lay, activation)[3] is None


def test_mlp_passes_match_on_saturated_units_and_huge_logits(activation, rng):
    # tanh at +-1 (phi' = 0), relu at exact zeros, logits of 1e3: still bit for bit
    lay = mlp.Layout((5, 8, 3))
    w = 40.0 * rng.standard_normal(lay.P)
    w[:5 * 8:3] = 0.0
    X = rng.standard_normal((11, 5))
    X[3] = 0.0
    y = rng.integers(0, 3, 11)
    assert np.array_equal(mlp.loss_grad(w, X, y, lay, activation)[1],
                          kmlp.loss_grad(w, X, y, lay, activation)[1])


def same_bits(a, b):
    """Equal entries, NaN where NaN, and the same sign on zeros."""
    return np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))


def test_elementwise_kernels_treat_zeros_nan_and_inf_as_numpy_does():
    special = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 5e-324, -1.0, 1.0, 0.5])
    A = np.broadcast_to(special, (len(special),) * 2).copy()  # every pair (A.T[i, j], A[i, j])
    E = A.T.copy()
    with np.errstate(invalid="ignore"):
        relu = E.copy()
        kmlp._add_bias_relu(relu, special)
        assert same_bits(relu, mlp._relu(E + special))
        assert same_bits(kmlp._times_drelu(E, A), E * mlp._relu_dphi(A))
        assert same_bits(kmlp._times_dtanh(E, A), E * mlp._tanh_dphi(A))
        # negative control: comparing with >= instead of > keeps -0.0 where NumPy gives 0.0
        assert not same_bits(np.where(E >= 0.0, E, 0.0), mlp._relu(E))


# --- whole runs: the public API with backend="numba" -----------------------------------------

def grid_spec(activation, T, schedule, rng):
    sizes = [6, 8, 7, 3]
    G = 2 * (len(sizes) - 1)
    spec = small_spec(layer_sizes=sizes, activation=activation, n_iters=T, grad_train_inputs=True)
    if schedule == "per step and group":
        gamma = rng.integers(1, fp.D + 1, (T, G)) / fp.D
        gamma[::3] = 1.0
        gamma[1::4, ::2] = 2.0**-16
        spec.update(alpha=rng.uniform(0.05, 0.4, (T, G)).tolist(), gamma=gamma.tolist(),
                    l2=rng.uniform(0, 0.05, G).tolist())
    elif schedule == "gamma 1":
        spec.update(gamma=1.0, alpha=0.05)
    elif schedule == "gamma 2**-16":
        spec.update(gamma=2.0**-16)
    else:
        spec.update(l2_per_weight=True, l2=0.01)
    return spec


@pytest.mark.parametrize("T", [1, 24, 150])
@pytest.mark.parametrize("schedule", ["per step and group", "gamma 1", "gamma 2**-16",
                                      "per-weight l2"])
def test_hypergradient_is_identical_to_refimpl(T, schedule, activation, rng):
    case = revlearn.make_case(grid_spec(activation, T, schedule, rng))
    ref = revlearn.hypergradient(case, backend="numpy", threads=1)
    ker = revlearn.hypergradient(case, backend="numba", threads=2)
    assert ref.exact_recovery and ker.exact_recovery
    assert ref.valid_loss == ker.valid_loss and ref.buffer_bits == ker.buffer_bits
    for key in ("w_final", "train_losses") + FLOATS:
        assert_same(getattr(ref, key), getattr(ker, key), key)


@pytest.mark.parametrize("layer_sizes", [[6, 8, 7, 3], [20, 30, 30, 4], [5, 4]])
def test_buffer_and_recovered_w0_are_identical_to_refimpl(layer_sizes, activation, rng):
    T, G = 60, 2 * (len(layer_sizes) - 1)
    gamma = rng.integers(1, fp.D + 1, (T, G)) / fp.D
    case = revlearn.make_case(small_spec(layer_sizes=layer_sizes, activation=activation,
                                         n_iters=T, gamma=gamma.tolist()))
    finals = [sgd.train_exact(case, be, SERIAL) for be in (backends.NUMPY, kernels.NUMBA)]
    (W, V, buf, _), (Wk, Vk, bufk, _) = finals
    assert np.array_equal(W, Wk) and np.array_equal(V, Vk)
    assert_same_buffer(buf, bufk)
    assert buf.peak.min() > 0
    backs = []
    for be, (W, V, buf, _) in zip((backends.NUMPY, kernels.NUMBA), finals, strict=True):
        traj = momentum.Reversal(be, SERIAL, W, V, buf)
        dw = be.loss_grad(fp.from_fixed(W), case.X_valid, case.y_valid, case.layout,
                          case.activation)[1]
        sgd.reverse(case, be, SERIAL, traj, dw)
        backs.append(traj)
    assert np.array_equal(backs[0].W, backs[1].W)
    assert np.array_equal(backs[1].W, fp.to_fixed(case.w0))
    assert_same_buffer(backs[0].buf, backs[1].buf)
    assert ans.is_initial(backs[1].buf)


def test_stored_method_and_training_match_refimpl(small_case):
    for exact_ in (True, False):
        ref, ker = (revlearn.train(small_case, exact=exact_, backend=b) for b in ("numpy", "numba"))
        assert np.array_equal(ref.w_final, ker.w_final)
        assert np.array_equal(ref.train_losses, ker.train_losses)
    ref, ker = (revlearn.hypergradient(small_case, method="stored", backend=b)
                for b in ("numpy", "numba"))
    for key in ("w_final",) + FLOATS[:-1]:
        assert_same(getattr(ref, key), getattr(ker, key), key)


def test_a_case_with_its_own_model_runs_on_the_numba_steps(rng):
    # case.model brings its own passes; the exact steps and adjoint updates are the backend's
    model = multitask.MultiTaskMLP((5, 6, 3), "tanh", 3)
    lay, T = model.layout, 15
    case = Case(layer_sizes=(5, 6, 3), activation="tanh", X_train=rng.standard_normal((30, 5)),
                y_train=rng.integers(0, 9, 30), X_valid=rng.standard_normal((20, 5)),
                y_valid=rng.integers(0, 9, 20), batches=sample_batches(30, T, 10, rng),
                eps=rng.standard_normal(lay.P), alpha=np.full((T, lay.G), 0.3),
                gamma=np.full((T, lay.G), 0.9), init_scale=np.full(lay.G, 0.4),
                l2=rng.uniform(0.01, 0.1, lay.G), model=model)
    ref, ker = (revlearn.hypergradient(case, backend=b, threads=t)
                for b, t in (("numpy", 1), ("numba", 2)))
    assert ker.exact_recovery and ref.buffer_bits == ker.buffer_bits
    for key in ("w_final",) + FLOATS[:-1]:
        assert_same(getattr(ref, key), getattr(ker, key), key)


def test_training_errors_are_the_same_as_refimpl():
    case = revlearn.make_case(small_spec(alpha=[[0.3] * 6] * 23 + [[0.3, 0.3, 1e6, 0.3, 0.3, 0.3]]))
    messages = []
    for backend in ("numpy", "numba"):
        with pytest.raises(revlearn.TrainingError, match=r"step 23: W2 \(group 2\)") as e:
            revlearn.hypergradient(case, backend=backend)
        messages.append(str(e.value))
    assert messages[0] == messages[1]


# --- the JIT policy ---------------------------------------------------------------------------

def policy_violations(dispatcher):
    """What about a compiled function breaks the one policy of `kernels.jit`."""
    opts = dispatcher.targetoptions
    bad = [k for k in ("nogil", "error_model") if opts.get(k) != jit.POLICY[k]]
    if opts.get("fastmath"):
        bad.append("fastmath")
    if type(dispatcher._cache).__name__ == "NullCache":
        bad.append("cache")
    if dispatcher not in jit.KERNELS:
        bad.append("not made by kernels.jit.kernel")
    return bad


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no dispatchers without the JIT")
def test_every_kernel_follows_the_one_jit_policy():
    found = [obj for module in (exact, kmlp, klanes, jit, kelementary, kadam, blocks, rans)
             for obj in vars(module).values()
             if isinstance(obj, numba.core.registry.CPUDispatcher)]
    assert len(found) >= 20
    assert {id(k) for k in found} == {id(k) for k in jit.KERNELS}
    for k in found:
        assert policy_violations(k) == [], k.py_func.__name__
    # negative control: a function jitted any other way is caught
    other = numba.njit(fastmath=True)(lambda x: x)
    assert set(policy_violations(other)) >= {"fastmath", "cache", "nogil",
                                             "not made by kernels.jit.kernel"}


def test_only_jit_py_calls_numba_jit_and_nothing_asks_for_fastmath():
    for path in (ROOT / "kernels").glob("*.py"):
        text = path.read_text()
        assert "fastmath=True" not in text, path
        if path.name != "jit.py":
            assert "njit" not in text and "numba.jit" not in text, path


def test_refimpl_never_imports_numba():
    for path in (ROOT / "refimpl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "numba" for n in names), path


# --- in subprocesses: the kernels' bodies without the JIT, and revlearn without numba ---------

def run_python(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full, timeout=600)


def test_kernel_bodies_agree_with_refimpl_without_the_jit():
    done = run_python("""
        import numpy as np, revlearn
        from revlearn import ans, fixedpoint as fp
        from revlearn import exact as refexact
        from revlearn.kernels import exact
        import numba
        assert numba.config.DISABLE_JIT
        rng = np.random.default_rng(7)
        P = 9
        W, V, buf = fp.to_fixed(rng.normal(size=P)), np.zeros(P, np.int64), ans.new_buffer(P)
        Wk, Vk, bufk = W.copy(), V.copy(), ans.new_buffer(P)
        for _ in range(40):
            g, alpha, n = rng.normal(size=P), rng.uniform(0, .5, P), rng.integers(1, fp.D + 1, P)
            n[:2] = 1, fp.D
            W, V, buf = refexact.exact_step(W, V, buf, g, alpha, n / fp.D, n)
            Wk, Vk, bufk = exact.exact_step(Wk, Vk, bufk, g, alpha, n / fp.D, n)
            assert np.array_equal(W, Wk) and np.array_equal(V, Vk)
            assert np.array_equal(buf.x, bufk.x) and np.array_equal(buf.top, bufk.top)
        for act in ("tanh", "relu"):
            gamma = [[0.9, 1.0, 2**-16, 0.5]] * 15
            case = revlearn.make_case(dict(layer_sizes=[4, 5, 3], activation=act, n_train=12,
                n_valid=6, n_iters=15, batch_size=4, alpha=0.3, gamma=gamma, init_scale=0.5,
                l2=0.01, grad_train_inputs=True))
            ref = revlearn.hypergradient(case, backend="numpy")
            ker = revlearn.hypergradient(case, backend="numba")
            assert ker.exact_recovery and ref.buffer_bits == ker.buffer_bits
            for k in ("w_final", "d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0",
                      "d_X_train"):
                assert np.array_equal(getattr(ref, k), getattr(ker, k)), k
            case = revlearn.make_case(dict(layer_sizes=[4, 5, 3], activation=act, n_train=12,
                n_valid=6, n_iters=15, batch_size=4, optimizer="adam", alpha=0.02,
                beta1=[[0.9, 2**-16, 1 - 2**-16, 0.5]] * 15, epsilon=1e-6, init_scale=0.5,
                l2=0.01, grad_train_inputs=True))
            ref = revlearn.hypergradient(case, backend="numpy")
            ker = revlearn.hypergradient(case, backend="numba")
            assert ker.exact_recovery and ref.buffer_bits == ker.buffer_bits
            for k in ("w_final", "d_alpha", "d_beta1", "d_beta2", "d_epsilon", "d_init_scale",
                      "d_l2", "d_w0", "d_X_train"):
                assert np.array_equal(getattr(ref, k), getattr(ker, k)), k
        print("agree")
    """, NUMBA_DISABLE_JIT="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "agree"


def test_revlearn_works_without_numba_and_says_how_to_get_the_backend():
    done = run_python("""
        import sys

        class NoNumba:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "numba":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NoNumba())
        import revlearn
        case = revlearn.make_case(dict(layer_sizes=[4, 5, 3], n_train=12, n_valid=6, n_iters=10,
                                       batch_size=4, alpha=0.3, gamma=0.9, init_scale=0.5))
        assert revlearn.hypergradient(case).exact_recovery
        assert revlearn.train(case, exact=False).w_final.shape == (case.P,)
        try:
            revlearn.hypergradient(case, backend="numba")
        except revlearn.InputError as e:
            print(e)
        assert "numba" not in sys.modules
    """)
    assert done.returncode == 0, done.stderr
    assert "backend='numba' needs numba" in done.stdout
    assert "backend='numpy'" in done.stdout


@pytest.mark.parametrize("rows, threads", [(7, 1), (250, 2)])
def test_loss_and_error_are_the_same_bits_as_refimpl(rows, threads, activation, rng):
    lay = mlp.Layout((6, 9, 4))
    w = 2.0 * rng.standard_normal(lay.P)
    X, y = rng.standard_normal((rows, 6)), rng.integers(0, 4, rows)
    ref = mlp.loss_and_error(w, X, y, lay, activation)
    ker = kmlp.loss_and_error(w, X, y, lay, activation, Workers(threads))
    assert ref == ker and 0 <= ref[1] <= 1
    # ties and NaN: np.argmax's first maximum, a NaN before all
    Z = np.array([[1.0, 3.0, 3.0], [np.nan, 5.0, 1.0], [2.0, np.nan, 9.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 1, 2, 0])
    assert kmlp._argmax_misses(Z, labels) == np.count_nonzero(np.argmax(Z, axis=1) != labels)
