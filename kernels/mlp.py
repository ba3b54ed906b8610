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
from revlearn.blas import DGEMM, NO_TRANS, ROW_MAJOR, TRANS
from revlearn.threads import SERIAL

from .elementary import exp, log, tanh
from .jit import floats, kernel

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


# --- the passes on one chunk of rows, whole, inside one kernel ---------------------------

@kernel(inline=True)
def _mm(f, A, ta, B, tb, C):
    """C <- op(A) op(B) by one call of cblas_dgemm `f` (beta = 0), A and B row-major as stored:
    `revlearn.blas.mm`'s call, argument for argument."""
    M = A.shape[1] if ta else A.shape[0]
    K = A.shape[0] if ta else A.shape[1]
    N = B.shape[0] if tb else B.shape[1]
    f(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, M, N, K, 1.0,
      A.ctypes.data, A.shape[1], B.ctypes.data, B.shape[1], 0.0, C.ctypes.data, N)


@kernel(inline=True)
def _layer(w, sizes, l):
    """The views W_l (fan_in x fan_out) and b_l into the flat vector w."""
    o = 0
    for k in range(l):
        o += sizes[k] * sizes[k + 1] + sizes[k + 1]
    i, k = sizes[l], sizes[l + 1]
    return w[o:o + i * k].reshape((i, k)), w[o + i * k:o + i * k + k]


@kernel(inline=True)
def _forward(f, w, X, sizes, tanh):
    """Activations a_0 = X, ..., a_{L-1} and the logits z_L (refimpl's `_forward`)."""
    L = len(sizes) - 1
    a = [X]
    for l in range(L):
        W, b = _layer(w, sizes, l)
        z = np.empty((X.shape[0], sizes[l + 1]))
        _mm(f, a[l], False, W, False, z)
        if l == L - 1:
            _add_bias(z, b)
            return a, z
        if tanh:
            _add_bias_tanh(z, b)
        else:
            _add_bias_relu(z, b)
        a.append(z)
    return a, X  # not reached: L >= 1


@kernel(inline=True)
def _times_dphi(E, A, tanh):
    return _times_dtanh(E, A) if tanh else _times_drelu(E, A)


@kernel(inline=True)
def _backward(f, w, a, delta, sizes, tanh, g):
    """Backward pass from delta_L writing dW_l, db_l into g; returns the deltas and es[l] =
    delta_{l+1} W_{l+1}^T (refimpl's `_backward`)."""
    L = len(sizes) - 1
    deltas = [delta] * L
    es = [delta] * L  # es[0] is never used
    for l in range(L - 1, -1, -1):
        W, _ = _layer(w, sizes, l)
        gW, gb = _layer(g, sizes, l)
        _mm(f, a[l], True, deltas[l], False, gW)
        _rows_sum(deltas[l], gb)
        if l > 0:
            e = np.empty((delta.shape[0], sizes[l]))
            _mm(f, deltas[l], False, W, True, e)
            es[l] = e
            deltas[l - 1] = _times_dphi(e, a[l], tanh)
    return deltas, es


@kernel
def _argmax_misses(Z, y):
    """The number of rows whose largest entry (the first one, a NaN first of all: np.argmax's
    choice) is not at y_r."""
    wrong = 0
    for r in range(Z.shape[0]):
        m, best = Z[r, 0], 0
        for k in range(1, Z.shape[1]):
            if m != m:
                break
            if Z[r, k] != Z[r, k] or Z[r, k] > m:
                m, best = Z[r, k], k
        wrong += best != y[r]
    return wrong


@kernel
def _loss_chunk(f, w, X, y, sizes, tanh):
    """refimpl's `mlp.loss_chunk`: the chunk's sum of ell_r and its number of misclassified rows,
    from one forward pass without the GIL."""
    _, z = _forward(f, w, X, sizes, tanh)
    wrong = _argmax_misses(z, y)
    p = np.empty_like(z)
    return _softmax(z, y, p), wrong


@kernel
def _loss_grad_chunk(f, w, X, y, N, sizes, tanh, g):
    """refimpl's `mlp.loss_grad_chunk` on one chunk, all of it without the GIL: returns the
    chunk's sum of ell_r and writes its share of the gradient into g."""
    a, z = _forward(f, w, X, sizes, tanh)
    p = np.empty_like(z)
    ell = _softmax(z, y, p)
    _output_delta(p, y, N)
    _backward(f, w, a, p, sizes, tanh, g)
    return ell


@kernel
def _loss_grad_hvp_chunk(f, w, dv, X, y, N, sizes, tanh, g, Hdv, dX, input_grad):
    """refimpl's `mlp.loss_grad_hvp_chunk` on one chunk, without the GIL: returns the chunk's sum
    of ell_r and writes its shares of the gradient and of H dv into g and Hdv, and its rows of
    d/dX (grad_w ell . dv) into dX when input_grad."""
    L = len(sizes) - 1
    B = X.shape[0]
    a, z = _forward(f, w, X, sizes, tanh)
    p = np.empty_like(z)
    ell = _softmax(z, y, p)

    Rz = [z] * L  # R-forward (R a_0 = 0)
    Ra = [z] * L  # Ra[0] is never used
    for l in range(L):
        W, _ = _layer(w, sizes, l)
        V, c = _layer(dv, sizes, l)
        r = np.empty((B, sizes[l + 1]))
        _mm(f, a[l], False, V, False, r)
        if l > 0:
            t = np.empty((B, sizes[l + 1]))
            _mm(f, Ra[l], False, W, False, t)
            _add_bias_and(r, c, t)
        else:
            _add_bias(r, c)
        Rz[l] = r
        if l < L - 1:
            Ra[l + 1] = _times_dphi(r, a[l + 1], tanh)

    Rdelta = _rdelta_out(p, Rz[L - 1], N)
    _output_delta(p, y, N)
    deltas, es = _backward(f, w, a, p, sizes, tanh, g)
    for l in range(L - 1, -1, -1):  # R-backward
        W, _ = _layer(w, sizes, l)
        V, _ = _layer(dv, sizes, l)
        HW, Hb = _layer(Hdv, sizes, l)
        _mm(f, a[l], True, Rdelta, False, HW)
        if l > 0:
            t = np.empty_like(HW)
            _mm(f, Ra[l], True, deltas[l], False, t)
            _add_into(HW, t)
        _rows_sum(Rdelta, Hb)
        if l > 0:
            S = np.empty((B, sizes[l]))
            _mm(f, deltas[l], False, V, True, S)
            R = np.empty((B, sizes[l]))
            _mm(f, Rdelta, False, W, True, R)
            if tanh:
                _rdelta_tanh(R, S, a[l], es[l], Rz[l - 1])
            else:
                _rdelta_relu(R, S, a[l])
            Rdelta = R
    if input_grad:
        W, _ = _layer(w, sizes, 0)
        V, _ = _layer(dv, sizes, 0)
        t = np.empty_like(dX)
        _mm(f, Rdelta, False, W, True, dX)
        _mm(f, deltas[0], False, V, True, t)
        _add_into(dX, t)
    return ell


@kernel
def _add_into(A, B):
    """A <- A + B, entry by entry."""
    for i in range(A.size):
        A.flat[i] = A.flat[i] + B.flat[i]


# --- chunks and all rows: refimpl's drivers with these chunk passes -----------------------

def loss_grad_chunk(w, X, y, N, layout, activation, g):
    """refimpl's `mlp.loss_grad_chunk`: the chunk's sum of ell_r; its share of the gradient into
    g."""
    return _loss_grad_chunk(DGEMM, w, X, y, N, _sizes(layout), _is_tanh(activation), g)


def loss_grad_hvp_chunk(w, dv, X, y, N, layout, activation, g, Hdv, dX=None):
    """refimpl's `mlp.loss_grad_hvp_chunk`: the chunk's sum of ell_r; its shares of grad_w ell and
    H dv into g and Hdv, and its rows of d/dX (grad_w ell . dv) into dX unless None."""
    out = np.empty((0, X.shape[1])) if dX is None else dX
    return _loss_grad_hvp_chunk(DGEMM, w, dv, X, y, N, _sizes(layout), _is_tanh(activation), g,
                                Hdv, out, dX is not None)


def loss_chunk(w, X, y, layout, activation):
    """refimpl's `mlp.loss_chunk`: the chunk's sum of ell_r and its number of misses."""
    ell, wrong = _loss_chunk(DGEMM, w, X, y, _sizes(layout), _is_tanh(activation))
    return ell, int(wrong)


def loss_and_error(w, X, y, layout, activation, workers=SERIAL):
    """ell(w; X, y) and the error rate (refimpl's `mlp.loss_and_error` with these passes)."""
    w, X, y = floats(w), floats(X), np.ascontiguousarray(y, dtype=np.int64)
    _is_tanh(activation)
    chunk = loss_chunk if DGEMM is not None else mlp.loss_chunk
    return mlp.loss_and_error(w, X, y, layout, activation, workers, chunk=chunk)


def _chunks(activation):
    """(loss_grad_chunk, loss_grad_hvp_chunk): these kernels', or refimpl's where NumPy's BLAS
    cannot be called from a kernel (`revlearn.blas.DGEMM` is None)."""
    _is_tanh(activation)
    if DGEMM is None:
        return mlp.loss_grad_chunk, mlp.loss_grad_hvp_chunk
    return loss_grad_chunk, loss_grad_hvp_chunk


def loss_grad(w, X, y, layout, activation, workers=SERIAL):
    """ell(w; X, y) and grad_w ell (refimpl's `mlp.loss_grad` with these chunk passes)."""
    w, X, y = floats(w), floats(X), np.ascontiguousarray(y, dtype=np.int64)
    return mlp.loss_grad(w, X, y, layout, activation, workers, chunk=_chunks(activation)[0])


def loss_grad_hvp(w, dv, X, y, layout, activation, input_grad=False, workers=SERIAL):
    """ell, grad_w ell, H dv and, if asked, d/dX (grad_w ell . dv) (refimpl's
    `mlp.loss_grad_hvp` with these chunk passes)."""
    w, dv, X = floats(w), floats(dv), floats(X)
    y = np.ascontiguousarray(y, dtype=np.int64)
    return mlp.loss_grad_hvp(w, dv, X, y, layout, activation, input_grad, workers,
                             chunk=_chunks(activation)[1])


def grad_parts(w, X, y, rows, layout, activation, G, workers=SERIAL):
    """refimpl's `mlp.grad_parts` with these chunk passes."""
    return mlp.grad_parts(floats(w), X, y, rows, layout, activation, G, workers,
                          chunk=_chunks(activation)[0])


def grad_hvp_parts(w, dv, X, y, rows, layout, activation, G, H, dX=None, workers=SERIAL):
    """refimpl's `mlp.grad_hvp_parts` with these chunk passes."""
    return mlp.grad_hvp_parts(floats(w), floats(dv), X, y, rows, layout, activation, G, H, dX,
                              workers, chunk=_chunks(activation)[1])


def _sizes(layout):
    return np.asarray(layout.layer_sizes, dtype=np.int64)


def _is_tanh(activation):
    if activation not in ("tanh", "relu"):
        raise ValueError(f"the numba kernels know tanh and relu, not {activation!r}")
    return activation == "tanh"

