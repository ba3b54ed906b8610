"""The rANS information buffer: exact inverses, strict LIFO across lanes, size at the bound."""

import numpy as np
import pytest

from revlearn import ans
from revlearn.fixedpoint import D


def random_n(rng, P):
    """Per-lane alphabet sizes with the edge cases n = 1 and n = 2**16 always present."""
    n = rng.integers(1, D + 1, P)
    n[:2] = 1, D
    return n


def test_new_buffer_starts_at_x0_and_is_empty():
    buf = ans.new_buffer(5)
    assert ans.is_initial(buf) and buf.top == 0 and buf.peak == 0
    assert ans.size_bits(buf) == 64 * 5


def test_pop_then_push_and_push_then_pop_are_identities(rng):
    P = 64
    buf = ans.new_buffer(P)
    for _ in range(300):
        n = random_n(rng, P)
        popped, s = ans.pop(buf, n)
        assert np.all((s >= 0) & (s < n))
        back = ans.push(popped, s, n)
        assert np.array_equal(back.x, buf.x) and back.top == buf.top
        r = rng.integers(0, n)
        pushed = ans.push(buf, r, n)
        again, r2 = ans.pop(pushed, n)
        assert np.array_equal(r2, r) and np.array_equal(again.x, buf.x) and again.top == buf.top
        buf = pushed  # let the stack grow so that words are read and written
    assert buf.top > 0


def test_stack_is_shared_and_strictly_lifo_across_lanes(rng):
    # lanes at x >= 2**47 all emit a word when pushing over 2**16: they write in increasing lane
    # order, and the pop that undoes the push hands each lane back its own word
    P = 8
    x = rng.integers(ans.X0, 2**63 - 1, P, dtype=np.int64)
    buf = ans.Buffer(x, np.zeros(3, np.uint32), 3, 3)
    pushed = ans.push(buf, rng.integers(0, D, P), D)
    assert pushed.top == 3 + P and pushed.peak == 3 + P
    assert np.array_equal(pushed.stack[3:3 + P], x & ans.WORD)
    popped, _ = ans.pop(pushed, D)
    assert np.array_equal(popped.x, x) and popped.top == 3


def test_sequence_of_operations_undoes_to_the_start(rng):
    P, steps = 200, 500
    buf, history = ans.new_buffer(P), []
    for _ in range(steps):
        n = random_n(rng, P)
        buf, s = ans.pop(buf, n)
        r = rng.integers(0, D, P)
        buf = ans.push(buf, r, D)
        history.append((n, s, r))
    for n, s, r in reversed(history):
        buf, r2 = ans.pop(buf, D)
        assert np.array_equal(r2, r)
        buf = ans.push(buf, s, n)
    assert ans.is_initial(buf)


def test_size_is_at_the_entropy_bound(rng):
    # popping over n and pushing over 2**16 costs log2(2**16 / n) bits
    P, steps, n = 500, 400, int(0.9 * D)
    buf = ans.new_buffer(P)
    for _ in range(steps):
        buf, _ = ans.pop(buf, np.full(P, n))
        buf = ans.push(buf, rng.integers(0, D, P), D)
    bound = steps * P * np.log2(D / n)
    words_bits = ans.size_bits(buf) - 64 * P
    # lanes start with room for 16 bits and hold up to a word's worth more at the end
    assert bound - 16 * P <= words_bits <= bound + 32 * P


def test_popping_a_word_from_an_empty_stack_is_refused():
    # negative control for the start state: a lane below 2**47 may need a word the stack lacks
    buf = ans.Buffer(np.full(3, ans.LOW, dtype=np.int64), np.empty(0, np.uint32), 0, 0)
    with pytest.raises(RuntimeError, match="underflow"):
        ans.pop(buf, np.full(3, D))
