"""The exact momentum step and its inverse as loops over blocks of lanes (mirrors of
revlearn.exact's `exact_step`, `exact_unstep_w` and `exact_unstep_v`, with
`fixedpoint.mul_gamma`/`div_gamma` and `ans.push`/`ans.pop` fused in). The state (W, V, the lane
states x, the stacks) is updated in place; the blocks, each with its own stack, are shared out
among threads.

Algorithm 1's update and its inverse on int64 fixed point (units of 2**-52), D = 2**16, per lane:

    forward   s = pop(x, over n);  v n + s = v' D + r;  push(x, r, over D)
              v <- v' - fix((1 - gamma) g);   w <- w + fix(alpha v 2**-52)
    reverse   w <- w - fix(alpha v 2**-52)                                      (`exact_unstep_w`)
              v <- v + fix((1 - gamma) g);  r = pop(x, over D);
              v = hi n + lo,  lo D + r = v' n + s;  v <- hi D + v';  push(x, s, over n)

with fix(x) = rint(x 2**52). Each step of a block is split into passes: the arithmetic of every
lane (decoding, encoding, the fixed-point updates) in loops without dependencies between lanes,
which LLVM vectorises, and the word moves of the block's stack in two short sequential loops
(`kernels.rans`). Blocks share nothing, so each thread takes a range of them (`kernels.blocks`).

Errors are found as refimpl finds them: each check (a value out of range, an addition that wraps)
reports the first lane where it failed (P when none), and the wrapper raises the error of the first
check in refimpl's order that failed.
"""

from typing import NamedTuple

import numpy as np

from revlearn.fixedpoint import D_BITS, LIMIT, D
from revlearn.momentum import StepHyper
from revlearn.partition import LANES, lane_blocks
from revlearn.threads import SERIAL

from .blocks import (
    UNIT,
    add_wraps,
    buffer,
    div,
    first,
    fix,
    floor_divmod,
    no_failures,
    raise_first,
    report,
    share,
    sub_wraps,
)
from .jit import floats, ints, kernel
from .rans import decode, encode, encode_all, freq, refill, spill, spill_over_D


class Decay(NamedTuple):
    """gamma = n / 2**16 per lane and its numerator n: the factor the exact step multiplies v by,
    and its inverse divides by."""

    gamma: np.ndarray
    n: np.ndarray


# --- the passes ------------------------------------------------------------------------------

@kernel
def _pop_and_mul_gamma(x, V, n, r):
    """Bits back, all lanes:  s = decode(x over n);  v n + s = v' D + r  (v = hi D + lo)."""
    for i in range(len(x)):
        x[i], s = decode(x[i], n[i])
        y = (V[i] & (D - 1)) * n[i] + s
        V[i] = (V[i] >> D_BITS) * n[i] + (y >> D_BITS)
        r[i] = y & (D - 1)


@kernel
def _push_and_update(W, V, x, r, g, alpha, gamma):
    """Encode r over D into x, then v <- v - fix((1 - gamma) g) and w <- w + fix(alpha v).

    Returns the first lane failing each check: fix((1-gamma) g) out of range, the subtraction
    wraps, fix(alpha v) out of range, the addition wraps. (Arrays, not tuples of arrays, as
    arguments: LLVM vectorises this loop only then.)"""
    P = len(x)
    f1 = f2 = f3 = f4 = P
    for i in range(P):
        x[i] = encode(x[i], np.int64(r[i]), D)
        dv = (1.0 - gamma[i]) * g[i]
        f1 = first(f1, i, not abs(dv) < LIMIT, P)
        b = fix(dv)
        v = V[i] - b
        f2 = first(f2, i, sub_wraps(V[i], b, v), P)
        V[i] = v
        dw = alpha[i] * (v * UNIT)
        f3 = first(f3, i, not abs(dw) < LIMIT, P)
        b = fix(dw)
        w = W[i] + b
        f4 = first(f4, i, add_wraps(W[i], b, w), P)
        W[i] = w
    return f1, f2, f3, f4


@kernel
def _unstep_w(W, V, alpha):
    """w <- w - fix(alpha v 2**-52). Returns the first lane out of range and the first that
    wraps."""
    P = len(W)
    f1 = f2 = P
    for i in range(P):
        dw = alpha[i] * (V[i] * UNIT)
        f1 = first(f1, i, not abs(dw) < LIMIT, P)
        b = fix(dw)
        w = W[i] - b
        f2 = first(f2, i, sub_wraps(W[i], b, w), P)
        W[i] = w
    return f1, f2


@kernel
def _add_grad_and_div_gamma(V, x, g, gamma, n, sym, f):
    """v <- v + fix((1 - gamma) g);  r = decode(x over D);  v = hi n + lo, lo D + r = v' n + s,
    v <- hi D + v'  (s into sym and its frequency into f, for the push over n, whose sequential
    word loop is then a comparison per lane). Returns the first lane out of range and the
    first that wraps."""
    P = len(x)
    f1 = f2 = P
    for i in range(P):
        dv = (1.0 - gamma[i]) * g[i]
        f1 = first(f1, i, not abs(dv) < LIMIT, P)
        b = fix(dv)
        v = V[i] + b
        f2 = first(f2, i, add_wraps(V[i], b, v), P)
        x[i], r = decode(x[i], D)
        hi, lo = floor_divmod(v, n[i])
        z = lo * D + r
        q = div(z, n[i])
        V[i] = hi * D + q
        s = z - q * n[i]
        sym[i] = s
        f[i] = freq(s, n[i])
    return f1, f2


# --- the passes over blocks of lanes, each block with its own stack ----------------------------

DRY = 4  # fails[b, DRY] < P: block b's stack ran dry (it cannot, `revlearn.ans` proves)


@kernel
def step_block(W, V, buf, g, h, r, b, fails):
    """`exact_step` on the lanes of block b (h a `momentum.StepHyper`, r scratch): pop over n and
    multiply, the block's words off and on its stack, push over D and the fixed-point updates.
    fails[b, k] is the first lane failing check k of `_push_and_update` (P for none),
    fails[b, DRY] a lane of a block run dry."""
    P = len(buf.x)
    lo, hi = b * LANES, min(b * LANES + LANES, P)
    x = buf.x[lo:hi]
    _pop_and_mul_gamma(x, V[lo:hi], h.n[lo:hi], r[lo:hi])
    t = refill(x, buf.stack[b], buf.top[b])
    if t < 0:
        fails[b, DRY] = lo
        return
    t = spill_over_D(x, buf.stack[b], t)
    buf.top[b] = t
    buf.peak[b] = max(buf.peak[b], t)
    checks = _push_and_update(W[lo:hi], V[lo:hi], x, r[lo:hi], g[lo:hi], h.alpha[lo:hi],
                              h.gamma[lo:hi])
    for k in range(4):
        report(fails, b, k, lo, hi, checks[k], P)


@kernel
def _step_blocks(W, V, buf, g, h, r, b0, b1, fails):
    """`step_block` on blocks b0 .. b1-1."""
    for b in range(b0, b1):
        step_block(W, V, buf, g, h, r, b, fails)


@kernel
def unstep_w_block(W, V, alpha, b, fails):
    """`exact_unstep_w` on the lanes of block b (fails as `step_block`'s, checks 0 and 1)."""
    P = len(W)
    lo, hi = b * LANES, min(b * LANES + LANES, P)
    checks = _unstep_w(W[lo:hi], V[lo:hi], alpha[lo:hi])
    for k in range(2):
        report(fails, b, k, lo, hi, checks[k], P)


@kernel
def _unstep_w_blocks(W, V, alpha, b0, b1, fails):
    """`unstep_w_block` on blocks b0 .. b1-1."""
    for b in range(b0, b1):
        unstep_w_block(W, V, alpha, b, fails)


@kernel
def unstep_v_block(V, buf, g, decay, sym, f, b, fails):
    """`exact_unstep_v` on the lanes of block b (sym, f scratch): the fixed-point addition, pop
    over D and divide, the block's words off and on its stack, push over n (fails as
    `step_block`'s)."""
    P = len(buf.x)
    lo, hi = b * LANES, min(b * LANES + LANES, P)
    x = buf.x[lo:hi]
    checks = _add_grad_and_div_gamma(V[lo:hi], x, g[lo:hi], decay.gamma[lo:hi],
                                     decay.n[lo:hi], sym[lo:hi], f[lo:hi])
    for k in range(2):
        report(fails, b, k, lo, hi, checks[k], P)
    t = refill(x, buf.stack[b], buf.top[b])
    if t < 0:
        fails[b, DRY] = lo
        return
    t = spill(x, f[lo:hi], buf.stack[b], t)
    encode_all(x, sym[lo:hi], decay.n[lo:hi])
    buf.top[b] = t
    buf.peak[b] = max(buf.peak[b], t)


@kernel
def _unstep_v_blocks(V, buf, g, decay, sym, f, b0, b1, fails):
    """`unstep_v_block` on blocks b0 .. b1-1."""
    for b in range(b0, b1):
        unstep_v_block(V, buf, g, decay, sym, f, b, fails)


# --- the public wrappers (revlearn.exact's signatures; the state is updated in place) ---------

def exact_step(W, V, buf, g, alpha, gamma, n, workers=SERIAL):
    """Algorithm 1's update, exactly:  v <- gamma v - (1 - gamma) g;  w <- w + alpha v.

    W, V and buf's lanes, stacks, tops and peaks are updated in place and returned (the stacks
    reallocated when they grow); the blocks of lanes are shared out among the workers."""
    W, V, g = ints(W), ints(V), floats(g)
    h = StepHyper(floats(alpha), floats(gamma), ints(n))
    buf = buffer(buf, LANES)  # a push emits at most one word per lane
    r = np.empty(len(W), np.uint16)
    blocks = len(buf.top)
    fails = no_failures(blocks, len(W), DRY + 1)
    share(workers, blocks, lambda b0, b1: _step_blocks(W, V, buf, g, h, r, b0, b1, fails))
    raise_first(fails, (lambda i: (1.0 - h.gamma[i]) * g[i], None,
                        lambda i: h.alpha[i] * (V[i] * UNIT), None), len(W), DRY)
    return W, V, buf


def exact_unstep_w(W, V, alpha, workers=SERIAL):
    """w_t = w_{t+1} - alpha v_{t+1}, subtracting the very increment `exact_step` added.

    W is updated in place and returned."""
    W, V, alpha = ints(W), ints(V), floats(alpha)
    blocks = lane_blocks(len(W))
    fails = no_failures(blocks, len(W), DRY + 1)
    share(workers, blocks, lambda b0, b1: _unstep_w_blocks(W, V, alpha, b0, b1, fails))
    raise_first(fails, (lambda i: alpha[i] * (V[i] * UNIT), None), len(W), DRY)
    return W


def exact_unstep_v(V, buf, g, gamma, n, workers=SERIAL):
    """v_t = (v_{t+1} + (1 - gamma) g_t) / gamma, exactly (g_t recomputed bit for bit).

    V and buf's lanes, stacks, tops and peaks are updated in place and returned."""
    V, g, decay = ints(V), floats(g), Decay(floats(gamma), ints(n))
    buf = buffer(buf, LANES)
    # scratch in the narrowest types that hold s < 2**16 and f <= 2**24: fresh int64 arrays of
    # this size would cost more in page faults than the loops they serve
    sym, f = np.empty(len(V), np.uint16), np.empty(len(V), np.uint32)
    blocks = len(buf.top)
    fails = no_failures(blocks, len(V), DRY + 1)
    share(workers, blocks, lambda b0, b1: _unstep_v_blocks(V, buf, g, decay, sym, f, b0, b1,
                                                           fails))
    raise_first(fails, (lambda i: (1.0 - decay.gamma[i]) * g[i], None), len(V), DRY)
    return V, buf
