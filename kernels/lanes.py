"""revlearn.lanes in loops over blocks of lanes, on several threads: the per-parameter work of one
step of Algorithms 1 and 2, fused into one pass over each block (see that module for the
equations and for the fixed order of the per-group dot products).

A block (`partition.LANES` lanes) is the unit of work: its lanes' sums of the gradient parts, its
exact step with its own stack (`kernels.exact`), its segments of the dot products, its adjoint
updates, all while the block's data is in cache. Threads take consecutive ranges of blocks; every
lane is computed the same way whoever computes it, and the segments' dot products are added into
each group's in lane order afterwards, so the bits do not depend on the thread count
(`kernels.blocks`).
"""

from typing import NamedTuple

import numpy as np

from revlearn.momentum import StepHyper
from revlearn.partition import LANES, lane_blocks
from revlearn.threads import SERIAL

from .blocks import (
    UNIT,
    block_gradient,
    buffer,
    gradient,
    hvp,
    no_failures,
    penalty,
    raise_first,
    scratch,
    segment_dots,
    segments,
    share,
    sum_parts,
    to_floats,
)
from .exact import DRY, Decay, step_block, unstep_v_block, unstep_w_block
from .jit import floats, ints, kernel

BAD = DRY + 1  # fails[b, BAD] < P: the first lane of block b whose gradient is not finite
CHECKS = BAD + 1


class ForwardWork(NamedTuple):
    """`forward`'s scratch (g, and r for the push over D) and its failure table."""

    g: np.ndarray
    r: np.ndarray
    fails: np.ndarray


class BeforeWork(NamedTuple):
    """`reverse_before`'s outputs w_t and u, its segments' dot products and failure table."""

    w: np.ndarray
    u: np.ndarray
    dots: np.ndarray
    fails: np.ndarray


class AfterWork(NamedTuple):
    """`reverse_after`'s scratch (g; vg for v_t + g, then H u; sym and f for the push over n),
    its segments' dot products and failure table."""

    g: np.ndarray
    vg: np.ndarray
    sym: np.ndarray
    f: np.ndarray
    dots: np.ndarray
    fails: np.ndarray


@kernel
def _forward_blocks(W, V, buf, grad, h, work, b0, b1):
    """`lanes.forward` on blocks b0 .. b1-1: g = parts + lam w (first non-finite lane into
    fails[b, BAD], and then no step for the block), the exact step, w <- W 2**-52."""
    P = len(W)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        if not block_gradient(grad, work.g, b, work.fails, BAD):
            continue
        step_block(W, V, buf, work.g, h, work.r, b, work.fails)
        to_floats(W[lo:hi], grad.w[lo:hi])


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
def _reverse_before_blocks(W, V, adj, alpha, gamma, segs, work, b0, b1):
    """`lanes.reverse_before` on blocks b0 .. b1-1: the segments of dots(dw, v_{t+1}), the
    exact w_t, w <- W 2**-52, dv += alpha dw, u = (1 - gamma) dv."""
    P = len(W)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        to_floats(V[lo:hi], work.u[lo:hi])  # v_{t+1}, until u is computed below
        segment_dots(adj.dw, work.u, segs, b, work.dots)
        unstep_w_block(W, V, alpha, b, work.fails)
        _adjoint_before(adj.dw[lo:hi], adj.dv[lo:hi], work.w[lo:hi], W[lo:hi], work.u[lo:hi],
                        alpha[lo:hi], gamma[lo:hi])


@kernel
def _reverse_after_blocks(V, buf, adj, grad, hvp, decay, segs, work, b0, b1):
    """`lanes.reverse_after` on blocks b0 .. b1-1: g = parts + lam w, the exact v_t, the
    segments of dots(dv, v_t + g), then dw -= H u + lam u, d_lam -= w u, dv *= gamma."""
    P = len(V)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        sum_parts(grad.G[:, lo:hi], work.g[lo:hi])
        penalty(work.g[lo:hi], grad.lam[lo:hi], grad.w[lo:hi])
        unstep_v_block(V, buf, work.g, decay, work.sym, work.f, b, work.fails)
        if work.fails[b, DRY] < P:
            continue
        _plus_floats(V[lo:hi], work.g[lo:hi], work.vg[lo:hi])
        segment_dots(adj.dv, work.vg, segs, b, work.dots)
        sum_parts(hvp.H[:, lo:hi], work.vg[lo:hi])  # vg is free again: it now holds H u
        _adjoint_after(adj.dw[lo:hi], adj.dv[lo:hi], adj.d_lam[lo:hi], work.vg[lo:hi],
                       hvp.u[lo:hi], hvp.w[lo:hi], hvp.lam[lo:hi], decay.gamma[lo:hi])


def from_fixed(W):
    """The float64 values W 2**-52 of fixed-point W (`fixedpoint.from_fixed`, in one pass)."""
    out = np.empty(len(W))
    to_floats(ints(W), out)
    return out


# --- the public wrappers (revlearn.lanes's signatures; arrays updated in place) ---------------

def forward(W, V, buf, w, G, lam, alpha, gamma, n, workers=SERIAL):
    """`lanes.forward`: (W, V, buf, w_{t+1}, bad), W, V, the buffer and w updated in place."""
    W, V, buf, grad = ints(W), ints(V), buffer(buf, LANES), gradient(G, lam, w)
    h = StepHyper(floats(alpha), floats(gamma), ints(n))
    P, blocks = len(W), len(buf.top)
    work = ForwardWork(scratch("g", P), scratch("r", P, np.uint16), no_failures(blocks, P, CHECKS))
    share(workers, blocks, lambda b0, b1: _forward_blocks(W, V, buf, grad, h, work, b0, b1))
    bad = int(work.fails[:, BAD].min())
    if bad < P:
        return W, V, buf, grad.w, bad
    raise_first(work.fails, (lambda i: (1.0 - h.gamma[i]) * work.g[i], None,
                             lambda i: h.alpha[i] * (V[i] * UNIT), None), P, DRY)
    return W, V, buf, grad.w, -1


def reverse_before(W, V, adj, alpha, gamma, offsets, workers=SERIAL):
    """`lanes.reverse_before`: (W_t, w_t, u, d_alpha_t); W and adj updated in place (w_t and u
    are arrays this thread's next call overwrites)."""
    W, V, alpha, gamma = ints(W), ints(V), floats(alpha), floats(gamma)
    P, segs = len(W), segments(offsets, len(W))
    work = BeforeWork(scratch("w", P), scratch("u", P), np.empty(len(segs.list)),
                      no_failures(lane_blocks(P), P, CHECKS))
    share(workers, lane_blocks(P), lambda b0, b1: _reverse_before_blocks(
        W, V, adj, alpha, gamma, segs.arrays, work, b0, b1))
    raise_first(work.fails, (lambda i: alpha[i] * (V[i] * UNIT), None), P, DRY)
    return W, work.w, work.u, segs.by_group(work.dots)


def reverse_after(V, buf, adj, G, H, lam, w, u, gamma, n, offsets, workers=SERIAL):
    """`lanes.reverse_after`: (V_t, buf, d_gamma_t); V, the buffer and adj updated in place."""
    V, buf, grad = ints(V), buffer(buf, LANES), gradient(G, lam, w)
    curv, decay = hvp(H, grad.lam, grad.w, u), Decay(floats(gamma), ints(n))
    P, segs = len(V), segments(offsets, len(V))
    work = AfterWork(scratch("g", P), scratch("vg", P), scratch("sym", P, np.uint16),
                     scratch("f", P, np.uint32), np.empty(len(segs.list)),
                     no_failures(len(buf.top), P, CHECKS))
    share(workers, len(buf.top), lambda b0, b1: _reverse_after_blocks(
        V, buf, adj, grad, curv, decay, segs.arrays, work, b0, b1))
    raise_first(work.fails, (lambda i: (1.0 - decay.gamma[i]) * work.g[i], None), P, DRY)
    return V, buf, segs.by_group(work.dots)
