"""What users do today: gradient-free search with Optuna over a few constants of the `schedules`
problem, to set beside `revlearn run schedules`.

    python -m bench.optuna_baseline [--sampler tpe] [--space 3] [--trials 200 | --seconds S]
                                    [--at S1,S2,...] [--mnist DIR] [--seed 0] [--json FILE]

784-50-50-50-10 tanh, the first 10,000 MNIST training images for training and the next 10,000 for
validation, T = 100 steps of batch 200, plain float64 SGD with momentum (what a user would run;
`revlearn.train(case, exact=False)`). Each trial trains once on the same batches and initial noise
and scores the validation loss; a run that diverges scores log(10) * 10. The best trial is then
scored on the test set: the canonical t10k file (10,000 images) from --mnist, by default
../shared/data/mnist when it exists, else the 5,000 embedded t10k images; the report says which.

--space 3: one constant alpha in [0.01, 10], gamma in [0, 0.99] and init scale in [0.001, 1] for
every group; --space 24: the same three per parameter group (8 groups: W1, b1, ..., b4), 24
constants. --sampler: "tpe" (independent TPE), "tpe-multivariate" (TPE over the joint
distribution), "cmaes" (CMA-ES, which needs the small `cmaes` package) or "random" (random
search). --seconds bounds the
search by wall time instead of a trial count, and --at reports, for each time given, the best trial
found by then scored on the test set: one run of 10x a budget also gives the 1x answer. Needs the
optional extra `optuna` (`pip install 'revlearn[optuna]'`: optuna and cmaes).
"""

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import revlearn
from revlearn.experiments import common, schedules
from revlearn.mlp import Layout

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
DIVERGED = 10 * math.log(10)


def main_job(mnist, seed):
    """The schedules Job exactly as `revlearn run --mnist DIR --seed S` builds it (and without
    the fresh-draw scoring at its end)."""
    options = {"preset": "schedules", "seed": seed, "backend": "auto", "threads": None,
               "paper": False, "small": False, "mnist_dir": mnist, "optimizer": "momentum",
               "meta_iters": schedules.DEFAULT["meta_iters"], "meta_batch": 1,
               "draws": "fresh", "fresh_draws": 0}
    options["knots"] = schedules.default_knots(options)
    options["meta_step_decay"] = schedules.default_meta_step_decay(options)
    return schedules.Job(options)


def base_case(seed):
    """The schedules preset's problem, with the one fixed draw of batches and initial noise a
    one-draw run (`revlearn run --one-draw`) tunes on."""
    return main_job(None, seed).case


def with_hypers(case, alpha, gamma, init_scale):
    """The case with constant (per group, when given G values) alpha, gamma and init scale."""
    lay = Layout(case.layer_sizes)
    return case.replace(alpha=np.broadcast_to(alpha, (case.T, lay.G)).copy(),
                        gamma=np.maximum(np.broadcast_to(gamma, (case.T, lay.G)), 2.0**-16),
                        init_scale=np.broadcast_to(init_scale, (lay.G,)).copy())


RANGES = {"alpha": (1e-2, 10.0, True), "gamma": (0.0, 0.99, False),
          "init_scale": (1e-3, 1.0, True)}


def suggest(trial, space, names):
    """(alpha, gamma, init_scale) of a trial: scalars (space 3), or one per group (space 24)."""
    out = []
    for key, (lo, hi, log) in RANGES.items():
        if space == 3:
            out.append(trial.suggest_float(key, lo, hi, log=log))
        else:
            out.append(np.array([trial.suggest_float(f"{key}_{n}", lo, hi, log=log)
                                 for n in names]))
    return out


def hypers(params, space, names):
    """(alpha, gamma, init_scale) from a trial's params, as `suggest` gave them."""
    if space == 3:
        return [params[k] for k in RANGES]
    return [np.array([params[f"{k}_{n}"] for n in names]) for k in RANGES]


def sampler(name, seed):
    import optuna
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # multivariate TPE is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=name == "tpe-multivariate")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler", choices=("tpe", "tpe-multivariate", "cmaes", "random"),
                        default="tpe")
    parser.add_argument("--space", type=int, choices=(3, 24), default=3)
    parser.add_argument("--trials", type=int, default=None, help="default 200 without --seconds")
    parser.add_argument("--seconds", type=float, default=None, help="wall-time budget")
    parser.add_argument("--at", default="", help="comma-separated times (s): the best by each")
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
    if args.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            print("Optuna's CMA-ES needs cmaes: pip install 'revlearn[optuna]'", file=sys.stderr)
            return 2
    trials = args.trials if args.trials is not None or args.seconds else 200
    at = sorted(float(t) for t in args.at.split(",") if t)
    case = base_case(args.seed)
    names = [case.layout.describe_group(g).split()[0] for g in range(case.G)]
    *_, X_test, y_test, test_name = common.mnist_splits({"mnist_dir": args.mnist}, 0, 0, 10_000)
    start, best = time.perf_counter(), []  # best: (seconds, trial number, value) improvements

    def objective(trial):
        c = with_hypers(case, *suggest(trial, args.space, names))
        try:
            w = revlearn.train(c, exact=False).w_final
            loss = common.losses(c, w, c.X_valid, c.y_valid)[0]
        except revlearn.TrainingError:
            loss = DIVERGED
        loss = loss if np.isfinite(loss) else DIVERGED
        if not best or loss < best[-1][2]:
            best.append((time.perf_counter() - start, trial.number, loss))
        return loss

    study = optuna.create_study(sampler=sampler(args.sampler, args.seed))
    study.optimize(objective, n_trials=trials, timeout=args.seconds)
    seconds = time.perf_counter() - start

    def scored(number, value):
        params = study.trials[number].params
        c = with_hypers(case, *hypers(params, args.space, names))
        w = revlearn.train(c, exact=False).w_final
        test_loss, test_err = common.losses(c, w, X_test, y_test)
        return {"trial": number, "params": params, "valid_loss": value, "test_loss": test_loss,
                "test_error": test_err}

    report = {"sampler": args.sampler, "space": args.space, "trials": len(study.trials),
              "wall_seconds": seconds, "test_set": test_name, "best_so_far": best,
              **scored(study.best_trial.number, study.best_value), "at": {}}
    for t in at:
        found = [b for b in best if b[0] <= t]
        if found:
            report["at"][str(t)] = scored(found[-1][1], found[-1][2])
    label = f"Optuna {args.sampler}, {args.space} constants"
    print(f"{label}: {len(study.trials)} trials in {seconds:.1f} s")
    print(f"best: validation loss {study.best_value:.4f}, test loss {report['test_loss']:.4f} "
          f"({100 * (1 - report['test_error']):.1f} % accuracy) on {test_name}")
    for t, r in report["at"].items():
        print(f"best by {float(t):.0f} s (trial {r['trial']}): validation loss "
              f"{r['valid_loss']:.4f}, test loss {r['test_loss']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
