"""Where the library caches what it builds once (pretrained backbones, generated vocab files)."""
import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$AVALANCHE_CTS_CACHE`` or ``~/.cache/avalanche_cts``."""
    return Path(os.environ.get("AVALANCHE_CTS_CACHE", Path.home() / ".cache" / "avalanche_cts"))
