"""Fixed point: conversions, range errors, and the exact multiply by gamma with bits back."""

import numpy as np
import pytest

from revlearn import ans
from revlearn import fixedpoint as fp


def test_to_fixed_rounds_to_52_fractional_bits():
    x = np.array([0.0, 1.0, -1.5, 2.0**-52, 3 * 2.0**-54, 1000.25])
    a = fp.to_fixed(x)
    assert a.dtype == np.int64
    assert list(a[:4]) == [0, 2**52, -3 * 2**51, 1]
    assert a[4] == 1  # 0.75 units rounds to 1
    assert np.array_equal(fp.from_fixed(a[[0, 1, 2, 3, 5]]), x[[0, 1, 2, 3, 5]])


@pytest.mark.parametrize("bad", [2048.0, -2048.0, np.inf, np.nan, 1e300])
def test_to_fixed_refuses_values_outside_the_range(bad):
    with pytest.raises(fp.RangeError) as e:
        fp.to_fixed(np.array([0.5, bad]))
    assert e.value.index == 1


def test_add_and_sub_are_exact_and_refuse_wrap_around():
    a = fp.to_fixed(np.array([1.0, -3.0, 2047.0]))
    b = fp.to_fixed(np.array([0.25, 5.0, 0.5]))
    assert np.array_equal(fp.sub(fp.add(a[:2], b[:2]), b[:2]), a[:2])
    with pytest.raises(fp.RangeError) as e:
        fp.add(a, fp.to_fixed(np.array([0.0, 0.0, 1.0])))  # 2048 does not fit
    assert e.value.index == 2
    with pytest.raises(fp.RangeError):
        fp.sub(-a, fp.to_fixed(np.array([0.0, 0.0, 1.5])))  # -2048.5 does not fit


def test_quantize_gamma_gives_the_integer_numerator():
    assert list(fp.quantize_gamma([1.0, 0.9, 2.0**-16, 0.5])) == [65536, 58982, 1, 32768]


def test_mul_gamma_is_within_one_unit_of_the_exact_product(rng):
    P = 5000
    v = fp.to_fixed(rng.uniform(-1000, 1000, P))
    n = rng.integers(1, fp.D + 1, P)
    v2, _ = fp.mul_gamma(v, n, ans.new_buffer(P))
    exact = v.astype(object) * n.astype(object)  # Python integers: no rounding
    err = [abs(int(a) * fp.D - int(b)) for a, b in zip(v2, exact, strict=True)]
    assert max(err) < fp.D  # |v' - v n / D| < 1 unit of 2**-52


def test_div_gamma_undoes_mul_gamma_over_1000_steps_bit_for_bit(rng):
    P, T = 300, 1000
    v0 = fp.to_fixed(rng.normal(size=P))
    v, buf, ns = v0, ans.new_buffer(P), []
    for t in range(T):
        n = rng.integers(1, fp.D + 1, P)
        n[t % P] = 1
        n[(t + 1) % P] = fp.D
        ns.append(n)
        v, buf = fp.mul_gamma(v, n, buf)
    assert buf.top > 0
    for n in reversed(ns):
        v, buf = fp.div_gamma(v, n, buf)
    assert np.array_equal(v, v0)
    assert ans.is_initial(buf)


def test_float64_momentum_does_not_reverse(rng):
    # negative control: v <- gamma v - (1 - gamma) g undone in float64 loses v_0 entirely
    P, T, gamma = 300, 1000, 0.9
    v0 = rng.normal(size=P)
    gs = rng.normal(size=(T, P))
    v = v0.copy()
    for g in gs:
        v = gamma * v - (1 - gamma) * g
    for g in gs[::-1]:
        v = (v + (1 - gamma) * g) / gamma
    assert np.max(np.abs(v - v0)) > 1.0
