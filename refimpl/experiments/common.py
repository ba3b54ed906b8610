"""What the meta-optimizing presets share: data, evaluation, the Job around `revlearn.meta`."""

from pathlib import Path

import numpy as np

from .. import blas, meta, mnist
from ..errors import InputError, TrainingError
from ..sgd import get_backend
from ..threads import Workers
from . import runner

FRESH_STREAM = 2**32 - 2  # the draws that score a run: default_rng([seed, FRESH_STREAM, d])

OBJECTIVE_NAMES = {"valid": "validation", "train": "training"}


def mnist_splits(options, n_train, n_valid, n_test):
    """(X_train, y_train, X_valid, y_valid, X_test, y_test, test_name) from MNIST.

    Training and validation rows are the embedded canonical training images 0-9,999 and
    10,000-19,999. The test set is all 10,000 t10k images when options["mnist_dir"] names a folder
    with the canonical files, else the embedded 5,000 (every other t10k image).
    """
    X_train, y_train, X_valid, y_valid = mnist.embedded()
    if options.get("mnist_dir"):
        full = mnist.load_mnist(options["mnist_dir"])
        X_test = full.test_images.astype(np.float64) / 255.0
        y_test, test_name = full.test_labels, f"t10k ({len(full.test_labels)} images)"
    else:
        X_test, y_test = mnist.embedded_test()
        test_name = f"embedded t10k subset ({len(y_test)} images)"
    if n_test < len(y_test):
        test_name += f", first {n_test}"
    return (X_train[:n_train], y_train[:n_train], X_valid[:n_valid], y_valid[:n_valid],
            X_test[:n_test], y_test[:n_test], test_name)


def losses(case, w, X, y, threads=None, backend="auto"):
    """ell(w; X, y) and the error rate of the case's MLP (on `threads` threads and the backend:
    the same bits with any), with the BLAS on one thread as everywhere in revlearn: its own
    threads on top of ours made this 15x slower on two cores and changed the last bits."""
    with blas.single_threaded():
        return get_backend(backend).loss_and_error(w, X, y, case.layout, case.activation,
                                                   Workers(threads))


def check_mnist_dir(options):
    d = options.get("mnist_dir")
    if d is not None and not Path(d).is_dir():
        raise InputError(f"--mnist {d}: no such folder; give the folder holding the canonical "
                         "MNIST files (t10k-images-idx3-ubyte.gz, ...)")


class MetaJob:
    """A Job whose steps are meta-iterations of `revlearn.meta` on one base case.

    Subclasses set self.case, self.config, self.n_steps, self.X_test, self.y_test and
    self.fresh_draws (how many draws score the run at the end) in __init__, and may extend
    `record` and `progress`.
    """

    unit = "meta-iteration"

    def initial_state(self):
        return meta.init(self.case, self.config)

    def state_arrays(self, state):
        return state.to_arrays()

    def state_from_arrays(self, arrays):
        return meta.MetaState.from_arrays(arrays)

    def step(self, state, client=None):
        new, outcome = meta.step(self.case, state, self.config, client)
        return new, self.record(state, outcome)

    def evaluate(self, case_i, w):
        """Losses of w_T on the training, validation and test sets."""
        run = dict(threads=self.config.threads, backend=self.config.backend)
        train, _ = losses(case_i, w, case_i.X_train, case_i.y_train, **run)
        valid, valid_err = losses(case_i, w, self.case.X_valid, self.case.y_valid, **run)
        test, test_err = losses(case_i, w, self.X_test, self.y_test, **run)
        return dict(train_loss=train, valid_loss=valid, valid_error=valid_err, test_loss=test,
                    test_error=test_err)

    def record(self, state, outcome):
        """The losses of the first member's w_T and the meta-gradient's norm; in a meta-batch of
        K > 1 also the spread across the members: the mean and standard deviation of their
        meta-objectives, and the mean of their meta-gradients' norms (beside the norm of the
        mean, grad_norm: 1/sqrt(K) of it for pure noise, all of it where they agree)."""
        rec = {"i": state.i, **self.evaluate(outcome.case, outcome.result.w_final),
               "meta_objective": outcome.result.valid_loss, "grad_norm": outcome.grad_norm}
        if len(outcome.objectives) > 1:
            f = np.array(outcome.objectives)
            rec.update(meta_objective=float(np.mean(f)), meta_objective_sd=float(np.std(f, ddof=1)),
                       member_grad_norm=float(np.mean(outcome.grad_norms)))
        return rec

    def progress(self, rec):
        spread = (f" (members {rec['member_grad_norm']:.2e})" if "member_grad_norm" in rec
                  else "")
        return (f"train {rec['train_loss']:.4f}  valid {rec['valid_loss']:.4f}  "
                f"test {rec['test_loss']:.4f}  |grad| {rec['grad_norm']:.2e}{spread}")

    def final_evaluation(self, state):
        """Train once more with the final (never evaluated) hyperparameters and evaluate."""
        from ..sgd import train
        case_i = meta.case_at(self.case, state, self.config)
        trained = train(case_i, backend=self.config.backend, threads=self.config.threads)
        return case_i, trained, self.evaluate(case_i, trained.w_final)

    def fresh_draw_losses(self, case):
        """The test loss of case's hyperparameters trained on self.fresh_draws draws of initial
        noise and batches that no meta-iteration uses (`meta.draw` from default_rng([seed,
        FRESH_STREAM, d]), d = 0, 1, ...), in plain float64 as a user retrains; nan where a
        training run diverges."""
        from ..sgd import train
        out = []
        for d in range(self.fresh_draws):
            c = case.replace(**meta.draw(case, [self.config.seed, FRESH_STREAM, d]))
            try:
                w = train(c, exact=False, backend=self.config.backend,
                          threads=self.config.threads).w_final
            except TrainingError:
                out.append(float("nan"))
                continue
            out.append(losses(c, w, self.X_test, self.y_test, self.config.threads,
                              self.config.backend)[0])
        return out

    def fresh_draws_report(self, case_f):
        """({"draws", "initial", "learned"}, a table line): the test losses of the base case's
        hyperparameters and the learned ones (case_f's) on the same fresh draws; ({}, "") when
        no fresh draws are asked for."""
        if not self.fresh_draws:
            return {}, ""
        scores = {"initial": self.fresh_draw_losses(self.case),
                  "learned": self.fresh_draw_losses(case_f)}
        lines = [f"test loss on {self.fresh_draws} fresh draws (initial noise and batches that no "
                 "tuning used; plain float64 training), mean +- sd:"]
        lines += [f"  {label:26s} {spread(scores[k])}" for k, label in
                  (("initial", "initial hyperparameters"), ("learned", "learned"))]
        return {"draws": self.fresh_draws, **scores}, "\n".join(lines)


def spread(values):
    """'mean +- sd' of the finite values (sd 0 for one), and how many diverged (nan)."""
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    text = "diverged" if not len(ok) else (
        f"{ok.mean():.4f}" + (f" +- {ok.std(ddof=1):.4f}" if len(ok) > 1 else ""))
    return text + (f" ({len(v) - len(ok)} of {len(v)} diverged)" if len(ok) < len(v) else "")


def loss_table(rows, test_name):
    """A results table: one line per (label, evaluation dict)."""
    head = f"{'':28s} {'train':>8s} {'valid':>8s} {'test':>8s} {'test error':>11s}"
    lines = [head]
    for label, ev in rows:
        lines.append(f"{label:28s} {ev['train_loss']:8.4f} {ev['valid_loss']:8.4f} "
                     f"{ev['test_loss']:8.4f} {100 * ev['test_error']:10.2f}%")
    lines.append(f"(mean negative log-likelihood; test set: {test_name})")
    return "\n".join(lines)


SPREAD = ("meta_objective_sd", "member_grad_norm")  # what a meta-batch of K > 1 adds (`record`)


def write_history(path, records, keys, extra=None):
    """One row per step: the scalar `keys` (and the meta-batch's spread, when recorded), then a
    list-valued record field spread over columns named `extra = (field, names)`."""
    keys = list(keys) + [k for k in SPREAD if records and k in records[0]]
    header = list(keys)
    if extra is not None:
        header += [f"{extra[0]}_{n}" for n in extra[1]]
    rows = [[r[k] for k in keys] + (list(r[extra[0]]) if extra else []) for r in records]
    runner.write_csv(path, header, rows)
