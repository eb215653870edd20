"""Checks: the registry and the base class.

A check is registered under the plan's ``type`` literal and returns a :class:`CheckResult` (or raises
:class:`~migrator.errors.CheckFailed`). Checks never change the target.

    @register_check("nodes.schedulable")
    class Schedulable(Checker[NodesSchedulableCheck]):
        def run(self, ctx, check): ...
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from migrator.actions.context import CheckContext, PreviewLine
from migrator.errors import PlanError


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    summary: str
    details: Any = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary, "details": self.details}


CheckT = TypeVar("CheckT", bound=BaseModel)


class Checker(ABC, Generic[CheckT]):
    name: ClassVar[str] = ""

    @abstractmethod
    def run(self, ctx: CheckContext, check: CheckT) -> CheckResult:
        """Evaluate the check against the target; changes nothing."""

    def monitor_start(self, ctx: CheckContext, check: CheckT) -> None:
        """Called once when a stage's monitor starts (e.g. start a continuous probe into ``ctx.store``)."""
        return None

    def monitor_stop(self, ctx: CheckContext, check: CheckT) -> CheckResult | None:
        """Called once when the stage's work is done; a result that is not ok fails the stage."""
        return None

    def preview(self, ctx: CheckContext, check: CheckT) -> list[PreviewLine]:
        fields = check.model_dump(mode="json", exclude={"type", "name", "timeout"}, exclude_defaults=True)
        return [f"check {self.name}" + (f" {fields}" if fields else "")]


_CHECKS: dict[str, Checker[Any]] = {}
_UNAVAILABLE: dict[str, str] = {}

C = TypeVar("C", bound=type[Checker[Any]])


def register_check(name: str) -> Callable[[C], C]:
    def decorator(cls: C) -> C:
        cls.name = name
        _CHECKS[name] = cls()
        _UNAVAILABLE.pop(name, None)
        return cls

    return decorator


def mark_unavailable(name: str, reason: str) -> None:
    if name not in _CHECKS:
        _UNAVAILABLE[name] = reason


def unavailable_checks() -> dict[str, str]:
    load_builtins()
    return dict(_UNAVAILABLE)


def registered_checks() -> dict[str, Checker[Any]]:
    load_builtins()
    return dict(_CHECKS)


OPTIONAL_MODULES = (
    "migrator.checks.reachability",
    "migrator.checks.nodes",
    "migrator.checks.probe",
    "migrator.checks.cni",
)

NOT_YET = {
    "reachability": "the probe engine is being built (issue 'Probes')",
    "continuous-probe": "the probe engine is being built (issue 'Probes')",
    "nodes.reachable": "the Ansible node executor is being built (issue 'Ansible actions')",
}

_loaded = False


def load_builtins() -> None:
    """Register the built-in checks and the optional ones that are installed. Idempotent."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name, reason in NOT_YET.items():
        mark_unavailable(name, reason)
    importlib.import_module("migrator.checks.builtin")
    for module in OPTIONAL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def get_check(name: str) -> Checker[Any]:
    """The check registered under ``name``; PlanError when unknown or not available yet."""
    load_builtins()
    if name in _CHECKS:
        return _CHECKS[name]
    if name in _UNAVAILABLE:
        raise PlanError(f"check {name!r} is not available yet: {_UNAVAILABLE[name]}")
    raise PlanError(f"unknown check type {name!r}")
