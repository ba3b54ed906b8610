"""A model whose training loss is quadratic, for the implicit function theorem's closed form.

Least squares of a linear model on one-hot labels, with Z = [X, 1] and w = Theta ((D+1) x K,
row-major: W1 then b1, the layout of a one-layer MLP):

    ell(w; X, y) = ||Z Theta - Y||^2 / (2N),   grad = Z^T R / N  (R = Z Theta - Y),
    H = kron(Z^T Z / N, I_K),                  d/dX (grad . u) = [R U^T + (Z U) Theta^T]_{:, :D} / N

The Hessian does not depend on w, so the stationary point of ell + 1/2 sum lam w^2 and every
derivative the implicit function theorem gives at it are closed forms (`implicit`).
"""

import numpy as np

import revlearn
from revlearn import mlp


class LeastSquares:
    """The model above, in the interface `Case(model=...)` takes."""

    def __init__(self, D, K):
        self.layout, self.n_labels = mlp.Layout((D, K)), K

    def _residual(self, w, X, y):
        Z = np.hstack([X, np.ones((len(X), 1))])
        Theta = w.reshape(Z.shape[1], self.n_labels)
        return Z, Theta, Z @ Theta - np.eye(self.n_labels)[y]

    def loss_grad(self, w, X, y, workers=None):
        Z, _, R = self._residual(w, X, y)
        return 0.5 * np.sum(R * R) / len(y), (Z.T @ R).ravel() / len(y)

    def loss_grad_hvp(self, w, u, X, y, input_grad=False, workers=None):
        Z, Theta, R = self._residual(w, X, y)
        N, U = len(y), u.reshape(Theta.shape)
        ZU = Z @ U
        dX = ((R @ U.T + ZU @ Theta.T) / N)[:, :-1] if input_grad else None
        return 0.5 * np.sum(R * R) / N, (Z.T @ R).ravel() / N, (Z.T @ ZU).ravel() / N, dX


def quadratic_case(T, alpha=0.5, gamma=0.5, l2=(0.05, 0.02), N=40, D=4, K=3, seed=0,
                   grad_train_inputs=False, adam=None):
    """Full-batch training (every step sees all N rows) of `LeastSquares` on Gaussian inputs, with
    momentum gamma, or with Adam given adam=(beta1, beta2, epsilon)."""
    rng = np.random.default_rng(seed)
    model = LeastSquares(D, K)
    G, P = model.layout.G, model.layout.P
    own = dict(gamma=np.full((T, G), gamma)) if adam is None else dict(
        optimizer="adam", beta1=np.full((T, G), adam[0]), beta2=np.full((T, G), adam[1]),
        epsilon=np.full(G, adam[2]))
    return revlearn.Case(
        layer_sizes=(D, K), activation="tanh", model=model,
        X_train=rng.standard_normal((N, D)), y_train=rng.integers(0, K, N),
        X_valid=rng.standard_normal((N, D)), y_valid=rng.integers(0, K, N),
        batches=np.tile(np.arange(N), (T, 1)), eps=rng.standard_normal(P),
        alpha=np.full((T, G), alpha), init_scale=np.full(G, 0.5),
        l2=np.asarray(l2, dtype=np.float64), grad_train_inputs=grad_train_inputs, **own)


def implicit(case, w):
    """The implicit function theorem's hypergradients at w, in closed form: q = (H + diag(lam))^-1
    grad f(w), d_lam = -q w (summed per group for a per-group l2), d_X = -d/dX (grad . q)."""
    model, K = case.model, case.layout.layer_sizes[-1]
    Z, Theta, R = model._residual(w, case.X_train, case.y_train)
    N = len(R)
    H = np.kron(Z.T @ Z / N, np.eye(K)) + np.diag(case.lam)
    q = np.linalg.solve(H, model.loss_grad(w, case.X_valid, case.y_valid)[1])
    d_lam = -q * w
    Q = q.reshape(Theta.shape)
    d_X = -((R @ Q.T + (Z @ Q) @ Theta.T) / N)[:, :-1]
    return (d_lam if case.l2_per_weight else case.layout.group_sum(d_lam)), d_X
