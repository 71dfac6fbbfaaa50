"""Type checks shared by every layer's input validation (no imports but ``math``).

:class:`SettingError` is a ``ValueError`` that also names the setting, its value and what is
accepted, so an owner of settings (``RunConfig``) can restate it in its own field names.
"""
import math

__all__ = ["SettingError", "check", "is_int", "is_real"]


def is_int(v) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
