"""The elementwise adjoint updates of Algorithm 2 as single loops (mirrors of revlearn.sgd's
`adjoint_v` and `adjoint_w`), in NumPy's operation order, so the adjoints stay bit for bit:

    adjoint_v   dv <- dv + alpha dw;   u = (1 - gamma) dv
    adjoint_w   dw <- dw - (H u + lam u);   d_lam <- d_lam - w u;   dv <- gamma dv

NumPy runs these as eight passes over P entries with four temporaries; here each is one pass.
"""

import numpy as np

from .jit import kernel


@kernel
def _adjoint_v(dv, dw, alpha, gamma, u):
    for i in range(len(dv)):
        dv[i] = dv[i] + alpha[i] * dw[i]
        u[i] = (1.0 - gamma[i]) * dv[i]


@kernel
def _adjoint_w(dw, dv, d_lam, Hu, u, w, lam, gamma):
    for i in range(len(dw)):
        dw[i] = dw[i] - (Hu[i] + lam[i] * u[i])
        d_lam[i] = d_lam[i] - w[i] * u[i]
        dv[i] = dv[i] * gamma[i]


def adjoint_v(adj, alpha, gamma):
    """dv <- dv + alpha dw, then the direction the Hessian acts on:  u = (1 - gamma) dv."""
    u = np.empty_like(adj.dv)
    _adjoint_v(adj.dv, adj.dw, _floats(alpha), _floats(gamma), u)
    return u


def adjoint_w(adj, Hu, u, w, lam, gamma):
    """dw <- dw - (H u + lam u);  d_lam <- d_lam - w u;  dv <- gamma dv."""
    _adjoint_w(adj.dw, adj.dv, adj.d_lam, _floats(Hu), _floats(u), _floats(w), _floats(lam),
               _floats(gamma))


def _floats(a):
    return np.ascontiguousarray(a, dtype=np.float64)
