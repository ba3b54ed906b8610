"""Algorithm 1's update on fixed-point w and v, exactly, and its inverse (DESIGN §4).

Per entry, with alpha, gamma = n / 2**16 and g = g_t (all vectors of length P), and fix(x) =
rint(x 2**52) the fixed-point rounding of `fixedpoint.to_fixed`:

    forward   v <- gamma v, exactly, bits back (`fixedpoint.mul_gamma`)
              v <- v - fix((1 - gamma) g)
              w <- w + fix(alpha v 2**-52)
    reverse   w <- w - fix(alpha v 2**-52)                       (`exact_unstep_w`: the very
                                                                   increment the forward added)
              v <- v + fix((1 - gamma) g);  v <- v / gamma, exactly (`exact_unstep_v`)

`revlearn.kernels.exact` computes the same in loops over blocks of lanes, on several threads; here
NumPy works on all lanes at once and the `workers` argument is not needed.
"""

from . import fixedpoint
from .threads import SERIAL


def exact_step(W, V, buf, g, alpha, gamma, n, workers=SERIAL):
    """Algorithm 1's update, exactly:  v <- gamma v - (1 - gamma) g;  w <- w + alpha v."""
    V, buf = fixedpoint.mul_gamma(V, n, buf)
    V = fixedpoint.sub(V, fixedpoint.to_fixed((1.0 - gamma) * g))
    W = fixedpoint.add(W, fixedpoint.to_fixed(alpha * fixedpoint.from_fixed(V)))
    return W, V, buf


def exact_unstep_w(W, V, alpha, workers=SERIAL):
    """w_t = w_{t+1} - alpha v_{t+1}, subtracting the very increment `exact_step` added."""
    return fixedpoint.sub(W, fixedpoint.to_fixed(alpha * fixedpoint.from_fixed(V)))


def exact_unstep_v(V, buf, g, gamma, n, workers=SERIAL):
    """v_t = (v_{t+1} + (1 - gamma) g_t) / gamma, exactly (g_t recomputed bit for bit)."""
    V = fixedpoint.add(V, fixedpoint.to_fixed((1.0 - gamma) * g))
    return fixedpoint.div_gamma(V, n, buf)
