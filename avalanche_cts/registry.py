"""One registry type for every kind of named component: scorers, selectors, methods,
benchmarks, model presets.

A :class:`Registry` maps names to objects (classes or functions). Built-in entries are
declared as ``"module:attribute"`` strings and imported on first use, so listing names (the
command line's help, settings checks) imports nothing heavy; users add their own with
:meth:`Registry.register` (a decorator or a call).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Generic, List, Mapping, Optional, TypeVar, Union

__all__ = ["Registry", "Seeded", "resolve"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind.

    :param kind: what the registry holds, for messages (e.g. ``"token scorer"``).
    :param entries: built-in names -> ``"module:attribute"`` (imported when first used) or
        the object itself (e.g. a preset's settings).
    :param base: ``"module:attribute"`` of the base class of what :meth:`build` returns; an
        object of that class passes through :meth:`build` unchanged.
    :param facts: built-in names -> what users of the registry need to know about an entry
        without importing it (e.g. whether a method keeps a memory); see :meth:`facts`.
    :param default_facts: the facts of an entry registered without any.
    """

    def __init__(self, kind: str, entries: Optional[Mapping[str, str]] = None,
                 base: Optional[str] = None, facts: Optional[Mapping[str, Any]] = None,
                 default_facts: Any = None):
        self.kind = kind
        self._entries: Dict[str, Union[str, Any]] = dict(entries or {})
        self._base = base
        self._facts: Dict[str, Any] = dict(facts or {})
        self._default_facts = default_facts

    def register(self, name: str, obj: Any = None, facts: Any = None) -> Any:
        """Add ``obj`` under ``name`` (``register(name)`` is a decorator), with its ``facts``
        (see :meth:`facts`); a class gets ``cls.name = name``. Returns ``obj``."""

        def add(o):
            if isinstance(o, type):
                o.name = name
            self._entries[name] = o
            self._facts[name] = self._default_facts if facts is None else facts
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a method registered for one experiment, a test's entry)."""
        self.load(name)  # the same message for an unknown name
        del self._entries[name]
        self._facts.pop(name, None)

    def facts(self, name: str) -> Any:
        """What was declared about ``name`` when it was registered (imports nothing)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._facts.get(name, self._default_facts)

    def names(self) -> List[str]:
        """Registered names, sorted (imports nothing)."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def load(self, name: str) -> T:
        """The object registered as ``name`` (imported on first use)."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        obj = self._entries[name]
        if isinstance(obj, str):
            obj = resolve(obj)
            self._entries[name] = obj
        return obj

    def build(self, obj: Union[str, T], **options) -> T:
        """An object of the class registered as ``obj`` built with ``options``, or ``obj``
        itself when it already is one (of ``base``)."""
        if not isinstance(obj, str):
            base = resolve(self._base) if self._base else None
            if base is not None and not isinstance(obj, base):
                raise ValueError(f"unknown {self.kind} {obj!r}; choose one of {self.names()} "
                                 f"or pass a {base.__name__}")
            if options:
                raise ValueError(f"options can only be given together with a {self.kind} name")
            return obj
        return self.load(obj.lower() if obj.lower() in self._entries else obj)(**options)


def resolve(spec: str) -> Any:
    """The object a ``"module:attribute"`` string names (its module imported)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class Seeded:
    """Holds a CPU ``torch.Generator`` seeded with ``seed``; successive draws continue its stream."""

    def __init__(self, seed: int = 0):
        import torch

        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
