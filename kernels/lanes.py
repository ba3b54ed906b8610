"""revlearn.lanes in loops over blocks of lanes, on several threads: the per-parameter work of one
step of Algorithms 1 and 2, fused into one pass over each block (see that module for the
equations and for the fixed order of the per-group dot products).

A block (`partition.LANES` lanes) is the unit of work: its lanes' sums of the gradient parts, its
exact step with its own stack (`kernels.exact`), its segments of the dot products, its adjoint
updates, all while the block's data is in cache. Threads take consecutive ranges of blocks; every
lane is computed the same way whoever computes it, and the segments' dot products are added into
each group's in lane order afterwards, so the bits do not depend on the thread count.
"""

import threading

import numpy as np

from revlearn import lanes as reflanes
from revlearn.ans import Buffer
from revlearn.partition import LANES, lane_blocks
from revlearn.threads import SERIAL

from . import exact as kexact
from .exact import DRY, UNIT, _unstep_w, step_block, unstep_v_block
from .jit import floats, ints, kernel

BAD = DRY + 1  # fails[b, BAD] < P: the first lane of block b whose gradient is not finite
CHECKS = BAD + 1


@kernel
def _sum_parts(G, out):
    """out[i] = ((G[0, i] + G[1, i]) + ...): the parts added in chunk order (G and out slices of
    one block; loops from 0 so that LLVM sees non-negative indices and vectorises)."""
    for i in range(len(out)):
        out[i] = G[0, i]
    for c in range(1, G.shape[0]):
        row = G[c]
        for i in range(len(out)):
            out[i] = out[i] + row[i]


@kernel
def _segment_dot(x, y):
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
def _segment_dots(x, y, seg_lo, seg_hi, first, last, out):
    """The dot products of segments first .. last-1 (those of one block)."""
    for k in range(first, last):
        out[k] = _segment_dot(x[seg_lo[k]:seg_hi[k]], y[seg_lo[k]:seg_hi[k]])


@kernel
def _penalty(g, lam, w):
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
def _to_floats(W, w):
    """w <- W 2**-52 on one block's slices."""
    for i in range(len(W)):
        w[i] = W[i] * UNIT


@kernel
def _block_gradient(G, lam, w, g, b, fails, bad_column):
    """g = parts + lam w on block b's lanes; the first non-finite lane (P when none) into
    fails[b, bad_column] (each optimizer's failure table has its own columns); whether every lane
    is finite (the block may step)."""
    P = len(w)
    lo, hi = b * LANES, min(b * LANES + LANES, P)
    _sum_parts(G[:, lo:hi], g[lo:hi])
    bad = _penalty(g[lo:hi], lam[lo:hi], w[lo:hi])
    fails[b, bad_column] = lo + bad if bad < hi - lo else P
    return bad == hi - lo


@kernel
def _forward_blocks(W, V, x, stack, top, peak, w, G, lam, alpha, gamma, n, g, r, b0, b1, fails):
    """`lanes.forward` on blocks b0 .. b1-1: g = parts + lam w (first non-finite lane into
    fails[b, BAD], and then no step for the block), the exact step, w <- W 2**-52."""
    P = len(W)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        if not _block_gradient(G, lam, w, g, b, fails, BAD):
            continue
        step_block(W, V, x, stack, top, peak, g, alpha, gamma, n, r, b, fails)
        _to_floats(W[lo:hi], w[lo:hi])


@kernel
def _adjoint_before(dw, dv, w, W, u, alpha, gamma):
    """w <- W 2**-52;  dv <- dv + alpha dw;  u = (1 - gamma) dv, on one block's slices."""
    for i in range(len(dw)):
        w[i] = W[i] * UNIT
        dv[i] = dv[i] + alpha[i] * dw[i]
        u[i] = (1.0 - gamma[i]) * dv[i]


@kernel
def _adjoint_after(dw, dv, d_lam, Hu, u, w, lam, gamma):
    """dw <- dw - (H u + lam u);  d_lam <- d_lam - w u;  dv <- gamma dv, on one block's slices."""
    for i in range(len(dw)):
        dw[i] = dw[i] - (Hu[i] + lam[i] * u[i])
        d_lam[i] = d_lam[i] - w[i] * u[i]
        dv[i] = dv[i] * gamma[i]


@kernel
def _plus_floats(V, g, out):
    """out <- V 2**-52 + g (v_t + g_t) on one block's slices."""
    for i in range(len(V)):
        out[i] = V[i] * UNIT + g[i]


@kernel
def _reverse_before_blocks(W, V, dw, dv, w, u, alpha, gamma, seg_first, seg_lo, seg_hi,
                           seg_dots, b0, b1, fails):
    """`lanes.reverse_before` on blocks b0 .. b1-1: the segments of dots(dw, v_{t+1}), the
    exact w_t, w <- W 2**-52, dv += alpha dw, u = (1 - gamma) dv."""
    P = len(W)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        _to_floats(V[lo:hi], u[lo:hi])  # v_{t+1}, until u is computed below
        _segment_dots(dw, u, seg_lo, seg_hi, seg_first[b], seg_first[b + 1], seg_dots)
        checks = _unstep_w(W[lo:hi], V[lo:hi], alpha[lo:hi])
        for k in range(2):
            fails[b, k] = lo + checks[k] if checks[k] < hi - lo else P
        _adjoint_before(dw[lo:hi], dv[lo:hi], w[lo:hi], W[lo:hi], u[lo:hi], alpha[lo:hi],
                        gamma[lo:hi])


@kernel
def _reverse_after_blocks(V, x, stack, top, peak, dw, dv, d_lam, G, H, lam, w, u, gamma, n,
                          g, vg, sym, f, seg_first, seg_lo, seg_hi, seg_dots, b0, b1, fails):
    """`lanes.reverse_after` on blocks b0 .. b1-1: g = parts + lam w, the exact v_t, the
    segments of dots(dv, v_t + g), then dw -= H u + lam u, d_lam -= w u, dv *= gamma."""
    P = len(V)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        _sum_parts(G[:, lo:hi], g[lo:hi])
        _penalty(g[lo:hi], lam[lo:hi], w[lo:hi])
        unstep_v_block(V, x, stack, top, peak, g, gamma, n, sym, f, b, fails)
        if fails[b, DRY] < P:
            continue
        _plus_floats(V[lo:hi], g[lo:hi], vg[lo:hi])
        _segment_dots(dv, vg, seg_lo, seg_hi, seg_first[b], seg_first[b + 1], seg_dots)
        _sum_parts(H[:, lo:hi], vg[lo:hi])  # vg is free again: it now holds H u
        _adjoint_after(dw[lo:hi], dv[lo:hi], d_lam[lo:hi], vg[lo:hi], u[lo:hi], w[lo:hi],
                       lam[lo:hi], gamma[lo:hi])


def from_fixed(W):
    """The float64 values W 2**-52 of fixed-point W (`fixedpoint.from_fixed`, in one pass)."""
    out = np.empty(len(W))
    _to_floats(ints(W), out)
    return out


# --- the public wrappers (revlearn.lanes's signatures; arrays updated in place) ---------------

class _Segments:
    """The segments of the per-group dot products, as arrays for the kernels."""

    def __init__(self, offsets, P):
        self.list = reflanes.segments(offsets, P)
        self.G = len(offsets) - 1
        block = np.array([lo // LANES for _, lo, _ in self.list], np.int64)
        self.first = np.searchsorted(block, np.arange(lane_blocks(P) + 1))  # block b's segments
        self.lo = np.array([lo for _, lo, _ in self.list], np.int64)
        self.hi = np.array([hi for _, _, hi in self.list], np.int64)


_SEGMENTS = {}


def _segments(offsets, P):
    key = (np.asarray(offsets, np.int64).tobytes(), P)
    if key not in _SEGMENTS:
        _SEGMENTS[key] = _Segments(offsets, P)
    return _SEGMENTS[key]


_SCRATCH = threading.local()


def _scratch(name, P, dtype=np.float64):
    """A length-P array kept from one step to the next (per calling thread): fresh arrays of this
    size cost more in page faults than the loops that fill them."""
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    a = arrays.get(name)
    if a is None or len(a) != P or a.dtype != dtype:
        a = arrays[name] = np.empty(P, dtype)
    return a


def forward(W, V, buf, w, G, lam, alpha, gamma, n, workers=SERIAL):
    """`lanes.forward`: (W, V, buf, w_{t+1}, bad), W, V, the buffer and w updated in place."""
    W, V, x, w = ints(W), ints(V), ints(buf.x), floats(w)
    top, peak = ints(buf.top), ints(buf.peak)
    stack = kexact.ans.reserve(buf.stack, top + LANES)
    g, r = _scratch("g", len(W)), _scratch("r", len(W), np.uint16)
    fails = _no_failures(len(top), len(W))
    G, lam, alpha, gamma, n = _rows(G), floats(lam), floats(alpha), floats(gamma), ints(n)
    kexact._share(workers, len(top), lambda b0, b1: _forward_blocks(
        W, V, x, stack, top, peak, w, G, lam, alpha, gamma, n, g, r, b0, b1, fails))
    bad = int(fails[:, BAD].min())
    if bad < len(W):
        return W, V, Buffer(x, stack, top, peak), w, bad
    kexact._raise_first(fails, (lambda i: (1.0 - gamma[i]) * g[i], None,
                                         lambda i: alpha[i] * (V[i] * UNIT), None), len(W))
    return W, V, Buffer(x, stack, top, peak), w, -1


def reverse_before(W, V, adj, alpha, gamma, offsets, workers=SERIAL):
    """`lanes.reverse_before`: (W_t, w_t, u, d_alpha_t); W and adj updated in place (w_t and u
    are arrays this thread's next call overwrites)."""
    W, V, alpha, gamma = ints(W), ints(V), floats(alpha), floats(gamma)
    P, segs = len(W), _segments(offsets, len(W))
    w, u, seg_dots = _scratch("w", P), _scratch("u", P), np.empty(len(segs.list))
    fails = _no_failures(lane_blocks(P), P)
    kexact._share(workers, lane_blocks(P), lambda b0, b1: _reverse_before_blocks(
        W, V, adj.dw, adj.dv, w, u, alpha, gamma, segs.first, segs.lo, segs.hi, seg_dots, b0, b1,
        fails))
    kexact._raise_first(fails, (lambda i: alpha[i] * (V[i] * UNIT), None), P)
    return W, w, u, reflanes.by_group(seg_dots, segs.list, segs.G)


def reverse_after(V, buf, adj, G, H, lam, w, u, gamma, n, offsets, workers=SERIAL):
    """`lanes.reverse_after`: (V_t, buf, d_gamma_t); V, the buffer and adj updated in place."""
    V, x, top, peak = ints(V), ints(buf.x), ints(buf.top), ints(buf.peak)
    P, segs = len(V), _segments(offsets, len(V))
    stack = kexact.ans.reserve(buf.stack, top + LANES)
    g, vg, seg_dots = _scratch("g", P), _scratch("vg", P), np.empty(len(segs.list))
    sym, f = _scratch("sym", P, np.uint16), _scratch("f", P, np.uint32)
    fails = _no_failures(len(top), P)
    G, H, lam, w, u = _rows(G), _rows(H), floats(lam), floats(w), floats(u)
    gamma, n = floats(gamma), ints(n)
    kexact._share(workers, len(top), lambda b0, b1: _reverse_after_blocks(
        V, x, stack, top, peak, adj.dw, adj.dv, adj.d_lam, G, H, lam, w, u, gamma, n, g, vg, sym,
        f, segs.first, segs.lo, segs.hi, seg_dots, b0, b1, fails))
    kexact._raise_first(fails, (lambda i: (1.0 - gamma[i]) * g[i], None), P)
    return V, Buffer(x, stack, top, peak), reflanes.by_group(seg_dots, segs.list, segs.G)


def _no_failures(blocks, P):
    return np.full((blocks, CHECKS), P, np.int64)


def _rows(a):
    return np.ascontiguousarray(np.atleast_2d(a), dtype=np.float64)

