"""Type checks shared by every layer's input validation (no imports of the package).

NumPy scalars count as numbers (``np.int64(3)`` is an integer, ``np.float32(0.5)`` a real);
callers convert what they keep with ``int()`` / ``float()``. :class:`SettingError` is a
``ValueError`` that also names the setting, its value and what is accepted, so an owner of
settings (``RunConfig``) can restate it in its own field names.
"""
import math
import numbers

__all__ = ["SEED_RANGE", "SettingError", "check", "is_int", "is_real", "is_seed", "plain_number"]

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


class SettingError(ValueError):
    """A setting with a value it does not accept.

    :ivar field: the setting's name (``"budget_fraction"``).
    :ivar value: the value given.
    :ivar wanted: what is accepted, in words (``"a number in (0, 1]"``).
    """

    def __init__(self, field: str, value, wanted: str, message: str = ""):
        super().__init__(message or f"{field} must be {wanted}, got {value!r}")
        self.field, self.value, self.wanted = field, value, wanted


def check(ok: bool, field: str, value, wanted: str, message: str = "") -> None:
    """Raise :class:`SettingError` unless ``ok`` (default message: ``"{field} must be
    {wanted}, got {value!r}"``)."""
    if not ok:
        raise SettingError(field, value, wanted, message)
