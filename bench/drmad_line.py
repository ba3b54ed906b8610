"""Why DrMAD's hypergradient blows up on the paper's MNIST net: the adjoint along the straight
line from w_0 to w_T against the adjoint along the real trajectory.

    python -m bench.drmad_line [--T 1000] [--iters 60]

Both run Algorithm 2 from dw = grad f(w_T) (`approx._reverse`, the engine's steps) over the last
k steps, k = 10, 100, 300, T, and print |dw_{T-k}|: along the trajectory, df/dw_{T-k}; along the
line, what DrMAD computes in its place. Then, at a few steps t, the extreme eigenvalues of the
Hessian H_t of L_t (step t's batch, the penalty included) at w_t on each path, by power iteration
(`--iters` Hessian-vector products each; the most negative one from H_t shifted by the largest
magnitude): on the line, w_t stays near w_0 for longer, where the curvature is negative, and the
reverse recursion of heavy-ball momentum grows there by a factor per step of

    z = (b + sqrt(b^2 - 4 gamma)) / 2,   b = 1 + gamma - alpha (1 - gamma) h     (h < 0)

(1.23 at h = -0.6, alpha = 1, gamma = 0.9).
"""

import argparse
import json
from pathlib import Path

import numpy as np

import revlearn
from revlearn import approx, blas, lanes

from .machine import describe

SPEC = Path(__file__).resolve().parents[1] / "examples" / "mnist_spec.json"


def paths(case, eng):
    """(states on the trajectory, states on the line): t -> (w_t, v_t), and grad f(w_T)."""
    kept = {}
    w_T, state_T = approx._train(eng, lambda t, w, state, g: kept.__setitem__(t, (w, *state)))
    kept[case.T] = (w_T, *state_T)
    return kept, approx.line(case, w_T), approx._valid_grad(eng, w_T)[1]


def extremes(case, eng, t, w, iters, rng):
    """(largest-magnitude, most negative) eigenvalue estimates of H_t at w, by power iteration."""
    def hvp(u):
        eng.passes.batch_grad_hvp(t, w, u, None)
        return lanes.total(eng.passes.H) + case.lam * u

    def power(apply):
        u = rng.standard_normal(case.P)
        for _ in range(iters):
            u = apply(u)
            u /= np.linalg.norm(u)
        return float(u @ hvp(u))

    top = power(hvp)
    return top, power(lambda u: abs(top) * u - hvp(u))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--iters", type=int, default=60)
    args = p.parse_args(argv)
    case = revlearn.make_case({**json.loads(SPEC.read_text()), "n_iters": args.T})
    eng, T = approx._engine(case, "auto", None, "bench.drmad_line"), case.T
    print(f"{describe()}; the paper's MNIST net (examples/mnist_spec.json), T = {T}")
    with blas.single_threaded():
        trajectory, line, df = paths(case, eng)
        for k in sorted({10, 100, 300, T} & set(range(1, T + 1))):
            a = np.linalg.norm(approx._reverse(eng, df, trajectory, T - k)["d_w0"])
            b = np.linalg.norm(approx._reverse(eng, df, line, T - k)["d_w0"])
            print(f"|dw_{T - k}|: trajectory {a:.3e}   line (DrMAD) {b:.3e}")
        rng = np.random.default_rng(0)
        for t in sorted({0, 10, 50, 100, 300, 500, 900} & set(range(T))):
            a = extremes(case, eng, t, trajectory[t][0], args.iters, rng)
            b = extremes(case, eng, t, line[t][0], args.iters, rng)
            print(f"H_{t}: trajectory largest {a[0]:+.3f} most negative {a[1]:+.3f}   "
                  f"line largest {b[0]:+.3f} most negative {b[1]:+.3f}")


if __name__ == "__main__":
    main()
