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

with fix(x) = rint(x 2**52). Each block's stack is strictly LIFO: a pop acts on
the block's lanes in decreasing order and a push in increasing order (`revlearn.ans`). Only moving
words to and from a stack is sequential, so each step of a block is split into passes: the
arithmetic of every lane (decoding, encoding, the fixed-point updates) in loops without dependencies
between lanes, which LLVM vectorises, and the word moves in two short sequential loops, the block's
lanes from last to first taking words off its stack (`_refill`) and from first to last putting
words on it (`_spill`): the very words, in the very places, that refimpl reads and writes. Blocks
share nothing, so each thread takes a range of them.

Errors are found as refimpl finds them: each check (a value out of range, an addition that wraps)
reports the first lane where it failed (P when none), and the wrapper raises the error of the first
check in refimpl's order that failed.
"""

import numpy as np

from revlearn import ans, fixedpoint
from revlearn.ans import EMIT_SHIFT, LOW, PREC, WORD, WORD_BITS, Buffer
from revlearn.fixedpoint import D_BITS, LIMIT, SCALE, D
from revlearn.partition import LANES, lane_blocks
from revlearn.threads import SERIAL

from .jit import floats, ints, kernel

M = ans.M
UNIT = 1.0 / SCALE  # from_fixed: a 2**-52


# --- one lane of the rANS buffer (ans.push / ans.pop without the word moves) -------------------

@kernel(inline=True)
def _div(a, b):
    """a div b for integers 0 <= a, 1 <= b with a + b < 2**53, by one float division.

    k = a div b is a float; fl(a / b) >= k since rounding is monotone, and when a / b is not an
    integer, (k + 1) - a / b >= 1 / b exceeds half an ulp of a / b (a < 2**53), so fl(a / b) stays
    below k + 1. Truncating fl(a / b) gives k; unlike an int64 division, the loop can vectorise.
    """
    return np.int64(np.float64(a) / np.float64(b))


@kernel(inline=True)
def _divmod(v, n):
    """(v div n, v mod n) with floor semantics for any int64 v and 1 <= n <= 2**16.

    Long division in two halves that `_div` can take: v = a 2**32 + b, 0 <= b < 2**32;
    a = q1 n + r1 (floor, |a| < 2**31: exact in floats as in `_div`, mirrored for a < 0);
    r1 2**32 + b = q2 n + r2 with r1 2**32 + b < n 2**32 <= 2**48; then
    v = (q1 2**32 + q2) n + r2, 0 <= r2 < n.
    """
    a = v >> 32
    q1 = np.int64(np.floor(np.float64(a) / np.float64(n)))
    t = ((a - q1 * n) << 32) + (v & WORD)
    q2 = _div(t, n)
    return (q1 << 32) + q2, t - q2 * n


@kernel(inline=True)
def _decode(x, n):
    """Pop s uniform over [0, n) from lane state x: (x', s); x' < 2**31 needs a word refilled.

    q = M div n, rem = M mod n, f_s = q + [s < rem], c_s = s q + min(s, rem)
    slot = x mod M,  s: c_s <= slot < c_s + f_s,  x' = f_s (x div M) + slot - c_s
    """
    q = _div(M, n)
    rem = M - q * n
    slot = x & (M - 1)
    split = rem * (q + 1)
    if slot < split:
        s = _div(slot, q + 1)
    else:
        s = rem + _div(slot - split, q)
    f = q + 1 if s < rem else q
    return f * (x >> PREC) + slot - (s * q + min(s, rem)), s


@kernel(inline=True)
def _encode(x, s, n):
    """Push s (0 <= s < n) into lane state x after its word, if any, went to the stack.

    x' = (x div f_s) M + (x mod f_s) + c_s. Here x < 2**63 is too wide for `_div`, so the
    division is long, in two halves it can take: x = h M + l, h = q1 f + r1 (h < 2**39),
    r1 M + l = q2 f + r2 (< f M <= 2**48); x div f = q1 M + q2 and x mod f = r2.
    """
    q = _div(M, n)
    rem = M - q * n
    f = _freq(s, n)
    h = x >> PREC
    q1 = _div(h, f)
    t = ((h - q1 * f) << PREC) + (x & (M - 1))
    q2 = _div(t, f)
    return (((q1 << PREC) + q2) << PREC) + (t - q2 * f) + s * q + min(s, rem)


@kernel(inline=True)
def _freq(s, n):
    """f_s = q + [s < rem], the frequency of symbol s of the uniform code over n. Pushing s first
    moves the low word of x to the stack when x div 2**39 >= f_s."""
    q = _div(M, n)
    return q + 1 if s < M - q * n else q


# --- fixed point on one entry ----------------------------------------------------------------

@kernel(inline=True)
def _fix(x):
    """rint(x 2**52) where |x| < 2**11, else 0 (the caller reports the lane)."""
    return np.int64(np.rint((x if abs(x) < LIMIT else 0.0) * SCALE))


@kernel(inline=True)
def _add_wraps(a, b, s):
    """s = a + b wrapped: a and b share a sign that s lacks."""
    return ((a ^ s) & (b ^ s)) < 0


@kernel(inline=True)
def _sub_wraps(a, b, s):
    """s = a - b wrapped: a and b differ in sign and s lacks a's."""
    return ((a ^ b) & (a ^ s)) < 0


@kernel(inline=True)
def _first(failed_at, i, failed, P):
    """The first failing lane so far (P for none): min(failed_at, i) if lane i failed.

    Written as a min over a select so that LLVM sees a min-reduction and vectorises the loop.
    Not fitting is `not |x| < 2**11`, which NaN fails too, as in `fixedpoint.to_fixed`."""
    return min(failed_at, i if failed else P)


# --- the passes ------------------------------------------------------------------------------

@kernel
def _refill(x, stack, top):
    """Lanes P-1 .. 0 whose state fell below 2**31 take a word off the stack: x <- x 2**32 + word.
    Returns the new top, or -1 when the stack runs dry (it cannot, `revlearn.ans` proves).
    Branch-free, since about half of the lanes refill on each step."""
    for i in range(len(x) - 1, -1, -1):
        need = x[i] < LOW
        if need & (top == 0):
            return -1
        word = np.int64(stack[max(top - 1, 0)])
        x[i] = (x[i] << WORD_BITS) | word if need else x[i]
        top -= need
    return top


@kernel
def _spill_over_D(x, stack, top):
    """Lanes 0 .. P-1 about to push a symbol over D put their low word on the stack when
    x div 2**39 >= f = 2**8. The word is written always and kept when top moves past it."""
    for i in range(len(x)):
        emit = x[i] >> EMIT_SHIFT >= _freq(0, D)
        stack[top] = x[i] & WORD
        top += emit
        x[i] = x[i] >> WORD_BITS if emit else x[i]
    return top


@kernel
def _spill(x, f, stack, top):
    """Lanes 0 .. P-1 about to push a symbol of frequency f put their low word on the stack when
    x div 2**39 >= f (written always, kept when top moves past it)."""
    for i in range(len(x)):
        emit = x[i] >> EMIT_SHIFT >= np.int64(f[i])
        stack[top] = x[i] & WORD
        top += emit
        x[i] = x[i] >> WORD_BITS if emit else x[i]
    return top


@kernel
def _encode_all(x, sym, n):
    """Encode sym over n into every lane (after `_spill`)."""
    for i in range(len(x)):
        x[i] = _encode(x[i], np.int64(sym[i]), n[i])


@kernel
def _pop_and_mul_gamma(x, V, n, r):
    """Bits back, all lanes:  s = decode(x over n);  v n + s = v' D + r  (v = hi D + lo)."""
    for i in range(len(x)):
        x[i], s = _decode(x[i], n[i])
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
        x[i] = _encode(x[i], np.int64(r[i]), D)
        dv = (1.0 - gamma[i]) * g[i]
        f1 = _first(f1, i, not abs(dv) < LIMIT, P)
        b = _fix(dv)
        v = V[i] - b
        f2 = _first(f2, i, _sub_wraps(V[i], b, v), P)
        V[i] = v
        dw = alpha[i] * (v * UNIT)
        f3 = _first(f3, i, not abs(dw) < LIMIT, P)
        b = _fix(dw)
        w = W[i] + b
        f4 = _first(f4, i, _add_wraps(W[i], b, w), P)
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
        f1 = _first(f1, i, not abs(dw) < LIMIT, P)
        b = _fix(dw)
        w = W[i] - b
        f2 = _first(f2, i, _sub_wraps(W[i], b, w), P)
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
        f1 = _first(f1, i, not abs(dv) < LIMIT, P)
        b = _fix(dv)
        v = V[i] + b
        f2 = _first(f2, i, _add_wraps(V[i], b, v), P)
        x[i], r = _decode(x[i], D)
        hi, lo = _divmod(v, n[i])
        z = lo * D + r
        q = _div(z, n[i])
        V[i] = hi * D + q
        s = z - q * n[i]
        sym[i] = s
        f[i] = _freq(s, n[i])
    return f1, f2


# --- the passes over blocks of lanes, each block with its own stack ----------------------------

DRY = 4  # fails[b, DRY] < P: block b's stack ran dry (it cannot, `revlearn.ans` proves)


@kernel
def step_block(W, V, x, stack, top, peak, g, alpha, gamma, n, r, b, fails):
    """`exact_step` on the lanes of block b: pop over n and multiply, the block's words off and
    on its stack, push over D and the fixed-point updates. fails[b, k] is the first lane failing
    check k of `_push_and_update` (P for none), fails[b, DRY] a lane of a block run dry."""
    P = len(x)
    lo, hi = b * LANES, min(b * LANES + LANES, P)
    _pop_and_mul_gamma(x[lo:hi], V[lo:hi], n[lo:hi], r[lo:hi])
    t = _refill(x[lo:hi], stack[b], top[b])
    if t < 0:
        fails[b, DRY] = lo
        return
    t = _spill_over_D(x[lo:hi], stack[b], t)
    top[b] = t
    peak[b] = max(peak[b], t)
    checks = _push_and_update(W[lo:hi], V[lo:hi], x[lo:hi], r[lo:hi], g[lo:hi], alpha[lo:hi],
                              gamma[lo:hi])
    for k in range(4):
        fails[b, k] = lo + checks[k] if checks[k] < hi - lo else P


@kernel
def _step_blocks(W, V, x, stack, top, peak, g, alpha, gamma, n, r, b0, b1, fails):
    """`step_block` on blocks b0 .. b1-1."""
    for b in range(b0, b1):
        step_block(W, V, x, stack, top, peak, g, alpha, gamma, n, r, b, fails)


@kernel
def _unstep_w_blocks(W, V, alpha, b0, b1, fails):
    """`exact_unstep_w` on the lanes of blocks b0 .. b1-1."""
    P = len(W)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        checks = _unstep_w(W[lo:hi], V[lo:hi], alpha[lo:hi])
        for k in range(2):
            fails[b, k] = lo + checks[k] if checks[k] < hi - lo else P


@kernel
def unstep_v_block(V, x, stack, top, peak, g, gamma, n, sym, f, b, fails):
    """`exact_unstep_v` on the lanes of block b: the fixed-point addition, pop over D and
    divide, the block's words off and on its stack, push over n (fails as `step_block`'s)."""
    P = len(x)
    lo, hi = b * LANES, min(b * LANES + LANES, P)
    checks = _add_grad_and_div_gamma(V[lo:hi], x[lo:hi], g[lo:hi], gamma[lo:hi], n[lo:hi],
                                     sym[lo:hi], f[lo:hi])
    for k in range(2):
        fails[b, k] = lo + checks[k] if checks[k] < hi - lo else P
    t = _refill(x[lo:hi], stack[b], top[b])
    if t < 0:
        fails[b, DRY] = lo
        return
    t = _spill(x[lo:hi], f[lo:hi], stack[b], t)
    _encode_all(x[lo:hi], sym[lo:hi], n[lo:hi])
    top[b] = t
    peak[b] = max(peak[b], t)


@kernel
def _unstep_v_blocks(V, x, stack, top, peak, g, gamma, n, sym, f, b0, b1, fails):
    """`unstep_v_block` on blocks b0 .. b1-1."""
    for b in range(b0, b1):
        unstep_v_block(V, x, stack, top, peak, g, gamma, n, sym, f, b, fails)


# --- the public wrappers (revlearn.exact's signatures; the state is updated in place) ---------

def exact_step(W, V, buf, g, alpha, gamma, n, workers=SERIAL):
    """Algorithm 1's update, exactly:  v <- gamma v - (1 - gamma) g;  w <- w + alpha v.

    W, V and buf's lanes, stacks, tops and peaks are updated in place and returned (the stacks
    reallocated when they grow); the blocks of lanes are shared out among the workers."""
    W, V, x = ints(W), ints(V), ints(buf.x)
    g, alpha, gamma, n = floats(g), floats(alpha), floats(gamma), ints(n)
    top, peak = ints(buf.top), ints(buf.peak)
    stack = ans.reserve(buf.stack, top + LANES)  # a push emits at most one word per lane
    r = np.empty(len(W), np.uint16)
    fails = _no_failures(len(top), len(W))
    _share(workers, len(top), lambda b0, b1: _step_blocks(W, V, x, stack, top, peak, g, alpha,
                                                          gamma, n, r, b0, b1, fails))
    _raise_first(fails, (lambda i: (1.0 - gamma[i]) * g[i], None,
                         lambda i: alpha[i] * (V[i] * UNIT), None), len(W))
    return W, V, Buffer(x, stack, top, peak)


def exact_unstep_w(W, V, alpha, workers=SERIAL):
    """w_t = w_{t+1} - alpha v_{t+1}, subtracting the very increment `exact_step` added.

    W is updated in place and returned."""
    W, V, alpha = ints(W), ints(V), floats(alpha)
    blocks = lane_blocks(len(W))
    fails = _no_failures(blocks, len(W))
    _share(workers, blocks, lambda b0, b1: _unstep_w_blocks(W, V, alpha, b0, b1, fails))
    _raise_first(fails, (lambda i: alpha[i] * (V[i] * UNIT), None), len(W))
    return W


def exact_unstep_v(V, buf, g, gamma, n, workers=SERIAL):
    """v_t = (v_{t+1} + (1 - gamma) g_t) / gamma, exactly (g_t recomputed bit for bit).

    V and buf's lanes, stacks, tops and peaks are updated in place and returned."""
    V, x = ints(V), ints(buf.x)
    g, gamma, n = floats(g), floats(gamma), ints(n)
    top, peak = ints(buf.top), ints(buf.peak)
    stack = ans.reserve(buf.stack, top + LANES)
    # scratch in the narrowest types that hold s < 2**16 and f <= 2**24: fresh int64 arrays of
    # this size would cost more in page faults than the loops they serve
    sym, f = np.empty(len(V), np.uint16), np.empty(len(V), np.uint32)
    fails = _no_failures(len(top), len(V))
    _share(workers, len(top), lambda b0, b1: _unstep_v_blocks(V, x, stack, top, peak, g, gamma,
                                                              n, sym, f, b0, b1, fails))
    _raise_first(fails, (lambda i: (1.0 - gamma[i]) * g[i], None), len(V))
    return V, Buffer(x, stack, top, peak)


PART = 2  # blocks in a range (the ranges change the speed, never the result)


def _share(workers, blocks, run):
    """run(b0, b1) on consecutive ranges of at least PART blocks, four per thread at most, shared
    out among the workers' threads as they come free: a thread that wakes late takes fewer
    ranges. One range when the caller runs alone."""
    parts = max(1, min(blocks // PART, 4 * workers.threads)) if workers.threads > 1 else 1
    bounds = [blocks * k // parts for k in range(parts + 1)]
    workers.map(lambda k: run(bounds[k], bounds[k + 1]), parts)


def _no_failures(blocks, P):
    return np.full((blocks, DRY + 1), P, np.int64)


def _raise_first(fails, values, P, dry=DRY):
    """Raise the error refimpl raises: the underflow of a stack, else `fixedpoint.RangeError` for
    the first check, in refimpl's order, that failed, at its first lane.

    fails[b, k] is the first lane of block b failing check k (P when none), fails[b, dry] a lane
    of a block whose stack ran dry; values[k] gives the offending value of a range check as a
    function of the lane, or is None for a wrap-around check."""
    first = fails.min(axis=0, initial=P)
    if first[dry] < P:
        raise ans.Underflow(f"information buffer underflow in the block of lane {first[dry]}")
    for i, value in zip(first, values, strict=False):
        if i < P:
            raise fixedpoint.RangeError(i, "overflow" if value is None else float(value(i)))


