"""Checks: the registry and the base class.

A check is registered under the plan's ``type`` literal and returns a :class:`CheckResult` (or raises
:class:`~migrator.errors.CheckFailed`). Checks never change the target.

    @register_check("nodes.schedulable")
    class Schedulable(Checker[NodesSchedulableCheck]):
        def run(self, ctx, check): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from migrator.actions.context import CheckContext, PreviewLine
from migrator.registry import Registry


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


CHECKS: Registry[Checker[Any]] = Registry(
    "check",
    "check type",
    (
        "migrator.checks.builtin",
        "migrator.checks.reachability",
        "migrator.checks.nodes",
        "migrator.checks.probe",
        "migrator.checks.cni",
        "migrator.checks.prometheus",
    ),
)
_CHECKS = CHECKS.items
_UNAVAILABLE = CHECKS.unavailable

C = TypeVar("C", bound=type[Checker[Any]])


def register_check(name: str) -> Callable[[C], C]:
    def decorator(cls: C) -> C:
        cls.name = name
        CHECKS.register(name, cls())
        return cls

    return decorator


def mark_unavailable(name: str, reason: str) -> None:
    CHECKS.mark_unavailable(name, reason)


def unavailable_checks() -> dict[str, str]:
    return CHECKS.unavailable_items()


def registered_checks() -> dict[str, Checker[Any]]:
    return CHECKS.registered()


def load_builtins() -> None:
    """Register the built-in checks. Idempotent."""
    CHECKS.load()


def get_check(name: str) -> Checker[Any]:
    """The check registered under ``name``; PlanError when unknown or not available."""
    return CHECKS.get(name)
