"""Run folders: ``$MIGRATOR_HOME/runs/<run-id>/`` and run ids like ``20261126-101500-hello-3f9a``."""

from __future__ import annotations

import json
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrator import paths
from migrator.errors import UsageError
from migrator.fsutil import atomic_write_json

STAMP_LEN = len("20260101-000000")  # a run id starts with its start second (UTC)


def new_run_id(plan_name: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9-]+", "-", plan_name.lower()).strip("-")[:24] or "plan"
    return f"{stamp}-{slug}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def meta_file(self) -> Path:
        return self.path / "meta.json"

    @property
    def plan_yaml(self) -> Path:
        return self.path / "plan.yaml"

    @property
    def plan_json(self) -> Path:
        return self.path / "plan.json"

    @property
    def log_file(self) -> Path:
        return self.path / "migrator.log.jsonl"

    @property
    def steps_dir(self) -> Path:
        return self.path / "steps"

    def step_dir(self, seq: str, stage: str, step: str, node: str | None) -> Path:
        name = f"{seq}-{stage}-{step}" + (f"-{node}" if node else "")
        return self.steps_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)

    def check_dir(self, phase: str, name: str) -> Path:
        return self.path / "checks" / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{phase}-{name}")

    @classmethod
    def create(cls, run_id: str) -> RunDir:
        path = paths.runs_dir() / run_id
        path.mkdir(parents=True, exist_ok=False)
        return cls(path)

    def meta(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.meta_file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return {}

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.meta_file, meta)

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_file, state)


def list_runs() -> list[RunDir]:
    """Every run, oldest first. Run ids sort by their start second; runs started in the same second are
    ordered by the start time (milliseconds) in their ``meta.json``."""
    root = paths.runs_dir()
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and (p / "journal.jsonl").exists()]
    seconds = Counter(r.run_id[:STAMP_LEN] for r in runs)

    def order(run: RunDir) -> tuple[str, str, str]:
        second = run.run_id[:STAMP_LEN]
        started = str(run.meta().get("started") or "") if seconds[second] > 1 else ""
        return second, started, run.run_id

    return sorted(runs, key=order)


def find_run(ref: str) -> RunDir:
    """A run by id or unique id prefix; :class:`UsageError` when none or several match."""
    ref = ref.strip().rstrip("/")
    if not ref:
        raise UsageError("give a run id (see `migrator runs`)")
    if "/" in ref or ref.startswith("."):
        raise UsageError(f"{ref!r} is not a run id (see `migrator runs`)")
    runs = list_runs()
    exact = [r for r in runs if r.run_id == ref]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.run_id.startswith(ref)]
    if not matches:
        raise UsageError(f"no run {ref!r} in {paths.runs_dir()} (see `migrator runs`)")
    if len(matches) > 1:
        names = ", ".join(r.run_id for r in matches[:5])
        raise UsageError(f"run id prefix {ref!r} is ambiguous: {names}")
    return matches[0]
