"""Where the library caches what it builds once (pretrained backbones, generated vocab files)."""
import os
from pathlib import Path

__all__ = ["cache_folder", "cache_root", "writable_folder"]

_REMEDY = ("set AVALANCHE_CTS_CACHE to a writable folder (now "
           "{value}; default ~/.cache/avalanche_cts)")


def cache_root() -> Path:
    """``$AVALANCHE_CTS_CACHE`` or ``~/.cache/avalanche_cts``; ``ValueError`` when the variable
    is set but empty (it would mean the working folder) or names a file."""
    value = os.environ.get("AVALANCHE_CTS_CACHE")
    if value is None:
        return Path.home() / ".cache" / "avalanche_cts"
    if not value.strip() or Path(value).expanduser().is_file():
        raise ValueError(f"AVALANCHE_CTS_CACHE={value!r} is {'empty' if not value.strip() else 'a file'}: "
                         f"set it to a folder or unset it (default ~/.cache/avalanche_cts)")
    return Path(value).expanduser()


def writable_folder(path: Path, remedy: str) -> Path:
    """``path``, created if missing; ``ValueError`` naming it and ``remedy`` when it cannot be
    created or written (a file in the way, no permission, a read-only disk)."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as e:
        raise ValueError(f"cannot write the folder {str(path)!r} "
                         f"({e.strerror or e}): {remedy}") from None
    return path


def cache_folder(*parts: str) -> Path:
    """The cache's sub-folder ``parts`` (under :func:`cache_root`), created; ``ValueError``
    naming it and ``AVALANCHE_CTS_CACHE`` when it cannot be written."""
    value = os.environ.get("AVALANCHE_CTS_CACHE")
    return writable_folder(cache_root().joinpath(*parts),
                           _REMEDY.format(value="unset" if value is None else repr(value)))
