"""`revlearn run data` (paper Fig. 7): learn the training set itself.

Ten training images, one per class (labels 0..9 fixed), start blank (all pixels 0) and every pixel
is a hyperparameter: 7,840 of them, learned through d f / d X_train with Adam (meta step 0.04, 50
meta-iterations; identity parametrisation, so pixels may leave [0, 1]) against the validation loss
on 10,000 MNIST images. The model is a 784-10 logistic regression trained for T = 50 full-batch
steps with alpha = 0.5, gamma = 0.9, init_scale = exp(-3).
"""

import numpy as np

from .. import meta
from ..case import Case
from ..mlp import Layout
from . import common, plotting, runner

DESCRIPTION = "learn ten training images, one per class, from blank (paper Fig. 7)"
SIZES = (784, 10)
T, N_VALID, N_TEST = 50, 10_000, 10_000
SMALL = dict(T=8, n_valid=400, n_test=400, meta_iters=4)
ALPHA, GAMMA, INIT_SCALE, META_STEP = 0.5, 0.9, float(np.exp(-3)), 0.04


def default_meta_iters(options):
    return SMALL["meta_iters"] if options["small"] else 50


class Job(common.MetaJob):
    def __init__(self, options):
        common.check_mnist_dir(options)
        steps = SMALL["T"] if options["small"] else T
        n_valid, n_test = (SMALL["n_valid"], SMALL["n_test"]) if options["small"] \
            else (N_VALID, N_TEST)
        _, _, Xv, yv, self.X_test, self.y_test, self.test_name = common.mnist_splits(
            options, 0, n_valid, n_test)
        lay = Layout(SIZES)
        rng = np.random.default_rng([options["seed"], 2**32 - 1])
        self.case = Case(layer_sizes=SIZES, activation="tanh", X_train=np.zeros((10, 784)),
                         y_train=np.arange(10), X_valid=Xv, y_valid=yv,
                         batches=np.tile(np.arange(10), (steps, 1)),
                         eps=rng.standard_normal(lay.P), alpha=np.full((steps, lay.G), ALPHA),
                         gamma=np.full((steps, lay.G), GAMMA),
                         init_scale=np.full(lay.G, INIT_SCALE), l2=np.zeros(lay.G),
                         grad_train_inputs=True)
        self.config = meta.MetaConfig(learn=("X_train",), step_size=META_STEP,
                                      seed=options["seed"], backend=options["backend"],
                                      threads=options.get("threads"),
                                      meta_batch=options["meta_batch"],
                                      step_decay=options["meta_step_decay"])
        self.n_steps, self.fresh_draws = options["meta_iters"], options["fresh_draws"]
        self.headline = (f"784-10 logistic regression trained on 10 learned images (one per "
                         f"class, from blank), T = {steps} full-batch steps; 7840 pixels learned "
                         f"with Adam on the validation loss ({len(Xv)} MNIST images)")

    def finish(self, state, records, out, plt):
        case_f, trained, final = self.final_evaluation(state)
        first = records[0]
        images = case_f.X_train.reshape(10, 28, 28)
        summary = {"initial": {k: first[k] for k in final}, "learned": final,
                   "test_set": self.test_name, "images": images.tolist()}
        table = common.loss_table([("blank images", first),
                                   (f"learned ({state.i} meta-iterations)", final)],
                                  self.test_name)
        table += (f"\n(train = loss on the 10 learned images; pixel range of the learned images "
                  f"{images.min():.2f} to {images.max():.2f})")
        summary["fresh_draws"], line = self.fresh_draws_report(case_f)
        table += "\n" + line if line else ""
        keys = ["i", "train_loss", "valid_loss", "test_loss", "test_error", "grad_norm"]
        common.write_history(out / "history.csv", records, keys)
        runner.write_csv(out / "images.csv", ["class"] + [f"pixel_{p}" for p in range(784)],
                         [[k] + list(case_f.X_train[k]) for k in range(10)])
        files = [str(out / "history.csv"), str(out / "images.csv")]
        if plt is not None:
            fig, axes = plt.subplots(1, 10, figsize=(12, 1.8))
            m = np.abs(images).max() or 1.0
            for k, ax in enumerate(axes):
                ax.imshow(images[k], cmap="RdBu_r", vmin=-m, vmax=m)
                ax.set_title(str(k))
                ax.set_xticks([])
                ax.set_yticks([])
            fig.suptitle(f"learned training images (red > 0 > blue, |max| = {m:.2f})", y=1.08)
            files.append(plotting.save(plt, fig, out / "images.png"))
        return summary, table, files
