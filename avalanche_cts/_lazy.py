"""Package attributes imported on first use (PEP 562), so importing a package stays cheap."""
import importlib
import sys
from typing import Callable, Dict, List, Sequence, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Dict[str, Sequence[str]],
                 extra: Sequence[str] = ()) -> Tuple[Callable, Callable, List[str]]:
    """``(__getattr__, __dir__, __all__)`` of ``package``, whose names ``exports[m]`` live in
    its submodule ``m`` (imported when a name is first read, then cached in the package);
    ``extra`` names are defined in the package itself."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted([*where, *extra])
