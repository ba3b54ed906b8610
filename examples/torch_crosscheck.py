"""Recompute a case file's answers with PyTorch autograd through the unrolled training loop.

    python examples/torch_crosscheck.py CASE.npz THEIRS.npz

reads every input from CASE.npz (nothing from revlearn), runs Algorithm 1 in float64 on the CPU
keeping the whole autograd graph, differentiates the validation loss with respect to every
hyperparameter, writes the answers to THEIRS.npz under the case file's key names, and runs
`revlearn check CASE.npz THEIRS.npz` (its exit code is this script's). It doubles as a template for
an outside implementation: the conventions it follows are the README's "Case files".
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


def main(case_path, theirs_path):
    c = np.load(case_path, allow_pickle=False)
    sizes, activation = [int(s) for s in c["layer_sizes"]], str(c["activation"])
    group_sizes = [n for i, o in zip(sizes[:-1], sizes[1:], strict=True) for n in (i * o, o)]
    want_dX = bool(json.loads(str(c["spec"]))["grad_train_inputs"])

    def leaf(key, grad=True):
        return torch.tensor(c[key], dtype=torch.float64, requires_grad=grad)

    def per_param(x):
        """Per-group values (G,) repeated over their groups, per-weight values (P,) as they are."""
        return x if x.shape[0] == sum(group_sizes) else torch.repeat_interleave(
            x, torch.tensor(group_sizes))

    alpha, gamma, init_scale, l2 = leaf("alpha"), leaf("gamma"), leaf("init_scale"), leaf("l2")
    X_train = leaf("X_train", grad=want_dX)
    y_train, batches = torch.tensor(c["y_train"]), torch.tensor(c["batches"])
    X_valid, y_valid = leaf("X_valid", grad=False), torch.tensor(c["y_valid"])

    # Algorithm 1, in float64, keeping the graph
    w0 = per_param(init_scale) * leaf("eps", grad=False)
    w, v, lam = w0, torch.zeros_like(w0), per_param(l2)
    for t, rows in enumerate(batches):
        ell = data_loss(w, X_train[rows], y_train[rows], sizes, activation)
        L_t = ell + 0.5 * (lam * w * w).sum()
        g = torch.autograd.grad(L_t, w, create_graph=True)[0]
        a_t, g_t = per_param(alpha[t]), per_param(gamma[t])
        v = g_t * v - (1 - g_t) * g
        w = w + a_t * v
    f = data_loss(w, X_valid, y_valid, sizes, activation)

    # (w0.retain_grad() would also collect the inner autograd.grad calls' gradients: ask for all)
    names = ["d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0"] + ["d_X_train"] * want_dX
    inputs = [alpha, gamma, init_scale, l2, w0] + [X_train] * want_dX
    answers = dict(zip(names, torch.autograd.grad(f, inputs), strict=True))
    answers.update(w_final=w, valid_loss=f)
    np.savez(theirs_path, **{k: x.detach().numpy() for k, x in answers.items()})
    print(f"wrote {theirs_path} (PyTorch {torch.__version__}, float64, CPU)", flush=True)
    return subprocess.call([sys.executable, "-m", "revlearn", "check", case_path, theirs_path])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
