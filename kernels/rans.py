"""The rANS buffer of `revlearn.ans` on a block of lanes: one lane's coding of a uniform symbol
(`ans.push` / `ans.pop` without the word moves) and the block's word moves to and from its stack.

Each block's stack is strictly LIFO: a pop acts on the block's lanes in decreasing order and a
push in increasing order. Only moving words to and from a stack is sequential, so the kernels that
push and pop split each block's work into passes: the coding of every lane in loops without
dependencies between lanes, which LLVM vectorises, and the word moves in two short sequential
loops, the block's lanes from last to first taking words off its stack (`refill`) and from first
to last putting words on it (`spill`): the very words, in the very places, that refimpl reads and
writes.
"""

import numpy as np

from revlearn import ans
from revlearn.ans import EMIT_SHIFT, LOW, PREC, WORD, WORD_BITS
from revlearn.fixedpoint import D

from .blocks import div
from .jit import kernel

M = ans.M


# --- one lane ------------------------------------------------------------------------------------

@kernel(inline=True)
def decode(x, n):
    """Pop s uniform over [0, n) from lane state x: (x', s); x' < 2**31 needs a word refilled.

    q = M div n, rem = M mod n, f_s = q + [s < rem], c_s = s q + min(s, rem)
    slot = x mod M,  s: c_s <= slot < c_s + f_s,  x' = f_s (x div M) + slot - c_s
    """
    q = div(M, n)
    rem = M - q * n
    slot = x & (M - 1)
    split = rem * (q + 1)
    if slot < split:
        s = div(slot, q + 1)
    else:
        s = rem + div(slot - split, q)
    f = q + 1 if s < rem else q
    return f * (x >> PREC) + slot - (s * q + min(s, rem)), s


@kernel(inline=True)
def encode(x, s, n):
    """Push s (0 <= s < n) into lane state x after its word, if any, went to the stack.

    x' = (x div f_s) M + (x mod f_s) + c_s. Here x < 2**63 is too wide for `div`, so the
    division is long, in two halves it can take: x = h M + l, h = q1 f + r1 (h < 2**39),
    r1 M + l = q2 f + r2 (< f M <= 2**48); x div f = q1 M + q2 and x mod f = r2.
    """
    q = div(M, n)
    rem = M - q * n
    f = freq(s, n)
    h = x >> PREC
    q1 = div(h, f)
    t = ((h - q1 * f) << PREC) + (x & (M - 1))
    q2 = div(t, f)
    return (((q1 << PREC) + q2) << PREC) + (t - q2 * f) + s * q + min(s, rem)


@kernel(inline=True)
def freq(s, n):
    """f_s = q + [s < rem], the frequency of symbol s of the uniform code over n. Pushing s first
    moves the low word of x to the stack when x div 2**39 >= f_s."""
    q = div(M, n)
    return q + 1 if s < M - q * n else q


# --- a block's lanes -----------------------------------------------------------------------------

@kernel
def refill(x, stack, top):
    """Lanes P-1 .. 0 whose state fell below 2**31 take a word off the stack: x <- x 2**32 + word.
    Returns the new top, or -1 when the stack runs dry (it cannot, `revlearn.ans` proves).
    Branch-free, since about half of the lanes refill on each step."""
    for i in range(len(x) - 1, -1, -1):
        need = x[i] < LOW
        if need & (top == 0):
            return -1
        word = np.int64(stack[max(top - 1, 0)])
        x[i] = (x[i] << WORD_BITS) | word if need else x[i]
        top -= need
    return top


@kernel
def spill_over_D(x, stack, top):
    """Lanes 0 .. P-1 about to push a symbol over D put their low word on the stack when
    x div 2**39 >= f = 2**8. The word is written always and kept when top moves past it."""
    for i in range(len(x)):
        emit = x[i] >> EMIT_SHIFT >= freq(0, D)
        stack[top] = x[i] & WORD
        top += emit
        x[i] = x[i] >> WORD_BITS if emit else x[i]
    return top


@kernel
def spill(x, f, stack, top):
    """Lanes 0 .. P-1 about to push a symbol of frequency f put their low word on the stack when
    x div 2**39 >= f (written always, kept when top moves past it)."""
    for i in range(len(x)):
        emit = x[i] >> EMIT_SHIFT >= np.int64(f[i])
        stack[top] = x[i] & WORD
        top += emit
        x[i] = x[i] >> WORD_BITS if emit else x[i]
    return top


@kernel
def encode_all(x, sym, n):
    """Encode sym over n into every lane (after `spill`)."""
    for i in range(len(x)):
        x[i] = encode(x[i], np.int64(sym[i]), n[i])
