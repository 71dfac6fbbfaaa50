"""Package attributes imported on first use (PEP 562), so importing a package stays cheap."""
import importlib
import sys
from typing import Callable, Dict, List, Tuple

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, exports: Dict[str, str]) -> Tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` whose name ``n`` lives in the submodule
    ``exports[n]``; a loaded name is cached in the package."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
