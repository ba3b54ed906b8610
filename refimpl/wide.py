"""Wide fixed point for Adam's moments m and s: 100 fractional bits in two int64 words, exactly.

A value x is held as the integer X = round(x 2**100), split as X = H 2**48 + L with 0 <= L < 2**48:
H = floor(x 2**52) is an int64 in the units of `fixedpoint` (so |x| < 2**11, as for w and v) and L
holds 48 more bits. `Wide(H, L)` is a pair of int64 arrays.

Why wider than w: Adam divides m by sqrt(s), so what matters is the relative precision of m and s,
and s starts at (1 - beta2) g**2, which for a gradient of 1e-5 is 1e-13: on 52 bits, a relative
error of 2e-3 (the weights of MNIST pixels that are rarely on see such gradients). On the paper's
MNIST net (`python -m bench.adam_grid`: T = 100, no penalty), float64 Adam with m and s rounded to
52, 62, 84 and 100 fractional bits ends with weights off plain float64 Adam's by 1.0, 4.2e-3,
8e-9 and 9.4e-14 of the largest weight; rounding w alone to its 52 bits costs 6.6e-13, so with
100 bits the moments' grid costs less than w's own.

Exact multiplication by beta = n / D, D = 2**16, with bits back (as `fixedpoint.mul_gamma`):

    c = pop(buffer, uniform over n)
    X n + c = X' D + r,    0 <= r < D          (X, c) <-> (X', r) is a bijection of integers
    push(buffer, r, uniform over D)

and the reverse runs the same lines backwards. |X' - beta X| < 1, one unit of 2**-100. Every
intermediate stays within 64 bits by working in 16-bit digits: X = ((Hh D + Hl) D**3 + L2 D**2 +
L1 D + L0), Hh = H div D (signed, floor), each digit in [0, D). Forward, from the lowest digit up,
carrying c < n:

    y = L0 n + c:  r = y mod D,    c = y div D
    y = L1 n + c:  L0' = y mod D,  c = y div D
    y = L2 n + c:  L1' = y mod D,  c = y div D
    y = Hl n + c:  L2' = y mod D,  H' = Hh n + y div D

Reverse, long division by n of X' D + r from the top digit down (remainders a < n, so each partial
dividend a D + digit < n D fits, and each quotient digit is < D):

    H' = q n + a (floor);  a D + L2' = q2 n + a;  a D + L1' = q1 n + a;  a D + L0' = q0 n + a;
    a D + r = q_ n + c;    H = q D + q2,  L = (q1 D + q0) D + q_,  push(c over n)

Conversions: to_wide(x) = (floor(y 2**-48), y - floor(y 2**-48) 2**48) with y = rint(x 2**100),
each step exact in float64; from_wide(H, L) = H 2**-52 + L 2**-100 (two roundings: int64 to
float64, then the addition; the same operations in every backend).

`revlearn.kernels.adam` computes the same per lane; here NumPy works on all lanes at once.
"""

from typing import NamedTuple

import numpy as np

from . import ans
from .fixedpoint import D_BITS, LIMIT, D, RangeError

FRAC_BITS = 100
LO_BITS = 48
LO_MASK = (1 << LO_BITS) - 1
DIGIT = D - 1
SCALE = 2.0**FRAC_BITS
HI_UNIT = 2.0**-52  # one unit of H
LO_UNIT = 2.0**-FRAC_BITS  # one unit of L
SPLIT = 2.0**LO_BITS


class Wide(NamedTuple):
    """x = (H 2**48 + L) 2**-100 per entry; H int64, 0 <= L < 2**48 int64."""

    H: np.ndarray
    L: np.ndarray


def zeros(P):
    """P entries at 0."""
    return Wide(np.zeros(P, np.int64), np.zeros(P, np.int64))


def to_wide(x):
    """round(x 2**100) as a Wide; `RangeError` where |x| >= 2**11 or x is not finite."""
    bad = ~(np.abs(x) < LIMIT)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RangeError(i, float(x[i]))
    y = np.rint(x * SCALE)
    hi = np.floor(y * (1.0 / SPLIT))
    return Wide(hi.astype(np.int64), (y - hi * SPLIT).astype(np.int64))


def from_wide(a):
    """The float64 value H 2**-52 + L 2**-100."""
    return a.H * HI_UNIT + a.L * LO_UNIT


def add(a, b):
    """a + b, exact (the carry of the low words into the high); `RangeError` at the first entry
    whose high word wraps, in either addition."""
    lo = a.L + b.L
    hi = a.H + b.H
    hi2 = hi + (lo >> LO_BITS)  # the carry, 0 or 1
    _raise_if((((a.H ^ hi) & (b.H ^ hi)) < 0) | (hi2 < hi))
    return Wide(hi2, lo & LO_MASK)


def sub(a, b):
    """a - b, exact (the borrow of the low words from the high); `RangeError` at the first entry
    whose high word wraps, in either subtraction."""
    lo = a.L - b.L
    hi = a.H - b.H
    hi2 = hi + (lo >> LO_BITS)  # the borrow, 0 or -1
    _raise_if((((a.H ^ b.H) & (a.H ^ hi)) < 0) | (hi2 > hi))
    return Wide(hi2, lo & LO_MASK)


def _raise_if(wrapped):
    if wrapped.any():
        raise RangeError(int(np.flatnonzero(wrapped)[0]), "overflow")


def mul_beta(a, n, buf):
    """a n / D exactly, per lane, bits back: (a, buf) -> (a', buf)."""
    buf, c = ans.pop(buf, n)
    y = (a.L & DIGIT) * n + c
    r, c = y & DIGIT, y >> D_BITS
    y = ((a.L >> D_BITS) & DIGIT) * n + c
    l0, c = y & DIGIT, y >> D_BITS
    y = (a.L >> (2 * D_BITS)) * n + c
    l1, c = y & DIGIT, y >> D_BITS
    y = (a.H & DIGIT) * n + c
    l2, hi = y & DIGIT, (a.H >> D_BITS) * n + (y >> D_BITS)
    return Wide(hi, (l2 << (2 * D_BITS)) | (l1 << D_BITS) | l0), ans.push(buf, r, D)


def div_beta(a, n, buf):
    """The inverse of `mul_beta`: a' D / n exactly, per lane: (a', buf) -> (a, buf)."""
    buf, r = ans.pop(buf, D)
    q, rem = a.H // n, a.H % n
    z = rem * D + (a.L >> (2 * D_BITS))
    q2, rem = z // n, z % n
    z = rem * D + ((a.L >> D_BITS) & DIGIT)
    q1, rem = z // n, z % n
    z = rem * D + (a.L & DIGIT)
    q0, rem = z // n, z % n
    z = rem * D + r
    q_, c = z // n, z % n
    return (Wide(q * D + q2, (((q1 << D_BITS) | q0) << D_BITS) | q_), ans.push(buf, c, n))
