"""Exact fixed-point arithmetic for w and v (DESIGN §4).

A value x is held as the int64 round(x 2**52), so |x| < 2**11. Adding a float increment adds its
fixed-point rounding; the reverse pass recomputes the same increment from the same state and
subtracts it, so add and subtract are exact. Leaving the range raises `RangeError` (never a silent
wrap); `sgd` turns it into a message that names the step and the group.

Multiplying by gamma = n / D, D = 2**16, is made exact with bits back: the low bits the product
cannot hold go to the information buffer, and the bits it needs come from it,

    s = pop(buffer, uniform over n)
    v n + s = v' D + r,    0 <= r < D          (v, s) <-> (v', r) is a bijection of integers
    push(buffer, r, uniform over D)

and the reverse runs the same lines backwards. |v' - gamma v| < 2**-52, one unit in the last place.
DESIGN §4 writes the paper's order (push v mod D, divide, then pop and multiply), which is exact
too but rounds to 2**-52 n, up to 2**-36; this order keeps the full precision, and splitting
v = hi D + lo keeps every intermediate within 64 bits:

    y = lo n + s   (< n D <= 2**32),   v' = hi n + y div D,   r = y mod D
"""

import numpy as np

from . import ans

FRAC_BITS = 52
SCALE = float(1 << FRAC_BITS)
LIMIT = 2.0 ** (63 - FRAC_BITS)
D_BITS = 16
D = 1 << D_BITS


class RangeError(ArithmeticError):
    """A value left the fixed-point range; `index` is the first offending entry."""

    def __init__(self, index, value):
        super().__init__(f"entry {index} left the fixed-point range (|x| < {LIMIT:g}): {value!r}")
        self.index, self.value = int(index), value


def to_fixed(x):
    """round(x 2**52) as int64; `RangeError` where |x| >= 2**11 or x is not finite."""
    bad = ~(np.abs(x) < LIMIT)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RangeError(i, float(x[i]))
    return np.rint(x * SCALE).astype(np.int64)


def from_fixed(a):
    """The float64 value a 2**-52 (exact for |value| < 2**1, correctly rounded beyond)."""
    return a * (1.0 / SCALE)


def add(a, b):
    """a + b on fixed-point vectors, exact; `RangeError` instead of a wrap-around."""
    s = a + b
    _raise_if(((a ^ s) & (b ^ s)) < 0)  # wrapped: a and b share a sign that s lacks
    return s


def sub(a, b):
    """a - b on fixed-point vectors, exact; `RangeError` instead of a wrap-around."""
    s = a - b
    _raise_if(((a ^ b) & (a ^ s)) < 0)  # wrapped: a and b differ in sign and s lacks a's
    return s


def _raise_if(wrapped):
    if wrapped.any():
        raise RangeError(int(np.flatnonzero(wrapped)[0]), "overflow")


def quantize_gamma(gamma):
    """n = round(gamma D), the integer numerator of the effective gamma = n / D."""
    return np.rint(np.asarray(gamma) * D).astype(np.int64)


def mul_gamma(v, n, buf):
    """v n / D exactly, per lane: (v, buf) -> (v', buf)."""
    buf, s = ans.pop(buf, n)
    hi, lo = v >> D_BITS, v & (D - 1)
    y = lo * n + s
    v = hi * n + (y >> D_BITS)
    return v, ans.push(buf, y & (D - 1), D)


def div_gamma(v, n, buf):
    """The inverse of `mul_gamma`: v' D / n exactly, per lane: (v', buf) -> (v, buf)."""
    buf, r = ans.pop(buf, D)
    hi, lo = v // n, v % n
    z = lo * D + r
    v = hi * D + z // n
    return v, ans.push(buf, z % n, n)
