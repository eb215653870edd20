"""Actions: the registry and the base class.

An action is registered under the same name as the plan's ``action`` literal::

    from migrator.actions.base import Action, register_action

    @register_action("demo.touch")
    class Touch(Action[DemoTouchArgs]):
        def do(self, ctx, args): ...
        def undo(self, ctx, args, result): ...
        def preview(self, ctx, args): return [f"create marker {args.marker}"]

``preflight`` (optional) checks, at the start of a run and in the dry run, before any stage changes
anything, that the step can run on its target (a kernel feature, a timeout long enough): it reads, never
changes, and raises a :class:`~migrator.errors.MigratorError` naming what is missing
(:mod:`migrator.engine.requirements`).

``do`` and ``undo`` must both be idempotent: the engine re-runs ``do`` after a crash and runs ``undo``
for a step whose ``do`` failed or was interrupted half-way. ``prepare`` (optional) snapshots the state
before the first attempt; the engine records it in the journal and hands it back as ``ctx.prepared``.
Raise :class:`~migrator.errors.TemporaryError` to be retried, anything else to fail the step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from migrator.actions.context import PreviewLine, StepContext
from migrator.registry import Registry

ArgsT = TypeVar("ArgsT", bound=BaseModel)


class Action(ABC, Generic[ArgsT]):
    name: ClassVar[str] = ""
    needs_node: ClassVar[bool] = False
    """True: the action only makes sense in a ``for_each: nodes`` stage (``ctx.node`` is set)."""

    def preflight(self, ctx: StepContext, args: ArgsT) -> None:
        """Check the step's requirements on its target before the run changes anything (``ctx.dry_run`` is
        set: read only). Raise a MigratorError naming the node and what is missing. Default: the hooks
        registered with :func:`register_preflight` for this action's family, if any."""
        for family, hook in _PREFLIGHT_HOOKS:
            if isinstance(self, family):
                hook(self, ctx, args)

    @property
    def has_preflight(self) -> bool:
        """Whether :meth:`preflight` checks anything (the engine skips the others without rendering them)."""
        return type(self).preflight is not Action.preflight or any(
            isinstance(self, family) for family, _hook in _PREFLIGHT_HOOKS
        )

    def prepare(self, ctx: StepContext, args: ArgsT) -> Any:
        """Snapshot of what ``undo`` needs to restore, taken once before the first attempt."""
        return None

    @abstractmethod
    def do(self, ctx: StepContext, args: ArgsT) -> Any:
        """Make the change; return a JSON-able result (recorded in the journal) or ``None``."""

    @abstractmethod
    def undo(self, ctx: StepContext, args: ArgsT, result: Any) -> None:
        """Compensate ``do``. ``result`` is ``do``'s result, or ``None`` when ``do`` did not finish."""

    @abstractmethod
    def preview(self, ctx: StepContext, args: ArgsT) -> list[PreviewLine]:
        """What ``do`` would do, with its exact arguments or commands; changes nothing."""

    def undo_preview(self, ctx: StepContext, args: ArgsT) -> list[PreviewLine]:
        return []


PreflightHook = Callable[[Any, StepContext, Any], None]
"""``hook(action, ctx, args)``: a preflight for a family of actions, kept out of their module."""
_PREFLIGHT_HOOKS: list[tuple[type[Any], PreflightHook]] = []

H = TypeVar("H", bound=PreflightHook)


def register_preflight(family: type[Any]) -> Callable[[H], H]:
    """Decorator: run the function as the preflight of every action that is an instance of ``family``."""

    def decorator(hook: H) -> H:
        if (family, hook) not in _PREFLIGHT_HOOKS:
            _PREFLIGHT_HOOKS.append((family, hook))
        return hook

    return decorator


ACTIONS: Registry[Action[Any]] = Registry(
    "action",
    "action",
    (
        "migrator.actions.demo",
        "migrator.actions.node",
        "migrator.actions.ansible",
        "migrator.actions.faults",
        "migrator.actions.cni",
        "migrator.actions.cni_dual",
        "migrator.actions.fault_preflight",
    ),
)
_ACTIONS = ACTIONS.items
_UNAVAILABLE = ACTIONS.unavailable

A = TypeVar("A", bound=type[Action[Any]])


def register_action(name: str) -> Callable[[A], A]:
    """Class decorator: register an instance of the class under ``name`` (replaces an unavailable one)."""

    def decorator(cls: A) -> A:
        cls.name = name
        ACTIONS.register(name, cls())
        return cls

    return decorator


def mark_unavailable(name: str, reason: str) -> None:
    """Declare an action the plan language knows but this build does not implement."""
    ACTIONS.mark_unavailable(name, reason)


def unavailable_actions() -> dict[str, str]:
    return ACTIONS.unavailable_items()


def registered_actions() -> dict[str, Action[Any]]:
    return ACTIONS.registered()


def load_builtins() -> None:
    """Register the built-in actions. Idempotent."""
    ACTIONS.load()


def get_action(name: str) -> Action[Any]:
    """The action registered under ``name``; PlanError when unknown or not available."""
    return ACTIONS.get(name)
