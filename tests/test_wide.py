"""Wide fixed point (Adam's m and s): conversions, exact addition, and the exact multiply by beta
with bits back, undone bit for bit; negative controls for each."""

import numpy as np
import pytest

from revlearn import ans, wide
from revlearn import fixedpoint as fp


def as_int(a):
    """The integers X = H 2**48 + L of a Wide, as Python integers (no rounding)."""
    return [int(h) * 2**48 + int(lo) for h, lo in zip(a.H, a.L, strict=True)]


def random_wide(rng, P, scale=1e3):
    """Entries of every sign and size, |x| from 1e-30 up to `scale`, and the edges of the words."""
    x = rng.choice([-1.0, 1.0], P) * np.exp(rng.uniform(np.log(1e-30), np.log(scale), P))
    a = wide.to_wide(x)
    H, L = a.H.copy(), a.L.copy()
    H[:4], L[:4] = [0, -1, 2**61, -2**61], [0, 2**48 - 1, 2**48 - 1, 0]
    return wide.Wide(H, L)


def random_n(rng, P):
    n = rng.integers(1, fp.D + 1, P)
    n[:3] = 1, 2, fp.D
    return n


def test_to_wide_rounds_to_100_fractional_bits_and_splits_at_48():
    x = np.array([0.0, 1.0, -1.5, 2.0**-100, 3 * 2.0**-102, -(2.0**-100), 1000.25, 2.0**-60])
    a = wide.to_wide(x)
    assert a.H.dtype == a.L.dtype == np.int64
    assert np.all((a.L >= 0) & (a.L < 2**48))
    assert as_int(a) == [0, 2**100, -3 * 2**99, 1, 1, -1, int(1000.25 * 2**100), 2**40]
    on_grid = np.arange(len(x)) != 4  # 0.75 units rounds to 1
    assert np.array_equal(wide.from_wide(a)[on_grid], x[on_grid])
    assert np.array_equal(a.H, np.floor(x * 2.0**52).astype(np.int64))  # H: w's units


def test_a_round_trip_through_wide_is_off_by_one_rounding_each_way(rng):
    # to_wide rounds to half a unit of 2**-100; from_wide's two roundings (H to float64, the sum)
    # lose at most an ulp (measured over 100,000 values: none at all above 2**-40)
    x = rng.normal(size=1000) * np.exp(rng.uniform(-70, 6, 1000))
    err = np.abs(wide.from_wide(wide.to_wide(x)) - x)
    assert np.all(err <= 2.0**-101 + 2.0**-52 * np.abs(x))
    assert np.any(err > 0)


@pytest.mark.parametrize("bad", [2048.0, -2048.0, np.inf, np.nan, 1e300])
def test_to_wide_refuses_values_outside_the_range(bad):
    with pytest.raises(fp.RangeError) as e:
        wide.to_wide(np.array([0.5, bad]))
    assert e.value.index == 1


def test_add_and_sub_are_exact_with_carry_and_borrow(rng):
    a, b = random_wide(rng, 2000), random_wide(rng, 2000)
    s = wide.add(a, b)
    assert as_int(s) == [x + y for x, y in zip(as_int(a), as_int(b), strict=True)]
    d = wide.sub(s, b)
    assert np.array_equal(d.H, a.H) and np.array_equal(d.L, a.L)


def test_add_and_sub_refuse_a_wrap_in_the_high_word_or_in_the_carry():
    top = wide.Wide(np.array([2**63 - 1, 2**63 - 1, 5]), np.array([2**48 - 1, 0, 0]))
    one_unit = wide.Wide(np.array([0, 1, 0]), np.array([1, 0, 0]))
    with pytest.raises(fp.RangeError) as e:  # lane 0 wraps by the carry alone
        wide.add(top, one_unit)
    assert e.value.index == 0
    low = wide.Wide(np.array([7, -2**63, -2**63]), np.array([0, 0, 5]))
    with pytest.raises(fp.RangeError) as e:  # lane 1 by the borrow of the high words
        wide.sub(low, wide.Wide(np.array([0, 1, 0]), np.array([0, 0, 0])))
    assert e.value.index == 1
    with pytest.raises(fp.RangeError) as e:  # lane 2 by the borrow of the low words alone
        wide.sub(low, wide.Wide(np.array([0, 0, 0]), np.array([0, 0, 6])))
    assert e.value.index == 2


def test_mul_beta_is_within_one_unit_of_the_exact_product(rng):
    P = 3000
    a, n = random_wide(rng, P), random_n(rng, P)
    a2, buf = wide.mul_beta(a, n, ans.new_buffer(P))
    assert np.all((a2.L >= 0) & (a2.L < 2**48))
    err = [abs(y * fp.D - x * int(k)) for x, y, k in zip(as_int(a), as_int(a2), n, strict=True)]
    assert max(err) < fp.D  # |X' - X n / D| < 1 unit of 2**-100


def test_div_beta_undoes_mul_beta_over_1000_steps_bit_for_bit(rng):
    # two decays per step on one buffer, as Adam's m and s: pop, push, pop, push forward and the
    # opposite order backwards
    P, T = 300, 1000
    m0, s0 = random_wide(rng, P), random_wide(rng, P)
    m, s, buf, ns = m0, s0, ans.new_buffer(P), []
    for _ in range(T):
        n1, n2 = random_n(rng, P), random_n(rng, P)
        ns.append((n1, n2))
        m, buf = wide.mul_beta(m, n1, buf)
        s, buf = wide.mul_beta(s, n2, buf)
    assert buf.top > 0
    for n1, n2 in reversed(ns):
        s, buf = wide.div_beta(s, n2, buf)
        m, buf = wide.div_beta(m, n1, buf)
    for a, b in ((m, m0), (s, s0)):
        assert np.array_equal(a.H, b.H) and np.array_equal(a.L, b.L)
    assert ans.is_initial(buf)


def test_undoing_the_decays_in_the_wrong_order_does_not_recover(rng):
    # negative control: m's decay undone before s's breaks the stack's LIFO order
    P = 300
    m0, s0 = random_wide(rng, P), random_wide(rng, P)
    n1, n2 = random_n(rng, P), random_n(rng, P)
    m, buf = wide.mul_beta(m0, n1, ans.new_buffer(P))
    s, buf = wide.mul_beta(s0, n2, buf)
    m, buf = wide.div_beta(m, n1, buf)
    s, buf = wide.div_beta(s, n2, buf)
    assert not (np.array_equal(m.H, m0.H) and np.array_equal(m.L, m0.L))


def test_float64_decays_do_not_reverse(rng):
    # negative control: s <- beta2 s + (1 - beta2) g g undone in float64 loses s_0
    P, T, beta2 = 300, 1000, 0.999
    s0 = rng.uniform(0, 1e-4, P)
    gs = rng.normal(size=(T, P)) * 1e-2
    s = s0.copy()
    for g in gs:
        s = beta2 * s + (1 - beta2) * g * g
    for g in gs[::-1]:
        s = (s - (1 - beta2) * g * g) / beta2
    assert not np.array_equal(s, s0)
