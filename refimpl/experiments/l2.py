"""`revlearn run l2` (paper Fig. 6): one L2 penalty per weight of a logistic regression.

784-10 logistic regression on 10,000 MNIST training images, T = 50 steps of batch 200 with
alpha = 1, gamma = 0.9, init_scale = exp(-4); learned: lam_i for every one of the 7,840 weights
(drawn as ten 28x28 images; the 10 biases stay unpenalised, lam = 0, which a log scale keeps at
0), starting from lam = exp(log 0.01 + 1) = 0.027, on a log scale against the validation loss
(10,000 images). The paper took 50 meta-iterations of plain gradient descent with step 1000
(the hypergradient of one of 7,840 penalties is tiny); here Adam at meta step 0.1 by default, and
with --paper the paper's gradient descent.
"""

import numpy as np

from .. import meta
from ..case import Case
from ..mlp import Layout
from ..spec import sample_batches
from . import common, plotting, runner

DESCRIPTION = "learn one L2 penalty per weight of a logistic regression (paper Fig. 6)"
SIZES = (784, 10)
T, B, N_TRAIN, N_VALID, N_TEST = 50, 200, 10_000, 10_000, 10_000
SMALL = dict(T=10, B=50, n_train=400, n_valid=400, n_test=400, meta_iters=4)
ALPHA, GAMMA, INIT_SCALE, LAM0 = 1.0, 0.9, float(np.exp(-4)), float(np.exp(np.log(0.01) + 1))
DEFAULT = dict(optimizer="adam", step_size=0.1, meta_iters=50)
PAPER = dict(optimizer="sgd", step_size=1000.0, meta_iters=50)


def default_meta_iters(options):
    return (SMALL if options["small"] else PAPER if options["paper"] else DEFAULT)["meta_iters"]


class Job(common.MetaJob):
    def __init__(self, options):
        common.check_mnist_dir(options)
        s = PAPER if options["paper"] else DEFAULT
        steps, batch = (SMALL["T"], SMALL["B"]) if options["small"] else (T, B)
        n = SMALL if options["small"] else dict(n_train=N_TRAIN, n_valid=N_VALID, n_test=N_TEST)
        X, y, Xv, yv, self.X_test, self.y_test, self.test_name = common.mnist_splits(
            options, n["n_train"], n["n_valid"], n["n_test"])
        lay = Layout(SIZES)
        rng = np.random.default_rng([options["seed"], 2**32 - 1])
        self.case = Case(layer_sizes=SIZES, activation="tanh", X_train=X, y_train=y, X_valid=Xv,
                         y_valid=yv, batches=sample_batches(len(X), steps, batch, rng),
                         eps=rng.standard_normal(lay.P), alpha=np.full((steps, lay.G), ALPHA),
                         gamma=np.full((steps, lay.G), GAMMA),
                         init_scale=np.full(lay.G, INIT_SCALE),
                         l2=lay.expand(np.array([LAM0, 0.0])))
        self.config = meta.MetaConfig(learn=("l2",), optimizer=s["optimizer"],
                                      step_size=s["step_size"], objective="valid",
                                      seed=options["seed"], backend=options["backend"],
                                      threads=options.get("threads"),
                                      meta_batch=options["meta_batch"],
                                      step_decay=options["meta_step_decay"])
        self.n_steps, self.fresh_draws = options["meta_iters"], options["fresh_draws"]
        self.headline = (f"784-10 logistic regression, {len(X)} MNIST training images, "
                         f"T = {steps}, batch {batch}; learning {lay.sizes[0]} L2 penalties "
                         f"(one per weight; biases unpenalised) with {s['optimizer']} on the "
                         "validation loss")

    def finish(self, state, records, out, plt):
        case_f, trained, final = self.final_evaluation(state)
        first = records[0]
        lam_W = case_f.l2[:784 * 10].reshape(784, 10)
        summary = {"initial": {k: first[k] for k in final}, "learned": final,
                   "test_set": self.test_name, "lam_weights_28x28_per_class":
                   lam_W.T.reshape(10, 28, 28).tolist(), "lam_biases": case_f.l2[-10:].tolist()}
        table = common.loss_table([("initial penalties", first),
                                   (f"learned ({state.i} meta-iterations)", final)],
                                  self.test_name)
        lo, mid, hi = np.percentile(lam_W, [5, 50, 95])
        table += f"\nlearned lam: median {mid:.3g}, 5-95 % {lo:.3g}-{hi:.3g} (from {LAM0:.3g})"
        summary["fresh_draws"], line = self.fresh_draws_report(case_f)
        table += "\n" + line if line else ""
        keys = ["i", "train_loss", "valid_loss", "test_loss", "test_error", "grad_norm"]
        common.write_history(out / "history.csv", records, keys)
        runner.write_csv(out / "penalties.csv", ["pixel"] + [f"lam_class_{k}" for k in range(10)],
                         [[p] + list(lam_W[p]) for p in range(784)])
        files = [str(out / "history.csv"), str(out / "penalties.csv")]
        if plt is not None:
            fig, axes = plt.subplots(2, 5, figsize=(10, 4.4))
            logs = np.log(lam_W)
            lo, hi = logs.min(), logs.max()
            for k, ax in enumerate(axes.flat):
                im = ax.imshow(logs[:, k].reshape(28, 28), cmap="viridis", vmin=lo, vmax=hi)
                ax.set_title(f"class {k}", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
            fig.colorbar(im, ax=axes, shrink=0.8, label="log lam (learned L2 penalty)")
            files.append(plotting.save(plt, fig, out / "penalties.png"))
        return summary, table, files
