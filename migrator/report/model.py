"""The run report as data: built from a run folder (journal first), rendered by the other modules.

:func:`build_report` folds ``journal.jsonl`` (read with the journal's tolerant reader, so a torn last line
is reported, not fatal; its lines parsed into the typed events of :mod:`migrator.runs.events`) plus
``meta.json``, ``state.json`` and ``plan.json`` into one JSON-able dict, the content of ``report.json``.
Its shape (``schema: migrator.report/v1``, as a JSON Schema in ``migrator/report/report.schema.json``;
fields may be added, none removed); times are ISO 8601 UTC, ``*_s`` are seconds, ``offset_s`` are seconds
since the run started::

    schema, generated, run_id, plan, plan_description, target, identity, params, rollback_policy
    status            RunStatus value (succeeded, failed-rolled-back, needs-attention, ...)
    verdict           {level: ok|warn|bad|running, title, text, next: [command, ...]}
    exit_code, message, started, ended, duration_s
    sessions          [{mode: apply|resume|rollback, started, ended, status, pid, host}]
    preflight         {outcome, started, ended, checks: [check id]} | null
    stages            [{name, index, outcome, error, started, ended, duration_s, offset_s,
                        steps: [step], waves: [{index, nodes, outcome, error, started, ended,
                        duration_s, offset_s, node_runs: [{node, outcome, started, ended, duration_s,
                        offset_s, steps: [step]}]}], checks: [check id], monitor: {checks, rounds,
                        aborted, failed} | null}]
    step              {key, stage, step, node, action, outcome, attempts, started, ended, duration_s,
                        offset_s, error, error_type, events, undo: {outcome, duration_s, error,
                        skipped} | null}
    checks            [{id, name, type, phase, stage, nodes, ok, summary, started, ended, duration_s,
                        offset_s, artifacts, connectivity: (see migrator.report.connectivity) | null,
                        continuous: (idem) | null, policy: (idem) | null}]
    rollback          {reason, error, started, ended, duration_s, offset_s, outcome, undone,
                        planned: [key], steps: [{key, stage, step, node, outcome, duration_s, error,
                        skipped, offset_s}]} | null
    failures          [{what: step|check|undo|monitor|run|preflight, where, message, ts, offset_s,
                        also: [where]}]
    warnings          [message]
    annotations       [{ts, offset_s, kind, label, detail}]   faults on/off, resumes, rollbacks, ...
    journal           {events, torn, last_seq}
    steady_state      game days only (see :mod:`migrator.report.steadystate`): the verdict "steady state
                      held"/"not held" with its reason, the faults' timeline and evidence | null

``preflight`` also has ``requirements`` (the steps' own preflight at run start, see
:mod:`migrator.engine.requirements`): ``{outcome, checked, failures, skipped, duration}`` when journaled.

Annotations are produced by *annotators* (:func:`register_annotator`): functions from a typed journal
event (:class:`migrator.runs.events.Event`) to an annotation (or ``None``). The built-in one marks run
resumes, rollback starts, interrupts, monitor aborts and fault events (``step.event``/``check.event``
whose event names a fault, e.g. ``{"fault": "partition", "state": "on"}`` or ``{"type": "fault.on",
...}``); a fault injector may register its own for richer labels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrator.report.connectivity import analyze_check
from migrator.report.steadystate import steady_state
from migrator.runs.events import (
    CheckEnd,
    CheckEvent,
    CheckPhase,
    CheckStart,
    Event,
    MonitorEnd,
    MonitorFailed,
    MonitorStart,
    Outcome,
    PreflightEnd,
    PreflightRequirements,
    PreflightStart,
    RollbackEnd,
    RollbackStart,
    RunEnd,
    RunError,
    RunResume,
    RunStart,
    RunStatus,
    RunWarning,
    Signal,
    StageEnd,
    StageStart,
    StepEnd,
    StepEvent,
    StepStart,
    UndoEnd,
    WaveEnd,
    WaveStart,
)
from migrator.runs.journal import read_journal
from migrator.runs.rundir import RunDir

SCHEMA = "migrator.report/v1"

Annotation = dict[str, Any]
Annotator = Callable[[Event], Annotation | None]
_ANNOTATORS: list[Annotator] = []


def register_annotator(annotator: Annotator) -> Annotator:
    """Add a timeline annotator (usable as a decorator). It gets every journal event; it returns
    ``{"kind": ..., "label": ..., "detail": ...}`` (``ts`` defaults to the event's) or ``None``."""
    if annotator not in _ANNOTATORS:
        _ANNOTATORS.append(annotator)
    return annotator


def _fault_annotation(sub: Mapping[str, Any], where: Any) -> Annotation | None:
    """A fault sub-event (``migrator.actions.faults.fault_event``: ``{"event": "fault", "fault": {id, kind,
    phase: on|evidence|off|refused, ts, nodes, ...}}``, or a flat ``{"type": "fault.on", ...}``)."""
    fault = sub.get("fault")
    if isinstance(fault, Mapping):
        phase = str(fault.get("phase") or fault.get("state") or "")
        if phase == "evidence":
            return None
        kind = str(fault.get("kind") or "fault")
        nodes = fault.get("nodes") or []
        on = f" on {', '.join(str(n) for n in nodes)}" if nodes else ""
        ann: Annotation = {
            "kind": f"fault-{phase}" if phase else "fault",
            "group": str(fault.get("id") or kind),
            "label": f"{kind}{on}",
            "detail": f"{where}: fault {fault.get('id')} {phase}"
            + (f": {fault['error']}" if fault.get("error") else ""),
        }
        if isinstance(fault.get("ts"), int | float):
            ann["ts"] = (
                datetime.fromtimestamp(float(fault["ts"]), UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
            )
        return ann
    etype = str(sub.get("type") or sub.get("event") or "")
    if etype.startswith("fault"):
        name = str(sub.get("fault") or sub.get("name") or sub.get("kind") or "fault")
        phase = etype.split(".", 1)[1] if "." in etype else str(sub.get("phase") or sub.get("state") or "")
        return {
            "kind": f"fault-{phase}" if phase else "fault",
            "group": name,
            "label": name,
            "detail": str(where),
        }
    return None


@register_annotator
def builtin_annotations(event: Event) -> Annotation | None:
    match event:
        case RunResume():
            return {
                "kind": "resume",
                "label": f"migrator {event.mode}",
                "detail": f"continued by pid {event.pid} on {event.host}",
            }
        case RollbackStart():
            return {"kind": "rollback", "label": "rollback", "detail": str(event.error or event.reason)}
        case Signal():
            return {"kind": "signal", "label": str(event.action), "detail": event.message}
        case MonitorFailed():
            return {"kind": "monitor-failed", "label": f"monitor {event.check}", "detail": event.error}
        case StepEvent():
            return _fault_annotation(event.event, event.key)
        case CheckEvent():
            return _fault_annotation(event.event, event.check)
    return None


# ---------------------------------------------------------------------------------------- helpers


def parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def seconds_between(start: Any, end: Any) -> float | None:
    a, b = parse_ts(start), parse_ts(end)
    if a is None or b is None:
        return None
    return round(max(0.0, (b - a).total_seconds()), 3)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def worst(outcomes: Sequence[str | None]) -> str | None:
    """The worst outcome of several (failed > timeout > cancelled > running > succeeded)."""
    seen = [o for o in outcomes if o]
    if not seen:
        return None
    order = {"failed": 5, "timeout": 4, "cancelled": 3, "failed-continued": 2, "running": 1, "retrying": 1}
    return max(seen, key=lambda o: order.get(o, 0))


# --------------------------------------------------------------------------------------- verdict


def verdict(
    status: str, run_id: str, *, failed_undo: str | None, rollback_reason: str | None
) -> dict[str, Any]:
    """What an SRE needs first: is the cluster as intended, and if not, the exact next command."""
    try:
        st = RunStatus(status)
    except ValueError:
        st = RunStatus.RUNNING
    if st is RunStatus.SUCCEEDED:
        return {
            "level": "ok",
            "title": "Succeeded",
            "text": "Every stage ran and every check passed.",
            "next": [],
        }
    if st is RunStatus.ROLLED_BACK:
        return {
            "level": "ok",
            "title": "Rolled back",
            "text": "The run was rolled back on request; the post-rollback checks passed.",
            "next": [],
        }
    if st is RunStatus.FAILED_ROLLED_BACK:
        return {
            "level": "warn",
            "title": "Failed — rolled back",
            "text": "A step or check failed; every change was undone and the post-rollback checks passed."
            " The cluster is as before the run.",
            "next": [],
        }
    if st is RunStatus.FAILED_PREFLIGHT:
        return {
            "level": "warn",
            "title": "Preflight failed — nothing changed",
            "text": "A preflight check failed, so no step ran. Fix the cause and apply again.",
            "next": [],
        }
    if st is RunStatus.FAILED_NOT_ROLLED_BACK:
        return {
            "level": "bad",
            "title": "Needs attention — failed, not rolled back",
            "text": "The plan says rollback: never. The changes made so far are still in place.",
            "next": [f"migrator status {run_id}", f"migrator rollback {run_id}"],
        }
    if st is RunStatus.NEEDS_ATTENTION:
        why = (
            f"The undo of {failed_undo} failed"
            if failed_undo
            else "The rollback or the post-rollback verification did not complete cleanly"
            if rollback_reason
            else "The run stopped on an unexpected error"
        )
        return {
            "level": "bad",
            "title": "Needs attention",
            "text": f"{why}. The cluster may be half-migrated: look, fix the cause, then retry the rollback.",
            "next": [f"migrator status {run_id}", f"migrator rollback {run_id}"],
        }
    if st is RunStatus.INTERRUPTED:
        return {
            "level": "bad",
            "title": "Needs attention — interrupted",
            "text": "The run was interrupted before it finished. Continue it or undo it.",
            "next": [f"migrator resume {run_id}", f"migrator rollback {run_id}"],
        }
    return {
        "level": "running",
        "title": "In progress (or crashed)",
        "text": "The journal has no end. If no migrator process runs it any more, resume or roll back.",
        "next": [f"migrator status {run_id}", f"migrator resume {run_id}", f"migrator rollback {run_id}"],
    }


# ---------------------------------------------------------------------------------------- the fold


@dataclass
class _Builder:
    run_dir: Path
    events: list[Event]
    plan_types: dict[tuple[str | None, str], str]

    def __post_init__(self) -> None:
        self.t0: datetime | None = None
        self.sessions: list[dict[str, Any]] = []
        self.preflight: dict[str, Any] | None = None
        self.stages: dict[str, dict[str, Any]] = {}
        self.waves: dict[tuple[str, int], dict[str, Any]] = {}
        self.steps: dict[str, dict[str, Any]] = {}
        self.checks: list[dict[str, Any]] = []
        self.open_checks: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        self.rollback: dict[str, Any] | None = None
        self.failures: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.annotations: list[dict[str, Any]] = []
        self.run_start: RunStart | None = None
        self.run_end: RunEnd | None = None
        self.failed_undo: str | None = None
        self.stage_of_check: dict[str, str] = {}
        self.requirements: dict[str, Any] | None = None

    def offset(self, ts: Any) -> float | None:
        t = parse_ts(ts)
        if t is None or self.t0 is None:
            return None
        return round((t - self.t0).total_seconds(), 3)

    def stage(self, name: str, index: int | None = None) -> dict[str, Any]:
        st = self.stages.get(name)
        if st is None:
            st = self.stages[name] = {
                "name": name,
                "index": index,
                "outcome": None,
                "error": None,
                "started": None,
                "ended": None,
                "duration_s": None,
                "offset_s": None,
                "steps": [],
                "waves": [],
                "checks": [],
                "monitor": None,
                "_wave_nodes": [],
            }
        if index is not None and st["index"] is None:
            st["index"] = index
        return st

    def fail(self, what: str, where: str, message: Any, ts: Any) -> None:
        """Record a failure; the same message again (a step cancelled by a monitor's abort, say) is
        listed once, with the other places in ``also``."""
        text = str(message)
        for known in self.failures:
            if known["message"] == text:
                known["also"].append(f"{what} {where}")
                return
        self.failures.append(
            {"what": what, "where": where, "message": text, "ts": ts, "offset_s": self.offset(ts), "also": []}
        )

    def run(self) -> None:
        for event in self.events:
            self.apply(event)
            for annotator in _ANNOTATORS:
                try:
                    found = annotator(event)
                except Exception:  # noqa: BLE001, S112 - an annotator's bug must not break the report
                    continue
                if found:
                    ann = {"ts": event.ts, "detail": "", **found}
                    ann["offset_s"] = self.offset(ann["ts"])
                    self.annotations.append(ann)

    def apply(self, e: Event) -> None:
        """Fold one event (each group of event types in its own method)."""
        if self.t0 is None:
            self.t0 = parse_ts(e.ts)
        match e:
            case RunStart() | RunResume() | RunEnd() | RunError() | RunWarning():
                self._run_event(e)
            case PreflightStart() | PreflightEnd() | PreflightRequirements():
                self._preflight_event(e)
            case StageStart() | StageEnd() | WaveStart() | WaveEnd():
                self._stage_event(e)
            case StepStart() | StepEnd() | StepEvent():
                self._step_event(e)
            case CheckStart() | CheckEnd():
                self._check_event(e)
            case MonitorStart() | MonitorFailed() | MonitorEnd():
                self._monitor_event(e)
            case RollbackStart() | UndoEnd() | RollbackEnd():
                self._rollback_event(e)

    def _run_event(self, e: RunStart | RunResume | RunEnd | RunError | RunWarning) -> None:
        match e:
            case RunStart() | RunResume():
                if isinstance(e, RunStart):
                    self.run_start = e
                mode = "apply" if isinstance(e, RunStart) else str(e.mode)
                self.sessions.append(
                    {
                        "mode": mode,
                        "started": e.ts,
                        "ended": None,
                        "status": None,
                        "pid": e.pid,
                        "host": e.host,
                    }
                )
            case RunEnd():
                self.run_end = e
                if self.sessions:
                    self.sessions[-1]["ended"] = e.ts
                    self.sessions[-1]["status"] = str(e.status)
            case RunError():
                self.fail("run", "run", e.error, e.ts)
            case RunWarning():
                self.warnings.append(e.message)

    def _preflight_event(self, e: PreflightStart | PreflightEnd | PreflightRequirements) -> None:
        match e:
            case PreflightRequirements():
                self.requirements = {
                    "outcome": str(e.outcome),
                    "checked": e.checked,
                    "failures": [dict(f) for f in e.failures],
                    "skipped": list(e.skipped),
                    "duration": e.duration,
                }
                if e.outcome == Outcome.FAILED:
                    for f in e.failures:
                        where = f"requirements of step {f.get('stage')}/{f.get('step')}" + (
                            f"@{f['node']}" if f.get("node") else ""
                        )
                        self.fail("preflight", where, f.get("error"), e.ts)
                    self.preflight = {"outcome": "failed", "started": e.ts, "ended": e.ts, "checks": []}
            case PreflightStart():
                self.preflight = {"outcome": None, "started": e.ts, "ended": None, "checks": []}
            case PreflightEnd() if self.preflight is not None:
                self.preflight.update(outcome=str(e.outcome), ended=e.ts)

    def _stage_event(self, e: StageStart | StageEnd | WaveStart | WaveEnd) -> None:
        match e:
            case StageStart():
                st = self.stage(e.stage, e.stage_index)
                if st["started"] is None:
                    st["started"], st["offset_s"] = e.ts, self.offset(e.ts)
                if e.waves:
                    st["_wave_nodes"] = [list(w) for w in e.waves]
                st["outcome"], st["ended"] = "running", None
            case StageEnd():
                st = self.stage(e.stage)
                st.update(outcome=str(e.outcome), error=e.error, ended=e.ts)
                st["duration_s"] = seconds_between(st["started"], e.ts)
            case WaveStart():
                wave = self.waves.get((e.stage, e.wave))
                if wave is None:
                    wave = self.waves[(e.stage, e.wave)] = {
                        "index": e.wave,
                        "nodes": list(e.nodes),
                        "outcome": "running",
                        "error": None,
                        "started": e.ts,
                        "ended": None,
                        "duration_s": None,
                        "offset_s": self.offset(e.ts),
                        "node_runs": [],
                    }
                    self.stage(e.stage)["waves"].append(wave)
                wave["outcome"] = "running"
            case WaveEnd():
                found = self.waves.get((e.stage, e.wave))
                if found is not None:
                    found.update(outcome=str(e.outcome), error=e.error, ended=e.ts)
                    found["duration_s"] = seconds_between(found["started"], e.ts)

    def _step_event(self, e: StepStart | StepEnd | StepEvent) -> None:
        match e:
            case StepStart():
                step = self.steps.get(e.key)
                if step is None:
                    step = self.steps[e.key] = {
                        "key": e.key,
                        "stage": e.stage,
                        "step": e.step,
                        "node": e.node,
                        "action": e.action,
                        "outcome": "running",
                        "attempts": 0,
                        "started": e.ts,
                        "ended": None,
                        "duration_s": None,
                        "offset_s": self.offset(e.ts),
                        "error": None,
                        "error_type": None,
                        "events": 0,
                        "undo": None,
                    }
                    self._place_step(step)
                step["attempts"] = max(int(step["attempts"]), e.attempt or 1)
                step["outcome"] = "running"
            case StepEnd():
                found = self.steps.get(e.key)
                if found is not None:
                    found.update(outcome=str(e.outcome), ended=e.ts, error=e.error, error_type=e.error_type)
                    found["duration_s"] = seconds_between(found["started"], e.ts)
                    if e.outcome.bad:
                        self.fail("step", e.key, e.error or str(e.outcome), e.ts)
            case StepEvent():
                counted = self.steps.get(e.key)
                if counted is not None:
                    counted["events"] += 1

    def _check_event(self, e: CheckStart | CheckEnd) -> None:
        ck = (e.check, str(e.phase), e.stage)
        if isinstance(e, CheckStart):
            self.open_checks[ck] = self._new_check(
                f"c{e.seq}", e.check, e.phase, stage=e.stage, ts=e.ts, check_type=e.check_type, nodes=e.nodes
            )
            return
        found = self.open_checks.pop(ck, None)
        check = (
            found
            if found is not None
            else self._new_check(
                f"c{e.seq}", e.check, e.phase, stage=e.stage, ts=e.ts, check_type=e.check_type, nodes=e.nodes
            )
        )
        check.update(ok=e.ok, summary=e.summary, ended=e.ts, duration_s=e.duration)
        check["_details"] = e.details
        if not e.ok:
            self.fail("check", f"{check['phase']} check {check['name']}", e.summary, e.ts)

    def _monitor_event(self, e: MonitorStart | MonitorFailed | MonitorEnd) -> None:
        st = self.stage(e.stage)
        match e:
            case MonitorStart():
                st["monitor"] = {
                    "checks": list(e.checks),
                    "rounds": None,
                    "aborted": False,
                    "failed": [],
                    "_ts": e.ts,
                }
            case MonitorFailed():
                if st["monitor"] is None:
                    st["monitor"] = {"checks": [], "rounds": None, "aborted": True, "failed": []}
                st["monitor"]["failed"].append(e.check)
                check = self._new_check(f"c{e.seq}", e.check, CheckPhase.MONITOR, stage=e.stage, ts=e.ts)
                check.update(ok=False, summary=e.error, ended=e.ts, duration_s=None)
                check["_details"] = e.details
                self.fail("monitor", f"monitor {e.check} (stage {e.stage})", e.error, e.ts)
            case MonitorEnd():
                mon = st["monitor"] or {"checks": [], "failed": []}
                mon.update(rounds=e.rounds, aborted=e.aborted)
                st["monitor"] = mon
                # a monitor check that passed leaves no event: its conclusion is in its artifacts folder
                for name in mon["checks"]:
                    if name in mon["failed"]:
                        continue
                    check = self._new_check(
                        f"c{e.seq}-{name}", name, CheckPhase.MONITOR, stage=e.stage, ts=mon.get("_ts")
                    )
                    check.update(
                        ok=True,
                        summary=f"no failure in {e.rounds} rounds",
                        ended=e.ts,
                        duration_s=seconds_between(check["started"], e.ts),
                    )

    def _rollback_event(self, e: RollbackStart | UndoEnd | RollbackEnd) -> None:
        match e:
            case RollbackStart():
                if self.rollback is None:
                    self.rollback = self._new_rollback(str(e.reason) if e.reason else None, e.error, e.ts)
                    self.rollback.update(outcome="running", planned=list(e.steps))
                self.rollback["outcome"] = "running"
            case UndoEnd():
                self._undo_end(e)
            case RollbackEnd() if self.rollback is not None:
                self.rollback.update(outcome=str(e.outcome), ended=e.ts)
                self.rollback["undone"] = int(self.rollback["undone"] or 0) + e.undone
                self.rollback["duration_s"] = seconds_between(self.rollback["started"], e.ts)

    def _new_rollback(self, reason: str | None, error: str | None, ts: str) -> dict[str, Any]:
        return {
            "reason": reason,
            "error": error,
            "started": ts,
            "ended": None,
            "duration_s": None,
            "offset_s": self.offset(ts),
            "outcome": None,
            "undone": 0,
            "planned": [],
            "steps": [],
        }

    def _undo_end(self, e: UndoEnd) -> None:
        undo = {
            "key": e.key,
            "stage": e.stage,
            "step": e.step,
            "node": e.node,
            "outcome": str(e.outcome),
            "duration_s": e.duration,
            "error": e.error,
            "skipped": e.skipped,
            "ended": e.ts,
            "offset_s": self.offset(e.ts),
        }
        if self.rollback is None:  # undo of a stage that failed with on_failure: continue
            self.rollback = self._new_rollback("stage-compensation", None, e.ts)
        self.rollback["steps"].append(undo)
        step = self.steps.get(e.key)
        if step is not None:
            step["undo"] = {k: undo[k] for k in ("outcome", "duration_s", "error", "skipped")}
        if e.outcome != Outcome.SUCCEEDED:
            self.failed_undo = e.key
            self.fail("undo", f"undo {e.key}", e.error or str(e.outcome), e.ts)
        elif self.failed_undo == e.key:
            self.failed_undo = None

    def _new_check(
        self,
        cid: str,
        name: str,
        phase: CheckPhase,
        *,
        stage: str | None,
        ts: str | None,
        check_type: str | None = None,
        nodes: Sequence[str] = (),
    ) -> dict[str, Any]:
        check: dict[str, Any] = {
            "id": cid,
            "name": name,
            "type": check_type or self.plan_types.get((stage, name)),
            "phase": str(phase),
            "stage": stage,
            "nodes": list(nodes),
            "ok": None,
            "summary": None,
            "started": ts,
            "ended": None,
            "duration_s": None,
            "offset_s": self.offset(ts),
            "artifacts": None,
            "connectivity": None,
            "continuous": None,
            "policy": None,
        }
        folder = RunDir(self.run_dir).check_dir(str(phase), name)
        if folder.is_dir():
            check["artifacts"] = str(folder.relative_to(self.run_dir))
        self.checks.append(check)
        if phase == CheckPhase.PREFLIGHT and self.preflight is not None:
            self.preflight["checks"].append(check["id"])
        if stage:
            self.stage(stage)["checks"].append(check["id"])
        return check

    def _place_step(self, step: dict[str, Any]) -> None:
        st = self.stage(str(step["stage"]))
        node = step["node"]
        if node is None:
            st["steps"].append(step)
            return
        waves = st["waves"]
        wave = next((w for w in reversed(waves) if node in w["nodes"]), None)
        if wave is None:
            wave = next(
                (
                    self.waves.get((st["name"], i))
                    for i, nodes in enumerate(st["_wave_nodes"])
                    if node in nodes and (st["name"], i) in self.waves
                ),
                None,
            )
        if wave is None:  # a node step outside a recorded wave: keep it visible
            st["steps"].append(step)
            return
        run = next((r for r in wave["node_runs"] if r["node"] == node), None)
        if run is None:
            run = {
                "node": node,
                "outcome": None,
                "started": None,
                "ended": None,
                "duration_s": None,
                "offset_s": None,
                "steps": [],
            }
            wave["node_runs"].append(run)
        run["steps"].append(step)

    def finish(self) -> None:
        for st in self.stages.values():
            st.pop("_wave_nodes", None)
            for wave in st["waves"]:
                for run in wave["node_runs"]:
                    steps = run["steps"]
                    starts = [s["started"] for s in steps if s["started"]]
                    ends = [s["ended"] for s in steps if s["ended"]]
                    run["started"] = min(starts) if starts else None
                    run["ended"] = max(ends) if ends and all(s["ended"] for s in steps) else None
                    run["offset_s"] = self.offset(run["started"])
                    run["duration_s"] = seconds_between(run["started"], run["ended"])
                    run["outcome"] = worst([s["outcome"] for s in steps])
        for st in self.stages.values():
            if st["monitor"] is not None:
                st["monitor"].pop("_ts", None)
        for check in self.checks:
            details = check.pop("_details", None)
            folder = self.run_dir / check["artifacts"] if check["artifacts"] else None
            analysis = analyze_check(details, folder, check_type=check["type"], stage=check["stage"])
            check["connectivity"] = analysis.get("connectivity")
            check["policy"] = analysis.get("policy")
            cont = check["continuous"] = analysis.get("continuous")
            if check["type"] is None and cont is not None:
                check["type"] = "continuous-probe"
            if cont is not None and check["ok"] and str(check["summary"]).startswith("no failure"):
                check["summary"] = (
                    f"{cont['total_sent']} probes, {cont['lost']} lost ({cont['total_loss_pct']:.2f}%),"
                    f" longest outage {cont['longest_outage_ms']:.0f} ms over {cont['pairs_count']} pairs"
                )
                if cont.get("passed") is False:
                    check["ok"] = False


def _plan_check_types(plan: Any) -> dict[tuple[str | None, str], str]:
    """(stage or None, check display name) -> check type, from the recorded ``plan.json``."""
    out: dict[tuple[str | None, str], str] = {}
    spec = plan.get("spec") if isinstance(plan, Mapping) else None
    if not isinstance(spec, Mapping):
        return out

    def add(stage: str | None, checks: Any) -> None:
        for c in checks or []:
            if isinstance(c, Mapping) and c.get("type"):
                out[(stage, str(c.get("name") or c["type"]))] = str(c["type"])

    add(None, spec.get("preflight"))
    add(None, spec.get("verify"))
    for st in spec.get("stages") or []:
        if isinstance(st, Mapping):
            add(str(st.get("name")), st.get("monitor"))
            add(str(st.get("name")), st.get("verify"))
    return out


def build_report(run_dir: Path) -> dict[str, Any]:
    """The report of the run in ``run_dir`` as a JSON-able dict (see the module docstring)."""
    rundir = RunDir(run_dir)
    found = read_journal(rundir.journal)
    events = found.typed()
    meta = rundir.meta()
    state = rundir.state()
    plan = _read_json(rundir.plan_json) or {}
    b = _Builder(run_dir, events, _plan_check_types(plan))
    b.run()
    b.finish()
    start, end = b.run_start, b.run_end
    run_id = str((start.run_id if start else None) or meta.get("run_id") or run_dir.name)
    status = str((end.status if end else None) or state.get("status") or "running")
    if (
        end is None
        and b.sessions
        and b.sessions[-1]["ended"] is None
        and status not in ("running", "rolling-back")
    ):
        status = "running"
    started = (start.ts if start else None) or meta.get("started")
    ended = end.ts if end else None
    last_ts = events[-1].ts if events else None
    failed_undo = b.failed_undo or state.get("failed_undo")
    rollback_reason = b.rollback["reason"] if b.rollback else None
    exit_code = end.exit_code if end else None
    if exit_code is None:
        try:
            exit_code = int(RunStatus(status).exit_code)
        except ValueError:
            exit_code = None
    spec = plan.get("spec") if isinstance(plan, Mapping) else None
    _add_planned_stages(b, spec.get("stages") if isinstance(spec, Mapping) else None)
    stages = sorted(b.stages.values(), key=lambda s: (s["index"] is None, s["index"] or 0))
    metadata = plan.get("metadata") if isinstance(plan, Mapping) else None
    if b.requirements is not None:
        b.preflight = {**(b.preflight or {"outcome": None, "started": None, "ended": None, "checks": []})}
        b.preflight["requirements"] = b.requirements
    message = (end.message if end else None) or state.get("message") or ""
    game_day = steady_state(
        plan=plan if isinstance(plan, Mapping) else None,
        events=events,
        checks=b.checks,
        status=status,
        t0=b.t0.isoformat() if b.t0 else None,
        message=str(message),
    )
    return {
        "schema": SCHEMA,
        "generated": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "run_id": run_id,
        "plan": (start.plan if start else None) or meta.get("plan"),
        "plan_description": (metadata or {}).get("description") if isinstance(metadata, Mapping) else None,
        "target": (start.target if start else None) or meta.get("target"),
        "identity": start.identity if start else None,
        "params": (dict(start.params) if start else None) or meta.get("params") or {},
        "rollback_policy": start.rollback if start else None,
        "status": status,
        "verdict": verdict(status, run_id, failed_undo=failed_undo, rollback_reason=rollback_reason),
        "exit_code": exit_code,
        "message": message,
        "started": started,
        "ended": ended,
        "duration_s": seconds_between(started, ended or last_ts),
        "sessions": b.sessions,
        "preflight": b.preflight,
        "stages": stages,
        "checks": b.checks,
        "rollback": b.rollback,
        "failures": b.failures,
        "warnings": b.warnings,
        "annotations": b.annotations,
        "journal": {"events": len(events), "torn": found.torn, "last_seq": found.last_seq},
        "steady_state": game_day,
    }


def _add_planned_stages(b: _Builder, planned: Any) -> None:
    """The plan's stages that never started, as stages without an outcome."""
    for i, st in enumerate(planned or []):
        enabled = isinstance(st, Mapping) and st.get("name") and st.get("enabled", True) is not False
        if enabled and str(st["name"]) not in b.stages:
            b.stage(str(st["name"]), i)["outcome"] = None  # planned, never started
            b.stages[str(st["name"])].pop("_wave_nodes", None)


def all_steps(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every step of a report, in the order the run started them."""
    steps: list[dict[str, Any]] = []
    for st in report.get("stages") or []:
        steps.extend(st["steps"])
        for wave in st["waves"]:
            for run in wave["node_runs"]:
                steps.extend(run["steps"])
    return sorted(steps, key=lambda s: (s.get("offset_s") is None, s.get("offset_s") or 0.0))
