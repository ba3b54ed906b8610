"""`revlearn run chaos` (paper Fig. 10): the validation loss and its exact hypergradient against
log learning rate, showing when hypergradients stop being meaningful.

The schedules problem (784-50-50-50-10 tanh, 10,000 MNIST training images, batch 200) with one
constant step size alpha for every step and group, the paper's gamma = sigmoid(0.58) and
init_scale = exp(-1.94), trained for T = 10, 20 and 100 steps at each of N step sizes log-spaced
over [exp(-1), exp(3.5)] (N = 30; the paper's 20 with --paper). Each point records f = the
validation loss and its derivative

    d f / d log alpha = sum_{t, g} alpha_{t,g} d f / d alpha_{t,g}

from one reversible hypergradient. Where training is stable the exact derivative follows the curve;
past the edge of chaos the curve turns jagged and the derivative swings over many orders of
magnitude, describing nothing beyond an infinitesimal neighbourhood. Same eps and batches at every
point (the paper's "same random seed every time"). The points are independent: with a dask client
(`--dask`) they are all computed at once on its workers (`revlearn.distributed.starmap`), and
each step of the run takes its point's results in order, the same bits.
"""

import numpy as np

from .. import distributed
from ..case import Case
from ..errors import TrainingError
from ..mlp import Layout
from ..sgd import hypergradient
from ..spec import sample_batches
from . import common, plotting

DESCRIPTION = "validation loss and its hypergradient against log step size (paper Fig. 10)"
SIZES = (784, 50, 50, 50, 10)
HORIZONS, B, N_TRAIN, N_VALID = (10, 20, 100), 200, 10_000, 10_000
SMALL = dict(horizons=(3, 6), B=50, n_train=400, n_valid=400, meta_iters=4)
LOG_ALPHA = (-1.0, 3.5)
GAMMA, INIT_SCALE = float(1 / (1 + np.exp(-0.58))), float(np.exp(-1.94))


def default_meta_iters(options):
    return SMALL["meta_iters"] if options["small"] else 20 if options["paper"] else 30


def point(case, log_alpha, horizons, backend, threads):
    """The record of one step size alpha = exp(log_alpha): at each horizon T, the validation loss
    and d f / d log alpha of the case's first T steps (NaN where training leaves the fixed-point
    range)."""
    rec = {"log_alpha": log_alpha}
    for T in horizons:
        c = case.replace(batches=case.batches[:T], alpha=np.full((T, case.G), np.exp(log_alpha)),
                         gamma=case.gamma[:T])
        try:
            res = hypergradient(c, backend=backend, threads=threads)
            rec[f"valid_loss_T{T}"] = res.valid_loss
            rec[f"dlog_alpha_T{T}"] = float(np.sum(c.alpha * res.d_alpha))
        except TrainingError:  # left the fixed-point range: no loss, no gradient
            rec[f"valid_loss_T{T}"] = rec[f"dlog_alpha_T{T}"] = float("nan")
    return rec


class Job:
    unit = "step size"
    _mapped = None  # (client, next step, the points from it on) while a cluster computes them

    def __init__(self, options):
        small = options["small"]
        self.horizons = SMALL["horizons"] if small else HORIZONS
        batch = SMALL["B"] if small else B
        n_train, n_valid = (SMALL["n_train"], SMALL["n_valid"]) if small else (N_TRAIN, N_VALID)
        X, y, Xv, yv, *_ = common.mnist_splits({}, n_train, n_valid, 0)
        lay = Layout(SIZES)
        rng = np.random.default_rng([options["seed"], 2**32 - 1])
        T = max(self.horizons)
        self.case = Case(layer_sizes=SIZES, activation="tanh", X_train=X, y_train=y, X_valid=Xv,
                         y_valid=yv, batches=sample_batches(len(X), T, batch, rng),
                         eps=rng.standard_normal(lay.P), alpha=np.ones((T, lay.G)),
                         gamma=np.full((T, lay.G), GAMMA), init_scale=np.full(lay.G, INIT_SCALE),
                         l2=np.zeros(lay.G))
        self.n_steps = options["meta_iters"]
        self.log_alphas = np.linspace(*LOG_ALPHA, self.n_steps)
        self.backend, self.threads = options["backend"], options.get("threads")
        self.headline = (f"{'-'.join(map(str, SIZES))} tanh, {len(X)} MNIST training images, "
                         f"batch {batch}, T = {', '.join(map(str, self.horizons))}; "
                         f"{self.n_steps} step sizes from exp({LOG_ALPHA[0]:g}) to "
                         f"exp({LOG_ALPHA[1]:g})")

    def initial_state(self):
        return 0

    def state_arrays(self, state):
        return {"i": np.array(state, dtype=np.int64)}

    def state_from_arrays(self, arrays):
        return int(arrays["i"])

    def step(self, i, client=None):
        if client is None:
            fields = point(self.case, float(self.log_alphas[i]), self.horizons, self.backend,
                           self.threads)
        else:
            if self._mapped is None or self._mapped[:2] != (client, i):
                items = [(float(a), self.horizons, self.backend, 1) for a in self.log_alphas[i:]]
                self._mapped = (client, i, distributed.starmap(point, self.case, items, client))
            fields = next(self._mapped[2])
            self._mapped = (client, i + 1, self._mapped[2])
        return i + 1, {"i": i, **fields}

    def progress(self, rec):
        return f"log alpha {rec['log_alpha']:+.2f}  " + "  ".join(
            f"T={T}: f {rec[f'valid_loss_T{T}']:.3g} df/dlog(alpha) "
            f"{rec[f'dlog_alpha_T{T}']:+.2e}" for T in self.horizons)

    def finish(self, state, records, out, plt):
        x = np.array([r["log_alpha"] for r in records])
        keys = ["log_alpha"] + [f"{k}_T{T}" for T in self.horizons
                                for k in ("valid_loss", "dlog_alpha")]
        common.write_history(out / "chaos.csv", records, keys)
        lines = [f"{'log alpha':>10s} " + " ".join(f"{'f (T=' + str(T) + ')':>12s} "
                                                   f"{'df/dlog a':>10s}" for T in self.horizons)]
        for r in records:
            lines.append(f"{r['log_alpha']:10.2f} " + " ".join(
                f"{r[f'valid_loss_T{T}']:12.4f} {r[f'dlog_alpha_T{T}']:10.2e}"
                for T in self.horizons))
        summary = {"horizons": list(self.horizons), "log_alpha": x.tolist()}
        for T in self.horizons:
            f = np.array([r[f"valid_loss_T{T}"] for r in records])
            d = np.array([r[f"dlog_alpha_T{T}"] for r in records])
            best = int(np.nanargmin(f)) if np.any(np.isfinite(f)) else None
            summary[f"T{T}"] = {"valid_loss": f.tolist(), "dlog_alpha": d.tolist(),
                                "best_log_alpha": None if best is None else float(x[best])}
        files = [str(out / "chaos.csv")]
        if plt is not None and len(x) > 1:
            fig, (a, b) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
            for T in self.horizons:
                f = np.array([r[f"valid_loss_T{T}"] for r in records])
                d = np.array([r[f"dlog_alpha_T{T}"] for r in records])
                line, = a.plot(x, f, ".-", label=f"T = {T}")
                b.plot(x, np.sign(d) * np.log10(1 + np.abs(d)), ".-", color=line.get_color(),
                       label=f"exact, T = {T}")
                fd = np.gradient(f, x)
                b.plot(x, np.sign(fd) * np.log10(1 + np.abs(fd)), ":", color=line.get_color(),
                       label=f"slope between points, T = {T}")
            a.set_ylabel("validation loss f")
            a.set_yscale("log")
            a.legend(frameon=False, fontsize=8)
            b.set_xlabel("log step size")
            b.set_ylabel("sign(d) log10(1 + |d|),  d = df / dlog alpha")
            b.legend(frameon=False, fontsize=7)
            files.append(plotting.save(plt, fig, out / "chaos.png"))
        return summary, "\n".join(lines), files
