"""Recompute a case file's answers with PyTorch autograd through the unrolled training loop.

    python examples/torch_crosscheck.py CASE.npz THEIRS.npz

reads every input from CASE.npz (nothing from revlearn), runs Algorithm 1 in float64 on the CPU
keeping the whole autograd graph, differentiates the validation loss with respect to every
hyperparameter, writes the answers to THEIRS.npz under the case file's key names, and runs
`revlearn check CASE.npz THEIRS.npz` (its exit code is this script's). It doubles as a template for
an outside implementation: the conventions it follows are the README's "Case files". For an Adam
case the step is torch.optim.Adam's update written out without in-place operations, so that
autograd differentiates it; with hyperparameters constant over steps and groups the script first
checks that it reproduces torch.optim.Adam itself.
"""

import json
import subprocess
import sys

import numpy as np
import torch


def unflatten(w, sizes):
    """W_1, b_1, ..., W_L, b_L as views of the flat vector (W_l row-major, fan_in x fan_out)."""
    params, start = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = w[start:start + fan_in * fan_out].reshape(fan_in, fan_out)
        start += fan_in * fan_out
        params.append((W, w[start:start + fan_out]))
        start += fan_out
    return params


def data_loss(w, X, y, sizes, activation):
    """Mean softmax cross-entropy of the MLP."""
    phi = torch.tanh if activation == "tanh" else torch.relu
    a = X
    params = unflatten(w, sizes)
    for W, b in params[:-1]:
        a = phi(a @ W + b)
    W, b = params[-1]
    return torch.nn.functional.cross_entropy(a @ W + b, y)


def sqrt0(s):
    """sqrt(s), s >= 0, with derivative 0 at s = 0 (the README's convention for Adam)."""
    positive = s > 0
    return torch.where(positive, torch.where(positive, s, 1.0).sqrt(), 0.0)


def adam_step(w, m, s, g, lr, beta1, beta2, eps, P1, P2):
    """torch.optim.Adam's update (torch/optim/adam.py, _single_tensor_adam), out of place:
    m.lerp_(g, 1 - beta1); s.mul_(beta2).addcmul_(g, g, value=1 - beta2); denom = sqrt(s) /
    sqrt(c2) + eps; w.addcdiv_(m, denom, value=-lr / c1), with c1 = 1 - P1, c2 = 1 - P2 the
    products of the betas so far (beta**step for a constant beta)."""
    m = torch.lerp(m, g, 1 - beta1)
    s = s * beta2 + (1 - beta2) * g * g
    denom = sqrt0(s) / (1 - P2) ** 0.5 + eps
    return w - (lr / (1 - P1)) * (m / denom), m, s


def main(case_path, theirs_path):
    c = np.load(case_path, allow_pickle=False)
    sizes, activation = [int(s) for s in c["layer_sizes"]], str(c["activation"])
    group_sizes = [n for i, o in zip(sizes[:-1], sizes[1:], strict=True) for n in (i * o, o)]
    want_dX = bool(json.loads(str(c["spec"]))["grad_train_inputs"])
    adam = "optimizer" in c and str(c["optimizer"]) == "adam"  # files without it: momentum

    def leaf(key, grad=True):
        return torch.tensor(c[key], dtype=torch.float64, requires_grad=grad)

    def per_param(x):
        """Per-group values (G,) repeated over their groups, per-weight values (P,) as they are."""
        return x if x.shape[0] == sum(group_sizes) else torch.repeat_interleave(
            x, torch.tensor(group_sizes))

    own = ["beta1", "beta2", "epsilon"] if adam else ["gamma"]
    hyper = {k: leaf(k) for k in ["alpha", *own, "init_scale", "l2"]}
    X_train = leaf("X_train", grad=want_dX)
    y_train, batches = torch.tensor(c["y_train"]), torch.tensor(c["batches"])
    X_valid, y_valid = leaf("X_valid", grad=False), torch.tensor(c["y_valid"])

    def gradient(w, t):
        """g_t = grad L_t(w), keeping the graph."""
        rows = batches[t]
        L_t = (data_loss(w, X_train[rows], y_train[rows], sizes, activation)
               + 0.5 * (per_param(hyper["l2"]) * w * w).sum())
        return torch.autograd.grad(L_t, w, create_graph=True)[0]

    # Algorithm 1, in float64, keeping the graph
    w0 = per_param(hyper["init_scale"]) * leaf("eps", grad=False)
    w, state = w0, torch.zeros_like(w0)
    if adam:
        if constant(c, own + ["alpha"]):
            check_against_torch_optim(c, w0.detach(), gradient)
        state, P1, P2 = (state, torch.zeros_like(w0)), 1.0, 1.0
    for t in range(len(batches)):
        g, alpha_t = gradient(w, t), per_param(hyper["alpha"][t])
        if adam:
            b1, b2 = hyper["beta1"][t], hyper["beta2"][t]
            P1, P2 = P1 * b1, P2 * b2
            w, m, s = adam_step(w, *state, g, alpha_t, per_param(b1), per_param(b2),
                                per_param(hyper["epsilon"]), per_param(P1), per_param(P2))
            state = (m, s)
        else:
            gamma_t = per_param(hyper["gamma"][t])
            state = gamma_t * state - (1 - gamma_t) * g
            w = w + alpha_t * state
    f = data_loss(w, X_valid, y_valid, sizes, activation)

    # (w0.retain_grad() would also collect the inner autograd.grad calls' gradients: ask for all)
    names = ["d_" + k for k in hyper] + ["d_w0"] + ["d_X_train"] * want_dX
    inputs = list(hyper.values()) + [w0] + [X_train] * want_dX
    answers = dict(zip(names, torch.autograd.grad(f, inputs), strict=True))
    answers.update(w_final=w, valid_loss=f)
    np.savez(theirs_path, **{k: x.detach().numpy() for k, x in answers.items()})
    print(f"wrote {theirs_path} (PyTorch {torch.__version__}, float64, CPU)", flush=True)
    return subprocess.call([sys.executable, "-m", "revlearn", "check", case_path, theirs_path])


def constant(c, keys):
    """True when every one of the case's arrays `keys` holds a single value."""
    return all(np.all(c[k] == c[k].flat[0]) for k in keys)


def check_against_torch_optim(c, w0, gradient):
    """Train with torch.optim.Adam itself (no graph) and with `adam_step`: the same w_T."""
    lr, betas = float(c["alpha"].flat[0]), (float(c["beta1"].flat[0]), float(c["beta2"].flat[0]))
    eps = float(c["epsilon"][0])
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=betas, eps=eps)
    mine, m, s = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for t in range(len(c["batches"])):
        opt.zero_grad()
        w.grad = gradient(w, t).detach()
        opt.step()
        P1, P2 = betas[0] ** (t + 1), betas[1] ** (t + 1)  # torch's beta ** step
        g = gradient(mine.requires_grad_(True), t).detach()
        mine, m, s = (x.detach() for x in adam_step(mine.detach(), m, s, g, lr, *betas, eps,
                                                      P1, P2))
    off = float((w.detach() - mine).abs().max() / mine.abs().max())
    print(f"the update written out against torch.optim.Adam: w_T differs by {off:.1e} of "
          "its largest entry", flush=True)
    if off > 1e-12:
        sys.exit("adam_step does not reproduce torch.optim.Adam")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
