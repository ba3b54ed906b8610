"""revlearn: exact hypergradients through reversible learning (Maclaurin, Duvenaud & Adams 2015).

    case = revlearn.make_case(spec)        # every input of one training run
    res = revlearn.hypergradient(case)     # d f(w_T) / d alpha, gamma, init_scale, l2, w_0, X

This package is pure NumPy; ``backend="numba"`` uses the optional kernels in ``revlearn.kernels``.
"""

from .case import Case, Result
from .errors import InputError, ReversalError, TrainingError
from .gradcheck import GradientCheckError, check_grad
from .sgd import hypergradient, train, valid_loss
from .spec import make_case

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

__all__ = ["Case", "GradientCheckError", "InputError", "Result", "ReversalError", "TrainingError",
           "__version__", "check_grad", "hypergradient", "make_case", "train", "valid_loss"]
