"""Helpers for engine tests: build plans, run them, read journals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from migrator.engine import EngineOptions, RunResult, apply_plan, source_from_plan
from migrator.engine.journal import read_journal
from migrator.plan.models import Plan
from migrator.ports import Target


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


def run(
    plan: Plan,
    target: Target,
    *,
    secrets: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    options.setdefault("sleep", SleepRecorder())
    options.setdefault("monitor_interval", 0.01)
    return apply_plan(
        source_from_plan(plan, params=params, secrets=secrets), target, options=EngineOptions(**options)
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
