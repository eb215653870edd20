"""A name -> implementation registry, shared by step actions and check types.

Implementations register under the name the plan uses (``demo.touch``, ``reachability``). The modules
that hold them are imported on first use. A name the plan language knows but a build does not implement
can be marked unavailable: asking for it is then a clear :class:`~migrator.errors.PlanError`.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Generic, TypeVar

from migrator.errors import PlanError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, noun: str, unknown_noun: str, modules: Sequence[str]) -> None:
        self.noun = noun
        self.unknown_noun = unknown_noun
        self.modules = tuple(modules)
        self.items: dict[str, T] = {}
        self.unavailable: dict[str, str] = {}
        self._loaded = False
        self._loading = threading.RLock()  # the wave threads of a resumed run may ask first, together

    def register(self, name: str, item: T) -> None:
        """Register ``item`` under ``name``; this replaces an unavailable mark."""
        self.items[name] = item
        self.unavailable.pop(name, None)

    def mark_unavailable(self, name: str, reason: str) -> None:
        if name not in self.items:
            self.unavailable[name] = reason

    def load(self) -> None:
        """Import the modules that register the built-in implementations. Idempotent."""
        if self._loaded:
            return
        with self._loading:
            if self._loaded:
                return
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True

    def registered(self) -> dict[str, T]:
        self.load()
        return dict(self.items)

    def unavailable_items(self) -> dict[str, str]:
        self.load()
        return dict(self.unavailable)

    def get(self, name: str) -> T:
        """The implementation of ``name``; PlanError when unknown or not available."""
        self.load()
        if name in self.items:
            return self.items[name]
        if name in self.unavailable:
            raise PlanError(f"{self.noun} {name!r} is not available yet: {self.unavailable[name]}")
        raise PlanError(f"unknown {self.unknown_noun} {name!r}")
