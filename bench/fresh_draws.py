"""How learned hyperparameters fare on initial noise and batches they were not tuned on.

    python -m bench.fresh_draws RUN [RUN ...] [--optuna REPORT.json ...] [--draws 5] [--mnist DIR]

Each RUN is the --out folder of a finished `revlearn run schedules` (its results.json holds the
learned alpha, gamma and init scales); each REPORT an `optuna_baseline --json` report (its best
constants). Every one is trained, exactly as `revlearn run` trains, on the same `--draws` fresh
draws of eps and batches (`np.random.default_rng([10**6, d])`, a stream no run draws from) and
scored on the test set; prints the mean and the spread of the test loss over the draws beside the
run's own final test loss. A run with one fixed seed is tuned to that seed's batches, a run with
meta-batches to fresh ones: this puts them on the same footing.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import revlearn
from revlearn import blas
from revlearn.experiments import common
from revlearn.spec import sample_batches

from .optuna_baseline import SHARED_MNIST, base_case, hypers, with_hypers


def fresh(case, d):
    rng = np.random.default_rng([10**6, d])
    T, B = case.batches.shape
    return case.replace(eps=rng.standard_normal(case.P),
                        batches=sample_batches(len(case.X_train), T, B, rng))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN")
    parser.add_argument("--optuna", nargs="*", default=[], metavar="REPORT")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--mnist", default=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None)
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    case = base_case(0)
    names = [case.layout.describe_group(g).split()[0] for g in range(case.G)]
    *_, X_test, y_test, test_name = common.mnist_splits({"mnist_dir": args.mnist}, 0, 0, 10_000)
    entries = []
    for run in args.runs:
        doc = json.loads((Path(run) / "results.json").read_text())
        s = doc["summary"]
        entries.append((run, s["learned"]["test_loss"], np.array(s["alpha"]),
                        np.array(s["gamma"]), np.array(s["init_scale"])))
    for path in args.optuna:
        doc = json.loads(Path(path).read_text())
        a, g, s = hypers(doc["params"], doc["space"], names)
        entries.append((path, doc["test_loss"], a, g, s))
    report = {"draws": args.draws, "test_set": test_name, "rows": []}
    with blas.single_threaded():
        for label, own, alpha, gamma, scale in entries:
            hyper = with_hypers(case, alpha, gamma, scale)
            losses = []
            for d in range(args.draws):
                c = fresh(hyper, d)
                try:
                    w = revlearn.train(c).w_final
                    losses.append(common.losses(c, w, X_test, y_test)[0])
                except revlearn.TrainingError:
                    losses.append(float("nan"))
            row = {"run": label, "own_test_loss": own, "fresh_test_losses": losses,
                   "mean": float(np.mean(losses)), "sd": float(np.std(losses, ddof=1))}
            report["rows"].append(row)
            print(f"{label}: own draw {own:.4f}; {args.draws} fresh draws {row['mean']:.4f} "
                  f"+- {row['sd']:.4f} (min {min(losses):.4f}, max {max(losses):.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
