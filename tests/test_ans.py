"""The rANS information buffer: exact inverses, strict LIFO within each block of lanes, size at the
bound."""

import numpy as np
import pytest

from revlearn import ans
from revlearn.fixedpoint import D
from revlearn.partition import LANES


def one_block(x, words):
    """A buffer of one block whose stack holds `words`."""
    stack = np.asarray(words, np.uint32).reshape(1, -1)
    return ans.Buffer(np.asarray(x, np.int64), stack, np.array([stack.shape[1]]),
                      np.array([stack.shape[1]]))


def random_n(rng, P):
    """Per-lane alphabet sizes with the edge cases n = 1 and n = 2**16 always present."""
    n = rng.integers(1, D + 1, P)
    n[:2] = 1, D
    return n


def test_new_buffer_starts_at_x0_and_is_empty():
    buf = ans.new_buffer(5)
    assert ans.is_initial(buf) and list(buf.top) == [0] and list(buf.peak) == [0]
    assert ans.size_bits(buf) == 64 * 5
    assert ans.new_buffer(2 * LANES + 1).top.shape == (3,)  # blocks of LANES lanes


def test_pop_then_push_and_push_then_pop_are_identities(rng):
    P = 64
    buf = ans.new_buffer(P)
    for _ in range(300):
        n = random_n(rng, P)
        popped, s = ans.pop(buf, n)
        assert np.all((s >= 0) & (s < n))
        back = ans.push(popped, s, n)
        assert np.array_equal(back.x, buf.x) and np.array_equal(back.top, buf.top)
        r = rng.integers(0, n)
        pushed = ans.push(buf, r, n)
        again, r2 = ans.pop(pushed, n)
        assert np.array_equal(r2, r) and np.array_equal(again.x, buf.x)
        assert np.array_equal(again.top, buf.top)
        buf = pushed  # let the stack grow so that words are read and written
    assert buf.top[0] > 0


def test_a_block_shares_its_stack_strictly_lifo_across_its_lanes(rng):
    # lanes at x >= 2**47 all emit a word when pushing over 2**16: they write in increasing lane
    # order, and the pop that undoes the push hands each lane back its own word
    P = 8
    x = rng.integers(ans.X0, 2**63 - 1, P, dtype=np.int64)
    buf = one_block(x, [0, 0, 0])
    pushed = ans.push(buf, rng.integers(0, D, P), D)
    assert list(pushed.top) == [3 + P] and list(pushed.peak) == [3 + P]
    assert np.array_equal(pushed.stack[0, 3:3 + P], x & ans.WORD)
    popped, _ = ans.pop(pushed, D)
    assert np.array_equal(popped.x, x) and list(popped.top) == [3]


def test_each_block_of_lanes_has_its_own_stack(rng):
    # three blocks (the last one short): a lane's word goes to its own block's stack, in lane
    # order within the block, and comes back from there
    P = 2 * LANES + 5
    emitting = np.array([0, 1, LANES - 1, LANES + 7, 2 * LANES, 2 * LANES + 4])
    x = np.full(P, ans.X0 - 1, np.int64)  # below 2**47: no word when pushing over 2**16
    x[emitting] = rng.integers(ans.X0, 2**63 - 1, len(emitting))
    buf = ans.new_buffer(P)._replace(x=x)
    pushed = ans.push(buf, rng.integers(0, D, P), D)
    assert list(pushed.top) == [3, 1, 2]
    assert np.array_equal(pushed.stack[0, :3], x[[0, 1, LANES - 1]] & ans.WORD)
    assert pushed.stack[1, 0] == x[LANES + 7] & ans.WORD
    assert np.array_equal(pushed.stack[2, :2], x[[2 * LANES, 2 * LANES + 4]] & ans.WORD)
    popped, _ = ans.pop(pushed, D)
    assert np.array_equal(popped.x, x) and not popped.top.any()
    assert ans.size_bits(pushed) == 64 * P + 32 * 6


def test_sequence_of_operations_undoes_to_the_start(rng):
    P, steps = LANES + 200, 300  # two blocks
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
    buf = one_block(np.full(3, ans.LOW), [])
    with pytest.raises(RuntimeError, match="underflow"):
        ans.pop(buf, np.full(3, D))
