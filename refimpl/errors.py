"""The kinds of failure users see."""


class InputError(ValueError):
    """An input (spec, case, array, file, flag) is not what revlearn accepts; the message says what
    was received and what would be accepted. Raised before any work starts."""


class TrainingError(ArithmeticError):
    """Training left what exact reversal can represent (a non-finite gradient, or a value outside
    the fixed-point range); the message names the step and the group, and what to change."""


class ReversalError(ArithmeticError):
    """The reverse pass could not retrace training: a value left the fixed-point range, or the
    information buffer ran dry, which the exact reversal of a run never does. The state it
    started from was not the one training ended in (corrupted memory); no hypergradient."""
