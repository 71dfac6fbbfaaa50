"""Where the library caches what it builds once (pretrained backbones, generated vocab files)."""
import os
from pathlib import Path

__all__ = ["cache_root"]


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
