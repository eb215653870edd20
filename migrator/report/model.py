"""The run report as data: built from a run folder (journal first), rendered by the other modules.

:func:`build_report` folds ``journal.jsonl`` (read with the engine's tolerant reader, so a torn last line
is reported, not fatal) plus ``meta.json``, ``state.json`` and ``plan.json`` into one JSON-able dict,
the content of ``report.json``. Its shape (``schema: migrator.report/v1``, as a JSON Schema in
``migrator/report/report.schema.json``; fields may be added, none removed); times are ISO 8601 UTC,
``*_s`` are seconds, ``offset_s`` are seconds since the run started::

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
                        continuous: (idem) | null}]
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

Annotations are produced by *annotators* (:func:`register_annotator`): functions from a journal event
to an annotation (or ``None``). The built-in one marks run resumes, rollback starts, interrupts,
monitor aborts and fault events (``step.event``/``check.event`` whose event names a fault, e.g.
``{"fault": "partition", "state": "on"}`` or ``{"type": "fault.on", ...}``); a fault injector may
register its own for richer labels.
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
from migrator.runs.events import RunStatus
from migrator.runs.journal import read_journal
from migrator.runs.rundir import RunDir

SCHEMA = "migrator.report/v1"

Annotation = dict[str, Any]
Annotator = Callable[[Mapping[str, Any]], Annotation | None]
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
def builtin_annotations(event: Mapping[str, Any]) -> Annotation | None:
    kind = str(event.get("type"))
    if kind == "run.resume":
        return {
            "kind": "resume",
            "label": f"migrator {event.get('mode')}",
            "detail": f"continued by pid {event.get('pid')} on {event.get('host')}",
        }
    if kind == "rollback.start":
        return {
            "kind": "rollback",
            "label": "rollback",
            "detail": str(event.get("error") or event.get("reason")),
        }
    if kind == "signal":
        return {"kind": "signal", "label": str(event.get("action")), "detail": str(event.get("message"))}
    if kind == "monitor.failed":
        return {
            "kind": "monitor-failed",
            "label": f"monitor {event.get('check')}",
            "detail": str(event.get("error")),
        }
    if kind in ("step.event", "check.event"):
        sub = event.get("event")
        if isinstance(sub, Mapping):
            return _fault_annotation(sub, event.get("key") or event.get("check") or "")
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


_BAD_STEP = ("failed", "timeout", "cancelled")
_RANK = {"succeeded": 0, "running": 1, "retrying": 1, "cancelled": 2, "failed-continued": 2}


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
    events: list[dict[str, Any]]
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
        self.run_start: dict[str, Any] = {}
        self.run_end: dict[str, Any] = {}
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
                    ann = {"ts": event.get("ts"), "detail": "", **found}
                    ann["offset_s"] = self.offset(ann["ts"])
                    self.annotations.append(ann)

    def apply(self, e: dict[str, Any]) -> None:
        kind = str(e.get("type"))
        ts = e.get("ts")
        if self.t0 is None:
            self.t0 = parse_ts(ts)
        if kind in ("run.start", "run.resume"):
            if kind == "run.start":
                self.run_start = e
            self.sessions.append(
                {
                    "mode": "apply" if kind == "run.start" else str(e.get("mode")),
                    "started": ts,
                    "ended": None,
                    "status": None,
                    "pid": e.get("pid"),
                    "host": e.get("host"),
                }
            )
        elif kind == "run.end":
            self.run_end = e
            if self.sessions:
                self.sessions[-1]["ended"] = ts
                self.sessions[-1]["status"] = e.get("status")
        elif kind == "run.error":
            self.fail("run", "run", e.get("error"), ts)
        elif kind == "warning":
            self.warnings.append(str(e.get("message")))
        elif kind == "preflight.requirements":
            self.requirements = {
                k: e.get(k) for k in ("outcome", "checked", "failures", "skipped", "duration")
            }
            if e.get("outcome") == "failed":
                for f in e.get("failures") or []:
                    where = f"requirements of step {f.get('stage')}/{f.get('step')}" + (
                        f"@{f['node']}" if f.get("node") else ""
                    )
                    self.fail("preflight", where, f.get("error"), ts)
                self.preflight = {"outcome": "failed", "started": ts, "ended": ts, "checks": []}
        elif kind == "preflight.start":
            self.preflight = {"outcome": None, "started": ts, "ended": None, "checks": []}
        elif kind == "preflight.end" and self.preflight is not None:
            self.preflight.update(outcome=e.get("outcome"), ended=ts)
        elif kind == "stage.start":
            st = self.stage(str(e["stage"]), e.get("stage_index"))
            if st["started"] is None:
                st["started"], st["offset_s"] = ts, self.offset(ts)
            if e.get("waves"):
                st["_wave_nodes"] = [list(w) for w in e["waves"]]
            st["outcome"], st["ended"] = "running", None
        elif kind == "stage.end":
            st = self.stage(str(e["stage"]))
            st.update(outcome=e.get("outcome"), error=e.get("error"), ended=ts)
            st["duration_s"] = seconds_between(st["started"], ts)
        elif kind == "wave.start":
            wkey = (str(e["stage"]), int(e["wave"]))
            wave = self.waves.get(wkey)
            if wave is None:
                wave = self.waves[wkey] = {
                    "index": wkey[1],
                    "nodes": list(e.get("nodes") or []),
                    "outcome": "running",
                    "error": None,
                    "started": ts,
                    "ended": None,
                    "duration_s": None,
                    "offset_s": self.offset(ts),
                    "node_runs": [],
                }
                self.stage(wkey[0])["waves"].append(wave)
            wave["outcome"] = "running"
        elif kind == "wave.end":
            wave = self.waves.get((str(e["stage"]), int(e["wave"])))
            if wave is not None:
                wave.update(outcome=e.get("outcome"), error=e.get("error"), ended=ts)
                wave["duration_s"] = seconds_between(wave["started"], ts)
        elif kind == "step.start":
            key = str(e["key"])
            step = self.steps.get(key)
            if step is None:
                step = self.steps[key] = {
                    "key": key,
                    "stage": e.get("stage"),
                    "step": e.get("step"),
                    "node": e.get("node"),
                    "action": e.get("action"),
                    "outcome": "running",
                    "attempts": 0,
                    "started": ts,
                    "ended": None,
                    "duration_s": None,
                    "offset_s": self.offset(ts),
                    "error": None,
                    "error_type": None,
                    "events": 0,
                    "undo": None,
                }
                self._place_step(step)
            step["attempts"] = max(int(step["attempts"]), int(e.get("attempt") or 1))
            step["outcome"] = "running"
        elif kind == "step.end":
            step = self.steps.get(str(e["key"]))
            if step is not None:
                step.update(
                    outcome=e.get("outcome"), ended=ts, error=e.get("error"), error_type=e.get("error_type")
                )
                step["duration_s"] = seconds_between(step["started"], ts)
                if e.get("outcome") in _BAD_STEP:
                    self.fail("step", str(e["key"]), e.get("error") or e.get("outcome"), ts)
        elif kind == "step.event":
            step = self.steps.get(str(e.get("key")))
            if step is not None:
                step["events"] += 1
        elif kind == "check.start":
            check = self._new_check(e)
            self.open_checks[(check["name"], check["phase"], check["stage"])] = check
        elif kind == "check.end":
            ck = (str(e.get("check")), str(e.get("phase")), e.get("stage"))
            found_check = self.open_checks.pop(ck, None)
            check = found_check if found_check is not None else self._new_check(e)
            check.update(
                ok=bool(e.get("ok")), summary=e.get("summary"), ended=ts, duration_s=e.get("duration")
            )
            check["_details"] = e.get("details")
            if not e.get("ok"):
                self.fail("check", f"{check['phase']} check {check['name']}", e.get("summary"), ts)
        elif kind == "monitor.start":
            st = self.stage(str(e.get("stage")))
            st["monitor"] = {
                "checks": list(e.get("checks") or []),
                "rounds": None,
                "aborted": False,
                "failed": [],
                "_ts": ts,
            }
        elif kind == "monitor.failed":
            st = self.stage(str(e.get("stage")))
            if st["monitor"] is None:
                st["monitor"] = {"checks": [], "rounds": None, "aborted": True, "failed": []}
            st["monitor"]["failed"].append(str(e.get("check")))
            check = self._new_check({**e, "phase": "monitor", "check_type": None})
            check.update(ok=False, summary=e.get("error"), ended=ts, duration_s=None)
            check["_details"] = e.get("details")
            self.fail("monitor", f"monitor {e.get('check')} (stage {e.get('stage')})", e.get("error"), ts)
        elif kind == "monitor.end":
            st = self.stage(str(e.get("stage")))
            mon = st["monitor"] or {"checks": [], "failed": []}
            mon.update(rounds=e.get("rounds"), aborted=bool(e.get("aborted")))
            st["monitor"] = mon
            # a monitor check that passed leaves no event: its conclusion is in its artifacts folder
            for name in mon["checks"]:
                if name in mon["failed"]:
                    continue
                check = self._new_check(
                    {
                        **e,
                        "seq": f"{e.get('seq')}-{name}",
                        "check": name,
                        "phase": "monitor",
                        "ts": mon.get("_ts"),
                    }
                )
                check.update(
                    ok=True,
                    summary=f"no failure in {e.get('rounds')} rounds",
                    ended=ts,
                    duration_s=seconds_between(check["started"], ts),
                )
        elif kind == "rollback.start":
            if self.rollback is None:
                self.rollback = {
                    "reason": e.get("reason"),
                    "error": e.get("error"),
                    "started": ts,
                    "ended": None,
                    "duration_s": None,
                    "offset_s": self.offset(ts),
                    "outcome": "running",
                    "undone": 0,
                    "planned": list(e.get("steps") or []),
                    "steps": [],
                }
            self.rollback["outcome"] = "running"
        elif kind == "undo.end":
            undo = {
                "key": e.get("key"),
                "stage": e.get("stage"),
                "step": e.get("step"),
                "node": e.get("node"),
                "outcome": e.get("outcome"),
                "duration_s": e.get("duration"),
                "error": e.get("error"),
                "skipped": bool(e.get("skipped")),
                "ended": ts,
                "offset_s": self.offset(ts),
            }
            if self.rollback is None:  # undo of a stage that failed with on_failure: continue
                self.rollback = {
                    "reason": "stage-compensation",
                    "error": None,
                    "started": ts,
                    "ended": None,
                    "duration_s": None,
                    "offset_s": self.offset(ts),
                    "outcome": None,
                    "undone": 0,
                    "planned": [],
                    "steps": [],
                }
            self.rollback["steps"].append(undo)
            step = self.steps.get(str(e.get("key")))
            if step is not None:
                step["undo"] = {k: undo[k] for k in ("outcome", "duration_s", "error", "skipped")}
            if e.get("outcome") != "succeeded":
                self.failed_undo = str(e.get("key"))
                self.fail("undo", f"undo {e.get('key')}", e.get("error") or e.get("outcome"), ts)
            elif self.failed_undo == e.get("key"):
                self.failed_undo = None
        elif kind == "rollback.end" and self.rollback is not None:
            self.rollback.update(outcome=e.get("outcome"), ended=ts)
            self.rollback["undone"] = int(self.rollback["undone"] or 0) + int(e.get("undone") or 0)
            self.rollback["duration_s"] = seconds_between(self.rollback["started"], ts)

    def _new_check(self, e: Mapping[str, Any]) -> dict[str, Any]:
        ts = e.get("ts")
        phase = str(e.get("phase"))
        name = str(e.get("check"))
        check: dict[str, Any] = {
            "id": f"c{e.get('seq')}",
            "name": name,
            "type": e.get("check_type") or self.plan_types.get((e.get("stage"), name)),
            "phase": phase,
            "stage": e.get("stage"),
            "nodes": list(e.get("nodes") or []),
            "ok": None,
            "summary": None,
            "started": ts,
            "ended": None,
            "duration_s": None,
            "offset_s": self.offset(ts),
            "artifacts": None,
            "connectivity": None,
            "continuous": None,
        }
        folder = RunDir(self.run_dir).check_dir(phase, name)
        if folder.is_dir():
            check["artifacts"] = str(folder.relative_to(self.run_dir))
        self.checks.append(check)
        if phase == "preflight" and self.preflight is not None:
            self.preflight["checks"].append(check["id"])
        stage = e.get("stage")
        if stage:
            self.stage(str(stage))["checks"].append(check["id"])
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
    meta = rundir.meta()
    state = rundir.state()
    plan = _read_json(rundir.plan_json) or {}
    b = _Builder(run_dir, found.events, _plan_check_types(plan))
    b.run()
    b.finish()
    run_id = str(b.run_start.get("run_id") or meta.get("run_id") or run_dir.name)
    status = str(b.run_end.get("status") or state.get("status") or "running")
    if (
        not b.run_end
        and b.sessions
        and b.sessions[-1]["ended"] is None
        and status not in ("running", "rolling-back")
    ):
        status = "running"
    started = b.run_start.get("ts") or meta.get("started")
    ended = b.run_end.get("ts") if b.run_end else None
    last_ts = found.events[-1].get("ts") if found.events else None
    failed_undo = b.failed_undo or state.get("failed_undo")
    rollback_reason = b.rollback["reason"] if b.rollback else None
    exit_code = b.run_end.get("exit_code")
    if exit_code is None:
        try:
            exit_code = int(RunStatus(status).exit_code)
        except ValueError:
            exit_code = None
    spec = plan.get("spec") if isinstance(plan, Mapping) else None
    planned = spec.get("stages") if isinstance(spec, Mapping) else None
    for i, st in enumerate(planned or []):
        enabled = isinstance(st, Mapping) and st.get("name") and st.get("enabled", True) is not False
        if enabled and str(st["name"]) not in b.stages:
            b.stage(str(st["name"]), i)["outcome"] = None  # planned, never started
            b.stages[str(st["name"])].pop("_wave_nodes", None)
    stages = sorted(b.stages.values(), key=lambda s: (s["index"] is None, s["index"] or 0))
    metadata = plan.get("metadata") if isinstance(plan, Mapping) else None
    if b.requirements is not None:
        b.preflight = {**(b.preflight or {"outcome": None, "started": None, "ended": None, "checks": []})}
        b.preflight["requirements"] = b.requirements
    message = b.run_end.get("message") or state.get("message") or ""
    game_day = steady_state(
        plan=plan if isinstance(plan, Mapping) else None,
        events=found.events,
        checks=b.checks,
        status=status,
        t0=b.t0.isoformat() if b.t0 else None,
        message=str(message),
    )
    return {
        "schema": SCHEMA,
        "generated": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "run_id": run_id,
        "plan": b.run_start.get("plan") or meta.get("plan"),
        "plan_description": (metadata or {}).get("description") if isinstance(metadata, Mapping) else None,
        "target": b.run_start.get("target") or meta.get("target"),
        "identity": b.run_start.get("identity"),
        "params": b.run_start.get("params") or meta.get("params") or {},
        "rollback_policy": b.run_start.get("rollback"),
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
        "journal": {"events": len(found.events), "torn": found.torn, "last_seq": found.last_seq},
        "steady_state": game_day,
    }


def all_steps(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every step of a report, in the order the run started them."""
    steps: list[dict[str, Any]] = []
    for st in report.get("stages") or []:
        steps.extend(st["steps"])
        for wave in st["waves"]:
            for run in wave["node_runs"]:
                steps.extend(run["steps"])
    return sorted(steps, key=lambda s: (s.get("offset_s") is None, s.get("offset_s") or 0.0))
