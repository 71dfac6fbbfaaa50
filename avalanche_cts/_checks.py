"""Type checks shared by every layer's input validation (no imports of the package).

NumPy scalars count as numbers (``np.int64(3)`` is an integer, ``np.float32(0.5)`` a real);
callers convert what they keep with ``int()`` / ``float()``.
"""
import math
import numbers

__all__ = ["SEED_RANGE", "is_int", "is_real", "is_seed", "plain_number"]

SEED_RANGE = (0, 2 ** 32 - 1)
"""Seeds every random number generator of a run accepts (NumPy's are the narrowest)."""


def is_int(v) -> bool:
    """An integer (``int`` or a NumPy integer scalar) that is not a ``bool``."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite real number (``int``, ``float`` or a NumPy scalar) that is not a ``bool``."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_seed(v) -> bool:
    """An integer in :data:`SEED_RANGE`."""
    return is_int(v) and SEED_RANGE[0] <= v <= SEED_RANGE[1]


def plain_number(v):
    """``v`` as a Python number when it is a NumPy scalar or a 0-d NumPy array or torch
    tensor (``np.int64(3)`` -> ``3``, ``torch.tensor(0.5)`` -> ``0.5``, ``np.bool_(True)`` ->
    ``True``); anything else unchanged, so that the checks above name it."""
    if isinstance(v, (bool, int, float, str)) or getattr(v, "shape", None) != ():
        return v
    item = getattr(v, "item", None)
    return item() if callable(item) else v
