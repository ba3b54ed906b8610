"""Recompute a case file's answers, its trace included, with JAX: training as one jit-compiled
lax.scan in float64, differentiated in reverse mode.

    python examples/jax_crosscheck.py CASE.npz THEIRS.npz
    python examples/jax_crosscheck.py SUITE_DIR THEIRS_DIR      (a `revlearn conformance` suite)

reads every input from the case file (nothing from revlearn), writes the answers under the case
file's key names (and trace_steps, w_trace, dw_trace when the case has a trace), and runs
`revlearn check` on them (its exit code is this script's). Given a suite folder it answers every
case into THEIRS_DIR/NAME.npz and checks the folder. A template for an outside implementation of
hypergradients through SGD with momentum or Adam; the conventions are the README's "Case file
format".
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


def sqrt0(x):
    """sqrt(x), x >= 0, with derivative 0 at x = 0 (the README's convention for Adam)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def momentum_step(w, state, g, hyper_t, group):
    """v_{t+1} = gamma_t v_t - (1 - gamma_t) g_t,  w_{t+1} = w_t + alpha_t v_{t+1}."""
    alpha_t, gamma_t = (h[group] for h in hyper_t)
    v = gamma_t * state[0] - (1.0 - gamma_t) * g
    return w + alpha_t * v, (v,)


def adam_step(w, state, g, hyper_t, group, epsilon):
    """m_{t+1} = beta1_t m_t + (1 - beta1_t) g_t, s_{t+1} likewise with g_t * g_t and beta2_t,
    c1_t = 1 - prod_{k <= t} beta1_k (likewise c2_t), w_{t+1} = w_t - alpha_t (m_{t+1} / c1_t) /
    (sqrt(s_{t+1} / c2_t) + epsilon); the products P1, P2 are carried per group."""
    alpha_t, beta1_t, beta2_t = hyper_t
    m, s, P1, P2 = state
    b1, b2 = beta1_t[group], beta2_t[group]
    m = b1 * m + (1.0 - b1) * g
    s = b2 * s + (1.0 - b2) * g * g
    P1, P2 = P1 * beta1_t, P2 * beta2_t
    c1, c2 = (1.0 - P1)[group], (1.0 - P2)[group]
    w = w - alpha_t[group] * (m / c1) / (sqrt0(s / c2) + epsilon[group])
    return w, (m, s, P1, P2)


def answers(c):
    """Every output of the case file c (a dict of its arrays), and its trace if it has one."""
    sizes, activation = [int(s) for s in c["layer_sizes"]], str(c["activation"])
    group_sizes = [n for i, o in zip(sizes[:-1], sizes[1:], strict=True) for n in (i * o, o)]
    group = jnp.asarray(np.repeat(np.arange(len(group_sizes)), group_sizes))
    G, P, T = len(group_sizes), int(sum(group_sizes)), len(c["batches"])
    adam = "optimizer" in c and str(c["optimizer"]) == "adam"  # files without it: momentum
    own = ["beta1", "beta2", "epsilon"] if adam else ["gamma"]
    want_dX = bool(json.loads(str(c["spec"]))["grad_train_inputs"])
    y_train, y_valid = jnp.asarray(c["y_train"]), jnp.asarray(c["y_valid"])
    eps, X_valid, batches = jnp.asarray(c["eps"]), jnp.asarray(c["X_valid"]), c["batches"]

    def f(hyper, init_scale, l2, X_train, taps):
        """f(w_T); taps[t] (zero) is added to w_t, so d f / d taps[t] is df/dw_t with the
        optimizer's state at t held fixed (d_w0 at t = 0)."""
        lam = l2 if l2.shape == (P,) else l2[group]
        w0 = init_scale[group] * eps
        if adam:
            per_step = (hyper["alpha"], hyper["beta1"], hyper["beta2"])
            state0 = (jnp.zeros(P), jnp.zeros(P), jnp.ones(G), jnp.ones(G))

            def update(w, state, g, hyper_t):
                return adam_step(w, state, g, hyper_t, group, hyper["epsilon"])
        else:
            per_step, state0 = (hyper["alpha"], hyper["gamma"]), (jnp.zeros(P),)

            def update(w, state, g, hyper_t):
                return momentum_step(w, state, g, hyper_t, group)

        def step(carry, xs):
            w, state = carry
            rows, hyper_t, tap = xs
            w = w + tap

            def L_t(w):
                ell = data_loss(w, X_train[rows], y_train[rows], sizes, activation)
                return ell + 0.5 * jnp.sum(lam * w * w)

            return update(w, state, jax.grad(L_t)(w), hyper_t), w

        (w_T, _), ws = jax.lax.scan(step, (w0, state0), (batches, per_step, taps[:-1]))
        w_T = w_T + taps[-1]
        return data_loss(w_T, X_valid, y_valid, sizes, activation), (w_T, ws)

    argnums = (0, 1, 2, 3, 4) if want_dX else (0, 1, 2, 4)
    value_and_grads = jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))
    hyper = {k: jnp.asarray(c[k]) for k in ["alpha", *own]}
    (loss, (w_T, ws)), grads = value_and_grads(
        hyper, *(jnp.asarray(c[k]) for k in ("init_scale", "l2", "X_train")),
        jnp.zeros((T + 1, P)))
    d_hyper, d_init_scale, d_l2, *rest = grads
    taps = rest[-1]
    out = {"d_" + k: d for k, d in d_hyper.items()}
    out.update(d_init_scale=d_init_scale, d_l2=d_l2, w_final=w_T, valid_loss=loss, d_w0=taps[0])
    if want_dX:
        out["d_X_train"] = rest[0]
    if "trace_steps" in c:
        steps = c["trace_steps"]
        out.update(trace_steps=steps, w_trace=jnp.concatenate([ws, w_T[None]])[steps],
                   dw_trace=taps[steps])
    return {k: np.asarray(v) for k, v in out.items()}


def answer(case_path, theirs_path):
    """Answer one case file into theirs_path."""
    with np.load(case_path, allow_pickle=False) as f:
        c = {k: f[k] for k in f.files}
    np.savez(theirs_path, **answers(c))
    print(f"wrote {theirs_path} (JAX {jax.__version__}, float64, {jax.default_backend()})",
          flush=True)


def main(case, theirs):
    if Path(case).is_dir():
        Path(theirs).mkdir(exist_ok=True)
        for entry in json.loads((Path(case) / "index.json").read_text())["cases"]:
            answer(Path(case) / entry["file"], Path(theirs) / entry["file"])
    else:
        answer(case, theirs)
    return subprocess.call([sys.executable, "-m", "revlearn", "check", case, theirs])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
