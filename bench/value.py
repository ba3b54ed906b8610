"""Does revlearn's default beat the searches a user would run instead, on draws none of them saw?

    python -m bench.value [--budgets 1,2,5,10] [--draws 10] [--mnist DIR] [--seed 0]
                          [--searches tpe-multivariate,cmaes,random] [--json FILE] [--figure FILE]

The main job's problem (`revlearn run schedules`: 784-50-50-50-10 tanh, 10,000 MNIST training
images, T = 100, batch 200, validation on the next 10,000). Budgets are multiples of the main
job's wall time, 1x being the time its default run takes to finish its meta-iterations here:

- revlearn: `revlearn run` with every default and --meta-iters b x the default, for each budget
  b. One run of the largest budget gives them all: nothing in a run depends on how many
  meta-iterations it will take, so its hyperparameters after b x 30 meta-iterations are those of
  the shorter run (tests/test_experiments.py checks this on the small problem). Its wall time
  at b is the time by then, every meta-iteration's evaluation included.
- each search (Optuna multivariate TPE and CMA-ES, and random search, over the 24 per-group
  constants alpha, gamma and init scale of `bench.optuna_baseline`): trials one after another,
  each one plain float64 training run (both cores) on the tuning draw scored on the validation
  loss, for as long as revlearn's largest budget took; at each budget, its best trial by
  revlearn's time at that budget.

With --ablation, the comparison is of revlearn's protocols instead: the main job with one thing
changed at a time (`PROTOCOLS`: one fixed draw, values per step, knots, a constant meta step, a
meta-batch), each run to the largest budget and stopped at each, budgets counted in
hypergradients (1x = the default's 30) rather than seconds, and scored the same way; --seeds runs
each protocol from several tuning seeds.

Every result, and the initial hyperparameters, is then trained on the same --draws draws of
initial noise and batches from a stream no tuning draws from (`bench.fresh_draws.fresh`), in plain
float64, and scored on the test set (all 10,000 t10k images with --mnist): mean and standard
deviation over the draws, and for each search and budget Welch's t-test of revlearn's losses
against the search's (scipy.stats). Writes JSON and a figure (test loss against wall time).
"""

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import revlearn
from revlearn import blas, meta
from revlearn.experiments import common

from .fresh_draws import fresh
from .machine import describe
from .optuna_baseline import DIVERGED, SHARED_MNIST, hypers, main_job, sampler, suggest, with_hypers

SEARCHES = ("tpe-multivariate", "cmaes", "random")
LABELS = {"revlearn": "revlearn run (default)", "tpe-multivariate": "Optuna TPE (multivariate)",
          "cmaes": "Optuna CMA-ES", "random": "random search"}


PROTOCOLS = {  # the main job's default with one thing changed (MetaConfig fields)
    "default (fresh draws, 8 knots, meta step decaying over 100)": {},
    "one fixed draw, per step (revlearn 0.2's default)": dict(fresh_seed=False, knots=None,
                                                              step_decay=None),
    "fresh draws, per step": dict(knots=None),
    "fresh draws, per-group constants (1 knot)": dict(knots=1),
    "fresh draws, 4 knots": dict(knots=4),
    "fresh draws, 8 knots, constant meta step": dict(step_decay=None),
    "fresh draws, 8 knots, meta-batch of 2": dict(meta_batch=2),
}


def revlearn_budgets(job, budgets, say):
    """Run the job for max(budgets) x its meta-iterations (each a meta-batch of K); per budget b:
    the Case of the hyperparameters after b x n / K meta-iterations and the wall time by then."""
    n, out, state = job.n_steps // job.config.meta_batch, {}, job.initial_state()
    start = time.perf_counter()
    with blas.single_threaded():
        for i in range(1, max(budgets) * n + 1):
            state, record = job.step(state)
            if i % n == 0 and i // n in budgets:
                out[i // n] = (meta.case_at(job.case, state, job.config),
                               time.perf_counter() - start)
                say(f"revlearn: {i} meta-iterations in {out[i // n][1]:.1f} s")
    return out


def ablation(args, budgets, say):
    """Each protocol of PROTOCOLS from each tuning seed, stopped at each budget (in
    hypergradients) and scored on the fresh draws: the report."""
    report = {"budgets": budgets, "draws": args.draws, "seeds": args.seeds,
              "machine": describe(), "protocols": {}}
    for name, changes in PROTOCOLS.items():
        rows = report["protocols"][name] = []
        for seed in args.seeds:
            job = main_job(args.mnist, seed)
            job.config = dataclasses.replace(job.config, **changes)
            label = f"{name}, seed {seed}"
            ours = revlearn_budgets(job, budgets, lambda line, label=label: say(f"{label}: {line}"))
            with blas.single_threaded():
                for b in budgets:
                    rows.append({"seed": seed, "budget": b, "seconds": ours[b][1], "test": summary(
                        fresh_losses(ours[b][0], job.X_test, job.y_test, args.draws))})
            say(f"{name}, seed {seed}: " + ", ".join(
                f"{r['budget']}x {r['test']['mean']:.4f} +- {r['test']['sd']:.4f}"
                for r in rows if r["seed"] == seed))
    return report


def search(name, case, seconds, seed):
    """A gradient-free search over the 24 per-group constants for `seconds`: its study, the
    (seconds, trial number, value) of each improvement, the group names, and the time each
    trial ended."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [case.layout.describe_group(g).split()[0] for g in range(case.G)]
    start, best, ended = time.perf_counter(), [], []

    def objective(trial):
        loss = trained_loss(trial)
        ended.append(time.perf_counter() - start)
        if not best or loss < best[-1][2]:
            best.append((ended[-1], trial.number, loss))
        return loss

    def trained_loss(trial):
        c = with_hypers(case, *suggest(trial, 24, names))
        try:
            w = revlearn.train(c, exact=False).w_final
            loss = common.losses(c, w, c.X_valid, c.y_valid)[0]
        except revlearn.TrainingError:
            loss = DIVERGED
        return loss if np.isfinite(loss) else DIVERGED

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
        study = optuna.create_study(sampler=sampler(name, seed))
        study.optimize(objective, timeout=seconds)
    return study, best, names, ended


def fresh_losses(case, X_test, y_test, draws):
    """Test losses of case's hyperparameters trained (plain float64) on each fresh draw."""
    out = []
    for d in range(draws):
        c = fresh(case, d)
        try:
            w = revlearn.train(c, exact=False).w_final
            out.append(common.losses(c, w, X_test, y_test)[0])
        except revlearn.TrainingError:
            out.append(float("nan"))
    return out


def summary(losses):
    v = np.asarray(losses)
    return {"losses": v.tolist(), "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)),
            "se": float(np.std(v, ddof=1) / np.sqrt(len(v)))}


def welch(a, b):
    """Welch's t-test of mean(a) < mean(b): (t, two-sided p)."""
    from scipy import stats
    t, p = stats.ttest_ind(a, b, equal_var=False)
    return float(t), float(p)


def figure(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in ["revlearn", *report["searches"]]:
        rows = report["results"][name]
        x = [r["seconds"] for r in rows]
        y = [r["test"]["mean"] for r in rows]
        e = [r["test"]["sd"] for r in rows]
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=LABELS[name])
    ax.set_xscale("log")
    ax.set_xlabel("wall time (s), budgets " + ", ".join(f"{b}x" for b in report["budgets"]))
    ax.set_ylabel(f"test loss on {report['draws']} fresh draws (mean +- sd)")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1,2,5,10")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--searches", default=",".join(SEARCHES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None)
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--figure", help="write the figure (PNG) here")
    parser.add_argument("--ablation", action="store_true",
                        help="compare revlearn's protocols (PROTOCOLS) instead of the searches")
    parser.add_argument("--seeds", default="0", help="tuning seeds of the ablation, e.g. 0,1,2")
    args = parser.parse_args(argv)
    args.seeds = [int(x) for x in args.seeds.split(",")]
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    searches = [s for s in args.searches.split(",") if s]
    unknown = [s for s in searches if s not in SEARCHES]
    if unknown or min(budgets) < 1 or args.draws < 2:
        print(f"bench.value: searches among {', '.join(SEARCHES)}, budgets >= 1 and at least 2 "
              "draws", file=sys.stderr)
        return 2
    try:
        import optuna  # noqa: F401
        import scipy  # noqa: F401
    except ImportError:
        print("bench.value needs optuna, cmaes and scipy: pip install -e '.[optuna]' scipy",
              file=sys.stderr)
        return 2
    say = print
    if args.ablation:
        report = ablation(args, budgets, say)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        say(ablation_table(report))
        return 0
    job = main_job(args.mnist, args.seed)
    say(f"machine: {json.dumps(describe())}")
    ours = revlearn_budgets(job, budgets, say)
    seconds = {b: ours[b][1] for b in budgets}
    tuning = job.case  # the fixed draw the searches tune on (the one-draw protocol's)
    found = {}
    for name in searches:
        study, best, names, ended = search(name, tuning, seconds[max(budgets)], args.seed)
        say(f"{name}: {len(study.trials)} trials in {ended[-1]:.0f} s")
        found[name] = {}
        for b in budgets:
            by_then = [x for x in best if x[0] <= seconds[b]]
            if by_then:
                params = study.trials[by_then[-1][1]].params
                found[name][b] = (with_hypers(tuning, *hypers(params, 24, names)),
                                  sum(t <= seconds[b] for t in ended), by_then[-1][2])
    X_test, y_test = job.X_test, job.y_test
    report = {"problem": "schedules (the main job)", "test_set": job.test_name,
              "budgets": budgets, "draws": args.draws, "searches": searches,
              "seconds": seconds, "machine": describe(), "results": {}}
    with blas.single_threaded():
        initial = summary(fresh_losses(job.case, X_test, y_test, args.draws))
        report["initial"] = initial
        report["results"]["revlearn"] = [
            {"budget": b, "seconds": seconds[b], "meta_iters": b * job.n_steps,
             "test": summary(fresh_losses(ours[b][0], X_test, y_test, args.draws))}
            for b in budgets]
        for name in searches:
            report["results"][name] = [
                {"budget": b, "seconds": seconds[b], "trials": found[name][b][1],
                 "valid_loss": found[name][b][2],
                 "test": summary(fresh_losses(found[name][b][0], X_test, y_test, args.draws))}
                for b in budgets if b in found[name]]
    for name in searches:
        for row in report["results"][name]:
            mine = next(r for r in report["results"]["revlearn"] if r["budget"] == row["budget"])
            row["welch_t"], row["welch_p"] = welch(mine["test"]["losses"], row["test"]["losses"])
    say(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.figure:
        figure(report, args.figure)
    return 0


def table(report):
    """The report as a Markdown table: test loss (mean +- sd) per method and budget."""
    budgets = report["budgets"]
    head = "| method | " + " | ".join(f"{b}x ({report['seconds'][b]:.0f} s)" for b in budgets)
    lines = [head + " |", "|---" * (len(budgets) + 1) + "|"]
    for name in ["revlearn", *report["searches"]]:
        cells = {r["budget"]: r for r in report["results"][name]}
        row = [f"{cells[b]['test']['mean']:.4f} +- {cells[b]['test']['sd']:.4f}"
               + (f" (p {cells[b]['welch_p']:.2g})" if "welch_p" in cells[b] else "")
               if b in cells else "" for b in budgets]
        lines.append(f"| {LABELS[name]} | " + " | ".join(row) + " |")
    i = report["initial"]
    lines.append(f"(test loss on {report['draws']} fresh draws, {report['test_set']}; initial "
                 f"hyperparameters {i['mean']:.4f} +- {i['sd']:.4f}; p: Welch's t-test against "
                 "revlearn at the same budget)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())


def ablation_table(report):
    """The ablation as a Markdown table: per protocol and budget, the mean over the seeds of the
    fresh-draw test loss, with the spread over the draws (sd; the mean of the seeds' sds)."""
    budgets = report["budgets"]
    lines = ["| protocol | " + " | ".join(f"{b}x" for b in budgets) + " |",
             "|---" * (len(budgets) + 1) + "|"]
    for name, rows in report["protocols"].items():
        cells = []
        for b in budgets:
            at = [r["test"] for r in rows if r["budget"] == b]
            cells.append(f"{np.mean([t['mean'] for t in at]):.4f} +- "
                         f"{np.mean([t['sd'] for t in at]):.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"(test loss on {report['draws']} fresh draws; budgets in hypergradients, 1x = "
                 f"30; tuning seeds {', '.join(map(str, report['seeds']))})")
    return "\n".join(lines)
