"""Run state, rebuilt by folding journal events (event sourcing).

The engine keeps a :class:`SagaState` in memory and applies every event it writes to it; ``resume`` and
``rollback`` rebuild the very same state with :meth:`SagaState.replay` over the journal. ``state.json`` is
a snapshot of it for people and for ``migrator runs``/``status``; the journal stays the source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrator.runs.events import (
    Event,
    Outcome,
    PreflightEnd,
    RollbackReason,
    RollbackStart,
    RunEnd,
    RunError,
    RunPhase,
    RunResume,
    RunStart,
    RunStatus,
    RunWarning,
    StageEnd,
    StageOutcome,
    StageStart,
    StepEnd,
    StepOutcome,
    StepPrepared,
    StepRef,
    StepStart,
    UndoEnd,
    WaveEnd,
    WaveStart,
    parse_event,
)


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
    phase: RunPhase = RunPhase.FORWARD
    message: str = ""
    started: str | None = None
    updated: str | None = None
    ended: str | None = None
    plan_name: str = ""
    target: str = ""
    last_seq: int = 0
    waves: dict[str, list[list[str]]] = field(default_factory=dict)
    node_addresses: dict[str, str] = field(default_factory=dict)
    stage_outcome: dict[str, StageOutcome] = field(default_factory=dict)
    wave_outcome: dict[tuple[str, int], Outcome] = field(default_factory=dict)
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
    def replay(cls, events: Iterable[Event | Mapping[str, Any]]) -> SagaState:
        """The state after ``events`` (typed, or journal lines' JSON objects: parsed here)."""
        state = cls()
        for event in events:
            state.apply(event if isinstance(event, Event) else parse_event(event))
        return state

    def apply(self, event: Event) -> None:
        """Fold one event: the run's progress here, the rollback stack in :meth:`_apply_saga`."""
        self.last_seq = event.seq
        self.updated = event.ts
        match event:
            case RunStart():
                self.run_id, self.started = event.run_id, event.ts
                self.plan_name, self.target = event.plan, event.target
                self.status, self.phase = RunStatus.RUNNING, RunPhase.FORWARD
            case RunResume():
                self.status = RunStatus.ROLLING_BACK if self.phase == RunPhase.ROLLBACK else RunStatus.RUNNING
                self.ended = None
                self.phase = RunPhase.FORWARD if self.phase == RunPhase.FINISHED else self.phase
            case RunEnd():
                # (rollback.end leaves the phase "rollback" until here: the post-rollback verification is
                # part of it)
                self.status, self.phase = event.status, RunPhase.FINISHED
                self.message, self.ended = event.message, event.ts
            case RunError():
                self.error = event.error
            case RunWarning():
                self.warnings.append(event.message)
            case PreflightEnd():
                self.preflight_ok = event.outcome == Outcome.SUCCEEDED
            case StageStart():
                self.current_stage, self.current_wave = event.stage, None
                if event.waves is not None and event.stage not in self.waves:
                    self.waves[event.stage] = [list(w) for w in event.waves]
                self.node_addresses.update(event.addresses or {})
                self.stage_outcome.pop(event.stage, None)
            case StageEnd():
                self.stage_outcome[event.stage] = event.outcome
                self.current_stage = None
            case WaveStart():
                self.current_wave = event.wave
            case WaveEnd():
                self.wave_outcome[(event.stage, event.wave)] = event.outcome
            case _:
                self._apply_saga(event)

    def _apply_saga(self, event: Event) -> None:
        """Fold the events that change the steps in flight and the rollback stack."""
        match event:
            case StepStart():
                rec = self._record(event)
                rec.prepared = self.prepared.get(rec.key)
                self.inflight[rec.key] = rec
                self.attempts[rec.key] = event.attempt
            case StepPrepared():
                self.prepared[event.key] = event.prepared
                if event.key in self.inflight:
                    self.inflight[event.key].prepared = event.prepared
            case StepEnd():
                self._step_end(event)
            case UndoEnd():
                self._undo_end(event)
            case RollbackStart():
                self._rollback_start(event)

    def _step_end(self, event: StepEnd) -> None:
        key = event.key
        popped = self.inflight.pop(key, None)
        rec = popped if popped is not None else self._record(event)
        if event.outcome == StepOutcome.SUCCEEDED:
            rec.completed, rec.result = True, event.result
            self._push(rec)
            self.steps_done += 1
        elif event.outcome == StepOutcome.RETRYING:
            # the attempt may have changed something: in flight until the next attempt ends
            self.inflight[key] = rec
        else:
            rec.completed = False
            self._push(rec)

    def _undo_end(self, event: UndoEnd) -> None:
        key = event.key
        if event.outcome != Outcome.SUCCEEDED:
            self.failed_undo = key
            return
        if key in self.stack:
            self.stack.remove(key)
        done = self.records.pop(key, None)
        stage = done.stage if done is not None else event.stage
        # the stage must run again on a later resume
        self.stage_outcome.pop(stage, None)
        for wave_key in [k for k in self.wave_outcome if k[0] == stage]:
            del self.wave_outcome[wave_key]
        self.prepared.pop(key, None)
        self.undone.append(key)
        if self.failed_undo == key:
            self.failed_undo = None

    def _rollback_start(self, event: RollbackStart) -> None:
        self.phase = RunPhase.ROLLBACK
        self.status = RunStatus.ROLLING_BACK
        if event.reason is not None:
            self.rollback_reason = event.reason
        if event.error:
            self.rollback_error = event.error
        # in-flight steps at the time of the rollback are undone too
        for rec in self.inflight.values():
            self._push(rec)
        self.inflight.clear()

    def _push(self, rec: StepRecord) -> None:
        self.records[rec.key] = rec
        if rec.key not in self.stack:
            self.stack.append(rec.key)

    def _record(self, event: StepRef) -> StepRecord:
        existing = self.inflight.get(event.key) or self.records.get(event.key)
        if existing is not None:
            return existing
        return StepRecord(
            key=event.key,
            stage=event.stage,
            stage_index=event.stage_index,
            step=event.step,
            step_index=event.step_index,
            node=event.node,
            action=event.action,
            start_seq=event.seq,
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
        return self.wave_outcome.get((stage, wave)) == Outcome.SUCCEEDED

    def stage_done(self, stage: str) -> bool:
        outcome = self.stage_outcome.get(stage)
        return outcome is not None and outcome.done

    def snapshot(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": str(self.status),
            "phase": str(self.phase),
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
            "stages": {stage: str(outcome) for stage, outcome in self.stage_outcome.items()},
            "steps_done": self.steps_done,
            "in_flight": sorted(self.inflight),
            "rollback_stack": [r.to_json() for r in self.rollback_stack()],
            "undone": self.undone,
            "failed_undo": self.failed_undo,
            "rollback_reason": str(self.rollback_reason) if self.rollback_reason else None,
            "warnings": self.warnings,
        }
