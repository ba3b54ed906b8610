"""What a user would otherwise run: the same hypergradient by autodiff through the unrolled loop.

Both peers run Algorithm 1 in float64 on the CPU, keep what their autodiff needs for the whole
trajectory, and differentiate f(w_T) with respect to alpha, gamma, init_scale, l2 and w_0 (w_0 as
init_scale[group] * eps + a zero shift, whose gradient is d_w0):

    for t:  g_t = grad L_t(w_t);  v <- gamma_t v - (1 - gamma_t) g_t;  w <- w + alpha_t v

- PyTorch, eager: `torch.autograd.grad(..., create_graph=True)` every step, then one backward;
  for a case trained with Adam, torch.optim.Adam's update written out without in-place operations
  (as examples/torch_crosscheck.py, which checks it against torch.optim.Adam), differentiated
  with respect to alpha, beta1, beta2, epsilon, init_scale, l2 and w_0.
- JAX: `jax.value_and_grad` of a `jax.jit`-compiled `lax.scan` over the steps, momentum or Adam
  (the same update as the PyTorch peer's).

`torch_hypergradient(case)` and `jax_hypergradient(case)` return a function that runs it once and
gives a dict of the case file's output keys (w_final, valid_loss, d_alpha, ...), so the answers can
be checked against revlearn's with `revlearn.oracle.compare`. Each imports its framework on call.
"""

import numpy as np

OUTPUTS = ("d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0")
ADAM_OUTPUTS = ("d_alpha", "d_beta1", "d_beta2", "d_epsilon", "d_init_scale", "d_l2", "d_w0")


def _slices(layer_sizes):
    """(start, fan_in, fan_out) of each W_l, with b_l following it, in the flat vector."""
    out, start = [], 0
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:], strict=True):
        out.append((start, fan_in, fan_out))
        start += fan_in * fan_out + fan_out
    return out


def torch_hypergradient(case, threads=None):
    """A function computing the case's hypergradient with PyTorch autograd (eager, float64)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    lay, slices = case.layout, _slices(case.layer_sizes)
    phi = torch.tanh if case.activation == "tanh" else torch.relu
    group = torch.as_tensor(np.repeat(np.arange(lay.G), lay.sizes))
    X, y = torch.tensor(case.X_train), torch.tensor(case.y_train)  # copies: the data is read-only
    Xv, yv = torch.tensor(case.X_valid), torch.tensor(case.y_valid)
    batches, eps = torch.tensor(case.batches), torch.tensor(case.eps)

    def data_loss(w, X, y):
        a = X
        for l, (start, i, o) in enumerate(slices):
            W, b = w[start:start + i * o].view(i, o), w[start + i * o:start + i * o + o]
            a = a @ W + b if l == len(slices) - 1 else phi(a @ W + b)
        return torch.nn.functional.cross_entropy(a, y)

    adam = case.optimizer == "adam"
    names = ADAM_OUTPUTS if adam else OUTPUTS

    def sqrt0(s):  # derivative 0 at s = 0, the README's convention
        return torch.where(s > 0, torch.where(s > 0, s, 1.0).sqrt(), 0.0)

    def run():
        hyper = [torch.tensor(getattr(case, k[2:]), requires_grad=True) for k in names[:-1]]
        *own, scale, l2 = hyper
        shift = torch.zeros(case.P, dtype=torch.float64, requires_grad=True)
        lam = l2 if case.l2_per_weight else l2[group]
        w = scale[group] * eps + shift
        v, s, P1, P2 = torch.zeros_like(w), torch.zeros_like(w), 1.0, 1.0
        for t in range(case.T):
            rows = batches[t]
            L_t = data_loss(w, X[rows], y[rows]) + 0.5 * (lam * w * w).sum()
            g = torch.autograd.grad(L_t, w, create_graph=True)[0]
            if adam:  # torch.optim.Adam's update, out of place; v is the first moment
                alpha, beta1, beta2, epsilon = own
                b1, b2 = beta1[t][group], beta2[t][group]
                P1, P2 = P1 * beta1[t], P2 * beta2[t]
                v = torch.lerp(v, g, 1 - b1)
                s = s * b2 + (1 - b2) * g * g
                denom = sqrt0(s) / (1 - P2[group]) ** 0.5 + epsilon[group]
                w = w - (alpha[t][group] / (1 - P1[group])) * (v / denom)
            else:
                alpha, gamma = own
                gamma_t = gamma[t][group]
                v = gamma_t * v - (1.0 - gamma_t) * g
                w = w + alpha[t][group] * v
        f = data_loss(w, Xv, yv)
        grads = torch.autograd.grad(f, hyper + [shift])
        out = {k: d.numpy() for k, d in zip(names, grads, strict=True)}
        out.update(w_final=w.detach().numpy(), valid_loss=np.array(f.item()))
        return out

    return run


def jax_hypergradient(case):
    """A function computing the case's hypergradient with JAX (jit of a lax.scan unroll, x64).

    The first call compiles; later calls reuse the compiled program."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    lay, slices = case.layout, _slices(case.layer_sizes)
    phi = jnp.tanh if case.activation == "tanh" else jax.nn.relu
    group = jnp.asarray(np.repeat(np.arange(lay.G), lay.sizes))
    X, y = jnp.asarray(case.X_train), jnp.asarray(case.y_train)
    Xv, yv = jnp.asarray(case.X_valid), jnp.asarray(case.y_valid)
    batches, eps = jnp.asarray(case.batches), jnp.asarray(case.eps)
    per_weight = case.l2_per_weight

    def data_loss(w, X, y):
        a = X
        for l, (start, i, o) in enumerate(slices):
            W, b = w[start:start + i * o].reshape(i, o), w[start + i * o:start + i * o + o]
            a = a @ W + b if l == len(slices) - 1 else phi(a @ W + b)
        picked = jnp.take_along_axis(a, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(a, axis=1) - picked)

    def sqrt0(s):  # derivative 0 at s = 0, the README's convention
        return jnp.where(s > 0, jnp.sqrt(jnp.where(s > 0, s, 1.0)), 0.0)

    def momentum(w, state, g, own_t, _):
        (v,), (alpha_t, gamma_t) = state, own_t
        v = gamma_t[group] * v - (1.0 - gamma_t[group]) * g
        return w + alpha_t[group] * v, (v,)

    def adam(w, state, g, own_t, epsilon):  # torch.optim.Adam's update, as the torch peer's
        (m, s, P1, P2), (alpha_t, beta1_t, beta2_t) = state, own_t
        b1, b2 = beta1_t[group], beta2_t[group]
        P1, P2 = P1 * beta1_t, P2 * beta2_t
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        denom = sqrt0(s) / jnp.sqrt(1 - P2[group]) + epsilon[group]
        return w - (alpha_t[group] / (1 - P1[group])) * (m / denom), (m, s, P1, P2)

    is_adam = case.optimizer == "adam"
    names = ADAM_OUTPUTS if is_adam else OUTPUTS
    update = adam if is_adam else momentum

    def f(*hyper):
        *own, scale, l2, shift = hyper
        epsilon = own.pop() if is_adam else None  # (G,): not a per-step schedule
        lam = l2 if per_weight else l2[group]

        def step(carry, xs):
            w, state = carry
            rows, *own_t = xs
            g = jax.grad(lambda w: data_loss(w, X[rows], y[rows]) + 0.5 * jnp.sum(lam * w * w))(w)
            return update(w, state, g, own_t, epsilon), None

        w0 = scale[group] * eps + shift
        zeros = jnp.zeros_like(w0)
        start = (zeros, zeros, jnp.ones(lay.G), jnp.ones(lay.G)) if is_adam else (zeros,)
        (w, _), _ = jax.lax.scan(step, (w0, start), (batches, *own))
        return data_loss(w, Xv, yv), w

    value_and_grad = jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(names))),
                                                has_aux=True))
    args = tuple(jnp.asarray(getattr(case, k[2:])) for k in names[:-1]) + (jnp.zeros(case.P),)

    def run():
        (loss, w), grads = jax.block_until_ready(value_and_grad(*args))
        out = {k: np.asarray(d) for k, d in zip(names, grads, strict=True)}
        out.update(w_final=np.asarray(w), valid_loss=np.asarray(loss))
        return out

    return run
