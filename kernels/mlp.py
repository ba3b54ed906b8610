"""The MLP passes of revlearn.mlp with their elementwise work in kernels (same names, same
equations; see that module's docstring):

    forward        z_l = a_{l-1} W_l + b_l,        a_l = phi(z_l)
    backward       delta_L = (softmax(z_L) - Y) / B,   delta_{l-1} = (delta_l W_l^T) * phi'(z_{l-1})
    R-forward      R z_l = R a_{l-1} W_l + a_{l-1} V_l + c_l,   R a_l = phi'(z_l) R z_l
    R-backward     R delta_L = p * (R z_L - sum_k p R z_L) / B
                   R delta_{l-1} = (R delta_l W_l^T + delta_l V_l^T) * phi'(z_{l-1})
                                   + (delta_l W_l^T) * phi''(z_{l-1}) * R z_{l-1}

Bit for bit the same numbers as refimpl, by construction: the matrix products are the same BLAS
calls on the same chunks of rows (`revlearn.partition`), and the kernels do the rest, each entry
with the same operations in the same order as refimpl's NumPy expressions (no fastmath, so no
contraction into fused multiply-adds): tanh, exp and log are `revlearn.elementary`'s own, compiled
from the same source (`kernels.elementary`) and fused here with the bias add and the softmax; the
sums over rows and over classes run in increasing index order, as refimpl's `_rows_sum` and
`_classes_sum` do. The kernels write in place instead of into temporaries.
"""

import numpy as np

from revlearn import mlp
from revlearn.threads import SERIAL

from .elementary import exp, log, tanh
from .jit import kernel

# --- elementwise kernels on C-contiguous (B, H) float64 arrays ------------------------------

@kernel
def _add_bias(Z, b):
    """Z <- Z + b (row vector b): z = a W + b."""
    B, H = Z.shape
    for r in range(B):
        for k in range(H):
            Z[r, k] = Z[r, k] + b[k]


@kernel
def _add_bias_tanh(Z, b):
    """Z <- tanh(Z + b): a = phi(a W + b) for phi = tanh."""
    B, H = Z.shape
    for r in range(B):
        for k in range(H):
            Z[r, k] = tanh(Z[r, k] + b[k])


@kernel
def _add_bias_relu(Z, b):
    """Z <- max(Z + b, 0) as np.maximum(z, 0.0) takes it: z if z > 0 or z is NaN, else 0."""
    B, H = Z.shape
    for r in range(B):
        for k in range(H):
            z = Z[r, k] + b[k]
            Z[r, k] = z if (z > 0.0 or z != z) else 0.0


@kernel
def _add_bias_and(Z, c, Y):
    """Z <- (Z + c) + Y: R z_l = (a_{l-1} V_l + c_l) + R a_{l-1} W_l."""
    B, H = Z.shape
    for r in range(B):
        for k in range(H):
            Z[r, k] = (Z[r, k] + c[k]) + Y[r, k]


@kernel
def _times_dtanh(E, A):
    """E * (1 - A A): delta_{l-1} = e * phi'(z) and R a = phi'(z) R z for phi = tanh, a = phi(z)."""
    out = np.empty_like(E)
    B, H = E.shape
    for r in range(B):
        for k in range(H):
            out[r, k] = E[r, k] * (1.0 - A[r, k] * A[r, k])
    return out


@kernel
def _times_drelu(E, A):
    """E * [A > 0] as a float (so -0.0 and NaN come out as NumPy's product gives them)."""
    out = np.empty_like(E)
    B, H = E.shape
    for r in range(B):
        for k in range(H):
            out[r, k] = E[r, k] * (1.0 if A[r, k] > 0.0 else 0.0)
    return out


@kernel
def _rdelta_tanh(R, S, A, E, Rz):
    """R <- (R + S) (1 - A A) + (E (-2 A (1 - A A))) Rz, the R-backward step through tanh with
    R = R delta_l W_l^T, S = delta_l V_l^T, E = delta_l W_l^T and Rz = R z_{l-1}."""
    B, H = R.shape
    for r in range(B):
        for k in range(H):
            a = A[r, k]
            t = (R[r, k] + S[r, k]) * (1.0 - a * a)
            R[r, k] = t + (E[r, k] * (-2.0 * a * (1.0 - a * a))) * Rz[r, k]


@kernel
def _rdelta_relu(R, S, A):
    """R <- (R + S) [A > 0], the R-backward step through relu (phi'' = 0)."""
    B, H = R.shape
    for r in range(B):
        for k in range(H):
            R[r, k] = (R[r, k] + S[r, k]) * (1.0 if A[r, k] > 0.0 else 0.0)


@kernel
def _softmax(Z, y, P):
    """P <- softmax(Z) per row; returns sum_r [log s_r - (Z[r, y_r] - m_r)] with m_r = max_k
    Z[r, k] (NaN propagating, as np.max), s_r = sum_k exp(Z[r, k] - m_r) (in class order), rows
    added in order, as refimpl's `_softmax_xent`."""
    B, K = Z.shape
    ell = 0.0
    for r in range(B):
        m = Z[r, 0]
        for k in range(1, K):
            if Z[r, k] > m or Z[r, k] != Z[r, k]:
                m = Z[r, k] if m == m else m
        s = 0.0
        for k in range(K):
            e = exp(Z[r, k] - m)
            P[r, k] = e
            s = e if k == 0 else s + e
        term = log(s) - (Z[r, y[r]] - m)
        ell = term if r == 0 else ell + term
        for k in range(K):
            P[r, k] = P[r, k] / s
    return ell


@kernel
def _rows_sum(X, out):
    """out <- sum_r X[r] with the rows added in increasing order (refimpl's `_rows_sum`)."""
    B, H = X.shape
    for k in range(H):
        out[k] = X[0, k]
    for r in range(1, B):
        for k in range(H):
            out[k] = out[k] + X[r, k]


@kernel
def _output_delta(P, y, N):
    """P <- (P - onehot(y)) / N: delta_L, in refimpl's order (subtract 1, then divide by N)."""
    B, K = P.shape
    n = float(N)
    for r in range(B):
        P[r, y[r]] = P[r, y[r]] - 1.0
        for k in range(K):
            P[r, k] = P[r, k] / n


@kernel
def _rdelta_out(P, Rz, N):
    """R delta_L = (p (R z_L - s)) / N with s = sum_k p R z_L per row (in class order)."""
    out = np.empty_like(P)
    B, K = P.shape
    n = float(N)
    for r in range(B):
        s = 0.0
        for k in range(K):
            s = P[r, k] * Rz[r, k] if k == 0 else s + P[r, k] * Rz[r, k]
        for k in range(K):
            out[r, k] = (P[r, k] * (Rz[r, k] - s)) / n
    return out


# --- the passes on one chunk of rows ------------------------------------------------------

TANH, RELU = "tanh", "relu"


def _forward(params, X, activation):
    """Activations a_0 = X, a_1, ..., a_{L-1} and the logits z_L."""
    a = [X]
    for W, b in params[:-1]:
        z = a[-1] @ W
        if activation == TANH:
            _add_bias_tanh(z, b)
        else:
            _add_bias_relu(z, b)
        a.append(z)
    W, b = params[-1]
    z = a[-1] @ W
    _add_bias(z, b)
    return a, z


def _times_dphi(E, A, activation):
    return _times_dtanh(E, A) if activation == TANH else _times_drelu(E, A)


def _backward(params, a, delta, activation, g_params):
    """Backward pass from delta_L, writing dW_l, db_l into the views g_params; returns the deltas
    and es[l] = delta_{l+1} W_{l+1}^T (refimpl's `_backward`)."""
    L = len(params)
    deltas, es = [None] * L, [None] * L
    deltas[-1] = delta
    for l in range(L - 1, -1, -1):
        np.matmul(a[l].T, deltas[l], out=g_params[l][0])
        _rows_sum(deltas[l], g_params[l][1])
        if l > 0:
            es[l] = deltas[l] @ params[l][0].T
            deltas[l - 1] = _times_dphi(es[l], a[l], activation)
    return deltas, es


def loss_grad_chunk(w, X, y, N, layout, activation):
    """refimpl's `mlp.loss_grad_chunk`: the chunk's sum of ell_r and its share of the gradient."""
    params = layout.unflatten(w)
    a, z = _forward(params, X, activation)
    p = np.empty_like(z)
    ell = _softmax(z, y, p)
    _output_delta(p, y, N)
    g = np.empty_like(w)
    _backward(params, a, p, activation, layout.unflatten(g))
    return ell, g


def loss_grad_hvp_chunk(w, dv, X, y, N, layout, activation, input_grad=False):
    """refimpl's `mlp.loss_grad_hvp_chunk`: the chunk's shares of ell, grad_w ell and H dv, and its
    rows of d/dX (grad_w ell . dv) if asked, sharing one forward pass."""
    params, dirs = layout.unflatten(w), layout.unflatten(dv)
    L = layout.L
    a, z = _forward(params, X, activation)
    p = np.empty_like(z)
    ell = _softmax(z, y, p)

    Rz, Ra = [None] * L, [None] * L  # R-forward (R a_0 = 0)
    for l in range(L):
        (W, _), (V, c) = params[l], dirs[l]
        Rz[l] = a[l] @ V
        if l > 0:
            _add_bias_and(Rz[l], c, Ra[l] @ W)
        else:
            _add_bias(Rz[l], c)
        if l < L - 1:
            Ra[l + 1] = _times_dphi(Rz[l], a[l + 1], activation)

    Rdelta = _rdelta_out(p, Rz[-1], N)
    g, Hdv = np.empty_like(w), np.empty_like(w)
    _output_delta(p, y, N)
    deltas, es = _backward(params, a, p, activation, layout.unflatten(g))
    hvps = layout.unflatten(Hdv)
    for l in range(L - 1, -1, -1):  # R-backward
        (W, _), (V, _) = params[l], dirs[l]
        HW, Hb = hvps[l]
        np.matmul(a[l].T, Rdelta, out=HW)
        if l > 0:
            HW += Ra[l].T @ deltas[l]
        _rows_sum(Rdelta, Hb)
        if l > 0:
            S = deltas[l] @ V.T
            Rdelta = Rdelta @ W.T
            if activation == TANH:
                _rdelta_tanh(Rdelta, S, a[l], es[l], Rz[l - 1])
            else:
                _rdelta_relu(Rdelta, S, a[l])
    dX = Rdelta @ params[0][0].T + deltas[0] @ dirs[0][0].T if input_grad else None
    return ell, g, Hdv, dX


# --- all rows: refimpl's drivers with these chunk passes ------------------------------------

def loss_grad(w, X, y, layout, activation, workers=SERIAL):
    """ell(w; X, y) and grad_w ell (refimpl's `mlp.loss_grad` with the kernels)."""
    w, X, y = _floats(w), _floats(X), np.ascontiguousarray(y, dtype=np.int64)
    _check_activation(activation)
    return mlp.loss_grad(w, X, y, layout, activation, workers, chunk=loss_grad_chunk)


def loss_grad_hvp(w, dv, X, y, layout, activation, input_grad=False, workers=SERIAL):
    """ell, grad_w ell, H dv and, if asked, d/dX (grad_w ell . dv) (refimpl's
    `mlp.loss_grad_hvp` with the kernels)."""
    w, dv, X = _floats(w), _floats(dv), _floats(X)
    y = np.ascontiguousarray(y, dtype=np.int64)
    _check_activation(activation)
    return mlp.loss_grad_hvp(w, dv, X, y, layout, activation, input_grad, workers,
                             chunk=loss_grad_hvp_chunk)


def _check_activation(activation):
    if activation not in (TANH, RELU):
        raise ValueError(f"the numba kernels know tanh and relu, not {activation!r}")


def _floats(a):
    return np.ascontiguousarray(a, dtype=np.float64)
