"""n tasks, one MLP each, with a cross-task sharing penalty that the engine sees as a diagonal L2.

Net t has the flat weights w_t (length p, the MLP layout of DESIGN §1). Per parameter group g of
that layout, stack the nets' slices as rows, W_g (n, p_g), and change variables with the Helmert
matrix Q (n x n, orthonormal, column 0 = 1/sqrt(n), the mean direction):

    W_g = Q U_g,        U_g = Q^T W_g          (row 0 of U_g: the mean component, rows 1..n-1:
                                                the deviations of the nets from their mean)

Since Q is orthonormal, with wbar_g = mean_t w_t,g,

    sum_t ||w_t,g||^2 = sum_k ||u_k,g||^2,     sum_t ||w_t,g - wbar_g||^2 = sum_{k>=1} ||u_k,g||^2,

so the engine's diagonal penalty 1/2 sum_i lam_i u_i^2, with one lam for the group (g, mean) and
one for (g, deviations), is

    lam_mean,g n/2 ||wbar_g||^2 + lam_dev,g / 2 sum_t ||w_t,g - wbar_g||^2,

a learnable cross-task sharing penalty: lam_dev = lam_mean is plain L2 on independent nets, a large
lam_dev ties the nets together. SGD with momentum on u is SGD on the w_t (an orthonormal map keeps
gradients and steps the same), so only the penalty differs from training the nets side by side.

Rows carry their task in the label: row r belongs to task y_r div K, with class y_r mod K. The
loss is the sum over tasks of each net's mean cross-entropy on its own rows,

    ell(u; X, y) = sum_t ell_MLP(w_t; X[task t], y[task t] mod K),

and its gradient, Hessian-vector product and input derivative are the MLP's, per task, mapped by
Q^T (the Hessian is block-diagonal over tasks in w).
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import mlp
from .threads import SERIAL


def helmert(n):
    """The n x n orthonormal Helmert matrix: column 0 = 1/sqrt(n); column k >= 1 has 1/sqrt(k(k+1))
    in rows 0..k-1 and -k/sqrt(k(k+1)) in row k."""
    Q = np.zeros((n, n))
    Q[:, 0] = 1.0 / np.sqrt(n)
    for k in range(1, n):
        Q[:k, k] = 1.0 / np.sqrt(k * (k + 1))
        Q[k, k] = -k / np.sqrt(k * (k + 1))
    return Q


@dataclass(frozen=True)
class TaskLayout(mlp.Layout):
    """Groups of the flat vector u: for each MLP group g (W1, b1, W2, ...), first (g, mean) with
    p_g entries, then (g, deviations) with (n - 1) p_g entries, U_g stored row-major; so group
    2g + 0 is g's mean and 2g + 1 its deviations, G = 2 * (2L)."""

    n_tasks: int = 2

    @cached_property
    def single(self):
        return mlp.Layout(self.layer_sizes)

    @property
    def G(self):
        return 2 * self.single.G

    @cached_property
    def sizes(self):
        return mlp._frozen(np.array([m for n in self.single.sizes
                                     for m in (n, (self.n_tasks - 1) * n)], dtype=np.int64))

    @cached_property
    def fan_in(self):
        return mlp._frozen(np.repeat(self.single.fan_in, 2))

    def describe_group(self, g):
        name = self.single.describe_group(g // 2).split()[0]
        return f"{name} {'mean' if g % 2 == 0 else 'task deviations'} (group {g})"

    def unflatten(self, w):
        raise TypeError("a multi-task vector u has no per-layer views; "
                        "use MultiTaskMLP.weights(u) for the nets' weights")


@dataclass(frozen=True, eq=False)
class MultiTaskMLP:
    """n_tasks copies of the MLP (layer_sizes, activation) in the coordinates u above: the model a
    Case takes as ``model=`` in place of its single MLP."""

    layer_sizes: tuple
    activation: str
    n_tasks: int

    @cached_property
    def layout(self):
        return TaskLayout(tuple(self.layer_sizes), self.n_tasks)

    @property
    def n_labels(self):
        return self.n_tasks * self.layer_sizes[-1]

    @cached_property
    def Q(self):
        return helmert(self.n_tasks)

    def weights(self, u):
        """W (n_tasks, p): row t is net t's flat weight vector, W_g = Q U_g per group."""
        lay, single = self.layout, self.layout.single
        W = np.empty((self.n_tasks, single.P))
        for g in range(single.G):
            U = u[lay.offsets[2 * g]:lay.offsets[2 * g + 2]].reshape(self.n_tasks, -1)
            W[:, single.offsets[g]:single.offsets[g + 1]] = self.Q @ U
        return W

    def coords(self, W):
        """u from W (n_tasks, p): U_g = Q^T W_g per group (the adjoint of `weights`)."""
        lay, single = self.layout, self.layout.single
        u = np.empty(lay.P)
        for g in range(single.G):
            u[lay.offsets[2 * g]:lay.offsets[2 * g + 2]] = \
                (self.Q.T @ W[:, single.offsets[g]:single.offsets[g + 1]]).ravel()
        return u

    def _tasks(self, y):
        K = self.layer_sizes[-1]
        for t in range(self.n_tasks):
            rows = np.flatnonzero(y // K == t)
            if len(rows):
                yield t, rows, y[rows] % K

    def loss(self, u, X, y):
        """ell(u; X, y) = sum_t ell_MLP(w_t; rows of task t)."""
        W, single = self.weights(u), self.layout.single
        return float(sum(mlp.loss(W[t], X[r], c, single, self.activation)
                         for t, r, c in self._tasks(y)))

    def task_losses(self, u, X, y):
        """Each task's mean cross-entropy, shape (n_tasks,) (NaN for a task without rows)."""
        W, single = self.weights(u), self.layout.single
        out = np.full(self.n_tasks, np.nan)
        for t, r, c in self._tasks(y):
            out[t] = mlp.loss(W[t], X[r], c, single, self.activation)
        return out

    def loss_grad(self, u, X, y, workers=SERIAL):
        """ell and grad_u ell = Q^T (grad_{w_t} ell_t)_t."""
        W, single = self.weights(u), self.layout.single
        G, ell = np.zeros_like(W), 0.0
        for t, r, c in self._tasks(y):
            ell_t, G[t] = mlp.loss_grad(W[t], X[r], c, single, self.activation, workers)
            ell += ell_t
        return ell, self.coords(G)

    def loss_grad_hvp(self, u, du, X, y, input_grad=False, workers=SERIAL):
        """ell, grad_u ell (bit-identical to `loss_grad`), H du and, if asked, d/dX (grad . du)."""
        W, dW, single = self.weights(u), self.weights(du), self.layout.single
        G, HdW, ell = np.zeros_like(W), np.zeros_like(W), 0.0
        dX = np.zeros_like(X) if input_grad else None
        for t, r, c in self._tasks(y):
            ell_t, G[t], HdW[t], dX_t = mlp.loss_grad_hvp(W[t], dW[t], X[r], c, single,
                                                          self.activation, input_grad, workers)
            ell += ell_t
            if input_grad:
                dX[r] = dX_t
        return ell, self.coords(G), self.coords(HdW), dX
