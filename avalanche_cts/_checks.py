"""Type checks shared by every layer's input validation (no imports)."""
import math

__all__ = ["is_int", "is_real"]


def is_int(v) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
