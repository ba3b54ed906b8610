"""revlearn.elementary's exp, log and tanh compiled by Numba from the very same source.

The functions of `revlearn.elementary` are written with + - * /, comparisons, `np.rint`, `np.abs`
and five primitives. Here each primitive gets a scalar implementation for Numba (`where` a select,
`bits`/`from_bits` a bit cast, `to_int`/`to_float` a conversion); then `exp`, `log` and `tanh` are
the refimpl functions themselves, jit-compiled with the package's policy and inlined into the loops
that call them. Without fastmath, LLVM keeps every operation and its rounding (no contraction into
fused multiply-adds, no reassociation), so a loop computes exactly what NumPy computes ufunc by
ufunc; the selects keep the loops free of branches, so they vectorise.
"""

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from revlearn import elementary as el

from .jit import kernel


@intrinsic
def _f64_as_i64(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _i64_as_f64(typingctx, i):
    if i != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _select(typingctx, c, a, b):
    """LLVM's select: a if c else b, both evaluated, no branch."""
    if not (isinstance(a, types.Number) and isinstance(b, types.Number)):
        return None
    t = typingctx.unify_pairs(a, b)

    def codegen(context, builder, sig, args):
        cond = context.cast(builder, args[0], sig.args[0], types.boolean)
        x = context.cast(builder, args[1], sig.args[1], t)
        y = context.cast(builder, args[2], sig.args[2], t)
        return builder.select(cond, x, y)
    return t(c, a, b), codegen


@overload(el.where)
def _where(c, a, b):
    if isinstance(a, types.Number) and isinstance(b, types.Number):
        return lambda c, a, b: _select(c, a, b)
    return None


@overload(el.bits)
def _bits(x):
    if isinstance(x, types.Float):
        return lambda x: _f64_as_i64(numba.float64(x))
    return None


@overload(el.from_bits)
def _from_bits(i):
    if isinstance(i, types.Integer):
        return lambda i: _i64_as_f64(numba.int64(i))
    return None


@overload(el.to_int)
def _to_int(x):
    if isinstance(x, types.Float):
        return lambda x: numba.int64(x)
    return None


@overload(el.to_float)
def _to_float(i):
    if isinstance(i, types.Integer):
        return lambda i: numba.float64(i)
    return None


@overload(el.exp_)
def _exp(x):
    if isinstance(x, types.Float):
        return el.exp_  # so that tanh_ calls exp_ compiled as well
    return None


exp = kernel(el.exp_, inline=True)
log = kernel(el.log_, inline=True)
tanh = kernel(el.tanh_, inline=True)


@kernel
def exp_array(x, out):
    """out <- exp(x) entry by entry (for tests: the Numba evaluation of `revlearn.elementary`)."""
    for i in range(x.size):
        out.flat[i] = exp(x.flat[i])


@kernel
def log_array(x, out):
    """out <- log(x) entry by entry."""
    for i in range(x.size):
        out.flat[i] = log(x.flat[i])


@kernel
def tanh_array(x, out):
    """out <- tanh(x) entry by entry."""
    for i in range(x.size):
        out.flat[i] = tanh(x.flat[i])
