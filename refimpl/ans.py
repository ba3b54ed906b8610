"""The information buffer: rANS lanes over LIFO stacks of 32-bit words, one per block of lanes.

Every parameter i owns a lane state x_i, an integer kept in I = [2**31, 2**63). A symbol s drawn
uniformly from [0, n) (1 <= n <= 2**16) is coded with integer frequencies out of M = 2**24:

    q = M div n,  rem = M mod n,   f_s = q + [s < rem],   c_s = s q + min(s, rem)

    push s (encode)   if x div 2**39 >= f_s:  word = x mod 2**32 onto the block's stack,
                                              x = x div 2**32
                      x = (x div f_s) M + (x mod f_s) + c_s
    pop (decode)      slot = x mod M,  s = the symbol with c_s <= slot < c_s + f_s
                      x = f_s (x div M) + slot - c_s
                      if x < 2**31:  x = x 2**32 + (word taken off the block's stack)

A push costs log2(M/f_s) bits, a pop gives them back; with M = 2**24 the frequencies are within
1/256 of uniform, so a symbol costs log2(n) bits to within 1e-5 (M = 2**16 would waste 0.05 bit).
Each push is undone by a pop and each pop by a push, exactly.

Lanes form blocks of `partition.LANES` consecutive lanes, each block with its own stack, strictly
LIFO: `push` acts on a block's lanes in increasing index order and `pop` in decreasing order, so
each undoes the other over the whole vector. Vectorised, that means: the lanes of block b that push
a word write ``stack[b, top_b : top_b + E_b]`` in increasing lane order, and the lanes of block b
that need a word take ``stack[b, top_b - R_b : top_b]`` in increasing lane order. Blocks share
nothing, so threads can work on different blocks at once (`revlearn.kernels.exact`).

Start: every lane holds X0 = 2**47 and the stacks are empty. A lane at x >= 2**47 never needs a word
to pop over any n <= 2**16 (f_s >= 2**8 gives x' >= 2**31), and after a push over 2**16 a lane sits
below 2**47 exactly when that push put a word on the stack. So a lane that needs a word during a pop
has put one on its block's stack before and not taken one since, and no stack can run dry: the
reverse pass ends with every stack empty and every lane back at X0, both checked by the tests.
"""

from typing import NamedTuple

import numpy as np

from .partition import LANES, lane_blocks

PREC = 24
M = 1 << PREC
LOW = 1 << 31
X0 = 1 << 47
WORD = (1 << 32) - 1
STATE_BITS = 64
WORD_BITS = 32
EMIT_SHIFT = WORD_BITS + 31 - PREC  # a push first emits a word when x >= (LOW div M) 2**32 f_s


class Buffer(NamedTuple):
    """The lanes and the blocks' stacks. `x` (P,) is replaced by every operation; `stack`
    (blocks, capacity) uint32 is written in place (and reallocated when it grows); block b holds
    `top[b]` words, ``stack[b, :top[b]]``, and has held at most `peak[b]`."""

    x: np.ndarray
    stack: np.ndarray
    top: np.ndarray
    peak: np.ndarray


class Underflow(RuntimeError):
    """A lane needed a word from a stack that had none: a pop that no push put there."""


def new_buffer(P, capacity=0):
    """P lanes at X0 and empty stacks with room for `capacity` words each."""
    blocks = lane_blocks(P)
    return Buffer(np.full(P, X0, dtype=np.int64), np.empty((blocks, capacity), dtype=np.uint32),
                  np.zeros(blocks, np.int64), np.zeros(blocks, np.int64))


def size_bits(buf):
    """buffer_bits: 64 bits per lane plus 32 bits per word of each stack at its largest."""
    return STATE_BITS * len(buf.x) + WORD_BITS * int(buf.peak.sum())


def is_initial(buf):
    """True when every stack is empty and every lane is back at X0."""
    return not buf.top.any() and bool(np.all(buf.x == X0))


def _uniform_freqs(n):
    """q = M div n and rem = M mod n: symbol s gets frequency q + [s < rem]."""
    q = M // n
    return q, M - q * n


def _in_blocks(lanes, blocks):
    """For increasing lane indices: each one's block, its rank among them within its block, and
    how many of them each block has."""
    block = lanes // LANES
    count = np.bincount(block, minlength=blocks)
    first = np.cumsum(count) - count
    return block, np.arange(len(lanes)) - first[block], count


def push(buf, s, n):
    """Encode s (0 <= s < n, per lane) into every lane, each block's lanes in increasing order."""
    q, rem = _uniform_freqs(n)
    f = q + (s < rem)
    c = s * q + np.minimum(s, rem)
    x = buf.x.copy()
    emit = np.flatnonzero(x >> EMIT_SHIFT >= f)  # x >= 2**39 f without forming 2**63 when n = 1
    block, rank, E = _in_blocks(emit, len(buf.top))
    stack = reserve(buf.stack, buf.top + E)
    stack[block, buf.top[block] + rank] = x[emit] & WORD
    x[emit] >>= WORD_BITS
    x = (x // f << PREC) + x % f + c
    top = buf.top + E
    return Buffer(x, stack, top, np.maximum(buf.peak, top))


def pop(buf, n):
    """Decode one symbol per lane, uniform over [0, n) for that lane; each block's lanes in
    decreasing order."""
    q, rem = _uniform_freqs(n)
    slot = buf.x & (M - 1)
    split = rem * (q + 1)
    s = np.where(slot < split, slot // (q + 1), rem + (slot - split) // q)
    f = q + (s < rem)
    x = f * (buf.x >> PREC) + slot - (s * q + np.minimum(s, rem))
    need = np.flatnonzero(x < LOW)
    block, rank, R = _in_blocks(need, len(buf.top))
    if np.any(R > buf.top):
        b = int(np.flatnonzero(R > buf.top)[0])
        raise Underflow(f"information buffer underflow: {R[b]} lanes of block {b} need a word, "
                           f"{buf.top[b]} left")
    x[need] = x[need] << WORD_BITS | buf.stack[block, buf.top[block] - R[block] + rank]
    return Buffer(x, buf.stack, buf.top - R, buf.peak), s


def reserve(stack, size):
    """The stacks, reallocated (at least doubling) when one has fewer than size[b] words of room."""
    need = int(size.max(initial=0))
    if need <= stack.shape[1]:
        return stack
    grown = np.empty((stack.shape[0], max(need, 2 * stack.shape[1])), dtype=np.uint32)
    grown[:, :stack.shape[1]] = stack
    return grown
