"""revlearn.adam in loops over blocks of lanes, on several threads: Adam's exact step and its
inverse on the wide fixed point of `revlearn.wide` (m and s) and `revlearn.fixedpoint` (w), and
the per-lane work of Algorithm 2's Adam step, bit for bit as refimpl computes them (the equations
are in `revlearn.adam`, the digit arithmetic in `revlearn.wide`).

A block (`partition.LANES` lanes, with its own stack) is the unit of work, as in `kernels.lanes`:

    forward          g = parts + lam w;  m's decay: pop over n1 and multiply (every lane), the
                     block's words off and on its stack, push over D;  s's decay likewise (n2);
                     m += fix((1 - beta1) g), s += fix((1 - beta2) (g g)), u, w -= fix(alpha u)
    reverse_before   u from m, s;  w += fix(alpha u);  the adjoints through u and the segments of
                     dots(dw', u), dots(du, q), dots(du, q r)
    reverse_moments  g = parts + lam w;  s -= fix(...), pop over D and divide, words, push over n2;
                     m likewise (n1);  dg and the segments of dots(dm', m - g), dots(ds', s - g g)
    reverse_after    dw += H dg + lam dg;  d_lam += w dg;  dm *= beta1;  ds *= beta2

Threads take consecutive ranges of blocks (`kernels.blocks.share`); the segments' dot products are
added into each group's in lane order afterwards, so the bits do not depend on the thread count.
Errors are found as refimpl finds them: each check reports the first lane where it failed, and the
wrapper raises the error of the first check, in refimpl's order, that failed.
"""

from typing import NamedTuple

import numpy as np

from revlearn import adam as refadam
from revlearn.fixedpoint import D_BITS, LIMIT, D
from revlearn.partition import LANES, lane_blocks
from revlearn.threads import SERIAL
from revlearn.wide import HI_UNIT, LO_BITS, LO_MASK, LO_UNIT, SCALE, SPLIT, Wide

from .blocks import (
    UNIT,
    add_wraps,
    block_gradient,
    buffer,
    div,
    first,
    fix,
    floor_divmod,
    gradient,
    hvp,
    no_failures,
    penalty,
    raise_first,
    report,
    scratch,
    segment_dots,
    segments,
    share,
    sub_wraps,
    sum_parts,
    to_floats,
)
from .jit import floats, ints, kernel
from .rans import decode, encode, encode_all, freq, refill, spill, spill_over_D

DIGIT = D - 1
DRY = 6  # fails[b, DRY] < P: block b's stack ran dry (it cannot, `revlearn.ans` proves)
BAD = 7  # fails[b, BAD] < P: the first lane of block b whose gradient is not finite
CHECKS = 8


# --- wide fixed point on one entry (revlearn.wide) ---------------------------------------------

@kernel(inline=True)
def _to_wide(x):
    """(H, L) = (floor(y 2**-48), y - H 2**48), y = rint(x 2**100), where |x| < 2**11; (0, 0)
    beyond (the caller reports the lane)."""
    y = np.rint((x if abs(x) < LIMIT else 0.0) * SCALE)
    hi = np.floor(y * (1.0 / SPLIT))
    return np.int64(hi), np.int64(y - hi * SPLIT)


@kernel(inline=True)
def _from_wide(H, L):
    """H 2**-52 + L 2**-100."""
    return H * HI_UNIT + L * LO_UNIT


@kernel(inline=True)
def _wide_add(aH, aL, bH, bL):
    """a + b: (H, L, wrapped), the high word wrapped in either addition."""
    lo = aL + bL
    hi = aH + bH
    hi2 = hi + (lo >> LO_BITS)
    return hi2, lo & LO_MASK, add_wraps(aH, bH, hi) | (hi2 < hi)


@kernel(inline=True)
def _wide_sub(aH, aL, bH, bL):
    """a - b: (H, L, wrapped), the high word wrapped in either subtraction."""
    lo = aL - bL
    hi = aH - bH
    hi2 = hi + (lo >> LO_BITS)
    return hi2, lo & LO_MASK, sub_wraps(aH, bH, hi) | (hi2 > hi)


@kernel(inline=True)
def _mul_wide(H, L, n, c):
    """X n + c = X' D + r digit by digit from the lowest, c < n: (H', L', r)."""
    y = (L & DIGIT) * n + c
    r, c = y & DIGIT, y >> D_BITS
    y = ((L >> D_BITS) & DIGIT) * n + c
    l0, c = y & DIGIT, y >> D_BITS
    y = (L >> (2 * D_BITS)) * n + c
    l1, c = y & DIGIT, y >> D_BITS
    y = (H & DIGIT) * n + c
    return ((H >> D_BITS) * n + (y >> D_BITS), ((y & DIGIT) << (2 * D_BITS)) | (l1 << D_BITS) | l0,
            r)


@kernel(inline=True)
def _div_wide(H, L, n, r):
    """X' D + r = X n + c by long division from the top digit: (H, L, c)."""
    q, a = floor_divmod(H, n)
    z = a * D + (L >> (2 * D_BITS))
    q2 = div(z, n)
    z = (z - q2 * n) * D + ((L >> D_BITS) & DIGIT)
    q1 = div(z, n)
    z = (z - q1 * n) * D + (L & DIGIT)
    q0 = div(z, n)
    z = (z - q0 * n) * D + r
    q_ = div(z, n)
    return q * D + q2, (((q1 << D_BITS) | q0) << D_BITS) | q_, z - q_ * n


@kernel(inline=True)
def _increment(MH, ML, SH, SL, c1, c2, eps):
    """(u, den, r): r = sqrt(s / c2), den = r + eps, u = (m / c1) / den (`adam.increment`)."""
    r = np.sqrt(_from_wide(SH, SL) / c2)
    den = r + eps
    return (_from_wide(MH, ML) / c1) / den, den, r


# --- the passes over one block's lanes ---------------------------------------------------------

@kernel
def _pop_and_mul(x, H, L, n, r):
    """Bits back, all lanes: c = decode(x over n);  X n + c = X' D + r."""
    for i in range(len(x)):
        x[i], c = decode(x[i], n[i])
        H[i], L[i], r[i] = _mul_wide(H[i], L[i], n[i], c)


@kernel
def _encode_over_D(x, r):
    """Encode r over D into every lane (after `_spill_over_D`)."""
    for i in range(len(x)):
        x[i] = encode(x[i], np.int64(r[i]), D)


@kernel
def _update(W, MH, ML, SH, SL, g, u, alpha, b1, b2, c1, c2, eps):
    """m <- m + fix((1 - beta1) g);  s <- s + fix((1 - beta2) (g g));  u = increment(m, s);
    w <- w - fix(alpha u). Returns the first lane failing each check: the increment of m out of
    range, m wraps; likewise s; alpha u out of range, w wraps."""
    P = len(W)
    f1 = f2 = f3 = f4 = f5 = f6 = P
    for i in range(P):
        inc = (1.0 - b1[i]) * g[i]
        f1 = first(f1, i, not abs(inc) < LIMIT, P)
        h, lo = _to_wide(inc)
        MH[i], ML[i], wrapped = _wide_add(MH[i], ML[i], h, lo)
        f2 = first(f2, i, wrapped, P)
        inc = (1.0 - b2[i]) * (g[i] * g[i])
        f3 = first(f3, i, not abs(inc) < LIMIT, P)
        h, lo = _to_wide(inc)
        SH[i], SL[i], wrapped = _wide_add(SH[i], SL[i], h, lo)
        f4 = first(f4, i, wrapped, P)
        ui = _increment(MH[i], ML[i], SH[i], SL[i], c1[i], c2[i], eps[i])[0]
        u[i] = ui
        dw = alpha[i] * ui
        f5 = first(f5, i, not abs(dw) < LIMIT, P)
        b = fix(dw)
        w = W[i] - b
        f6 = first(f6, i, sub_wraps(W[i], b, w), P)
        W[i] = w
    return f1, f2, f3, f4, f5, f6


@kernel
def _decay(x, H, L, n, r, stack, top):
    """One exact multiplication by beta = n / D of a block's lanes: pop over n and multiply, the
    block's words off and on its stack, push over D. The new top, -1 when the stack ran dry."""
    _pop_and_mul(x, H, L, n, r)
    t = refill(x, stack, top)
    if t < 0:
        return t
    t = spill_over_D(x, stack, t)
    _encode_over_D(x, r)
    return t


@kernel
def _sub_and_div(H, L, x, inc, n, sym, f):
    """X <- X - fix(inc);  r = decode(x over D);  X D + r = X' n + c  (c into sym and its
    frequency into f, for the push over n). Returns the first lane out of range and the first
    that wraps."""
    P = len(x)
    f1 = f2 = P
    for i in range(P):
        f1 = first(f1, i, not abs(inc[i]) < LIMIT, P)
        h, lo = _to_wide(inc[i])
        Hi, Li, wrapped = _wide_sub(H[i], L[i], h, lo)
        f2 = first(f2, i, wrapped, P)
        x[i], r = decode(x[i], D)
        H[i], L[i], c = _div_wide(Hi, Li, n[i], r)
        sym[i] = c
        f[i] = freq(c, n[i])
    return f1, f2


@kernel
def _undecay(H, L, x, inc, n, sym, f, stack, top):
    """The inverse of `_decay` after subtracting fix(inc): the new top (-1 when the stack ran
    dry) and the checks of `_sub_and_div`."""
    checks = _sub_and_div(H, L, x, inc, n, sym, f)
    t = refill(x, stack, top)
    if t < 0:
        return t, checks
    t = spill(x, f, stack, t)
    encode_all(x, sym, n)
    return t, checks


@kernel
def _m_increments(g, b1, out):
    """out = (1 - beta1) g."""
    for i in range(len(g)):
        out[i] = (1.0 - b1[i]) * g[i]


@kernel
def _s_increments(g, b2, out):
    """out = (1 - beta2) (g g)."""
    for i in range(len(g)):
        out[i] = (1.0 - b2[i]) * (g[i] * g[i])


@kernel
def _unstep_w_adjoint(W, MH, ML, SH, SL, dw, dm, ds, w, u, du, q, qr, alpha, c1, c2, eps):
    """u = increment(m, s);  w <- w + fix(alpha u), w as floats;  du = -(alpha dw');
    q = u / den, q r;  dm' += du / (c1 den);  ds' -= du q / (2 c2 r) where r > 0. Returns the
    first lane out of range and the first that wraps."""
    P = len(W)
    f1 = f2 = P
    for i in range(P):
        ui, den, r = _increment(MH[i], ML[i], SH[i], SL[i], c1[i], c2[i], eps[i])
        step = alpha[i] * ui
        f1 = first(f1, i, not abs(step) < LIMIT, P)
        b = fix(step)
        Wi = W[i] + b
        f2 = first(f2, i, add_wraps(W[i], b, Wi), P)
        W[i] = Wi
        w[i] = Wi * UNIT
        u[i] = ui
        dui = -(alpha[i] * dw[i])
        qi = ui / den
        du[i], q[i], qr[i] = dui, qi, qi * r
        dm[i] = dm[i] + dui / (c1[i] * den)
        if r > 0:
            ds[i] = ds[i] - (dui * qi) / ((2.0 * c2[i]) * r)
    return f1, f2


@kernel
def _moments_adjoint(MH, ML, SH, SL, g, dm, ds, b1, b2, a1, a2, dg):
    """a1 = m - g;  a2 = s - g g;  dg = (1 - beta1) dm' + (2 (1 - beta2)) (g ds')."""
    for i in range(len(g)):
        a1[i] = _from_wide(MH[i], ML[i]) - g[i]
        a2[i] = _from_wide(SH[i], SL[i]) - g[i] * g[i]
        dg[i] = (1.0 - b1[i]) * dm[i] + (2.0 * (1.0 - b2[i])) * (g[i] * ds[i])


@kernel
def _after(dw, d_lam, dm, ds, Hdg, lam, w, dg, b1, b2):
    """dw <- dw' + (H dg + lam dg);  d_lam <- d_lam + w dg;  dm <- beta1 dm';  ds <- beta2 ds'."""
    for i in range(len(dw)):
        dw[i] = dw[i] + (Hdg[i] + lam[i] * dg[i])
        d_lam[i] = d_lam[i] + w[i] * dg[i]
        dm[i] = dm[i] * b1[i]
        ds[i] = ds[i] * b2[i]


# --- the passes over blocks b0 .. b1-1 -----------------------------------------------------------

class ForwardWork(NamedTuple):
    """`forward`'s scratch (g; u; r for the pushes over D) and its failure table."""

    g: np.ndarray
    u: np.ndarray
    r: np.ndarray
    fails: np.ndarray


class BeforeWork(NamedTuple):
    """`reverse_before`'s output w_t, its scratch (u, du, q, q r), its segments' dot products
    (of dw' and u, du and q, du and q r) and failure table."""

    w: np.ndarray
    u: np.ndarray
    du: np.ndarray
    q: np.ndarray
    qr: np.ndarray
    dots: np.ndarray
    fails: np.ndarray


class MomentsWork(NamedTuple):
    """`reverse_moments`' scratch (g; inc, the increment undone; a1 = m - g, a2 = s - g g; sym
    and f for the pushes over n), its output dg, its segments' dot products (of dm' and a1, ds'
    and a2) and failure table."""

    g: np.ndarray
    inc: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    dg: np.ndarray
    sym: np.ndarray
    f: np.ndarray
    dots: np.ndarray
    fails: np.ndarray


@kernel
def _forward_blocks(W, state, buf, grad, h, work, b0, b1):
    """`adam.forward` on blocks b0 .. b1-1: g = parts + lam w (the first non-finite lane into
    fails[b, BAD], and then no step for the block), m's and s's decays, the additions and the
    weight update, w <- W 2**-52."""
    P, m, s = len(W), state.m, state.s
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        if not block_gradient(grad, work.g, b, work.fails, BAD):
            continue
        x, r = buf.x[lo:hi], work.r[lo:hi]
        t = _decay(x, m.H[lo:hi], m.L[lo:hi], h.n1[lo:hi], r, buf.stack[b], buf.top[b])
        if t >= 0:
            buf.peak[b] = max(buf.peak[b], t)
            t = _decay(x, s.H[lo:hi], s.L[lo:hi], h.n2[lo:hi], r, buf.stack[b], t)
        if t < 0:
            work.fails[b, DRY] = lo
            continue
        buf.top[b] = t
        buf.peak[b] = max(buf.peak[b], t)
        checks = _update(W[lo:hi], m.H[lo:hi], m.L[lo:hi], s.H[lo:hi], s.L[lo:hi],
                         work.g[lo:hi], work.u[lo:hi], h.alpha[lo:hi], h.b1[lo:hi],
                         h.b2[lo:hi], h.c1[lo:hi], h.c2[lo:hi], h.eps[lo:hi])
        for k in range(6):
            report(work.fails, b, k, lo, hi, checks[k], P)
        to_floats(W[lo:hi], grad.w[lo:hi])


@kernel
def _reverse_before_blocks(W, state, adj, h, segs, work, b0, b1):
    """`adam.reverse_before` on blocks b0 .. b1-1: the exact w_t, the adjoints through u, and the
    segments of dots(dw', u), dots(du, q) and dots(du, q r) into work.dots[0], [1], [2]."""
    P, m, s = len(W), state.m, state.s
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        checks = _unstep_w_adjoint(W[lo:hi], m.H[lo:hi], m.L[lo:hi], s.H[lo:hi], s.L[lo:hi],
                                   adj.dw[lo:hi], adj.dm[lo:hi], adj.ds[lo:hi], work.w[lo:hi],
                                   work.u[lo:hi], work.du[lo:hi], work.q[lo:hi],
                                   work.qr[lo:hi], h.alpha[lo:hi], h.c1[lo:hi], h.c2[lo:hi],
                                   h.eps[lo:hi])
        for k in range(2):
            report(work.fails, b, k, lo, hi, checks[k], P)
        segment_dots(adj.dw, work.u, segs, b, work.dots[0])
        segment_dots(work.du, work.q, segs, b, work.dots[1])
        segment_dots(work.du, work.qr, segs, b, work.dots[2])


@kernel
def _reverse_moments_blocks(state, buf, adj, grad, h, segs, work, b0, b1):
    """`adam.reverse_moments` on blocks b0 .. b1-1: g = parts + lam w, s_t then m_t exactly
    (checks 0, 1 and 2, 3), dg, and the segments of dots(dm', m - g) and dots(ds', s - g g) into
    work.dots[0], [1]."""
    P, m, s = len(buf.x), state.m, state.s
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        g, inc, x = work.g[lo:hi], work.inc[lo:hi], buf.x[lo:hi]
        sum_parts(grad.G[:, lo:hi], g)
        penalty(g, grad.lam[lo:hi], grad.w[lo:hi])
        _s_increments(g, h.b2[lo:hi], inc)
        t, checks = _undecay(s.H[lo:hi], s.L[lo:hi], x, inc, h.n2[lo:hi], work.sym[lo:hi],
                             work.f[lo:hi], buf.stack[b], buf.top[b])
        for k in range(2):
            report(work.fails, b, k, lo, hi, checks[k], P)
        if t >= 0:
            buf.peak[b] = max(buf.peak[b], t)
            _m_increments(g, h.b1[lo:hi], inc)
            t, checks = _undecay(m.H[lo:hi], m.L[lo:hi], x, inc, h.n1[lo:hi], work.sym[lo:hi],
                                 work.f[lo:hi], buf.stack[b], t)
            for k in range(2):
                report(work.fails, b, 2 + k, lo, hi, checks[k], P)
        if t < 0:
            work.fails[b, DRY] = lo
            continue
        buf.top[b] = t
        buf.peak[b] = max(buf.peak[b], t)
        _moments_adjoint(m.H[lo:hi], m.L[lo:hi], s.H[lo:hi], s.L[lo:hi], g, adj.dm[lo:hi],
                         adj.ds[lo:hi], h.b1[lo:hi], h.b2[lo:hi], work.a1[lo:hi],
                         work.a2[lo:hi], work.dg[lo:hi])
        segment_dots(adj.dm, work.a1, segs, b, work.dots[0])
        segment_dots(adj.ds, work.a2, segs, b, work.dots[1])


@kernel
def _reverse_after_blocks(adj, hvp, h, Hdg, b0, b1):
    """`adam.reverse_after` on blocks b0 .. b1-1 (hvp.u is dg; Hdg scratch)."""
    P = len(adj.dw)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        sum_parts(hvp.H[:, lo:hi], Hdg[lo:hi])
        _after(adj.dw[lo:hi], adj.d_lam[lo:hi], adj.dm[lo:hi], adj.ds[lo:hi], Hdg[lo:hi],
               hvp.lam[lo:hi], hvp.w[lo:hi], hvp.u[lo:hi], h.b1[lo:hi], h.b2[lo:hi])


# --- the public wrappers (revlearn.adam's signatures; arrays updated in place) -----------------

def _hyper(h):
    """A StepHyper's arrays as the kernels take them."""
    return refadam.StepHyper(floats(h.alpha), floats(h.b1), floats(h.b2), ints(h.n1), ints(h.n2),
                             floats(h.c1), floats(h.c2), floats(h.eps))


def _moments(state):
    """Moments' wide arrays as the kernels take them."""
    return refadam.Moments(*(Wide(ints(a.H), ints(a.L)) for a in state))


def forward(W, state, buf, w, G, lam, h, workers=SERIAL):
    """`adam.forward`: (W, state, buf, w_{t+1}, bad); W, the moments, the buffer and w updated in
    place."""
    W, state, grad, h = ints(W), _moments(state), gradient(G, lam, w), _hyper(h)
    buf = buffer(buf, 2 * LANES)  # two pushes, a word each
    P, blocks = len(W), len(buf.top)
    work = ForwardWork(scratch("adam g", P), scratch("adam u", P),
                       scratch("adam r", P, np.uint16), no_failures(blocks, P, CHECKS))
    share(workers, blocks, lambda b0, b1: _forward_blocks(W, state, buf, grad, h, work, b0, b1))
    bad = int(work.fails[:, BAD].min())
    if bad < P:
        return W, state, buf, grad.w, bad
    g, u = work.g, work.u
    raise_first(work.fails, (lambda i: (1.0 - h.b1[i]) * g[i], None,
                             lambda i: (1.0 - h.b2[i]) * (g[i] * g[i]), None,
                             lambda i: h.alpha[i] * u[i], None), P, DRY)
    return W, state, buf, grad.w, -1


def reverse_before(W, state, adj, h, offsets, workers=SERIAL):
    """`adam.reverse_before`: (W_t, w_t, d_alpha_t, e_t, k_t); W and adj updated in place (w_t is
    an array this thread's next call overwrites)."""
    W, state, h = ints(W), _moments(state), _hyper(h)
    P, segs, blocks = len(W), segments(offsets, len(W)), lane_blocks(len(W))
    work = BeforeWork(scratch("adam w", P), scratch("adam u", P), scratch("adam du", P),
                      scratch("adam q", P), scratch("adam qr", P), np.empty((3, len(segs.list))),
                      no_failures(blocks, P, CHECKS))
    share(workers, blocks, lambda b0, b1: _reverse_before_blocks(W, state, adj, h, segs.arrays,
                                                                 work, b0, b1))
    raise_first(work.fails, (lambda i: h.alpha[i] * work.u[i], None), P, DRY)
    d_alpha, e, k = (segs.by_group(d) for d in work.dots)
    return W, work.w, -d_alpha, e, k


def reverse_moments(state, buf, adj, G, lam, w, h, offsets, workers=SERIAL):
    """`adam.reverse_moments`: (state_t, buf, dg, d1_t, d2_t); the moments, the buffer and adj
    updated in place (dg is an array this thread's next call overwrites)."""
    state, grad, h = _moments(state), gradient(G, lam, w), _hyper(h)
    buf = buffer(buf, 2 * LANES)
    P, blocks = len(buf.x), len(buf.top)
    segs = segments(offsets, P)
    work = MomentsWork(scratch("adam g", P), scratch("adam inc", P), scratch("adam a1", P),
                       scratch("adam a2", P), scratch("adam dg", P),
                       scratch("adam sym", P, np.uint16), scratch("adam f", P, np.uint32),
                       np.empty((2, len(segs.list))), no_failures(blocks, P, CHECKS))
    share(workers, blocks, lambda b0, b1: _reverse_moments_blocks(
        state, buf, adj, grad, h, segs.arrays, work, b0, b1))
    g = work.g
    raise_first(work.fails, (lambda i: (1.0 - h.b2[i]) * (g[i] * g[i]), None,
                             lambda i: (1.0 - h.b1[i]) * g[i], None), P, DRY)
    d1, d2 = (segs.by_group(d) for d in work.dots)
    return state, buf, work.dg, d1, d2


def reverse_after(adj, H, lam, w, dg, h, workers=SERIAL):
    """`adam.reverse_after`: adj updated in place."""
    P = len(adj.dw)
    curv, h, Hdg = hvp(H, lam, w, dg), _hyper(h), scratch("adam Hdg", P)
    share(workers, lane_blocks(P), lambda b0, b1: _reverse_after_blocks(adj, curv, h, Hdg, b0,
                                                                        b1))


ADAM = refadam.Lanes(forward, reverse_before, reverse_moments, reverse_after)
