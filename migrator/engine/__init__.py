"""The engine: runs plans with verification between stages and a saga rollback.

Public API (used by the CLI):

- :func:`~migrator.engine.api.apply_plan`, :func:`~migrator.engine.api.resume_run`,
  :func:`~migrator.engine.api.rollback_run`, :func:`~migrator.engine.dryrun.dry_run`;
- :func:`~migrator.engine.planio.load_plan_file` -> :class:`~migrator.engine.planio.PlanSource`,
  :func:`~migrator.engine.planio.validate_for_engine`;
- :func:`~migrator.targets.open.open_target` (``lab``, ``kube``, ``fake``);
- :class:`~migrator.engine.engine.RunControl` (cancel events), :class:`~migrator.engine.engine.EngineOptions`,
  :class:`~migrator.engine.engine.RunResult`, :class:`~migrator.runs.events.RunStatus`;
- the engine's own observer in :mod:`migrator.engine.observers`; the journal in :mod:`migrator.runs.journal`,
  its typed events in :mod:`migrator.runs.events`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrator.engine.api import apply_plan, resume_run, rollback_run
    from migrator.engine.dryrun import dry_run
    from migrator.engine.engine import Engine, EngineOptions, Observer, RunControl, RunResult
    from migrator.engine.planio import PlanSource, load_plan_file, source_from_plan, validate_for_engine
    from migrator.engine.state import SagaState
    from migrator.runs.events import RunStatus
    from migrator.targets.open import open_target

_WHERE = {
    **dict.fromkeys(("apply_plan", "resume_run", "rollback_run"), "migrator.engine.api"),
    "dry_run": "migrator.engine.dryrun",
    **dict.fromkeys(
        ("Engine", "EngineOptions", "Observer", "RunControl", "RunResult"), "migrator.engine.engine"
    ),
    **dict.fromkeys(
        ("PlanSource", "load_plan_file", "source_from_plan", "validate_for_engine"), "migrator.engine.planio"
    ),
    "SagaState": "migrator.engine.state",
    "RunStatus": "migrator.runs.events",
    "open_target": "migrator.targets.open",
}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: ``migrator.engine.planio`` (what ``validate`` needs) does
    not pull in the whole engine, the reports and the targets."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Engine",
    "EngineOptions",
    "Observer",
    "PlanSource",
    "RunControl",
    "RunResult",
    "RunStatus",
    "SagaState",
    "apply_plan",
    "dry_run",
    "load_plan_file",
    "open_target",
    "resume_run",
    "rollback_run",
    "source_from_plan",
    "validate_for_engine",
]
