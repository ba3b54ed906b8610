"""`revlearn run schedules` (paper Figs. 2, 3 and 5): learn step-size and momentum schedules and
initial scales.

784-50-50-50-10 tanh MLP on 10,000 MNIST training images, T = 100 steps of batch 200; learned:
alpha and gamma per step and parameter group, and the G = 8 initial scales, with Adam at meta step
0.04 on log alpha, logit gamma and log init_scale.

Default (the main job, under a minute on 2 cores): meta-objective = validation loss, a fresh draw of
initial noise and batches every meta-iteration (`meta.case_at`), each schedule on KNOTS = 8 values
per group, piecewise linear between them (136 hyperparameters), the meta step divided by
1 + i / 100 at meta-iteration i, starting from a constant alpha = 1, gamma = 0.9,
init_scale = 0.1; 30 meta-iterations. Chosen by measurement on draws that
no tuning used (docs/value.md): on one fixed draw the hyperparameters fit that draw, and one value
per step fits each draw's noise. `--one-draw` tunes on the one fixed draw from
default_rng([seed, 2**32 - 1]) instead, `--knots K` takes K values per group (T: one per step).
`--paper`: the paper's protocol: meta-objective = training loss, fresh draws, one value per step,
50 meta-iterations, from the same constant start. (The paper started from its
Bayesian-optimization values alpha = exp(0.887), gamma = sigmoid(0.403), init_scale = exp(-1.63);
with this engine's batches that point trains chaotically for many seeds, the loss jumping above 7
in 29 of 50 meta-iterations, so the meta-optimization never settles: docs/reproducing.md.)

`--optimizer adam` trains with Adam instead of SGD with momentum and learns alpha, beta1 and beta2
(log alpha, logit beta1, logit beta2) and the initial scales, from alpha = 0.01 and
torch.optim.Adam's beta1 = 0.9, beta2 = 0.999 and epsilon = 1e-8 (fixed); alpha = 0.01 is the
best constant of 0.001, 0.003, 0.01, 0.02, 0.03, 0.05 on this problem's validation loss.
"""

import numpy as np

from .. import meta
from ..case import Case
from ..mlp import Layout
from ..spec import sample_batches
from . import common, plotting, runner

DESCRIPTION = "learn step-size and momentum schedules and init scales (paper Figs. 2, 3, 5)"
SIZES = (784, 50, 50, 50, 10)
T, B, N_TRAIN, N_VALID, N_TEST = 100, 200, 10_000, 10_000, 10_000
SMALL = dict(T=12, B=50, n_train=400, n_valid=400, n_test=400, meta_iters=4)
DEFAULT = dict(alpha=1.0, gamma=0.9, init_scale=0.1, objective="valid", meta_iters=30)
PAPER = dict(DEFAULT, objective="train", meta_iters=50)
KNOTS = 8  # values per group of each learned schedule, by default
META_STEP_DECAY = 100.0  # the default protocol's meta step: META_STEP / (1 + i / 100)
PAPER_BO_START = dict(alpha=float(np.exp(0.887)), gamma=float(1 / (1 + np.exp(-0.403))),
                      init_scale=float(np.exp(-1.63)))
META_STEP = 0.04
ADAM_START = dict(alpha=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8)


YLABELS = {"alpha": "step size alpha_t", "gamma": "momentum gamma_t",
           "beta1": "first-moment decay beta1_t", "beta2": "1 - beta2_t (second moment)"}


def default_meta_iters(options):
    return (SMALL if options["small"] else PAPER if options["paper"] else DEFAULT)["meta_iters"]


def default_meta_step_decay(options):
    """META_STEP_DECAY on fresh draws (the default protocol); a constant meta step on one draw
    and with --paper, as before fresh draws were the default."""
    return META_STEP_DECAY if options["draws"] == "fresh" and not options["paper"] else None


def default_knots(options):
    """Values per group of each learned schedule: KNOTS, or one per step as the paper's."""
    steps = SMALL["T"] if options["small"] else T
    return steps if options["paper"] else min(KNOTS, steps)


class Job(common.MetaJob):
    def __init__(self, options):
        common.check_mnist_dir(options)
        small, s = options["small"], PAPER if options["paper"] else DEFAULT
        steps, batch = (SMALL["T"], SMALL["B"]) if small else (T, B)
        n = SMALL if small else dict(n_train=N_TRAIN, n_valid=N_VALID, n_test=N_TEST)
        X, y, Xv, yv, self.X_test, self.y_test, self.test_name = common.mnist_splits(
            options, n["n_train"], n["n_valid"], n["n_test"])
        lay = Layout(SIZES)
        rng = np.random.default_rng([options["seed"], 2**32 - 1])  # the fixed-seed run's draws
        full = lambda value: np.full((steps, lay.G), value)  # noqa: E731
        if options["optimizer"] == "adam":
            a = ADAM_START
            alpha, own = a["alpha"], dict(optimizer="adam", beta1=full(a["beta1"]),
                                          beta2=full(a["beta2"]),
                                          epsilon=np.full(lay.G, a["epsilon"]))
            self.decays, trained_with = ("beta1", "beta2"), "Adam"
        else:
            alpha, own = s["alpha"], dict(gamma=full(s["gamma"]))
            self.decays, trained_with = ("gamma",), "momentum"
        self.case = Case(layer_sizes=SIZES, activation="tanh", X_train=X, y_train=y, X_valid=Xv,
                         y_valid=yv, batches=sample_batches(len(X), steps, batch, rng),
                         eps=rng.standard_normal(lay.P), alpha=full(alpha), **own,
                         init_scale=np.full(lay.G, s["init_scale"]), l2=np.zeros(lay.G))
        knots = options["knots"] or steps  # None: a checkpoint from before knots, per step
        fresh = options["draws"] == "fresh"
        self.config = meta.MetaConfig(learn=("alpha", *self.decays, "init_scale"),
                                      optimizer="adam", step_size=META_STEP,
                                      objective=s["objective"], fresh_seed=fresh,
                                      seed=options["seed"], backend=options["backend"],
                                      threads=options.get("threads"),
                                      meta_batch=options["meta_batch"],
                                      step_decay=options["meta_step_decay"],
                                      knots=None if knots == steps else knots)
        self.n_steps, self.fresh_draws = options["meta_iters"], options["fresh_draws"]
        learned = lay.G * ((1 + len(self.decays)) * min(knots, steps) + 1)
        how = "per step and group" if knots >= steps else f"on {knots} knots per group"
        self.headline = (f"{'-'.join(map(str, SIZES))} tanh, {len(X)} MNIST training images, "
                         f"T = {steps}, batch {batch}"
                         + (", trained with Adam" if trained_with == "Adam" else "")
                         + f"; learning {learned} hyperparameters (alpha, "
                         f"{', '.join(self.decays)} {how}, init scales) "
                         f"with Adam on the {common.OBJECTIVE_NAMES[s['objective']]} loss, "
                         + ("a fresh draw of initial noise and batches every meta-iteration"
                            if fresh else "one fixed draw of initial noise and batches"))

    def record(self, state, outcome):
        rec = super().record(state, outcome)
        rec["init_scale"] = outcome.case.init_scale.tolist()
        rec["learning_curve"] = outcome.result.train_losses.tolist()
        return rec

    def finish(self, state, records, out, plt):
        """Final evaluation, table, CSV files and figures; returns (summary, table, files)."""
        case_f, trained, final = self.final_evaluation(state)
        lay = self.case.layout
        first = records[0]
        summary = {"initial": {k: first[k] for k in final}, "learned": final,
                   "test_set": self.test_name, "meta_objective": self.config.objective,
                   "optimizer": case_f.optimizer, "alpha": case_f.alpha.tolist(),
                   **{k: getattr(case_f, k).tolist() for k in self.decays},
                   "init_scale": case_f.init_scale.tolist(),
                   "one_over_sqrt_fan_in": (1 / np.sqrt(lay.fan_in)).tolist(),
                   "learned_learning_curve": trained.train_losses.tolist()}
        table = common.loss_table([("initial hyperparameters", first),
                                   (f"learned ({state.i} meta-iterations)", final)],
                                  self.test_name)
        names = [lay.describe_group(g).split()[0] for g in range(lay.G)]
        table += "\ninit scales: " + "  ".join(
            f"{n} {s:.3f}" for n, s in zip(names, case_f.init_scale, strict=True))
        table += f"   (1/sqrt(784) = {1 / np.sqrt(784):.3f}, 1/sqrt(50) = {1 / np.sqrt(50):.3f})"
        summary["fresh_draws"], line = self.fresh_draws_report(case_f)
        table += "\n" + line if line else ""
        files = [str(out / "history.csv"), str(out / "schedules.csv")]
        keys = ["i", "train_loss", "valid_loss", "test_loss", "test_error", "meta_objective",
                "grad_norm"]
        common.write_history(out / "history.csv", records, keys, extra=("init_scale", names))
        columns = ("alpha", *self.decays)
        rows = [[t] + [x for k in columns for x in getattr(case_f, k)[t]] for t in range(case_f.T)]
        runner.write_csv(out / "schedules.csv",
                         ["step"] + [f"{k}_{n}" for k in columns for n in names], rows)
        if plt is not None:
            files += self.plot(plt, out, case_f, records, trained, names)
        return summary, table, files

    def plot(self, plt, out, case_f, records, trained, names):
        lay, files = self.case.layout, []
        rows = ("alpha", *self.decays)
        fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3 * len(rows)), sharex=True)
        for col, (kind, first) in enumerate((("weights", 0), ("biases", 1))):
            for g in range(first, lay.G, 2):
                label = f"layer {g // 2 + 1}"
                for row, key in enumerate(rows):
                    values = getattr(case_f, key)[:, g]
                    axes[row, col].plot(1 - values if key == "beta2" else values, ".-",
                                        label=label)
            axes[0, col].set_title(f"learned schedules, {kind}")
            axes[0, col].set_ylim(bottom=0)
            for row, key in enumerate(rows[1:], 1):
                if key == "beta2":  # 0.999 and 0.99 are far apart: 1 - beta2 on a log scale
                    axes[row, col].set_yscale("log")
                else:
                    axes[row, col].set_ylim(0, 1)
            axes[-1, col].set_xlabel("training step t")
        for row, key in enumerate(rows):
            axes[row, 0].set_ylabel(YLABELS[key])
        axes[-1, 1].legend(frameon=False, fontsize=8, loc="lower left", ncol=2)
        files.append(plotting.save(plt, fig, out / "schedules.png"))

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        a.plot(records[0]["learning_curve"], label="initial hyperparameters")
        a.plot(trained.train_losses, label="learned hyperparameters")
        a.set_xlabel("training step t")
        a.set_ylabel("training loss on the batch")
        a.set_yscale("log")
        a.legend(frameon=False)
        i = [r["i"] for r in records]
        for key, label in (("train_loss", "training"), ("valid_loss", "validation"),
                           ("test_loss", "test")):
            b.plot(i, [r[key] for r in records], ".-", label=f"{label} loss")
        b.set_xlabel("meta-iteration")
        b.set_ylabel("loss after training")
        b.legend(frameon=False)
        files.append(plotting.save(plt, fig, out / "learning_curves.png"))

        fig, ax = plt.subplots(figsize=(5, 3.6))
        scales = np.array([r["init_scale"] for r in records] + [case_f.init_scale.tolist()])
        for g in range(0, lay.G, 2):
            ax.plot(scales[:, g], ".-", label=f"W{g // 2 + 1} (fan-in {lay.fan_in[g]})")
        for fan, style in ((784, "b--"), (50, "k--")):
            ax.axhline(1 / np.sqrt(fan), color=style[0], ls="--", lw=1,
                       label=f"1/sqrt({fan}) = {1 / np.sqrt(fan):.3f}")
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel("initial scale")
        ax.legend(frameon=False, fontsize=8)
        files.append(plotting.save(plt, fig, out / "init_scales.png"))
        return files
