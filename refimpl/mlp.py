"""The MLP of DESIGN §1, its passes written by hand on the flat parameter vector.

Layers l = 1..L, a_0 = X, hidden activation phi, logits z_L, mean softmax cross-entropy over the
N rows of X:

    forward        z_l = a_{l-1} W_l + b_l,        a_l = phi(z_l)
    backward       delta_L = (softmax(z_L) - Y) / N
                   dW_l = a_{l-1}^T delta_l,        db_l = sum_r delta_l
                   delta_{l-1} = (delta_l W_l^T) * phi'(z_{l-1})
    R-forward      R z_l = R a_{l-1} W_l + a_{l-1} V_l + c_l,   R a_l = phi'(z_l) R z_l
    R-backward     R delta_L = p * (R z_L - sum_k p R z_L) / N
                   R dW_l = R a_{l-1}^T delta_l + a_{l-1}^T R delta_l,   R db_l = sum_r R delta_l
                   R delta_{l-1} = (R delta_l W_l^T + delta_l V_l^T) * phi'(z_{l-1})
                                   + (delta_l W_l^T) * phi''(z_{l-1}) * R z_{l-1}

R{.} is Pearlmutter's operator, the derivative along the direction dv = (V_l, c_l): R{grad} is the
Hessian-vector product H dv, and R{grad_X} = R delta_1 W_1^T + delta_1 V_1^T is the mixed derivative
d/dX (grad_w ell . dv) that Algorithm 2 needs for the training inputs. Since R a_0 = 0, the first
layer's R-products reduce to X V_1 and X^T R delta_1.

The rows are taken in chunks (`revlearn.partition.row_chunks`): each pass runs on one chunk, its
sums over rows (the loss, dW_l, db_l and their R-versions) are that chunk's, and `loss_grad` /
`loss_grad_hvp` add the chunks' up in chunk order, with as many threads as `workers` holds. Every
sum over rows or classes runs in increasing index order (`_rows_sum`, `_classes_sum`), every
matrix product is one `blas.mm` call (a dgemm), and the activations and the softmax use
`revlearn.elementary`, so the numba backend (`revlearn.kernels.mlp`) gives the same bits.

The penalty 1/2 sum lam w^2 is not part of these passes; `sgd` adds lam*w and lam*dv.
"""

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from . import elementary
from .blas import mm
from .partition import row_chunks
from .threads import SERIAL


@dataclass(frozen=True)
class Layout:
    """Where each layer's W_l and b_l live in the flat vector w, and the group of every entry.

    Group g = 2(l-1) holds W_l (row-major, fan_in x fan_out) and g = 2(l-1)+1 holds b_l, so the
    G = 2L groups are contiguous slices ``offsets[g]:offsets[g+1]`` in that order.
    """

    layer_sizes: tuple

    @property
    def L(self):
        return len(self.layer_sizes) - 1

    @property
    def G(self):
        return 2 * self.L

    @cached_property
    def sizes(self):
        """Number of entries in each group, shape (G,)."""
        pairs = zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True)
        return _frozen(np.array([n for i, o in pairs for n in (i * o, o)], dtype=np.int64))

    @cached_property
    def offsets(self):
        """Start of each group and the end of the last, shape (G+1,)."""
        return _frozen(np.concatenate(([0], np.cumsum(self.sizes))))

    @cached_property
    def P(self):
        return int(self.sizes.sum())

    @cached_property
    def fan_in(self):
        """Fan-in of the layer each group belongs to, shape (G,)."""
        return _frozen(np.repeat(np.array(self.layer_sizes[:-1], dtype=np.int64), 2))

    def unflatten(self, w):
        """Views (W_1, b_1), ..., (W_L, b_L) into the flat vector w (writes go through)."""
        o = self.offsets
        shapes = zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True)
        return [(w[o[2 * l]:o[2 * l + 1]].reshape(i, k), w[o[2 * l + 1]:o[2 * l + 2]])
                for l, (i, k) in enumerate(shapes)]

    def expand(self, per_group):
        """Per-group values, shape (G,), repeated to every entry of their group, shape (P,)."""
        return np.repeat(per_group, self.sizes)

    def group_sum(self, x):
        """Sum of x (P,) over each group, shape (G,)."""
        return np.add.reduceat(x, self.offsets[:-1])

    def group_dot(self, x, y):
        """sum_{i in g} x_i y_i for every group g, shape (G,)."""
        o = self.offsets
        return np.array([x[o[g]:o[g + 1]] @ y[o[g]:o[g + 1]] for g in range(self.G)])

    def group_of(self, i):
        """Group index of flat entry i."""
        return int(np.searchsorted(self.offsets, i, side="right") - 1)

    def describe_group(self, g):
        """Human name of group g, for error messages: 'W2 (group 2)'."""
        return f"{'W' if g % 2 == 0 else 'b'}{g // 2 + 1} (group {g})"


def _frozen(x):
    x.flags.writeable = False
    return x


class Activation(NamedTuple):
    """phi and its first two derivatives, written in terms of a = phi(z)."""

    phi: object
    dphi: object
    d2phi: object  # None where phi'' = 0 almost everywhere


def _tanh_dphi(a):
    return 1.0 - a * a


def _tanh_d2phi(a):
    return -2.0 * a * (1.0 - a * a)


def _relu(z):
    return np.maximum(z, 0.0)


def _relu_dphi(a):
    return (a > 0.0).astype(a.dtype)


ACTIVATIONS = {
    "tanh": Activation(elementary.tanh, _tanh_dphi, _tanh_d2phi),
    "relu": Activation(_relu, _relu_dphi, None),
}


def _rows_sum(x):
    """sum_r x[r], rows added in increasing order (NumPy's `sum` may pair them up instead)."""
    return np.add.accumulate(x, axis=0)[-1]


def _classes_sum(x):
    """sum_k x[:, k] per row, classes added in increasing order."""
    return np.add.accumulate(x, axis=1)[:, -1]


def _softmax_xent(z, y):
    """sum_r [log sum_k exp(z_rk - m_r) - (z_r,y_r - m_r)], m_r = max_k z_rk, and p = softmax(z)."""
    z = z - z.max(axis=1, keepdims=True)
    e = elementary.exp(z)
    s = _classes_sum(e)
    ell = _rows_sum(elementary.log(s) - z[np.arange(len(y)), y])
    return float(ell), e / s[:, None]


def _forward(params, X, act):
    """Activations a_0 = X, a_1, ..., a_{L-1} and the logits z_L."""
    a = [X]
    for W, b in params[:-1]:
        a.append(act.phi(mm(a[-1], W) + b))
    W, b = params[-1]
    return a, mm(a[-1], W) + b


def _output_delta(p, y, N):
    """delta_L = (softmax(z_L) - onehot(y)) / N, computed in place on p."""
    p[np.arange(len(y)), y] -= 1.0
    p /= N
    return p


def _backward(params, a, delta, act, g_params):
    """Backward pass from delta_L, writing dW_l, db_l into the views g_params.

    Returns ``deltas`` (delta_l per layer, first layer first) and ``es`` with
    es[l] = delta_{l+1} W_{l+1}^T (the back-propagated signal before phi'), es[0] = None.
    """
    L = len(params)
    deltas, es = [None] * L, [None] * L
    deltas[-1] = delta
    for l in range(L - 1, -1, -1):
        mm(a[l], deltas[l], ta=True, out=g_params[l][0])
        g_params[l][1][:] = _rows_sum(deltas[l])
        if l > 0:
            es[l] = mm(deltas[l], params[l][0], tb=True)
            deltas[l - 1] = es[l] * act.dphi(a[l])
    return deltas, es


# --- one chunk of rows ----------------------------------------------------------------------

def loss_chunk(w, X, y, layout, activation):
    """sum_r ell_r over the chunk's rows (the cross-entropy of each row, not yet divided by N)
    and the number of rows whose largest logit is not y_r."""
    with np.errstate(over="ignore", invalid="ignore"):
        _, z = _forward(layout.unflatten(w), X, ACTIVATIONS[activation])
        return _softmax_xent(z, y)[0], int(np.count_nonzero(np.argmax(z, axis=1) != y))


def loss_grad_chunk(w, X, y, N, layout, activation, g):
    """The chunk's share of ell(w; rows), returned, and of its gradient, written into g: sum_r ell_r
    / N is left to the caller, which adds the chunks' sums first; the gradient comes with
    delta_L = (p - Y) / N."""
    params, act = layout.unflatten(w), ACTIVATIONS[activation]
    with np.errstate(over="ignore", invalid="ignore"):
        a, z = _forward(params, X, act)
        ell, p = _softmax_xent(z, y)
        _backward(params, a, _output_delta(p, y, N), act, layout.unflatten(g))
    return ell


def loss_grad_hvp_chunk(w, dv, X, y, N, layout, activation, g, Hdv, dX=None):
    """The chunk's share of ell (returned), of grad_w ell and of H dv (sums over its rows, with 1/N
    inside the deltas, written into g and Hdv), and its rows of d/dX (grad_w ell . dv) written
    into dX unless it is None, all from one forward pass.

    The gradient comes from the same `_forward` and `_backward` calls as `loss_grad_chunk`, so it
    is bit-identical to it: Algorithm 2 relies on that to undo Algorithm 1's steps exactly.
    """
    params, dirs = layout.unflatten(w), layout.unflatten(dv)
    act = ACTIVATIONS[activation]
    L = layout.L
    with np.errstate(over="ignore", invalid="ignore"):
        a, z = _forward(params, X, act)
        ell, p = _softmax_xent(z, y)

        # R-forward: R z_l, and R a_l for the hidden layers (R a_0 = 0)
        Rz, Ra = [None] * L, [None] * L
        for l in range(L):
            (W, _), (V, c) = params[l], dirs[l]
            Rz[l] = mm(a[l], V) + c
            if l > 0:
                Rz[l] += mm(Ra[l], W)
            if l < L - 1:
                Ra[l + 1] = act.dphi(a[l + 1]) * Rz[l]

        # backward, then R-backward on its deltas
        Rdelta = p * (Rz[-1] - _classes_sum(p * Rz[-1])[:, None]) / N
        deltas, es = _backward(params, a, _output_delta(p, y, N), act, layout.unflatten(g))
        hvps = layout.unflatten(Hdv)
        for l in range(L - 1, -1, -1):
            (W, _), (V, _) = params[l], dirs[l]
            HW, Hb = hvps[l]
            mm(a[l], Rdelta, ta=True, out=HW)
            if l > 0:
                HW += mm(Ra[l], deltas[l], ta=True)
            Hb[:] = _rows_sum(Rdelta)
            if l > 0:
                Rdelta = (mm(Rdelta, W, tb=True) + mm(deltas[l], V, tb=True)) * act.dphi(a[l])
                if act.d2phi is not None:
                    Rdelta += es[l] * act.d2phi(a[l]) * Rz[l - 1]
        if dX is not None:
            dX[:] = mm(Rdelta, params[0][0], tb=True) + mm(deltas[0], dirs[0][0], tb=True)
    return ell


# --- all rows: the chunks, added in chunk order ---------------------------------------------

def loss(w, X, y, layout, activation, workers=SERIAL):
    """ell(w; X, y): mean softmax cross-entropy of the MLP (no penalty)."""
    return loss_and_error(w, X, y, layout, activation, workers)[0]


def loss_and_error(w, X, y, layout, activation, workers=SERIAL, chunk=loss_chunk):
    """ell(w; X, y) and the error rate (rows whose largest logit is not y), one forward pass:
    `chunk` (this module's or the numba backend's) on each chunk of rows, summed in order."""
    N, starts = len(y), row_chunks(len(y))
    ell, wrong = workers.fold(
        lambda c: chunk(w, X[starts[c]:starts[c + 1]], y[starts[c]:starts[c + 1]], layout,
                        activation),
        len(starts) - 1, lambda a, b: (a[0] + b[0], a[1] + b[1]))
    return ell / N, wrong / N


def _add_parts(acc, part):
    """(ell, g, ...) of the chunks so far plus one more chunk's, in place."""
    for a, b in zip(acc[1:], part[1:], strict=True):
        a += b
    return (acc[0] + part[0],) + tuple(acc[1:])


def loss_grad(w, X, y, layout, activation, workers=SERIAL, chunk=loss_grad_chunk):
    """ell(w; X, y) and grad_w ell: `chunk` (this module's or the numba backend's) on each chunk
    of rows, the chunks' sums added in chunk order as they come (a few held at a time)."""
    N, starts = len(y), row_chunks(len(y))

    def part(c):
        g = np.empty_like(w)
        rows = slice(starts[c], starts[c + 1])
        return chunk(w, X[rows], y[rows], N, layout, activation, g), g

    ell, g = workers.fold(part, len(starts) - 1, _add_parts)
    return ell / N, g


def loss_grad_hvp(w, dv, X, y, layout, activation, input_grad=False, workers=SERIAL,
                  chunk=loss_grad_hvp_chunk):
    """ell, grad_w ell, H dv and, if asked, d/dX (grad_w ell . dv) (shape X.shape, else None):
    `chunk` on each chunk of rows, the chunks' sums added in chunk order."""
    N, starts = len(y), row_chunks(len(y))
    dX = np.empty(X.shape) if input_grad else None

    def part(c):
        g, Hdv = np.empty_like(w), np.empty_like(w)
        rows = slice(starts[c], starts[c + 1])
        ell = chunk(w, dv, X[rows], y[rows], N, layout, activation, g, Hdv,
                    dX[rows] if input_grad else None)
        return ell, g, Hdv

    ell, g, Hdv = workers.fold(part, len(starts) - 1, _add_parts)
    return ell / N, g, Hdv, dX


def grad_parts(w, X, y, rows, layout, activation, G, workers=SERIAL, chunk=loss_grad_chunk):
    """ell(w; X[rows], y[rows]) and the gradient in parts: row c of G (k, P), k = the number of
    chunks of the len(rows) rows, receives chunk c's share (the parts add up, in order, to
    `loss_grad`'s gradient). Each chunk gathers its own rows of X, on its own thread."""
    N, starts = len(rows), row_chunks(len(rows))

    def part(c):
        r = rows[starts[c]:starts[c + 1]]
        return chunk(w, X[r], y[r], N, layout, activation, G[c])

    return _in_order(workers.map(part, len(starts) - 1)) / N


def grad_hvp_parts(w, dv, X, y, rows, layout, activation, G, H, dX=None, workers=SERIAL,
                   chunk=loss_grad_hvp_chunk):
    """`grad_parts` and H dv in parts likewise (rows of H), and d/dX (grad_w ell . dv) of the
    rows into dX (len(rows) x D) unless it is None."""
    N, starts = len(rows), row_chunks(len(rows))

    def part(c):
        s = slice(starts[c], starts[c + 1])
        return chunk(w, dv, X[rows[s]], y[rows[s]], N, layout, activation, G[c], H[c],
                     None if dX is None else dX[s])

    return _in_order(workers.map(part, len(starts) - 1)) / N


def _in_order(values):
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total
