"""The information buffer: rANS lanes over one shared LIFO stack of 32-bit words (DESIGN §4).

Every parameter i owns a lane state x_i, an integer kept in I = [2**31, 2**63). A symbol s drawn
uniformly from [0, n) (1 <= n <= 2**16) is coded with integer frequencies out of M = 2**24:

    q = M div n,  rem = M mod n,   f_s = q + [s < rem],   c_s = s q + min(s, rem)

    push s (encode)   if x div 2**39 >= f_s:  word = x mod 2**32 onto the stack,  x = x div 2**32
                      x = (x div f_s) M + (x mod f_s) + c_s
    pop (decode)      slot = x mod M,  s = the symbol with c_s <= slot < c_s + f_s
                      x = f_s (x div M) + slot - c_s
                      if x < 2**31:  x = x 2**32 + (word taken off the stack)

A push costs log2(M/f_s) bits, a pop gives them back; with M = 2**24 the frequencies are within
1/256 of uniform, so a symbol costs log2(n) bits to within 1e-5 (M = 2**16 would waste 0.05 bit).
Each push is undone by a pop and each pop by a push, exactly.

Order across lanes is strict LIFO: `push` acts on the lanes in increasing index order and `pop` in
decreasing order, so each undoes the other over the whole vector. Vectorised, that means: the lanes
that push a word write ``stack[top : top + E]`` in increasing lane order, and the lanes that need a
word take ``stack[top - R : top]`` in increasing lane order.

Start: every lane holds X0 = 2**47 and the stack is empty. A lane at x >= 2**47 never needs a word
to pop over any n <= 2**16 (f_s >= 2**8 gives x' >= 2**31), and after a push over 2**16 a lane sits
below 2**47 exactly when that push put a word on the stack. So a lane that needs a word during a pop
has put one on the stack before and not taken one since, and the stack cannot run dry: the reverse
pass ends with the stack empty and every lane back at X0, both checked by the tests.
"""

from typing import NamedTuple

import numpy as np

PREC = 24
M = 1 << PREC
LOW = 1 << 31
X0 = 1 << 47
WORD = (1 << 32) - 1
STATE_BITS = 64
WORD_BITS = 32
EMIT_SHIFT = WORD_BITS + 31 - PREC  # a push first emits a word when x >= (LOW div M) 2**32 f_s


class Buffer(NamedTuple):
    """The lanes and the stack. `x` is replaced by every operation; `stack` is written in place
    (and reallocated when it grows), `top` words are on it, `peak` is the most there have been."""

    x: np.ndarray
    stack: np.ndarray
    top: int
    peak: int


def new_buffer(P, capacity=0):
    """P lanes at X0 and an empty stack with room for `capacity` words."""
    return Buffer(np.full(P, X0, dtype=np.int64), np.empty(capacity, dtype=np.uint32), 0, 0)


def size_bits(buf):
    """buffer_bits of DESIGN §4: 64 bits per lane plus 32 bits per word at the stack's peak."""
    return STATE_BITS * len(buf.x) + WORD_BITS * buf.peak


def is_initial(buf):
    """True when the stack is empty and every lane is back at X0."""
    return buf.top == 0 and bool(np.all(buf.x == X0))


def _uniform_freqs(n):
    """q = M div n and rem = M mod n: symbol s gets frequency q + [s < rem]."""
    q = M // n
    return q, M - q * n


def push(buf, s, n):
    """Encode s (0 <= s < n, per lane) into every lane, lanes in increasing order."""
    q, rem = _uniform_freqs(n)
    f = q + (s < rem)
    c = s * q + np.minimum(s, rem)
    x = buf.x.copy()
    emit = x >> EMIT_SHIFT >= f  # x >= 2**39 f without forming 2**39 f = 2**63 when n = 1
    E = int(np.count_nonzero(emit))
    stack = _reserve(buf.stack, buf.top + E)
    stack[buf.top:buf.top + E] = x[emit] & WORD
    x[emit] >>= WORD_BITS
    x = (x // f << PREC) + x % f + c
    top = buf.top + E
    return Buffer(x, stack, top, max(buf.peak, top))


def pop(buf, n):
    """Decode one symbol per lane, uniform over [0, n) for that lane; lanes in decreasing order."""
    q, rem = _uniform_freqs(n)
    slot = buf.x & (M - 1)
    split = rem * (q + 1)
    s = np.where(slot < split, slot // (q + 1), rem + (slot - split) // q)
    f = q + (s < rem)
    x = f * (buf.x >> PREC) + slot - (s * q + np.minimum(s, rem))
    need = x < LOW
    R = int(np.count_nonzero(need))
    if R > buf.top:
        raise RuntimeError(f"information buffer underflow: {R} lanes need a word, {buf.top} left")
    x[need] = x[need] << WORD_BITS | buf.stack[buf.top - R:buf.top].astype(np.int64)
    return Buffer(x, buf.stack, buf.top - R, buf.peak), s


def _reserve(stack, size):
    """The stack, reallocated (at least doubling) when it has fewer than `size` words of room."""
    if size <= len(stack):
        return stack
    grown = np.empty(max(size, 2 * len(stack)), dtype=np.uint32)
    grown[:len(stack)] = stack
    return grown
