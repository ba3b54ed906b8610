"""What users do today: Optuna's TPE over a constant alpha, a constant gamma and one init scale for
the `schedules` problem, to set beside `revlearn run schedules`.

    python -m bench.optuna_baseline [--trials 200] [--mnist DIR] [--seed 0]

784-50-50-50-10 tanh, the first 10,000 MNIST training images for training and the next 10,000 for
validation, T = 100 steps of batch 200, plain float64 SGD with momentum (what a user would run;
`revlearn.train(case, exact=False)`). Each trial trains once on the same batches and initial noise
and scores the validation loss; a run that diverges scores log(10) * 10. The best trial is then
scored on the test set: the canonical t10k file (10,000 images) from --mnist, by default
../shared/data/mnist when it exists, else the 5,000 embedded t10k images; the report says which.
Needs the optional extra `optuna` (`pip install 'revlearn[optuna]'`).
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import revlearn
from revlearn.experiments import common, schedules
from revlearn.mlp import Layout

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
DIVERGED = 10 * math.log(10)


def base_case(seed):
    """The schedules preset's problem (same data, batches and initial noise as its default run)."""
    job = schedules.Job({"preset": "schedules", "seed": seed, "backend": "numpy", "paper": False,
                         "small": False, "mnist_dir": None, "meta_iters": 1, "meta_batch": 1})
    return job.case


def with_hypers(case, alpha, gamma, init_scale):
    lay = Layout(case.layer_sizes)
    return case.replace(alpha=np.full((case.T, lay.G), alpha),
                        gamma=np.full((case.T, lay.G), max(gamma, 2.0**-16)),
                        init_scale=np.full(lay.G, init_scale))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None,
                        help="folder with the canonical MNIST files (for the t10k test loss)")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    try:
        import optuna
    except ImportError:
        print("the Optuna baseline needs optuna: pip install 'revlearn[optuna]'", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    case = base_case(args.seed)
    *_, X_test, y_test, test_name = common.mnist_splits({"mnist_dir": args.mnist}, 0, 0, 10_000)

    def objective(trial):
        c = with_hypers(case, trial.suggest_float("alpha", 1e-2, 10.0, log=True),
                        trial.suggest_float("gamma", 0.0, 0.99),
                        trial.suggest_float("init_scale", 1e-3, 1.0, log=True))
        try:
            w = revlearn.train(c, exact=False).w_final
        except revlearn.TrainingError:
            return DIVERGED
        loss = common.losses(c, w, c.X_valid, c.y_valid)[0]
        return loss if np.isfinite(loss) else DIVERGED

    start = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.optimize(objective, n_trials=args.trials)
    seconds = time.perf_counter() - start
    best = study.best_params
    c = with_hypers(case, best["alpha"], best["gamma"], best["init_scale"])
    w = revlearn.train(c, exact=False).w_final
    test_loss, test_err = common.losses(c, w, X_test, y_test)
    report = {"trials": args.trials, "wall_seconds": seconds, "best_params": best,
              "valid_loss": study.best_value, "test_loss": test_loss, "test_error": test_err,
              "test_set": test_name}
    print(f"Optuna TPE, {args.trials} trials, {seconds:.1f} s: alpha {best['alpha']:.3g}, "
          f"gamma {best['gamma']:.3g}, init_scale {best['init_scale']:.3g}")
    print(f"validation loss {study.best_value:.4f}, test loss {test_loss:.4f} "
          f"({100 * (1 - test_err):.1f} % accuracy) on {test_name}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
