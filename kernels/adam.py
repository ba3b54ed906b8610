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

Threads take consecutive ranges of blocks (`kernels.exact._share`); the segments' dot products are
added into each group's in lane order afterwards, so the bits do not depend on the thread count.
Errors are found as refimpl finds them: each check reports the first lane where it failed, and the
wrapper raises the error of the first check, in refimpl's order, that failed.
"""

import numpy as np

from revlearn import adam as refadam
from revlearn import ans
from revlearn import lanes as reflanes
from revlearn.ans import Buffer
from revlearn.fixedpoint import D_BITS, LIMIT, D
from revlearn.partition import LANES, lane_blocks
from revlearn.threads import SERIAL
from revlearn.wide import HI_UNIT, LO_BITS, LO_MASK, LO_UNIT, SCALE, SPLIT, Wide

from .exact import (
    UNIT,
    _add_wraps,
    _decode,
    _div,
    _divmod,
    _encode,
    _encode_all,
    _first,
    _fix,
    _freq,
    _raise_first,
    _refill,
    _share,
    _spill,
    _spill_over_D,
    _sub_wraps,
)
from .jit import floats, ints, kernel
from .lanes import (
    _block_gradient,
    _penalty,
    _rows,
    _scratch,
    _segment_dots,
    _segments,
    _sum_parts,
    _to_floats,
)

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
    return hi2, lo & LO_MASK, _add_wraps(aH, bH, hi) | (hi2 < hi)


@kernel(inline=True)
def _wide_sub(aH, aL, bH, bL):
    """a - b: (H, L, wrapped), the high word wrapped in either subtraction."""
    lo = aL - bL
    hi = aH - bH
    hi2 = hi + (lo >> LO_BITS)
    return hi2, lo & LO_MASK, _sub_wraps(aH, bH, hi) | (hi2 > hi)


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
    q, a = _divmod(H, n)
    z = a * D + (L >> (2 * D_BITS))
    q2 = _div(z, n)
    z = (z - q2 * n) * D + ((L >> D_BITS) & DIGIT)
    q1 = _div(z, n)
    z = (z - q1 * n) * D + (L & DIGIT)
    q0 = _div(z, n)
    z = (z - q0 * n) * D + r
    q_ = _div(z, n)
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
        x[i], c = _decode(x[i], n[i])
        H[i], L[i], r[i] = _mul_wide(H[i], L[i], n[i], c)


@kernel
def _encode_over_D(x, r):
    """Encode r over D into every lane (after `_spill_over_D`)."""
    for i in range(len(x)):
        x[i] = _encode(x[i], np.int64(r[i]), D)


@kernel
def _update(W, MH, ML, SH, SL, g, u, alpha, b1, b2, c1, c2, eps):
    """m <- m + fix((1 - beta1) g);  s <- s + fix((1 - beta2) (g g));  u = increment(m, s);
    w <- w - fix(alpha u). Returns the first lane failing each check: the increment of m out of
    range, m wraps; likewise s; alpha u out of range, w wraps."""
    P = len(W)
    f1 = f2 = f3 = f4 = f5 = f6 = P
    for i in range(P):
        inc = (1.0 - b1[i]) * g[i]
        f1 = _first(f1, i, not abs(inc) < LIMIT, P)
        h, lo = _to_wide(inc)
        MH[i], ML[i], wrapped = _wide_add(MH[i], ML[i], h, lo)
        f2 = _first(f2, i, wrapped, P)
        inc = (1.0 - b2[i]) * (g[i] * g[i])
        f3 = _first(f3, i, not abs(inc) < LIMIT, P)
        h, lo = _to_wide(inc)
        SH[i], SL[i], wrapped = _wide_add(SH[i], SL[i], h, lo)
        f4 = _first(f4, i, wrapped, P)
        ui = _increment(MH[i], ML[i], SH[i], SL[i], c1[i], c2[i], eps[i])[0]
        u[i] = ui
        dw = alpha[i] * ui
        f5 = _first(f5, i, not abs(dw) < LIMIT, P)
        b = _fix(dw)
        w = W[i] - b
        f6 = _first(f6, i, _sub_wraps(W[i], b, w), P)
        W[i] = w
    return f1, f2, f3, f4, f5, f6


@kernel
def _decay(x, H, L, n, r, stack, top):
    """One exact multiplication by beta = n / D of a block's lanes: pop over n and multiply, the
    block's words off and on its stack, push over D. The new top, -1 when the stack ran dry."""
    _pop_and_mul(x, H, L, n, r)
    t = _refill(x, stack, top)
    if t < 0:
        return t
    t = _spill_over_D(x, stack, t)
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
        f1 = _first(f1, i, not abs(inc[i]) < LIMIT, P)
        h, lo = _to_wide(inc[i])
        Hi, Li, wrapped = _wide_sub(H[i], L[i], h, lo)
        f2 = _first(f2, i, wrapped, P)
        x[i], r = _decode(x[i], D)
        H[i], L[i], c = _div_wide(Hi, Li, n[i], r)
        sym[i] = c
        f[i] = _freq(c, n[i])
    return f1, f2


@kernel
def _undecay(H, L, x, inc, n, sym, f, stack, top):
    """The inverse of `_decay` after subtracting fix(inc): the new top (-1 when the stack ran
    dry) and the checks of `_sub_and_div`."""
    checks = _sub_and_div(H, L, x, inc, n, sym, f)
    t = _refill(x, stack, top)
    if t < 0:
        return t, checks
    t = _spill(x, f, stack, t)
    _encode_all(x, sym, n)
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
        f1 = _first(f1, i, not abs(step) < LIMIT, P)
        b = _fix(step)
        Wi = W[i] + b
        f2 = _first(f2, i, _add_wraps(W[i], b, Wi), P)
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

@kernel
def _forward_blocks(W, M, S, x, stack, top, peak, w, G, lam, hyp, n, g, u, r, b0, b1, fails):
    """`adam.forward` on blocks b0 .. b1-1 (hyp = (alpha, beta1, beta2, c1, c2, eps), n = (n1,
    n2), M = (H, L) of m, S of s): g = parts + lam w (the first non-finite lane into
    fails[b, BAD], and then no step for the block), m's and s's decays, the additions and the
    weight update, w <- W 2**-52."""
    P = len(W)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        if not _block_gradient(G, lam, w, g, b, fails, BAD):
            continue
        t = _decay(x[lo:hi], M[0][lo:hi], M[1][lo:hi], n[0][lo:hi], r[lo:hi], stack[b], top[b])
        if t >= 0:
            peak[b] = max(peak[b], t)
            t = _decay(x[lo:hi], S[0][lo:hi], S[1][lo:hi], n[1][lo:hi], r[lo:hi], stack[b], t)
        if t < 0:
            fails[b, DRY] = lo
            continue
        top[b] = t
        peak[b] = max(peak[b], t)
        checks = _update(W[lo:hi], M[0][lo:hi], M[1][lo:hi], S[0][lo:hi], S[1][lo:hi], g[lo:hi],
                         u[lo:hi], hyp[0][lo:hi], hyp[1][lo:hi], hyp[2][lo:hi], hyp[3][lo:hi],
                         hyp[4][lo:hi], hyp[5][lo:hi])
        for k in range(6):
            fails[b, k] = lo + checks[k] if checks[k] < hi - lo else P
        _to_floats(W[lo:hi], w[lo:hi])


@kernel
def _reverse_before_blocks(W, M, S, dw, dm, ds, w, u, du, q, qr, hyp, seg_first, seg_lo,
                           seg_hi, seg_dots, b0, b1, fails):
    """`adam.reverse_before` on blocks b0 .. b1-1: the exact w_t, the adjoints through u, and the
    segments of dots(dw', u), dots(du, q) and dots(du, q r) into seg_dots[0], [1], [2]."""
    P = len(W)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        checks = _unstep_w_adjoint(W[lo:hi], M[0][lo:hi], M[1][lo:hi], S[0][lo:hi], S[1][lo:hi],
                                   dw[lo:hi], dm[lo:hi], ds[lo:hi], w[lo:hi], u[lo:hi], du[lo:hi],
                                   q[lo:hi], qr[lo:hi], hyp[0][lo:hi], hyp[3][lo:hi],
                                   hyp[4][lo:hi], hyp[5][lo:hi])
        for k in range(2):
            fails[b, k] = lo + checks[k] if checks[k] < hi - lo else P
        s0, s1 = seg_first[b], seg_first[b + 1]
        _segment_dots(dw, u, seg_lo, seg_hi, s0, s1, seg_dots[0])
        _segment_dots(du, q, seg_lo, seg_hi, s0, s1, seg_dots[1])
        _segment_dots(du, qr, seg_lo, seg_hi, s0, s1, seg_dots[2])


@kernel
def _reverse_moments_blocks(M, S, x, stack, top, peak, dm, ds, G, lam, w, hyp, n, g, inc, a1,
                            a2, dg, sym, f, seg_first, seg_lo, seg_hi, seg_dots, b0, b1, fails):
    """`adam.reverse_moments` on blocks b0 .. b1-1: g = parts + lam w, s_t then m_t exactly
    (checks 0, 1 and 2, 3), dg, and the segments of dots(dm', m - g) and dots(ds', s - g g) into
    seg_dots[0], [1]."""
    P = len(x)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        _sum_parts(G[:, lo:hi], g[lo:hi])
        _penalty(g[lo:hi], lam[lo:hi], w[lo:hi])
        _s_increments(g[lo:hi], hyp[2][lo:hi], inc[lo:hi])
        t, checks = _undecay(S[0][lo:hi], S[1][lo:hi], x[lo:hi], inc[lo:hi], n[1][lo:hi],
                             sym[lo:hi], f[lo:hi], stack[b], top[b])
        for k in range(2):
            fails[b, k] = lo + checks[k] if checks[k] < hi - lo else P
        if t >= 0:
            peak[b] = max(peak[b], t)
            _m_increments(g[lo:hi], hyp[1][lo:hi], inc[lo:hi])
            t, checks = _undecay(M[0][lo:hi], M[1][lo:hi], x[lo:hi], inc[lo:hi], n[0][lo:hi],
                                 sym[lo:hi], f[lo:hi], stack[b], t)
            for k in range(2):
                fails[b, 2 + k] = lo + checks[k] if checks[k] < hi - lo else P
        if t < 0:
            fails[b, DRY] = lo
            continue
        top[b] = t
        peak[b] = max(peak[b], t)
        _moments_adjoint(M[0][lo:hi], M[1][lo:hi], S[0][lo:hi], S[1][lo:hi], g[lo:hi], dm[lo:hi],
                         ds[lo:hi], hyp[1][lo:hi], hyp[2][lo:hi], a1[lo:hi], a2[lo:hi], dg[lo:hi])
        s0, s1 = seg_first[b], seg_first[b + 1]
        _segment_dots(dm, a1, seg_lo, seg_hi, s0, s1, seg_dots[0])
        _segment_dots(ds, a2, seg_lo, seg_hi, s0, s1, seg_dots[1])


@kernel
def _reverse_after_blocks(dw, d_lam, dm, ds, H, lam, w, dg, hyp, Hdg, b0, b1):
    """`adam.reverse_after` on blocks b0 .. b1-1."""
    P = len(dw)
    for b in range(b0, b1):
        lo, hi = b * LANES, min(b * LANES + LANES, P)
        _sum_parts(H[:, lo:hi], Hdg[lo:hi])
        _after(dw[lo:hi], d_lam[lo:hi], dm[lo:hi], ds[lo:hi], Hdg[lo:hi], lam[lo:hi], w[lo:hi],
               dg[lo:hi], hyp[1][lo:hi], hyp[2][lo:hi])


# --- the public wrappers (revlearn.adam's signatures; arrays updated in place) -----------------

def _hyper(h):
    """(alpha, beta1, beta2, c1, c2, eps) and (n1, n2) of a StepHyper as the kernels take them."""
    return (tuple(floats(a) for a in (h.alpha, h.b1, h.b2, h.c1, h.c2, h.eps)),
            (ints(h.n1), ints(h.n2)))


def _wide(a):
    return (ints(a.H), ints(a.L))


def _no_failures(blocks, P):
    return np.full((blocks, CHECKS), P, np.int64)


def forward(W, state, buf, w, G, lam, h, workers=SERIAL):
    """`adam.forward`: (W, state, buf, w_{t+1}, bad); W, the moments, the buffer and w updated in
    place."""
    W, x, w = ints(W), ints(buf.x), floats(w)
    M, S = _wide(state.m), _wide(state.s)
    top, peak = ints(buf.top), ints(buf.peak)
    stack = ans.reserve(buf.stack, top + 2 * LANES)  # two pushes, a word each
    P = len(W)
    g, u, r = _scratch("adam g", P), _scratch("adam u", P), _scratch("adam r", P, np.uint16)
    fails = _no_failures(len(top), P)
    hyp, n = _hyper(h)
    G, lam = _rows(G), floats(lam)
    _share(workers, len(top), lambda b0, b1: _forward_blocks(
        W, M, S, x, stack, top, peak, w, G, lam, hyp, n, g, u, r, b0, b1, fails))
    state = refadam.Moments(Wide(*M), Wide(*S))
    bad = int(fails[:, BAD].min())
    if bad < P:
        return W, state, Buffer(x, stack, top, peak), w, bad
    alpha, b1, b2 = hyp[:3]
    _raise_first(fails, (lambda i: (1.0 - b1[i]) * g[i], None,
                         lambda i: (1.0 - b2[i]) * (g[i] * g[i]), None,
                         lambda i: alpha[i] * u[i], None), P, DRY)
    return W, state, Buffer(x, stack, top, peak), w, -1


def reverse_before(W, state, adj, h, offsets, workers=SERIAL):
    """`adam.reverse_before`: (W_t, w_t, d_alpha_t, e_t, k_t); W and adj updated in place (w_t is
    an array this thread's next call overwrites)."""
    W, M, S = ints(W), _wide(state.m), _wide(state.s)
    P, segs = len(W), _segments(offsets, len(W))
    w, u, du = _scratch("adam w", P), _scratch("adam u", P), _scratch("adam du", P)
    q, qr = _scratch("adam q", P), _scratch("adam qr", P)
    seg_dots = np.empty((3, len(segs.list)))
    fails = _no_failures(lane_blocks(P), P)
    hyp, _ = _hyper(h)
    _share(workers, lane_blocks(P), lambda b0, b1: _reverse_before_blocks(
        W, M, S, adj.dw, adj.dm, adj.ds, w, u, du, q, qr, hyp, segs.first, segs.lo, segs.hi,
        seg_dots, b0, b1, fails))
    _raise_first(fails, (lambda i: hyp[0][i] * u[i], None), P, DRY)
    d_alpha, e, k = (reflanes.by_group(d, segs.list, segs.G) for d in seg_dots)
    return W, w, -d_alpha, e, k


def reverse_moments(state, buf, adj, G, lam, w, h, offsets, workers=SERIAL):
    """`adam.reverse_moments`: (state_t, buf, dg, d1_t, d2_t); the moments, the buffer and adj
    updated in place (dg is an array this thread's next call overwrites)."""
    M, S = _wide(state.m), _wide(state.s)
    x, top, peak = ints(buf.x), ints(buf.top), ints(buf.peak)
    P, segs = len(x), _segments(offsets, len(x))
    stack = ans.reserve(buf.stack, top + 2 * LANES)
    g, inc, dg = _scratch("adam g", P), _scratch("adam inc", P), _scratch("adam dg", P)
    a1, a2 = _scratch("adam a1", P), _scratch("adam a2", P)
    sym, f = _scratch("adam sym", P, np.uint16), _scratch("adam f", P, np.uint32)
    seg_dots = np.empty((2, len(segs.list)))
    fails = _no_failures(len(top), P)
    hyp, n = _hyper(h)
    G, lam, w = _rows(G), floats(lam), floats(w)
    _share(workers, len(top), lambda b0, b1: _reverse_moments_blocks(
        M, S, x, stack, top, peak, adj.dm, adj.ds, G, lam, w, hyp, n, g, inc, a1, a2, dg, sym, f,
        segs.first, segs.lo, segs.hi, seg_dots, b0, b1, fails))
    b1, b2 = hyp[1], hyp[2]
    _raise_first(fails, (lambda i: (1.0 - b2[i]) * (g[i] * g[i]), None,
                         lambda i: (1.0 - b1[i]) * g[i], None), P, DRY)
    d1, d2 = (reflanes.by_group(d, segs.list, segs.G) for d in seg_dots)
    return refadam.Moments(Wide(*M), Wide(*S)), Buffer(x, stack, top, peak), dg, d1, d2


def reverse_after(adj, H, lam, w, dg, h, workers=SERIAL):
    """`adam.reverse_after`: adj updated in place."""
    P = len(adj.dw)
    hyp, _ = _hyper(h)
    H, lam, w, dg = _rows(H), floats(lam), floats(w), floats(dg)
    Hdg = _scratch("adam Hdg", P)
    _share(workers, lane_blocks(P), lambda b0, b1: _reverse_after_blocks(
        adj.dw, adj.d_lam, adj.dm, adj.ds, H, lam, w, dg, hyp, Hdg, b0, b1))


ADAM = refadam.Lanes(forward, reverse_before, reverse_moments, reverse_after)
