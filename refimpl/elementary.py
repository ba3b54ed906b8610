"""exp, log and tanh as fixed sequences of IEEE basic operations: one definition, the same bits on
every backend, CPU and NumPy version.

NumPy's own `np.exp` and `np.tanh` dispatch to SIMD code that differs between CPUs (AVX2, AVX-512)
and NumPy versions, and Numba's round differently again, while Algorithm 2 must recompute every
g_t bit for bit. So the transcendental functions the MLP needs are written here once, with + - * /,
comparisons, `rint` and bit manipulation only (no fused multiply-add, no approximate reciprocals),
and evaluated by both backends from this very source: NumPy runs each operation as a ufunc over the
array, and `revlearn.kernels.elementary` compiles the same functions with Numba, element by element
inside the MLP's loops. Each operation rounds once, in IEEE double precision, in the order written,
so the two give the same bits.

The primitives that differ between an array and a scalar are the functions below (`where`, `bits`,
`from_bits`, `to_int`, `to_float`); `revlearn.kernels.elementary` gives Numba a scalar version of
each. Selections evaluate both sides: the functions are branch-free, so the Numba loops vectorise.

    exp    fdlibm's e_exp.c (Sun Microsystems, 1993): x = k ln2 + r, |r| <= ln2/2, a degree-5
           polynomial in r**2 for exp(r), then 2**k applied as two exact powers of two so that one
           rounding gives the subnormal results. Error < 1 ulp (measured max 0.89).
    log    fdlibm's e_log.c: x = 2**k (1 + f), sqrt(2)/2 <= 1 + f < sqrt(2), s = f / (2 + f), a
           degree-7 polynomial in s**2. Error < 1 ulp (measured max 0.83).
    tanh   Cephes' tanh.c (Stephen Moshier, 1989): for |x| < 0.625 the odd rational
           x + x s P(s) / Q(s), s = x**2; beyond, 1 - 2 / (exp(2|x|) + 1) with the exp above.
           Error < 2 ulp (measured max 1.31, near |x| = 0.63).

The errors are measured against extended precision over the whole range (tests/test_elementary.py),
edge values included: +-0, subnormals, +-inf, NaN, the overflow and underflow thresholds.
"""

import numpy as np

INF = float("inf")
NAN = float("nan")

# --- the primitives (array versions; revlearn.kernels.elementary overloads them for Numba) ------


def where(c, a, b):
    """a where c holds, else b (both evaluated)."""
    return np.where(c, a, b)


def bits(x):
    """The IEEE bit pattern of float64 x as an int64."""
    return np.asarray(x, dtype=np.float64).view(np.int64)


def from_bits(i):
    """The float64 whose IEEE bit pattern is the int64 i."""
    return np.asarray(i, dtype=np.int64).view(np.float64)


def to_int(x):
    """An integral float64 as int64."""
    return np.asarray(x).astype(np.int64)


def to_float(i):
    """An int64 as float64 (exact for |i| < 2**53)."""
    return np.asarray(i).astype(np.float64)


# --- exp ------------------------------------------------------------------------------------

LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: k LN2_HI is exact for |k| < 2**11
LN2_LO = 1.90821492927058770002e-10  # ln 2 - LN2_HI
INV_LN2 = 1.44269504088896338700e00
EXP_P1 = 1.66666666666666019037e-01
EXP_P2 = -2.77777777770155933842e-03
EXP_P3 = 6.61375632143793436117e-05
EXP_P4 = -1.65339022054652515390e-06
EXP_P5 = 4.13813679705723846039e-08
EXP_HI, EXP_LO = 710.0, -746.0  # beyond, exp overflows to inf or rounds to 0 anyway


def exp_(x):
    """exp(x), element by element; the kernel both backends evaluate (see `exp`).

        k = rint(x / ln2),  r = (x - k LN2_HI) - k LN2_LO
        c = r - r2 (P1 + r2 (P2 + r2 (P3 + r2 (P4 + r2 P5)))),   r2 = r r
        exp(r) = 1 - ((k LN2_LO - r c / (2 - c)) - (x - k LN2_HI))
        exp(x) = (exp(r) 2**k1) 2**(k - k1),   k1 = k div 2
    """
    ok = x == x
    x = where(x > EXP_HI, EXP_HI, where(x < EXP_LO, EXP_LO, x))
    x = where(ok, x, 0.0)
    k = np.rint(x * INV_LN2)
    hi = x - k * LN2_HI
    lo = k * LN2_LO
    r = hi - lo
    r2 = r * r
    c = r - r2 * (EXP_P1 + r2 * (EXP_P2 + r2 * (EXP_P3 + r2 * (EXP_P4 + r2 * EXP_P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    ki = to_int(k)
    k1 = ki >> 1
    y = (y * from_bits((k1 + 1023) << 52)) * from_bits((ki - k1 + 1023) << 52)
    return where(ok, y, NAN)


# --- log ------------------------------------------------------------------------------------

LG1 = 6.666666666666735130e-01
LG2 = 3.999999999940941908e-01
LG3 = 2.857142874366239149e-01
LG4 = 2.222219843214978396e-01
LG5 = 1.818357216161805012e-01
LG6 = 1.531383769920937332e-01
LG7 = 1.479819860511658591e-01
SQRT2 = 1.4142135623730951
TINY = 2.2250738585072014e-308  # the smallest normal float64
TWO54 = 18014398509481984.0  # 2**54: scales a subnormal into the normal range
MANTISSA = 0x000FFFFFFFFFFFFF
ONE_BITS = 0x3FF0000000000000


def log_(x):
    """log(x), element by element; the kernel both backends evaluate (see `log`).

        x = 2**k m,  m in [sqrt(2)/2, sqrt(2)),  f = m - 1 (exact),  s = f / (2 + f)
        R = z (LG1 + w (LG3 + w (LG5 + w LG7))) + w (LG2 + w (LG4 + w LG6)),  z = s s,  w = z z
        log(x) = k LN2_HI - ((f f / 2 - (s (f f / 2 + R) + k LN2_LO)) - f)
    """
    sub = x < TINY
    xs = where(sub, x * TWO54, x)
    b = bits(xs)
    k = (b >> 52) - where(sub, 1023 + 54, 1023)
    m = from_bits((b & MANTISSA) | ONE_BITS)
    up = m > SQRT2
    m = where(up, m * 0.5, m)
    k = k + where(up, 1, 0)
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    R = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))) + w * (LG2 + w * (LG4 + w * LG6))
    dk = to_float(k)
    y = dk * LN2_HI - ((hfsq - (s * (hfsq + R) + dk * LN2_LO)) - f)
    y = where(x > 0.0, y, where(x == 0.0, -INF, NAN))
    return where(x < INF, y, x)


# --- tanh -----------------------------------------------------------------------------------

TANH_P0 = -9.64399179425052238628e-01
TANH_P1 = -9.92877231001918586564e01
TANH_P2 = -1.61468768441708447952e03
TANH_Q0 = 1.12811678491632931402e02
TANH_Q1 = 2.23548839060100448583e03
TANH_Q2 = 4.84406305325125486048e03
TANH_SPLIT = 0.625  # the rational below, 1 - 2 / (exp(2|x|) + 1) from here on
TANH_TINY = 2.0**-28  # tanh(x) rounds to x below (and keeps -0.0 and subnormals)
TANH_ONE = 40.0  # tanh(x) rounds to +-1 well before; caps the argument of exp


def tanh_(x):
    """tanh(x), element by element; the kernel both backends evaluate (see `tanh`).

        |x| < 0.625:  x + x s ((P0 s + P1) s + P2) / (((s + Q0) s + Q1) s + Q2),   s = x x
        |x| >= 0.625: sign(x) (1 - 2 / (exp(2 |x|) + 1))
    """
    z = np.abs(x)
    s = x * x
    small = x + x * s * (((TANH_P0 * s + TANH_P1) * s + TANH_P2)
                         / (((s + TANH_Q0) * s + TANH_Q1) * s + TANH_Q2))
    e = exp_(2.0 * where(z < TANH_ONE, z, TANH_ONE))
    big = 1.0 - 2.0 / (e + 1.0)
    y = where(z < TANH_SPLIT, where(z < TANH_TINY, x, small), where(x < 0.0, -big, big))
    return where(x == x, y, x)


# --- array entry points ---------------------------------------------------------------------


def exp(x):
    """exp of a float64 array (a new array), bit-identical on every backend; error < 1 ulp."""
    with np.errstate(all="ignore"):
        return np.asarray(exp_(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def log(x):
    """log of a float64 array (a new array), bit-identical on every backend; error < 1 ulp."""
    with np.errstate(all="ignore"):
        return np.asarray(log_(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def tanh(x):
    """tanh of a float64 array (a new array), bit-identical on every backend; error < 2 ulp."""
    with np.errstate(all="ignore"):
        return np.asarray(tanh_(np.asarray(x, dtype=np.float64)), dtype=np.float64)
