"""Helpers for engine tests: build plans, run them, read journals."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from migrator.engine import EngineOptions, RunResult, apply_plan, source_from_plan
from migrator.engine.engine import Observer
from migrator.plan.models import Plan
from migrator.ports import Target
from migrator.runs.events import Event
from migrator.runs.journal import read_journal
from migrator.runs.rundir import RunDir


def plan_data(stages: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "migrator/v1",
        "kind": "Plan",
        "metadata": {"name": spec.pop("name", "test")},
        "spec": {"stages": stages, **spec},
    }


def make_plan(stages: list[dict[str, Any]], **spec: Any) -> Plan:
    return Plan.model_validate(plan_data(stages, **spec))


class SleepRecorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class _OnEvent:
    def __init__(self, type_: str, step: str, action: Callable[[], object]) -> None:
        self.type, self.step, self.action, self.done = type_, step, action, False

    def on_event(self, event: Event) -> None:
        if not self.done and event.type == self.type and getattr(event, "step", None) == self.step:
            self.done = True
            self.action()

    def close(self) -> None:
        pass


def when(type_: str, step: str, action: Callable[[], object]) -> Callable[[RunDir], Sequence[Observer]]:
    """An observer factory for ``apply_plan``: ``action()`` once, as soon as the journal has the first event
    of ``type_`` for step ``step`` (e.g. interrupt a run while its long step runs: no timer to race)."""
    observer = _OnEvent(type_, step, action)
    return lambda _rundir: [observer]


def run(
    plan: Plan,
    target: Target,
    *,
    secrets: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
    observers: Callable[[RunDir], Sequence[Observer]] | None = None,
    **options: Any,
) -> RunResult:
    options.setdefault("sleep", SleepRecorder())
    options.setdefault("monitor_interval", 0.01)
    return apply_plan(
        source_from_plan(plan, params=params, secrets=secrets),
        target,
        options=EngineOptions(**options),
        observers=observers,
    )


def events(result: RunResult) -> list[dict[str, Any]]:
    return read_journal(result.run_dir / "journal.jsonl").events


def of_type(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["type"] == kind]


def marker_names(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()} if path.exists() else set()


def state_json(result: RunResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((result.run_dir / "state.json").read_text())
    return data


def touch(marker: str, **kw: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"action": "demo.touch", "args": {"marker": marker}}
    if "${" not in marker:
        step["name"] = f"touch-{marker}"
    for key in ("fail_when", "fail_undo"):
        if key in kw:
            step["args"][key] = kw.pop(key)
    step.update(kw)
    return step
