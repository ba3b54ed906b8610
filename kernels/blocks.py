"""What the per-lane kernels of every optimizer share (`kernels.exact` and `kernels.lanes` for
momentum, `kernels.adam` for Adam): arithmetic on one entry, a block's gradient and its segments of
the per-group dot products, the records the block kernels take, and, in Python, sharing the
blocks out among threads and raising the first failure as refimpl would.

A block (`partition.LANES` lanes, with its own stack) is the unit of work. Threads take
consecutive ranges of blocks (`share`); every lane is computed the same way whoever computes it,
and the segments' dot products are added into each group's in lane order afterwards
(`Grouping.by_group`), so the bits do not depend on the thread count. Each check (a value out of
range, an addition that wraps, a gradient that is not finite) reports the first lane of each block
where it failed into a failure table (P when none), and `raise_first` raises the error of the
first check, in refimpl's order, that failed.
"""

import threading
from typing import NamedTuple

import numpy as np

from revlearn import ans, fixedpoint
from revlearn import lanes as reflanes
from revlearn.ans import WORD
from revlearn.fixedpoint import LIMIT, SCALE
from revlearn.partition import LANES, lane_blocks

from .jit import floats, ints, kernel

UNIT = 1.0 / SCALE  # from_fixed: a 2**-52


class Gradient(NamedTuple):
    """A step's gradient as the engine gives it: G (k, P), its parts, one row per chunk of the
    batch's rows, and lam and w_t (P,), for g = ((G_0 + G_1) + ...) + lam w."""

    G: np.ndarray
    lam: np.ndarray
    w: np.ndarray


class Hvp(NamedTuple):
    """A step's Hessian-vector product as the engine gives it, H (k, P) in parts, H = H_t u, and
    what the adjoints' update takes with it: lam, w_t and the direction u (P,)."""

    H: np.ndarray
    lam: np.ndarray
    w: np.ndarray
    u: np.ndarray


class Segments(NamedTuple):
    """The segments of the per-group dot products (`lanes.segments`) as the kernels take them:
    block b's are first[b] .. first[b+1] - 1, segment k the lanes lo[k] .. hi[k] - 1."""

    first: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


# --- integers and fixed point on one entry -------------------------------------------------------

@kernel(inline=True)
def div(a, b):
    """a div b for integers 0 <= a, 1 <= b with a + b < 2**53, by one float division.

    k = a div b is a float; fl(a / b) >= k since rounding is monotone, and when a / b is not an
    integer, (k + 1) - a / b >= 1 / b exceeds half an ulp of a / b (a < 2**53), so fl(a / b) stays
    below k + 1. Truncating fl(a / b) gives k; unlike an int64 division, the loop can vectorise.
    """
    return np.int64(np.float64(a) / np.float64(b))


@kernel(inline=True)
def floor_divmod(v, n):
    """(v div n, v mod n) with floor semantics for any int64 v and 1 <= n <= 2**16.

    Long division in two halves that `div` can take: v = a 2**32 + b, 0 <= b < 2**32;
    a = q1 n + r1 (floor, |a| < 2**31: exact in floats as in `div`, mirrored for a < 0);
    r1 2**32 + b = q2 n + r2 with r1 2**32 + b < n 2**32 <= 2**48; then
    v = (q1 2**32 + q2) n + r2, 0 <= r2 < n.
    """
    a = v >> 32
    q1 = np.int64(np.floor(np.float64(a) / np.float64(n)))
    t = ((a - q1 * n) << 32) + (v & WORD)
    q2 = div(t, n)
    return (q1 << 32) + q2, t - q2 * n


@kernel(inline=True)
def fix(x):
    """rint(x 2**52) where |x| < 2**11, else 0 (the caller reports the lane)."""
    return np.int64(np.rint((x if abs(x) < LIMIT else 0.0) * SCALE))


@kernel(inline=True)
def add_wraps(a, b, s):
    """s = a + b wrapped: a and b share a sign that s lacks."""
    return ((a ^ s) & (b ^ s)) < 0


@kernel(inline=True)
def sub_wraps(a, b, s):
    """s = a - b wrapped: a and b differ in sign and s lacks a's."""
    return ((a ^ b) & (a ^ s)) < 0


@kernel(inline=True)
def first(failed_at, i, failed, P):
    """The first failing lane so far (P for none): min(failed_at, i) if lane i failed.

    Written as a min over a select so that LLVM sees a min-reduction and vectorises the loop.
    Not fitting is `not |x| < 2**11`, which NaN fails too, as in `fixedpoint.to_fixed`."""
    return min(failed_at, i if failed else P)


@kernel
def report(fails, b, k, lo, hi, found, P):
    """fails[b, k] = the lane of block b (lanes lo .. hi-1) where check k first failed, found
    counted from lo (hi - lo when none), or P when none."""
    fails[b, k] = lo + found if found < hi - lo else P


# --- passes over one block's slices --------------------------------------------------------------

@kernel
def sum_parts(G, out):
    """out[i] = ((G[0, i] + G[1, i]) + ...): the parts added in chunk order (G and out slices of
    one block; loops from 0 so that LLVM sees non-negative indices and vectorises)."""
    for i in range(len(out)):
        out[i] = G[0, i]
    for c in range(1, G.shape[0]):
        row = G[c]
        for i in range(len(out)):
            out[i] = out[i] + row[i]


@kernel
def penalty(g, lam, w):
    """g <- g + lam w on one block's slices; the first lane (in the slice) that is not finite,
    len(g) for none."""
    n = len(g)
    bad = n
    for i in range(n):
        s = g[i] + lam[i] * w[i]
        g[i] = s
        bad = min(bad, i if not abs(s) < np.inf else n)
    return bad


@kernel
def to_floats(W, w):
    """w <- W 2**-52 on one block's slices."""
    for i in range(len(W)):
        w[i] = W[i] * UNIT


@kernel
def block_gradient(grad, g, b, fails, bad_column):
    """g = parts + lam w on block b's lanes; the first non-finite lane (P when none) into
    fails[b, bad_column] (each optimizer's failure table has its own columns); whether every lane
    is finite (the block may step)."""
    P = len(grad.w)
    lo, hi = b * LANES, min(b * LANES + LANES, P)
    sum_parts(grad.G[:, lo:hi], g[lo:hi])
    bad = penalty(g[lo:hi], grad.lam[lo:hi], grad.w[lo:hi])
    report(fails, b, bad_column, lo, hi, bad, P)
    return bad == hi - lo


@kernel
def segment_dot(x, y):
    """sum_i x_i y_i over one segment (x and y its slices) in eight interleaved accumulators
    (`lanes.segment_dot`): acc_j over i = j (mod 8), the last row padded with +0.0."""
    m = len(x)
    full = m // 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for r in range(full):
        i = 8 * r
        if r == 0:
            a0, a1, a2, a3 = (x[i] * y[i], x[i + 1] * y[i + 1], x[i + 2] * y[i + 2],
                              x[i + 3] * y[i + 3])
            a4, a5, a6, a7 = (x[i + 4] * y[i + 4], x[i + 5] * y[i + 5], x[i + 6] * y[i + 6],
                              x[i + 7] * y[i + 7])
        else:
            a0 = a0 + x[i] * y[i]
            a1 = a1 + x[i + 1] * y[i + 1]
            a2 = a2 + x[i + 2] * y[i + 2]
            a3 = a3 + x[i + 3] * y[i + 3]
            a4 = a4 + x[i + 4] * y[i + 4]
            a5 = a5 + x[i + 5] * y[i + 5]
            a6 = a6 + x[i + 6] * y[i + 6]
            a7 = a7 + x[i + 7] * y[i + 7]
    rest = m - 8 * full
    if rest > 0:
        p = np.zeros(8)
        for j in range(rest):
            p[j] = x[8 * full + j] * y[8 * full + j]
        if full == 0:
            a0, a1, a2, a3, a4, a5, a6, a7 = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
        else:
            a0, a1, a2, a3 = a0 + p[0], a1 + p[1], a2 + p[2], a3 + p[3]
            a4, a5, a6, a7 = a4 + p[4], a5 + p[5], a6 + p[6], a7 + p[7]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@kernel(inline=True)
def segment_dots(x, y, segs, b, out):
    """The dot products of block b's segments into out."""
    for k in range(segs.first[b], segs.first[b + 1]):
        out[k] = segment_dot(x[segs.lo[k]:segs.hi[k]], y[segs.lo[k]:segs.hi[k]])


# --- the Python side: segments, scratch, threads, failures ---------------------------------------

class Grouping:
    """The segments of the per-group dot products for the group offsets of a case: `list` as
    `lanes.segments` gives them, `arrays` as the kernels take them."""

    def __init__(self, offsets, P):
        self.list = reflanes.segments(offsets, P)
        self.G = len(offsets) - 1
        block = np.array([lo // LANES for _, lo, _ in self.list], np.int64)
        self.arrays = Segments(np.searchsorted(block, np.arange(lane_blocks(P) + 1)),
                               np.array([lo for _, lo, _ in self.list], np.int64),
                               np.array([hi for _, _, hi in self.list], np.int64))

    def by_group(self, seg_dots):
        """Each group's segment dots added in lane order, shape (G,)."""
        return reflanes.by_group(seg_dots, self.list, self.G)


_GROUPINGS = {}


def segments(offsets, P):
    """The Grouping of these offsets (made once)."""
    key = (np.asarray(offsets, np.int64).tobytes(), P)
    if key not in _GROUPINGS:
        _GROUPINGS[key] = Grouping(offsets, P)
    return _GROUPINGS[key]


_SCRATCH = threading.local()


def scratch(name, P, dtype=np.float64):
    """A length-P array kept from one step to the next (per calling thread): fresh arrays of this
    size cost more in page faults than the loops that fill them."""
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    a = arrays.get(name)
    if a is None or len(a) != P or a.dtype != dtype:
        a = arrays[name] = np.empty(P, dtype)
    return a


def rows(a):
    """a as a C-contiguous float64 array of rows (the parts G or H)."""
    return np.ascontiguousarray(np.atleast_2d(a), dtype=np.float64)


def gradient(G, lam, w):
    """The Gradient of the engine's arrays, as the kernels take them."""
    return Gradient(rows(G), floats(lam), floats(w))


def hvp(H, lam, w, u):
    """The Hvp of the engine's arrays, as the kernels take them."""
    return Hvp(rows(H), floats(lam), floats(w), floats(u))


def buffer(buf, words):
    """buf's arrays as the kernels take them, its stacks with room for `words` more words each
    (reallocated when they would not fit)."""
    top = ints(buf.top)
    return ans.Buffer(ints(buf.x), ans.reserve(buf.stack, top + words), top, ints(buf.peak))


PART = 2  # blocks in a range (the ranges change the speed, never the result)


def share(workers, blocks, run):
    """run(b0, b1) on consecutive ranges of at least PART blocks, four per thread at most, shared
    out among the workers' threads as they come free: a thread that wakes late takes fewer
    ranges. One range when the caller runs alone."""
    parts = max(1, min(blocks // PART, 4 * workers.threads)) if workers.threads > 1 else 1
    bounds = [blocks * k // parts for k in range(parts + 1)]
    workers.map(lambda k: run(bounds[k], bounds[k + 1]), parts)


def no_failures(blocks, P, columns):
    """A failure table of `columns` checks for each block, none failed (P)."""
    return np.full((blocks, columns), P, np.int64)


def raise_first(fails, values, P, dry):
    """Raise the error refimpl raises: the underflow of a stack, else `fixedpoint.RangeError` for
    the first check, in refimpl's order, that failed, at its first lane.

    fails[b, k] is the first lane of block b failing check k (P when none), fails[b, dry] a lane
    of a block whose stack ran dry; values[k] gives the offending value of a range check as a
    function of the lane, or is None for a wrap-around check."""
    found = fails.min(axis=0, initial=P)
    if found[dry] < P:
        raise ans.Underflow(f"information buffer underflow in the block of lane {found[dry]}")
    for i, value in zip(found, values, strict=False):
        if i < P:
            raise fixedpoint.RangeError(i, "overflow" if value is None else float(value(i)))
