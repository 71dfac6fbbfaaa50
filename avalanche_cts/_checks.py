"""Type checks shared by every layer's input validation (no imports of the package).

NumPy scalars count as numbers (``np.int64(3)`` is an integer, ``np.float32(0.5)`` a real);
callers convert what they keep with ``int()`` / ``float()``.
"""
import math
import numbers

__all__ = ["is_int", "is_real"]


def is_int(v) -> bool:
    """An integer (``int`` or a NumPy integer scalar) that is not a ``bool``."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite real number (``int``, ``float`` or a NumPy scalar) that is not a ``bool``."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
