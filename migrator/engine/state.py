"""Run state, rebuilt by folding journal events (event sourcing).

The engine keeps a :class:`SagaState` in memory and applies every event it writes to it; ``resume`` and
``rollback`` rebuild the very same state with :meth:`SagaState.replay` over the journal. ``state.json`` is
a snapshot of it for people and for ``migrator runs``/``status``; the journal stays the source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrator.runs.events import RollbackReason, RunStatus, StepOutcome


def step_key(stage: str, step: str, node: str | None) -> str:
    """Identity of one step execution: ``stage/step`` or ``stage/step@node``."""
    return f"{stage}/{step}@{node}" if node else f"{stage}/{step}"


@dataclass
class StepRecord:
    """A step that changed (or may have changed) the target: an entry of the rollback stack."""

    key: str
    stage: str
    stage_index: int
    step: str
    step_index: int
    node: str | None
    action: str
    completed: bool = False  # do() returned; False: failed or in flight when the run stopped
    result: Any = None
    prepared: Any = None
    start_seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stage": self.stage,
            "step": self.step,
            "node": self.node,
            "action": self.action,
            "completed": self.completed,
        }


@dataclass
class SagaState:
    run_id: str = ""
    status: RunStatus = RunStatus.RUNNING
    phase: str = "forward"  # forward | rollback | finished
    message: str = ""
    started: str | None = None
    updated: str | None = None
    ended: str | None = None
    plan_name: str = ""
    target: str = ""
    last_seq: int = 0
    waves: dict[str, list[list[str]]] = field(default_factory=dict)
    node_addresses: dict[str, str] = field(default_factory=dict)
    stage_outcome: dict[str, str] = field(default_factory=dict)
    wave_outcome: dict[str, str] = field(default_factory=dict)  # "stage#index" -> outcome
    current_stage: str | None = None
    current_wave: int | None = None
    records: dict[str, StepRecord] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)  # keys, in push order
    inflight: dict[str, StepRecord] = field(default_factory=dict)
    prepared: dict[str, Any] = field(default_factory=dict)
    undone: list[str] = field(default_factory=list)
    rollback_reason: RollbackReason | None = None
    rollback_error: str = ""
    failed_undo: str | None = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    steps_done: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    preflight_ok: bool = False

    # ------------------------------------------------------------------------------------------ fold

    @classmethod
    def replay(cls, events: Iterable[Mapping[str, Any]]) -> SagaState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("type", ""))
        self.last_seq = int(event.get("seq", self.last_seq))
        self.updated = str(event.get("ts", self.updated))
        if kind == "run.start":
            self.run_id = str(event.get("run_id", ""))
            self.started = str(event.get("ts"))
            self.plan_name = str(event.get("plan", ""))
            self.target = str(event.get("target", ""))
            self.status, self.phase = RunStatus.RUNNING, "forward"
        elif kind == "run.resume":
            self.status = RunStatus.ROLLING_BACK if self.phase == "rollback" else RunStatus.RUNNING
            self.ended = None
            if self.phase == "finished":
                self.phase = "forward"
        elif kind == "stage.start":
            stage = str(event["stage"])
            self.current_stage, self.current_wave = stage, None
            if "waves" in event and stage not in self.waves:
                self.waves[stage] = [list(w) for w in event["waves"]]
            self.node_addresses.update(event.get("addresses") or {})
            self.stage_outcome.pop(stage, None)
        elif kind == "stage.end":
            self.stage_outcome[str(event["stage"])] = str(event.get("outcome"))
            self.current_stage = None
        elif kind == "wave.start":
            self.current_wave = int(event["wave"])
        elif kind == "wave.end":
            self.wave_outcome[f"{event['stage']}#{event['wave']}"] = str(event.get("outcome"))
        elif kind == "step.start":
            rec = self._record(event)
            if "prepared" in event:
                self.prepared[rec.key] = event["prepared"]
            rec.prepared = self.prepared.get(rec.key)
            self.inflight[rec.key] = rec
            self.attempts[rec.key] = int(event.get("attempt", 1))
        elif kind == "step.prepared":
            key = str(event["key"])
            self.prepared[key] = event.get("prepared")
            if key in self.inflight:
                self.inflight[key].prepared = event.get("prepared")
        elif kind == "preflight.end":
            self.preflight_ok = event.get("outcome") == "succeeded"
        elif kind == "step.end":
            key = str(event["key"])
            popped = self.inflight.pop(key, None)
            rec = popped if popped is not None else self._record(event)
            outcome = str(event.get("outcome"))
            if outcome == StepOutcome.SUCCEEDED:
                rec.completed, rec.result = True, event.get("result")
                self.records[key] = rec
                if key not in self.stack:
                    self.stack.append(key)
                self.steps_done += 1
            elif outcome == StepOutcome.RETRYING:
                # the attempt may have changed something: in flight until the next attempt ends
                self.inflight[key] = rec
            else:
                rec.completed = False
                self.records[key] = rec
                if key not in self.stack:
                    self.stack.append(key)
        elif kind == "undo.end":
            key = str(event["key"])
            if event.get("outcome") == "succeeded":
                if key in self.stack:
                    self.stack.remove(key)
                done = self.records.pop(key, None)
                stage = done.stage if done is not None else str(event.get("stage", ""))
                # the stage must run again on a later resume
                self.stage_outcome.pop(stage, None)
                for wave_key in [k for k in self.wave_outcome if k.startswith(f"{stage}#")]:
                    del self.wave_outcome[wave_key]
                self.prepared.pop(key, None)
                self.undone.append(key)
                if self.failed_undo == key:
                    self.failed_undo = None
            else:
                self.failed_undo = key
        elif kind == "rollback.start":
            self.phase = "rollback"
            self.status = RunStatus.ROLLING_BACK
            if event.get("reason"):
                self.rollback_reason = RollbackReason(str(event["reason"]))
            if event.get("error"):
                self.rollback_error = str(event["error"])
            # in-flight steps at the time of the rollback are undone too
            for key, rec in list(self.inflight.items()):
                self.records[key] = rec
                if key not in self.stack:
                    self.stack.append(key)
            self.inflight.clear()
        elif kind == "rollback.end":
            pass  # the phase stays "rollback" until run.end: the post-rollback verification is part of it
        elif kind == "run.end":
            self.status = RunStatus(str(event["status"]))
            self.phase = "finished"
            self.message = str(event.get("message", ""))
            self.ended = str(event.get("ts"))
        elif kind == "run.error":
            self.error = str(event.get("error", ""))
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))

    def _record(self, event: Mapping[str, Any]) -> StepRecord:
        key = str(event["key"])
        existing = self.inflight.get(key) or self.records.get(key)
        if existing is not None:
            return existing
        return StepRecord(
            key=key,
            stage=str(event["stage"]),
            stage_index=int(event.get("stage_index", 0)),
            step=str(event["step"]),
            step_index=int(event.get("step_index", 0)),
            node=event.get("node"),
            action=str(event.get("action", "")),
            start_seq=int(event.get("seq", 0)),
        )

    # ----------------------------------------------------------------------------------------- views

    def completed(self, key: str) -> bool:
        rec = self.records.get(key)
        return rec is not None and rec.completed

    def rollback_stack(self) -> list[StepRecord]:
        """Records to undo, in undo order (newest first); in-flight steps come first."""
        pending = [self.records[k] for k in self.stack if k in self.records]
        inflight = sorted(self.inflight.values(), key=lambda r: r.start_seq)
        return list(reversed(pending + [r for r in inflight if r.key not in self.stack]))

    def wave_done(self, stage: str, wave: int) -> bool:
        return self.wave_outcome.get(f"{stage}#{wave}") == "succeeded"

    def stage_done(self, stage: str) -> bool:
        return self.stage_outcome.get(stage) in ("succeeded", "failed-continued")

    def snapshot(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": str(self.status),
            "phase": self.phase,
            "message": self.message,
            "error": self.error,
            "plan": self.plan_name,
            "target": self.target,
            "started": self.started,
            "updated": self.updated,
            "ended": self.ended,
            "last_seq": self.last_seq,
            "current_stage": self.current_stage,
            "current_wave": self.current_wave,
            "waves": self.waves,
            "stages": self.stage_outcome,
            "steps_done": self.steps_done,
            "in_flight": sorted(self.inflight),
            "rollback_stack": [r.to_json() for r in self.rollback_stack()],
            "undone": self.undone,
            "failed_undo": self.failed_undo,
            "rollback_reason": str(self.rollback_reason) if self.rollback_reason else None,
            "warnings": self.warnings,
        }
