"""The per-parameter work of one step of Algorithms 1 and 2: everything but the MLP passes.

One step touches every lane (parameter) i a few times; these functions do it all at once, in the
order the algorithms give (`revlearn.sgd` calls them once per step). G holds the step's gradient in
parts, one row per chunk of rows (`revlearn.partition`), added in chunk order; H likewise the
Hessian-vector products; alpha, gamma and n = gamma 2**16 are per lane.

    forward         g = ((G_0 + G_1) + ...) + lam w_t              (the penalty's gradient last)
                    the exact step (`revlearn.exact`): v_{t+1} = gamma v_t - (1 - gamma) g,
                    w_{t+1} = w_t + alpha v_{t+1};  and w_{t+1} as floats, for the next gradient
    reverse_before  d_alpha_t = dots(dw, v_{t+1});  w_t = w_{t+1} - alpha v_{t+1} (exact);
                    dv += alpha dw;  u = (1 - gamma) dv             (the direction H acts on)
    reverse_after   g = ((G_0 + G_1) + ...) + lam w_t;  Hu = (H_0 + H_1) + ...
                    v_t = (v_{t+1} + (1 - gamma) g) / gamma (exact);  d_gamma_t = dots(dv, v_t + g)
                    dw -= Hu + lam u;  d_lam -= w_t u;  dv *= gamma

`dots(x, y)` is the per-group dot product, summed in a fixed order so that every backend and CPU
gives the same bits (no BLAS): each group is cut at the boundaries of the lane blocks
(`partition.LANES`) into segments; a segment's products x_i y_i are summed in eight interleaved
accumulators, acc_j = sum over i = j (mod 8) from the segment's start, in increasing i (the last
row padded with +0.0), combined as ((acc_0 + acc_1) + (acc_2 + acc_3)) + ((acc_4 + acc_5) +
(acc_6 + acc_7)); a group's segments are added in lane order.

`revlearn.kernels.lanes` computes the same, block by block of lanes, on several threads; here NumPy
works on all lanes at once.
"""

import numpy as np

from . import fixedpoint
from .exact import exact_step, exact_unstep_v, exact_unstep_w
from .partition import LANES


def segments(offsets, P):
    """(group, start, stop) of every segment: the groups cut at the lane blocks' boundaries."""
    out = []
    for g in range(len(offsets) - 1):
        start, stop = int(offsets[g]), int(offsets[g + 1])
        while start < stop:
            end = min(stop, (start // LANES + 1) * LANES)
            out.append((g, start, end))
            start = end
    return out


def segment_dot(x, y):
    """sum_i x_i y_i of one segment in eight interleaved accumulators (see the module's doc)."""
    p = x * y
    rows = -(-len(p) // 8)
    padded = np.zeros(rows * 8)
    padded[:len(p)] = p
    acc = np.add.accumulate(padded.reshape(rows, 8), axis=0)[-1]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


def dots(x, y, offsets):
    """The per-group dot products sum_{i in g} x_i y_i, shape (G,), in the fixed order above."""
    segs = segments(offsets, len(x))
    return by_group([segment_dot(x[a:b], y[a:b]) for _, a, b in segs], segs, len(offsets) - 1)


def by_group(segment_dots, segs, G):
    """Each group's segment dots added in lane order, shape (G,)."""
    out = np.zeros(G)
    first = np.ones(G, dtype=bool)
    for d, (g, _, _) in zip(segment_dots, segs, strict=True):
        out[g] = d if first[g] else out[g] + d
        first[g] = False
    return out


def total(parts):
    """((parts[0] + parts[1]) + parts[2]) + ..., the rows of a (k, P) array in order."""
    s = parts[0].copy()
    for row in parts[1:]:
        s += row
    return s


def penalized(G, lam, w):
    """g = ((G_0 + G_1) + ...) + lam w and the first entry that is not finite (-1 for none)."""
    g = total(G)
    g += lam * w
    bad = ~np.isfinite(g)
    return g, (int(np.argmax(bad)) if bad.any() else -1)


def forward(W, V, buf, w, G, lam, alpha, gamma, n, workers):
    """Algorithm 1's step t on every lane: (W, V, buf, w_{t+1}, bad), bad the first lane whose
    gradient is not finite (-1 for none; then the step is not taken)."""
    g, bad = penalized(G, lam, w)
    if bad >= 0:
        return W, V, buf, w, bad
    W, V, buf = exact_step(W, V, buf, g, alpha, gamma, n)
    return W, V, buf, fixedpoint.from_fixed(W), -1


def reverse_before(W, V, adj, alpha, gamma, offsets, workers):
    """Algorithm 2's step t up to the Hessian: (W_t, w_t, u, d_alpha_t); adj updated in place."""
    d_alpha = dots(adj.dw, fixedpoint.from_fixed(V), offsets)
    W = exact_unstep_w(W, V, alpha)
    return (W, fixedpoint.from_fixed(W)) + adjoint_before(adj, alpha, gamma) + (d_alpha,)


def reverse_after(V, buf, adj, G, H, lam, w, u, gamma, n, offsets, workers):
    """Algorithm 2's step t after the Hessian: (V_t, buf, d_gamma_t); adj updated in place."""
    g, _ = penalized(G, lam, w)
    V, buf = exact_unstep_v(V, buf, g, gamma, n)
    d_gamma = adjoint_after(adj, fixedpoint.from_fixed(V), g, total(H), u, w, lam, gamma, offsets)
    return V, buf, d_gamma


def adjoint_before(adj, alpha, gamma):
    """dv <- dv + alpha dw;  u = (1 - gamma) dv, the direction the Hessian acts on: (u,)."""
    dw, dv, _ = adj
    dv += alpha * dw
    return ((1.0 - gamma) * dv,)


def adjoint_after(adj, v, g, Hu, u, w, lam, gamma, offsets):
    """d_gamma_t = dots(dv, v_t + g);  dw <- dw - (H u + lam u);  d_lam <- d_lam - w u;
    dv <- gamma dv. Returns d_gamma_t."""
    dw, dv, d_lam = adj
    d_gamma = dots(dv, v + g, offsets)
    dw -= Hu + lam * u
    d_lam -= w * u
    dv *= gamma
    return d_gamma
