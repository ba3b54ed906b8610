"""Recompute a case file's answers, its trace included, with JAX: training as one jit-compiled
lax.scan in float64, differentiated in reverse mode.

    python examples/jax_crosscheck.py CASE.npz THEIRS.npz
    python examples/jax_crosscheck.py SUITE_DIR THEIRS_DIR      (a `revlearn conformance` suite)

reads every input from the case file (nothing from revlearn), writes the answers under the case
file's key names (and trace_steps, w_trace, dw_trace when the case has a trace), and runs
`revlearn check` on them (its exit code is this script's). Given a suite folder it answers every
case into THEIRS_DIR/NAME.npz and checks the folder. A template for an outside implementation of
momentum SGD's hypergradients; the conventions are the README's "Case file format".
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402  (after float64 is switched on)


def unflatten(w, sizes):
    """W_1, b_1, ..., W_L, b_L cut out of the flat vector (W_l row-major, fan_in x fan_out)."""
    params, start = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = w[start:start + fan_in * fan_out].reshape(fan_in, fan_out)
        start += fan_in * fan_out
        params.append((W, w[start:start + fan_out]))
        start += fan_out
    return params


def data_loss(w, X, y, sizes, activation):
    """Mean softmax cross-entropy of the MLP (natural log)."""
    phi = jnp.tanh if activation == "tanh" else jax.nn.relu
    a = X
    params = unflatten(w, sizes)
    for W, b in params[:-1]:
        a = phi(a @ W + b)
    W, b = params[-1]
    z = a @ W + b
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])


def answers(c):
    """Every output of the case file c (a dict of its arrays), and its trace if it has one."""
    sizes, activation = [int(s) for s in c["layer_sizes"]], str(c["activation"])
    group_sizes = [n for i, o in zip(sizes[:-1], sizes[1:], strict=True) for n in (i * o, o)]
    group = jnp.asarray(np.repeat(np.arange(len(group_sizes)), group_sizes))
    P, T = int(sum(group_sizes)), len(c["batches"])
    want_dX = bool(json.loads(str(c["spec"]))["grad_train_inputs"])
    y_train, y_valid = jnp.asarray(c["y_train"]), jnp.asarray(c["y_valid"])
    eps, X_valid, batches = jnp.asarray(c["eps"]), jnp.asarray(c["X_valid"]), c["batches"]

    def f(alpha, gamma, init_scale, l2, X_train, taps):
        """f(w_T); taps[t] (zero) is added to w_t, so d f / d taps[t] is df/dw_t with v_t held
        fixed (d_w0 at t = 0)."""
        lam = l2 if l2.shape == (P,) else l2[group]
        w0 = init_scale[group] * eps

        def step(carry, xs):
            w, v = carry
            rows, alpha_t, gamma_t, tap = xs
            w = w + tap

            def L_t(w):
                ell = data_loss(w, X_train[rows], y_train[rows], sizes, activation)
                return ell + 0.5 * jnp.sum(lam * w * w)

            v = gamma_t[group] * v - (1.0 - gamma_t[group]) * jax.grad(L_t)(w)
            return (w + alpha_t[group] * v, v), w

        (w_T, _), ws = jax.lax.scan(step, (w0, jnp.zeros(P)), (batches, alpha, gamma, taps[:-1]))
        w_T = w_T + taps[-1]
        return data_loss(w_T, X_valid, y_valid, sizes, activation), (w_T, ws)

    names = ["d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_X_train", "taps"]
    argnums = tuple(i for i, name in enumerate(names) if want_dX or name != "d_X_train")
    value_and_grads = jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))
    (loss, (w_T, ws)), grads = value_and_grads(
        *(jnp.asarray(c[k]) for k in ("alpha", "gamma", "init_scale", "l2", "X_train")),
        jnp.zeros((T + 1, P)))
    out = dict(zip([names[i] for i in argnums], grads, strict=True))
    taps = out.pop("taps")
    out.update(w_final=w_T, valid_loss=loss, d_w0=taps[0])
    if "trace_steps" in c:
        steps = c["trace_steps"]
        out.update(trace_steps=steps, w_trace=jnp.concatenate([ws, w_T[None]])[steps],
                   dw_trace=taps[steps])
    return {k: np.asarray(v) for k, v in out.items()}


def answer(case_path, theirs_path):
    """Answer one case file into theirs_path."""
    with np.load(case_path, allow_pickle=False) as f:
        c = {k: f[k] for k in f.files}
    if str(c.get("optimizer", "momentum")) != "momentum":
        sys.exit(f"{case_path} is trained with {c['optimizer']}; this template answers momentum "
                 "cases only (examples/torch_crosscheck.py answers Adam's)")
    np.savez(theirs_path, **answers(c))
    print(f"wrote {theirs_path} (JAX {jax.__version__}, float64, {jax.default_backend()})",
          flush=True)


def main(case, theirs):
    if Path(case).is_dir():
        Path(theirs).mkdir(exist_ok=True)
        for entry in json.loads((Path(case) / "index.json").read_text())["cases"]:
            spec = json.loads((Path(case) / entry["spec"]).read_text())
            if spec.get("optimizer", "momentum") != "momentum":  # check lists it as absent
                print(f"skipped {entry['file']}: trained with {spec['optimizer']}")
                continue
            answer(Path(case) / entry["file"], Path(theirs) / entry["file"])
    else:
        answer(case, theirs)
    return subprocess.call([sys.executable, "-m", "revlearn", "check", case, theirs])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
