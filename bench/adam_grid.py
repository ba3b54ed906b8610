"""How many fractional bits Adam's m and s need: float64 Adam with m and s rounded to a grid of
2**-F after every step, against plain float64 Adam, on the paper's MNIST net (`bench.problem`'s
Adam version):

    python -m bench.adam_grid [--T 100] [--l2 1e-4,0]

For F in 52 (w's grid), 62, 84 and 100 (revlearn's wide fixed point), prints the largest
difference of w_T from float64 Adam's, relative to the largest weight, and the difference of the
validation loss. w itself stays float64 here; the last line rounds w to 2**-52 as well, with m and
s unrounded: what w's own grid costs, the floor for revlearn.
"""

import argparse

import numpy as np

from revlearn import adam, mlp

from . import problem


def final_weights(case, F_moments, F_w):
    """w_T of float64 Adam with m, s rounded to 2**-F_moments and w to 2**-F_w (None: no
    rounding) after every step."""
    def grid(x, F):
        return x if F is None else np.rint(x * 2.0**F) * 2.0**-F

    schedule = adam.Schedule(case)
    w = grid(case.w0, F_w)
    state = adam.Moments(np.zeros(case.P), np.zeros(case.P))
    for t in range(case.T):
        rows = case.batches[t]
        g = mlp.loss_grad(w, case.X_train[rows], case.y_train[rows], case.layout,
                          case.activation)[1] + case.lam * w
        w, state = adam.float_step(w, state, g, schedule.at(t))
        w, state = grid(w, F_w), adam.Moments(*(grid(a, F_moments) for a in state))
    return w


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.adam_grid")
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--l2", default="1e-4,0")
    args = p.parse_args(argv)
    for l2 in (float(x) for x in args.l2.split(",")):
        case = problem.case(args.T, optimizer="adam", l2=l2)
        ref = final_weights(case, None, None)
        f_ref = mlp.loss(ref, case.X_valid, case.y_valid, case.layout, case.activation)
        print(f"T = {args.T}, l2 = {l2:g}: max |w_T - float64 Adam's w_T| / max |w_T|, and the "
              "validation loss's difference")
        for F_moments, F_w in ((52, None), (62, None), (84, None), (100, None), (None, 52)):
            w = final_weights(case, F_moments, F_w)
            f = mlp.loss(w, case.X_valid, case.y_valid, case.layout, case.activation)
            what = (f"m, s on 2**-{F_moments}" if F_moments else "w on 2**-52, m, s exact")
            print(f"  {what:24s} {np.max(np.abs(w - ref)) / np.max(np.abs(ref)):9.2e}"
                  f"   {abs(f - f_ref):9.2e}")


if __name__ == "__main__":
    main()
