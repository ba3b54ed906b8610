"""Write refimpl/exact_vectors.json: test vectors for the exact multiply by gamma with bits back.

    python scripts/make_exact_vectors.py

Each sequence starts from given lane states, values and stacks and applies mul_gamma or div_gamma
(`revlearn.fixedpoint`) with a given n per lane; after every operation it records the values, the
lane states, every block's stack and the symbols that went through the buffer (s over n, r over
2**16). The format is in docs/conformance.md. Rerun only when the arithmetic changes on purpose:
tests/test_vectors.py checks that revlearn, and an implementation with Python integers written
from the docstrings, reproduce the file.
"""

import json
import re
from pathlib import Path

import numpy as np

from revlearn import ans, fixedpoint
from revlearn.fixedpoint import D
from revlearn.partition import LANES

OUT = Path(__file__).resolve().parent.parent / "refimpl" / "exact_vectors.json"
VERSION = 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ONE = 1 << fixedpoint.FRAC_BITS  # the value 1.0
IDLE = dict(v=0, x=ans.X0, n=D)  # a lane not listed: v n + 0 = v D + 0 leaves it as it is


def run(name, what, P, lanes, v, x, stacks, ops):
    """A sequence: the start and, after each (op, n) of ops, what revlearn's arithmetic gives."""
    lanes = np.asarray(lanes)
    V = np.full(P, IDLE["v"], np.int64)
    V[lanes] = np.asarray(v, dtype=np.int64)
    X = np.full(P, IDLE["x"], np.int64)
    X[lanes] = np.asarray(x, dtype=np.int64)
    buf = ans.new_buffer(P)
    top = np.array([len(s) for s in stacks], np.int64)
    stack = ans.reserve(buf.stack, top)
    for b, words in enumerate(stacks):
        stack[b, :len(words)] = words
    buf = ans.Buffer(X, stack, top, top.copy())
    seq = {"name": name, "what": what, "P": P, "lanes": lanes.tolist(),
           "start": state(V, buf, lanes)}
    seq["ops"] = []
    for op, n_listed in ops:
        n = np.full(P, IDLE["n"], np.int64)
        n[lanes] = n_listed
        before = V
        if op == "mul_gamma":
            s = ans.pop(buf, n)[1]  # the symbol mul_gamma pops (a pop only reads the stacks)
            V, buf = fixedpoint.mul_gamma(V, n, buf)
            s = [int(s[i]) for i in lanes]  # v n + s = v' D + r
            r = [int(before[i]) * int(n[i]) + k - int(V[i]) * D for i, k in zip(lanes, s,
                                                                                strict=True)]
        else:
            r = ans.pop(buf, np.full(P, D))[1]  # the symbol div_gamma pops
            V, buf = fixedpoint.div_gamma(V, n, buf)
            r = [int(r[i]) for i in lanes]  # v' D + r = v n + s
            s = [int(before[i]) * D + k - int(V[i]) * int(n[i]) for i, k in zip(lanes, r,
                                                                                strict=True)]
        step = {"op": op, "n": [int(k) for k in n[lanes]], "s": s, "r": r}
        step.update(state(V, buf, lanes))
        seq["ops"].append(step)
    return seq


def state(V, buf, lanes):
    return {"v": [int(a) for a in V[lanes]], "x": [int(a) for a in buf.x[lanes]],
            "stacks": [[int(w) for w in buf.stack[b, :buf.top[b]]] for b in range(len(buf.top))]}


def there_and_back(ns):
    """mul_gamma with each n of ns, then div_gamma with each in reverse: back to the start."""
    return [("mul_gamma", n) for n in ns] + [("div_gamma", n) for n in reversed(ns)]


def fixed(*values):
    return [int(round(v * ONE)) for v in values]


def sequences():
    fresh = ans.X0
    rng = np.random.default_rng(2015)
    rand_n = [[1, D, *rng.integers(1, D + 1, 6).tolist()] for _ in range(6)]
    out = [
        run("first_words", "four lanes from the start (x = 2**47, empty stack): n = 1 pushes a "
            "lane's first word (the low 32 bits of 2**47) on the first mul_gamma, n = 2**16 "
            "never does; then back", 4, range(4), fixed(0.3, -1.7, 2047.9, -2047.9),
            [fresh] * 4, [[]],
            there_and_back([[1, D, 58982, 32768], [2, 1, 3, D - 1], [1, 1, 1, 1]])),
        run("range_limits", "values at the ends of int64 (|value| < 2048 in fixed point), "
            "negative values, n = 1, 2, 2**16 - 1 and 2**16",
            6, range(6), [INT64_MIN, INT64_MAX, -1, -ONE, INT64_MIN + 1, 2047 * ONE],
            [fresh] * 6, [[]],
            there_and_back([[D, D, 1, 2, D - 1, 1], [D - 1, 1, D, 3, 2, D]])),
        run("lane_limits", "lane states at the ends of [2**31, 2**63): the smallest needs words "
            "from the stack, the largest pushes one, from a stack given at the start",
            5, range(5), fixed(0.71, -0.35, 1e-12, -1500.25, 3.0),
            [ans.LOW, ans.LOW + 1, 2**63 - 1, 2**63 - 2**40, 2**40 + 7],
            [[0xDEADBEEF, 22, 0xFFFFFFFF, 44, 55]],
            there_and_back([[D, 7, D, 1, 40000], [2, D, 1, D, 3]])),
        run("random", "eight lanes and a stack of random words, six rounds of random n (1 and "
            "2**16 among them)", 8, range(8),
            rng.integers(-(2**62), 2**62, 8).tolist(),
            rng.integers(ans.LOW, 2**63 - 1, 8, dtype=np.int64).tolist(),
            [rng.integers(0, 2**32, 6).tolist()], there_and_back(rand_n)),
        run("blocks", f"three blocks of {LANES} lanes (the last short): each block's lanes share "
            "their own stack, in lane order; lanes not listed stay as they are",
            2 * LANES + 3, [0, 1, LANES - 1, LANES, LANES + 5, 2 * LANES, 2 * LANES + 2],
            fixed(1.25, -0.5, 3e-3, -5.0, 7.75, 2047.5, -2047.5),
            [fresh, ans.LOW, fresh, 2**63 - 1, ans.LOW + 3, fresh, fresh], [[1, 2], [3], []],
            there_and_back([[1, D, 1, 1, D, 1, 2], [D, 1, 58982, D, 1, 3, D]])),
    ]
    ns = [[k] for k in (1, 2, 3, 58982, D - 1, D, 1, 1, 32768, 1, 7, 1)]
    out.append(run("one_lane_long", "one lane, twelve mul_gamma (words pile up) and back",
                   1, [0], fixed(-3 / 7), [fresh], [[]], there_and_back(ns)))
    return out


def main():
    doc = {"format": "revlearn exact-arithmetic vectors", "version": VERSION,
           "constants": {"frac_bits": fixedpoint.FRAC_BITS, "D": D, "M": ans.M, "X0": ans.X0,
                         "LOW": ans.LOW, "lanes_per_block": LANES},
           "idle_lane": IDLE, "sequences": sequences()}
    text = json.dumps(doc, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT}: {len(doc['sequences'])} sequences, "
          f"{sum(len(s['ops']) for s in doc['sequences'])} operations")


if __name__ == "__main__":
    main()
