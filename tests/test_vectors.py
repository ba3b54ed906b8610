"""The test vectors of the exact arithmetic (refimpl/exact_vectors.json), reproduced bit for bit by
an implementation written here from the docstrings of revlearn.fixedpoint and revlearn.ans with
Python integers only (no NumPy, no revlearn), by revlearn's NumPy code and by its numba kernels.

What the docstrings say, and what `IntBuffer`, `mul_gamma` and `div_gamma` below do:

- a lane state x lies in [2**31, 2**63); symbols over n (1 <= n <= 2**16) have frequencies out of
  M = 2**24: q = M div n, rem = M mod n, f_s = q + [s < rem], c_s = s q + min(s, rem);
- push s: if x div 2**39 >= f_s, the word x mod 2**32 goes onto the block's stack and x becomes
  x div 2**32; then x = (x div f_s) M + x mod f_s + c_s;
- pop: slot = x mod M, s the symbol with c_s <= slot < c_s + f_s, x = f_s (x div M) + slot - c_s,
  and if x < 2**31, x = x 2**32 + the word taken off the block's stack;
- lanes form blocks of 4096, each with its own stack; a push goes through a block's lanes in
  increasing order, a pop in decreasing order;
- mul_gamma: s = pop over n, v n + s = v' D + r with 0 <= r < D = 2**16, push r over D;
  div_gamma: r = pop over D, v' D + r = v n + s with 0 <= s < n, push s over n.
"""

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import revlearn
from revlearn import ans, fixedpoint

from conftest import needs_numba

VECTORS = json.loads((Path(revlearn.__file__).parent / "exact_vectors.json").read_text())
SEQUENCES = VECTORS["sequences"]
NAMES = [s["name"] for s in SEQUENCES]

# --- the integer implementation -----------------------------------------------------------------

PREC_M, D, LOW, HIGH, LANES = 2**24, 2**16, 2**31, 2**63, 4096
EMIT = 2**39  # a push first sheds a word when x div EMIT >= f_s: 2**(32 + 31 - 24)


def frequency(s, n):
    """(f_s, c_s) of symbol s of the uniform distribution over n symbols out of M."""
    q, rem = divmod(PREC_M, n)
    return q + (1 if s < rem else 0), s * q + min(s, rem)


def symbol_at(slot, n):
    """The symbol s with c_s <= slot < c_s + f_s, by bisection on c_s."""
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if frequency(mid, n)[1] <= slot:
            lo = mid
        else:
            hi = mid - 1
    return lo


class IntBuffer:
    """The lanes' states and one stack (a list, bottom first) per block of LANES lanes."""

    pop_order = staticmethod(lambda P: reversed(range(P)))  # each block's lanes, last first

    def __init__(self, x, stacks):
        self.x, self.stacks = list(x), [list(s) for s in stacks]

    def push(self, symbols, ns):
        for i in range(len(self.x)):
            f, c = frequency(symbols[i], ns[i])
            x = self.x[i]
            if x // EMIT >= f:
                self.stacks[i // LANES].append(x % 2**32)
                x //= 2**32
            self.x[i] = (x // f) * PREC_M + x % f + c
            assert LOW <= self.x[i] < HIGH

    def pop(self, ns):
        symbols = [0] * len(self.x)
        for i in self.pop_order(len(self.x)):
            x = self.x[i]
            slot = x % PREC_M
            s = symbol_at(slot, ns[i])
            f, c = frequency(s, ns[i])
            x = f * (x // PREC_M) + slot - c
            if x < LOW:
                x = x * 2**32 + self.stacks[i // LANES].pop()
            assert LOW <= x < HIGH
            self.x[i], symbols[i] = x, s
        return symbols


def mul_gamma(v, ns, buf):
    """v n / D per lane, exactly: (v', s popped over n, r pushed over D)."""
    s = buf.pop(ns)
    vr = [divmod(v[i] * ns[i] + s[i], D) for i in range(len(v))]
    buf.push([r for _, r in vr], [D] * len(v))
    return [q for q, _ in vr], s, [r for _, r in vr]


def div_gamma(v, ns, buf):
    """The inverse of mul_gamma: (v, s pushed over n, r popped over D)."""
    r = buf.pop([D] * len(v))
    vs = [divmod(v[i] * D + r[i], ns[i]) for i in range(len(v))]
    buf.push([s for _, s in vs], ns)
    return [q for q, _ in vs], [s for _, s in vs], r


# --- running a sequence --------------------------------------------------------------------------

def full(seq, listed, idle):
    """A per-lane list of all P lanes: the listed lanes' values, `idle` elsewhere."""
    out = [idle] * seq["P"]
    for i, value in zip(seq["lanes"], listed, strict=True):
        out[i] = value
    return out


def replay_with_integers(seq):
    """Each operation of the sequence by the integer implementation: the states after each, in
    the vectors' form."""
    idle = VECTORS["idle_lane"]
    v = full(seq, seq["start"]["v"], idle["v"])
    buf = IntBuffer(full(seq, seq["start"]["x"], idle["x"]), seq["start"]["stacks"])
    got = []
    for op in seq["ops"]:
        ns = full(seq, op["n"], idle["n"])
        v, s, r = (mul_gamma if op["op"] == "mul_gamma" else div_gamma)(v, ns, buf)
        assert all(-(2**63) <= a < 2**63 for a in v)
        idle_lanes = set(range(seq["P"])) - set(seq["lanes"])
        assert all((v[i], buf.x[i]) == (idle["v"], idle["x"]) for i in idle_lanes)
        got.append(listed(seq, op, v, s, r, buf.x, buf.stacks))
    return got


def listed(seq, op, v, s, r, x, stacks):
    take = seq["lanes"]
    return {"op": op["op"], "n": op["n"], "s": [int(s[i]) for i in take],
            "r": [int(r[i]) for i in take], "v": [int(v[i]) for i in take],
            "x": [int(x[i]) for i in take], "stacks": [[int(w) for w in st] for st in stacks]}


@pytest.mark.parametrize("name", NAMES)
def test_the_integer_implementation_reproduces_the_vectors(name):
    seq = SEQUENCES[NAMES.index(name)]
    for i, (got, want) in enumerate(zip(replay_with_integers(seq), seq["ops"], strict=True)):
        assert got == want, f"{name}, operation {i} ({want['op']})"


def test_the_vectors_cover_the_edges():
    ops = [op for s in SEQUENCES for op in s["ops"]]
    ns = {n for op in ops for n in op["n"]}
    values = [v for s in SEQUENCES for v in s["start"]["v"]]
    assert {1, 2, D - 1, D} <= ns
    assert -(2**63) in values and 2**63 - 1 in values and min(values) < 0
    assert any(x == LOW for s in SEQUENCES for x in s["start"]["x"])
    assert any(x == HIGH - 1 for s in SEQUENCES for x in s["start"]["x"])
    first = SEQUENCES[NAMES.index("first_words")]
    assert first["start"]["stacks"] == [[]] and first["ops"][0]["stacks"] == [[0]]
    blocks = SEQUENCES[NAMES.index("blocks")]
    assert blocks["P"] > 2 * LANES and len(blocks["start"]["stacks"]) == 3
    assert all(any(op["stacks"][b] != blocks["start"]["stacks"][b] for op in blocks["ops"])
               for b in range(3))
    # every sequence ends where it started: mul_gamma undone by div_gamma, bit for bit
    assert all({k: s["ops"][-1][k] for k in ("v", "x", "stacks")} == s["start"] for s in SEQUENCES)


def test_a_changed_word_fails_the_integer_implementation():
    # negative control: one stack word of one operation off by one
    seq = copy.deepcopy(SEQUENCES[NAMES.index("lane_limits")])
    seq["ops"][1]["stacks"][0][3] ^= 1
    assert replay_with_integers(seq)[1] != seq["ops"][1]


@pytest.mark.parametrize("name", ["lane_limits", "blocks"])
def test_popping_lanes_in_increasing_order_fails_the_vectors(monkeypatch, name):
    # negative control: the lanes of a block taking words off its stack in the wrong order
    seq = SEQUENCES[NAMES.index(name)]
    monkeypatch.setattr(IntBuffer, "pop_order", staticmethod(range))
    assert replay_with_integers(seq) != seq["ops"]


@pytest.mark.parametrize("name", NAMES)
def test_frequencies_out_of_2_16_fail_the_vectors(monkeypatch, name):
    # negative control: a coder just as exact with DESIGN's first idea, frequencies out of 2**16
    # (words shed from 2**(32 + 31 - 16)), codes other states and words
    monkeypatch.setattr(sys.modules[__name__], "PREC_M", 2**16)
    monkeypatch.setattr(sys.modules[__name__], "EMIT", 2**47)
    seq = SEQUENCES[NAMES.index(name)]
    assert replay_with_integers(seq) != seq["ops"]


# --- revlearn reproduces them too ---------------------------------------------------------------

def start_buffer(seq):
    """The sequence's start as revlearn's arrays: (V, Buffer)."""
    idle = VECTORS["idle_lane"]
    top = np.array([len(s) for s in seq["start"]["stacks"]], np.int64)
    stack = np.zeros((len(top), max(1, int(top.max()))), np.uint32)
    for b, words in enumerate(seq["start"]["stacks"]):
        stack[b, :len(words)] = words
    x = np.array(full(seq, seq["start"]["x"], idle["x"]), np.int64)
    return np.array(full(seq, seq["start"]["v"], idle["v"]), np.int64), ans.Buffer(
        x, stack, top, top.copy())


def replay_with(seq, mul, div):
    """The values, lane states and stacks after each operation, by revlearn's functions."""
    idle = VECTORS["idle_lane"]
    V, buf = start_buffer(seq)
    lanes = seq["lanes"]
    got = []
    for op in seq["ops"]:
        n = np.array(full(seq, op["n"], idle["n"]), np.int64)
        V, buf = (mul if op["op"] == "mul_gamma" else div)(V.copy(), n, buf)
        got.append({"v": V[lanes].tolist(), "x": buf.x[lanes].tolist(),
                    "stacks": [buf.stack[b, :buf.top[b]].tolist() for b in range(len(buf.top))]})
    return got


def want(seq):
    return [{k: op[k] for k in ("v", "x", "stacks")} for op in seq["ops"]]


@pytest.mark.parametrize("name", NAMES)
def test_revlearn_reproduces_the_vectors(name):
    seq = SEQUENCES[NAMES.index(name)]
    assert replay_with(seq, fixedpoint.mul_gamma, fixedpoint.div_gamma) == want(seq)


@needs_numba
@pytest.mark.parametrize("name", NAMES)
def test_the_numba_kernels_reproduce_the_vectors(name):
    # the kernels' exact step with g = 0 and alpha = 0 is mul_gamma, its inverse div_gamma
    from revlearn.kernels import exact

    seq = SEQUENCES[NAMES.index(name)]
    zero = np.zeros(seq["P"])

    def mul(V, n, buf):
        _, V, buf = exact.exact_step(np.zeros_like(V), V, buf, zero, zero, n / D, n)
        return V, buf

    def div(V, n, buf):
        return exact.exact_unstep_v(V, buf, zero, n / D, n)

    assert replay_with(seq, mul, div) == want(seq)
