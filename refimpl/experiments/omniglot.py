"""`revlearn run omniglot` (paper Figs. 8-9 and its table): one net per task and a learned
cross-task sharing penalty.

Ten tasks: the five embedded Omniglot alphabets and the same five rotated by 90 degrees
(`revlearn.omniglot`), K = 40 classes (the largest alphabet, Korean). Of each character's 20
drawings, 0-14 train and 15-19 test; while the penalty is learned, drawings 0-11 train and 12-14
validate. One MLP per task (784-50-50-40 tanh by default, about 4 s per meta-iteration on a
quiet 2-core machine; the paper's 784-400-200-K with --paper, about 36 s), held in the Helmert
coordinates of `revlearn.multitask`: per layer group a mean and the nets' deviations from it,
with penalty

    lam_mean,g n/2 ||mean_t w_t,g||^2 + lam_dev,g / 2 sum_t ||w_t,g - mean_t w_t,g||^2.

Each run is T = 50 full-batch steps of SGD with momentum on the sum over tasks of each net's mean
cross-entropy, alpha = 1, gamma = 0.9, init_scale = exp(-2), as the paper. Three settings:
separate nets (lam_dev = lam_mean = 2 exp(-4), the paper's exp(-4) ||w||^2), a tied bottom layer
(the first layer's deviations start at 0 and never move: their alpha and init_scale are 0), and
learned sharing: all 12 log-penalties learned with Adam (meta step 0.2, 20 meta-iterations, as
the paper's count) against the validation loss, starting from separate nets. The table reports
the mean over tasks of the mean negative log-likelihood, beside the paper's.
"""

import numpy as np

from .. import meta, multitask
from .. import omniglot as data
from ..case import Case
from ..sgd import train
from . import common, plotting, runner

DESCRIPTION = "one net per task with a learned cross-task sharing penalty (paper Figs. 8-9)"
K, T, N_TASKS = 40, 50, 10
HIDDEN, PAPER_HIDDEN, SMALL_HIDDEN = (50, 50), (400, 200), (20,)
ALPHA, GAMMA, INIT_SCALE, LAM0, META_STEP = 1.0, 0.9, float(np.exp(-2)), 2 * float(np.exp(-4)), 0.2
TRAIN, VALID_FROM, TEST_FROM = 15, 12, 15
PAPER_TABLE = {"separate nets": (0.61, 1.34), "tied bottom layer": (0.90, 1.25),
               "learned sharing": (0.60, 1.13)}


def default_meta_iters(options):
    return 3 if options["small"] else 20


def split(drawings, small):
    """(X, y) of the rows whose drawing index is in `drawings`, y = task K + character."""
    o = data.tasks()
    keep = np.isin(o.drawing, drawings)
    if small:  # the first 5 characters of every task
        keep &= o.character < 5
    return o.images[keep], o.task[keep] * K + o.character[keep]


class Job(common.MetaJob):
    def __init__(self, options):
        small = options["small"]
        hidden = SMALL_HIDDEN if small else PAPER_HIDDEN if options["paper"] else HIDDEN
        self.steps = 10 if small else T
        self.model = multitask.MultiTaskMLP((784, *hidden, K), "tanh", N_TASKS)
        self.train_rows = split(range(TRAIN), small)
        self.test_rows = split(range(TEST_FROM, data.DRAWINGS), small)
        X, y = split(range(VALID_FROM), small)
        Xv, yv = split(range(VALID_FROM, TRAIN), small)
        rng = np.random.default_rng([options["seed"], 2**32 - 1])
        self.eps = rng.standard_normal(self.model.layout.P)
        self.case = self.full_batch_case(X, y, Xv, yv, np.full(self.model.layout.G, LAM0))
        self.config = meta.MetaConfig(learn=("l2",), step_size=META_STEP, seed=options["seed"],
                                      backend=options["backend"], threads=options.get("threads"),
                                      meta_batch=options["meta_batch"],
                                      step_decay=options["meta_step_decay"])
        self.n_steps = options["meta_iters"]
        self.headline = (f"10 tasks (5 Omniglot alphabets + the same rotated 90 degrees), one "
                         f"{'-'.join(map(str, self.model.layer_sizes))} tanh net each "
                         f"({self.model.layout.P} weights), T = {self.steps} full-batch steps on "
                         f"{len(X)} images; learning {self.model.layout.G} sharing penalties")

    def full_batch_case(self, X, y, Xv, yv, l2, tied=False):
        lay = self.model.layout
        alpha, scale = np.full((self.steps, lay.G), ALPHA), np.full(lay.G, INIT_SCALE)
        if tied:  # groups 1 and 3: W1's and b1's task deviations stay at 0
            alpha[:, [1, 3]], scale[[1, 3]] = 0.0, 0.0
        return Case(layer_sizes=self.model.layer_sizes, activation="tanh", X_train=X, y_train=y,
                    X_valid=Xv, y_valid=yv,
                    batches=np.tile(np.arange(len(X)), (self.steps, 1)), eps=self.eps,
                    alpha=alpha, gamma=np.full((self.steps, lay.G), GAMMA), init_scale=scale,
                    l2=l2, model=self.model)

    def evaluate(self, case_i, w):
        return dict(train_loss=self.model.loss(w, case_i.X_train, case_i.y_train) / N_TASKS,
                    valid_loss=self.model.loss(w, case_i.X_valid, case_i.y_valid) / N_TASKS)

    def record(self, state, outcome):
        rec = super().record(state, outcome)
        rec["l2"] = outcome.case.l2.tolist()
        return rec

    def progress(self, rec):
        lam = np.array(rec["l2"])
        return (f"train {rec['train_loss']:.4f}  valid {rec['valid_loss']:.4f} (per task)  "
                f"lam_dev/lam_mean for W1.. "
                + " ".join(f"{d:.2g}" for d in lam[1::4] / lam[0::4])
                + f"  |grad| {rec['grad_norm']:.2e}")

    def finish(self, state, records, out, plt):
        learned = state.hyper(self.case.T)["l2"]
        lay = self.model.layout
        settings = {"separate nets": (np.full(lay.G, LAM0), False),
                    "tied bottom layer": (np.full(lay.G, LAM0), True),
                    "learned sharing": (learned, False)}
        X, y = self.train_rows
        Xt, yt = self.test_rows
        rows, summary = [], {"paper": PAPER_TABLE, "learned_l2": learned.tolist(),
                             "groups": [lay.describe_group(g) for g in range(lay.G)]}
        for name, (l2, tied) in settings.items():
            w = train(self.full_batch_case(X, y, Xt, yt, l2, tied),
                      backend=self.config.backend, threads=self.config.threads).w_final
            tr, te = (self.model.task_losses(w, A, b) for A, b in ((X, y), (Xt, yt)))
            summary[name] = {"train_loss": float(tr.mean()), "test_loss": float(te.mean()),
                             "train_loss_per_task": tr.tolist(), "test_loss_per_task": te.tolist()}
            rows.append((name, tr.mean(), te.mean(), *PAPER_TABLE[name]))
        table = [f"{'':20s} {'train':>7s} {'test':>7s}   {'paper train':>11s} {'paper test':>10s}"]
        table += [f"{n:20s} {a:7.2f} {b:7.2f}   {c:11.2f} {d:10.2f}" for n, a, b, c, d in rows]
        table.append(f"(mean over the 10 tasks of the mean negative log-likelihood; "
                     f"{len(X)} training and {len(Xt)} test images)")
        names = [lay.single.describe_group(g).split()[0] for g in range(lay.single.G)]
        table.append("learned lam_dev / lam_mean: " + "  ".join(
            f"{n} {d / m:.3g}" for n, d, m in zip(names, learned[1::2], learned[0::2],
                                                  strict=True)))
        keys = ["i", "train_loss", "valid_loss", "meta_objective", "grad_norm"]
        common.write_history(out / "history.csv", records, keys,
                             extra=("l2", [lay.describe_group(g).split(" (")[0].replace(" ", "_")
                                           for g in range(lay.G)]))
        runner.write_csv(out / "table.csv", ["setting", "train_loss", "test_loss",
                                             "paper_train_loss", "paper_test_loss"], rows)
        files = [str(out / "history.csv"), str(out / "table.csv")]
        if plt is not None:
            files += self.plot(plt, out, records, learned, names)
        return summary, "\n".join(table), files

    def plot(self, plt, out, records, learned, names):
        o, files = data.tasks(), []
        fig, axes = plt.subplots(N_TASKS, 12, figsize=(9, 8))
        for t in range(N_TASKS):
            rows = np.flatnonzero((o.task == t) & (o.drawing == 0))[:12]
            for j, ax in enumerate(axes[t]):
                ax.imshow(o.images[rows[j]].reshape(28, 28), cmap="binary")
                ax.set_xticks([])
                ax.set_yticks([])
            axes[t, 0].set_ylabel(o.task_names[t].replace(" rotated", "\nrotated"),
                                  rotation=0, ha="right", va="center", fontsize=7)
        files.append(plotting.save(plt, fig, out / "alphabets.png"))

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        x = np.arange(len(names))
        a.bar(x - 0.2, np.log(learned[0::2]), 0.4, label="log lam_mean")
        a.bar(x + 0.2, np.log(learned[1::2]), 0.4, label="log lam_dev (sharing)")
        a.axhline(np.log(LAM0), color="k", ls="--", lw=1, label="start (separate nets)")
        a.set_xticks(x, names)
        a.set_ylabel("learned log penalty")
        a.legend(frameon=False, fontsize=8)
        i = [r["i"] for r in records]
        b.plot(i, [r["train_loss"] for r in records], ".-", label="training")
        b.plot(i, [r["valid_loss"] for r in records], ".-", label="validation")
        b.set_xlabel("meta-iteration")
        b.set_ylabel("loss per task")
        b.legend(frameon=False)
        files.append(plotting.save(plt, fig, out / "sharing.png"))
        return files
