"""An independent float64 reference for revlearn's answers, by autodiff through the unrolled loop.

Written from the README's conventions ("Oracle: case files for other implementations") and nothing
else: it imports no part of revlearn. It takes the inputs of a case file as plain arrays, trains in
float64 and differentiates f(w_T) with the HIPS autograd library (pure Python and NumPy):

    w_0     = init_scale[group] * eps + shift          (shift = 0: d f / d shift is d_w0)
    L_t(w)  = ell(w; X_train[B_t], y_train[B_t]) + 1/2 sum_i lam_i w_i**2
    g_t     = grad L_t(w_t)
    v_{t+1} = gamma_t v_t - (1 - gamma_t) g_t           (v_0 = 0)
    w_{t+1} = w_t + alpha_t v_{t+1}
    f       = ell(w_T; X_valid, y_valid)

or, for a case whose optimizer is "adam" (m_0 = s_0 = 0, products over the steps so far):

    m_{t+1} = beta1_t m_t + (1 - beta1_t) g_t,   s_{t+1} = beta2_t s_t + (1 - beta2_t) g_t g_t
    c1_t    = 1 - prod_{k <= t} beta1_k,         c2_t = 1 - prod_{k <= t} beta2_k
    w_{t+1} = w_t - alpha_t (m_{t+1} / c1_t) / (sqrt(s_{t+1} / c2_t) + epsilon)

with the derivative of sqrt taken as 0 where s = 0 (the README's convention; autograd's own
sqrt would give 0 * inf there).

with ell the mean softmax cross-entropy of the MLP (natural log), the flat vector w laid out as
W1 (D x H1, row-major), b1, W2, b2, ..., group g = 2(l-1) for W_l and 2(l-1)+1 for b_l, and lam,
alpha_t, gamma_t per group expanded over their groups (lam given per weight is used as it is).

Traces (the README's trace keys): w_trace holds w_t at the traced steps, and dw_trace df/dw_t,
the gradient of f with respect to w_t when training restarts from (w_t, v_t) (Adam: (w_t, m_t,
s_t)). Each w_t passes through `tap`, the identity, whose backward pass keeps the cotangent it
receives: the sum over every later use of w_t, which is df/dw_t with v_t (m_t, s_t) left alone.
A `step` of one's own (a wrong one, say) replaces `momentum_step` or `adam_step`.
"""

import autograd.numpy as anp
import numpy as np
from autograd import grad, value_and_grad
from autograd.extend import defvjp, primitive

INPUT_KEYS = ("layer_sizes", "activation", "X_train", "y_train", "X_valid", "y_valid", "batches",
              "eps", "alpha", "gamma", "init_scale", "l2")
ADAM_INPUT_KEYS = tuple(k for k in INPUT_KEYS if k != "gamma") + ("beta1", "beta2", "epsilon")
HYPER = {"momentum": ("alpha", "gamma", "init_scale", "l2", "shift"),
         "adam": ("alpha", "beta1", "beta2", "epsilon", "init_scale", "l2", "shift")}
"""The differentiated inputs of each optimizer, in order; d_X_train is added when asked for."""


def group_sizes(layer_sizes):
    """How many entries each group holds: D*H1 (W1), H1 (b1), H1*H2 (W2), ..."""
    return [n for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True)
            for n in (fan_in * fan_out, fan_out)]


def unflatten(w, layer_sizes):
    """[(W_1, b_1), ..., (W_L, b_L)] cut out of the flat vector, W_l row-major fan_in x fan_out."""
    params, start = [], 0
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True):
        W = anp.reshape(w[start:start + fan_in * fan_out], (fan_in, fan_out))
        start += fan_in * fan_out
        params.append((W, w[start:start + fan_out]))
        start += fan_out
    return params


def relu(z):
    """max(z, 0), with derivative 0 at z = 0 (a unit exactly at its kink is off)."""
    return anp.where(z > 0.0, z, 0.0)


ACTIVATIONS = {"tanh": anp.tanh, "relu": relu}


def logits(w, X, layer_sizes, activation):
    """z_L of the MLP: z_l = a_{l-1} W_l + b_l, a_l = phi(z_l) for hidden layers, a_0 = X."""
    phi, a = ACTIVATIONS[activation], X
    params = unflatten(w, layer_sizes)
    for W, b in params[:-1]:
        a = phi(anp.dot(a, W) + b)
    W, b = params[-1]
    return anp.dot(a, W) + b


def data_loss(w, X, y, layer_sizes, activation):
    """ell(w; X, y) = mean_r [log sum_k exp z_rk - z_r,y_r] (natural log)."""
    z = logits(w, X, layer_sizes, activation)
    m = anp.max(z, axis=1, keepdims=True)  # for range only: the value does not depend on it
    log_norm = m[:, 0] + anp.log(anp.sum(anp.exp(z - m), axis=1))
    return anp.mean(log_norm - z[np.arange(len(y)), y])


@primitive
def tap(w, t, kept):
    """w itself; the backward pass stores the cotangent of w in kept[t]."""
    return w


def _keep(g, t, kept):
    kept[t] = g
    return g


defvjp(tap, lambda ans, w, t, kept: lambda g: _keep(g, t, kept))


def sqrt0(x):
    """sqrt(x) for x >= 0 with derivative 0 at x = 0."""
    positive = x > 0
    return anp.where(positive, anp.sqrt(anp.where(positive, x, 1.0)), 0.0)


def momentum_step(t, w, v, L_t, alpha_t, gamma_t):
    """Step t of Algorithm 1: (w_{t+1}, v_{t+1}) from (w_t, v_t)."""
    v = gamma_t * v - (1.0 - gamma_t) * grad(L_t)(w)
    return w + alpha_t * v, v


def adam_step(t, w, state, L_t, alpha_t, decays_t):
    """Step t of Algorithm 1 with Adam: (w_{t+1}, state_{t+1}) from (w_t, state_t), state =
    (m, s, P1, P2) with P1 = prod_{k < t} beta1_k per entry (likewise P2), decays_t = (beta1_t,
    beta2_t, epsilon) per entry."""
    m, s, P1, P2 = state
    beta1_t, beta2_t, epsilon = decays_t
    g = grad(L_t)(w)
    m = beta1_t * m + (1.0 - beta1_t) * g
    s = beta2_t * s + (1.0 - beta2_t) * g * g
    P1, P2 = P1 * beta1_t, P2 * beta2_t
    w = w - alpha_t * (m / (1.0 - P1)) / (sqrt0(s / (1.0 - P2)) + epsilon)
    return w, (m, s, P1, P2)


def final_weights(hyper, X_train, c, kept=None, step=None):
    """w_T of Algorithm 1 in float64 from the hyperparameters (HYPER[optimizer], shift last) and
    the training inputs, every other input from the case arrays c; with a dict kept, every w_t
    passes through `tap`, which keeps df/dw_t in kept[t] when differentiated."""
    return trajectory(hyper, X_train, c, kept, step)[-1]


def trajectory(hyper, X_train, c, kept=None, step=None):
    """[w_0, ..., w_T] of `final_weights`; step: `momentum_step` or `adam_step` as the case's
    optimizer (None), or one's own with the same signature."""
    *own, init_scale, l2, shift = hyper
    sizes, activation = c["layer_sizes"], c["activation"]
    group = np.repeat(np.arange(2 * (len(sizes) - 1)), group_sizes(sizes))
    P = len(group)
    lam = l2 if l2.shape == (P,) else l2[group]
    w = init_scale[group] * c["eps"] + shift
    if c["optimizer"] == "adam":
        alpha, beta1, beta2, epsilon = own
        state, step = (anp.zeros(P), anp.zeros(P), 1.0, 1.0), step or adam_step

        def decays(t):
            return beta1[t][group], beta2[t][group], epsilon[group]
    else:
        alpha, gamma = own
        state, step = anp.zeros(P), step or momentum_step

        def decays(t):
            return gamma[t][group]
    ws = []
    for t, rows in enumerate(c["batches"]):
        X, y = X_train[rows], c["y_train"][rows]

        def L_t(w, X=X, y=y):
            return data_loss(w, X, y, sizes, activation) + 0.5 * anp.sum(lam * w * w)

        w = w if kept is None else tap(w, t, kept)
        ws.append(w)
        w, state = step(t, w, state, L_t, alpha[t][group], decays(t))
    return ws + [w if kept is None else tap(w, len(ws), kept)]


def answers(c, grad_train_inputs=False, trace_steps=None, step=None, shift=None):
    """The case file's output keys (w_final, valid_loss, the hypergradients d_alpha, d_gamma or
    d_beta1, d_beta2, d_epsilon, d_init_scale, d_l2, d_w0 and, when asked, d_X_train; with
    trace_steps, trace_steps, w_trace and dw_trace) for the inputs c, a mapping holding INPUT_KEYS
    (ADAM_INPUT_KEYS and optimizer "adam" for Adam); `step` is each step of training (None: the
    optimizer's); `shift` moves w_0 (None: by 0)."""
    optimizer = str(c["optimizer"]) if "optimizer" in c else "momentum"
    c = {k: np.asarray(c[k]) for k in (ADAM_INPUT_KEYS if optimizer == "adam" else INPUT_KEYS)}
    c["layer_sizes"] = [int(n) for n in c["layer_sizes"]]
    c["activation"], c["optimizer"] = str(c["activation"]), optimizer
    if c["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation {c['activation']!r} is not one of {sorted(ACTIVATIONS)}")
    names = HYPER[optimizer]
    shift = np.zeros(len(c["eps"])) if shift is None else np.array(shift, dtype=np.float64)
    hyper = tuple(np.array(c[k], dtype=np.float64) for k in names[:-1]) + (shift,)
    X_train, X_valid, y_valid = c["X_train"], c["X_valid"], c["y_valid"]
    kept = {}

    def f(args):
        hyper, X = args if grad_train_inputs else (args, X_train)
        w = final_weights(hyper, X, c, kept, step)
        return data_loss(w, X_valid, y_valid, c["layer_sizes"], c["activation"])

    loss, d = value_and_grad(f)((hyper, X_train) if grad_train_inputs else hyper)
    d_hyper, d_X = d if grad_train_inputs else (d, None)
    out = {"d_" + k: np.asarray(x) for k, x in zip(names, d_hyper, strict=True)}
    out["d_w0"] = out.pop("d_shift")
    if grad_train_inputs:
        out["d_X_train"] = np.asarray(d_X)
    ws = trajectory(hyper, X_train, c, step=step)
    out["w_final"] = np.asarray(ws[-1])
    out["valid_loss"] = np.asarray(float(loss))
    if trace_steps is not None:
        out["trace_steps"] = np.asarray(trace_steps, dtype=np.int64)
        out["w_trace"] = np.array([ws[t] for t in out["trace_steps"]])
        out["dw_trace"] = np.array([kept[t] for t in out["trace_steps"]])
    return out
