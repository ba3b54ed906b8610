"""The reverse pass's time over the forward pass's time (Algorithm 2 over Algorithm 1, both exact).

    python -m bench.reverse_forward [--repeats 5] [--backend numpy]

Net 784-50-50-50-10 tanh, batch 200, T = 100, on synthetic data of MNIST's shape (the timing does
not depend on the pixel values). Prints medians over the repeats.
"""

import argparse
import statistics
import time

import revlearn
from revlearn import blas, fixedpoint, sgd
from revlearn.threads import Workers

from .machine import describe

SPEC = dict(layer_sizes=[784, 50, 50, 50, 10], activation="tanh", n_train=10000, n_valid=10000,
            n_iters=100, batch_size=200, alpha=0.1, gamma=0.9, init_scale=0.05)


def time_passes(case, backend, threads=1):
    """Seconds for Algorithm 1 (exact), the validation gradient, and Algorithm 2."""
    be, workers = sgd.get_backend(backend), Workers(threads)
    with blas.single_threaded():
        t0 = time.perf_counter()
        W, V, buf, _ = sgd.train_exact(case, be, workers)
        t1 = time.perf_counter()
        _, dw = be.loss_grad(fixedpoint.from_fixed(W), case.X_valid, case.y_valid, case.layout,
                             case.activation, workers=workers)
        t2 = time.perf_counter()
        reversal = sgd.optimizer_of(case).reversal
        sgd.reverse(case, be, workers, reversal(be, workers, W, V, buf), dw)
        t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", default="numpy", choices=sgd.BACKENDS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    case = revlearn.make_case(SPEC)
    time_passes(case, args.backend, args.threads)  # warm up (JIT, caches)
    runs = [time_passes(case, args.backend, args.threads) for _ in range(args.repeats)]
    fwd, val, rev = (statistics.median(r[i] for r in runs) for i in range(3))
    ratios = sorted(r[2] / r[0] for r in runs)
    print(f"machine: {describe()}")
    print(f"784-50-50-50-10 tanh, batch 200, T = 100, backend {args.backend}, "
          f"median of {args.repeats}")
    print(f"forward (Algorithm 1, exact) {fwd:.3f} s, validation gradient {val:.3f} s, "
          f"reverse (Algorithm 2) {rev:.3f} s")
    print(f"reverse / forward = {statistics.median(ratios):.2f} "
          f"(range {ratios[0]:.2f} to {ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
