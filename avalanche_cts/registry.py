"""Name registries for interchangeable components (scorers, selectors), and a seeded mixin."""
from __future__ import annotations

from typing import Callable, Dict, Generic, List, Type, TypeVar, Union

import torch

__all__ = ["Registry", "Seeded"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to subclasses of ``base``; ``get`` builds one by name or passes an object through.

    :param kind: what the registry holds, for error messages (e.g. ``"token scorer"``).
    """

    def __init__(self, kind: str, base: Type[T]):
        self.kind = kind
        self.base = base
        self._classes: Dict[str, Type[T]] = {}

    def register(self, name: str) -> Callable[[Type[T]], Type[T]]:
        """Class decorator adding ``cls`` under ``name`` (also stored as ``cls.name``)."""

        def deco(cls: Type[T]) -> Type[T]:
            cls.name = name
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> List[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def get(self, obj: Union[str, T], **options) -> T:
        """An object of the class registered as ``obj`` (built with ``options``), or ``obj`` itself."""
        if isinstance(obj, self.base):
            if options:
                raise ValueError(f"options can only be given together with a {self.kind} name")
            return obj
        if not isinstance(obj, str) or obj.lower() not in self._classes:
            raise ValueError(f"unknown {self.kind} {obj!r}; choose one of {self.names()}")
        return self._classes[obj.lower()](**options)


class Seeded:
    """Holds a CPU ``torch.Generator`` seeded with ``seed``; successive draws continue its stream."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
