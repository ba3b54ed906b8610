"""Two `revlearn run schedules` runs side by side: their learned step-size schedules and how
rough they are.

    python scripts/compare_schedules.py RUN_A RUN_B [--labels A,B] [-o FIGURE.png]

RUN_A and RUN_B are --out folders of finished runs (their results.json). Prints, per run, the
roughness of the learned schedules, mean over steps and groups of |alpha_{t+1} - alpha_t| (also
divided by the mean alpha, and for gamma), and the final test loss; with -o draws the weights'
step-size schedules of both runs side by side, on one scale (needs matplotlib).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def roughness(x):
    """mean over t and groups of |x_{t+1} - x_t|, for x of shape (T, G)."""
    return float(np.mean(np.abs(np.diff(x, axis=0))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, metavar="RUN")
    parser.add_argument("--labels", default=None, help="two labels, comma-separated")
    parser.add_argument("-o", "--output", help="figure to write (PNG)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else args.runs
    docs = [json.loads((Path(r) / "results.json").read_text()) for r in args.runs]
    for label, doc in zip(labels, docs, strict=True):
        s = doc["summary"]
        alpha, gamma = np.array(s["alpha"]), np.array(s["gamma"])
        print(f"{label}: roughness alpha {roughness(alpha):.4f} (mean alpha {alpha.mean():.3f}, "
              f"relative {roughness(alpha) / alpha.mean():.4f}), gamma {roughness(gamma):.4f}; "
              f"test loss {s['learned']['test_loss']:.4f} ({100 * s['learned']['test_error']:.2f} "
              f"% error); {doc['steps_done']} meta-iterations in "
              f"{doc['wall_seconds_this_session']:.0f} s")
    if args.output:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
        for ax, label, doc in zip(axes, labels, docs, strict=True):
            alpha = np.array(doc["summary"]["alpha"])
            for g in range(0, alpha.shape[1], 2):
                ax.plot(alpha[:, g], ".-", ms=3, label=f"layer {g // 2 + 1}")
            ax.set_title(f"{label}: roughness {roughness(alpha):.3f}", fontsize=10)
            ax.set_xlabel("training step t")
            ax.set_ylim(0, 1.05 * max(np.max(d["summary"]["alpha"]) for d in docs))
        axes[0].set_ylabel("learned step size alpha_t (weights)")
        axes[1].legend(frameon=False, fontsize=8)
        fig.savefig(args.output, dpi=110, bbox_inches="tight")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
