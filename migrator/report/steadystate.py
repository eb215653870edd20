"""The game-day part of a report: the steady-state verdict, the faults' on/off timeline and their evidence.

A run is a *game day* when its plan has a ``fault.*`` step or the label ``kind: gameday``. Its steady-state
hypothesis is made of the plan's checks (``docs/faults.md``): *before* = the gate (``spec.preflight``),
*during* = the stages' ``monitor`` checks (abort conditions: ``min_availability`` for ``abort_after``,
``max_loss``, ``max_outage``), *after* = the stages' and the plan's ``verify`` checks (recovery, each within
its ``timeout``). :func:`steady_state` folds the report's checks and the journal's fault events into::

    steady_state  {held: true|false|null, verdict: "steady state held"|"steady state not held"|
                   "steady state not judged", reason, breach: {phase: before|during|after, check, stage,
                   ts, offset_s, kind, subject, value, threshold, unit, window_s, message} | null,
                   before: {ok, checks: [{name, ok, summary}]}, during: [{name, stage, ok, summary,
                   threshold, availability: {before_fault, during_fault, after_fault} (percent, or null
                   without probes), probes: {before_fault, during_fault, after_fault}}],
                   after: {ok, checks: [...]}, faults: [fault], timeline: [{ts, offset_s,
                   what: fault-on|fault-in-effect|fault-off|fault-refused|breach, label}]}
    fault         {id, kind, step, nodes, mechanism, duration_s, ttl_s, on, on_offset_s, in_effect,
                   in_effect_offset_s (when the read-back showed it installed), off, off_offset_s,
                   refused, commands: {node: [cmd]}, evidence: {node: {cmd: [line]}} (read back after the
                   install), before: {...} (before it, when recorded), after_revert: {...}, drift: {node:
                   [leftover]}, clean: true|false|null}

``held`` is ``null`` (not judged) when no fault went on (a refused fault, a failed requirement) or the run
stopped on something else before the hypothesis could be judged (an interrupt, a failed step). A breach's
``value``/``threshold`` come from the continuous probe's structured ``breach_details`` (recorded since this
section exists) or, for older runs, from its breach sentences.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from migrator.runs.events import Event, Outcome, PreflightRequirements, StepEvent

HELD = "steady state held"
NOT_HELD = "steady state not held"
NOT_JUDGED = "steady state not judged"

_AVAIL = re.compile(
    r"availability (?P<value>[\d.]+)% < (?P<threshold>[\d.]+)% for (?P<window>\d+)s"
    r"(?: \(seconds (?P<from>\d+)-(?P<to>\d+) of the stage\))?"
)
_LOSS = re.compile(r"^(?P<subject>.*): loss (?P<value>[\d.]+)% > (?P<threshold>[\d.]+)%")
_OUTAGE = re.compile(r"^(?P<subject>.*): outage (?P<value>[\d.]+) ms > (?P<threshold>[\d.]+) ms")
_AFTER = ("stage-verify", "verify")


def is_game_day(plan: Mapping[str, Any] | None, events: Sequence[Event]) -> bool:
    spec = plan.get("spec") if isinstance(plan, Mapping) else None
    meta = plan.get("metadata") if isinstance(plan, Mapping) else None
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if isinstance(labels, Mapping) and labels.get("kind") == "gameday":
        return True
    for st in (spec.get("stages") if isinstance(spec, Mapping) else None) or []:
        for step in (st.get("steps") if isinstance(st, Mapping) else None) or []:
            if isinstance(step, Mapping) and str(step.get("action", "")).startswith("fault."):
                return True
    return any(_fault_of(e) is not None for e in events)


def _fault_of(event: Event) -> Mapping[str, Any] | None:
    if not isinstance(event, StepEvent):
        return None
    fault = event.event.get("fault")
    return fault if isinstance(fault, Mapping) and fault.get("id") else None


def _iso(epoch: Any) -> str | None:
    if not isinstance(epoch, int | float):
        return None
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(ts: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def fold_faults(events: Sequence[Event], t0: float | None) -> list[dict[str, Any]]:
    """Every fault of the journal, in the order they went on (or were refused)."""
    faults: dict[str, dict[str, Any]] = {}

    def offset(epoch: float | None) -> float | None:
        return None if epoch is None or t0 is None else round(epoch - t0, 3)

    for e in events:
        f = _fault_of(e)
        if f is None or not isinstance(e, StepEvent):
            continue
        fid = str(f["id"])
        item = faults.get(fid)
        if item is None:
            item = faults[fid] = {
                "id": fid,
                "kind": f.get("kind"),
                "step": e.key,
                "nodes": list(f.get("nodes") or []),
                "mechanism": None,
                "duration_s": None,
                "ttl_s": None,
                "on": None,
                "on_offset_s": None,
                "in_effect": None,
                "in_effect_offset_s": None,
                "off": None,
                "off_offset_s": None,
                "refused": None,
                "commands": {},
                "evidence": {},
                "before": {},
                "after_revert": {},
                "drift": {},
                "clean": None,
            }
        phase = str(f.get("phase") or "")
        ts = f.get("ts") if isinstance(f.get("ts"), int | float) else _epoch(e.ts)
        if phase == "on":
            item.update(
                mechanism=f.get("mechanism"),
                duration_s=f.get("duration"),
                ttl_s=f.get("ttl"),
                commands=dict(f.get("commands") or {}),
            )
            if item["on"] is None:
                item["on"], item["on_offset_s"] = _iso(ts), offset(ts)
        elif phase == "evidence":
            when = str(f.get("when") or "after-inject")
            slot = {
                "after-inject": "evidence",
                "before-inject": "before",
                "after-revert": "after_revert",
            }.get(when, "evidence")
            item[slot].update(dict(f.get("evidence") or {}))
            if slot == "evidence" and item["in_effect"] is None:  # read back in effect on the nodes
                item["in_effect"], item["in_effect_offset_s"] = _iso(ts), offset(ts)
            if isinstance(f.get("before"), Mapping):
                item["before"].update(dict(f["before"]))
        elif phase == "off":
            drift = {str(n): list(v or []) for n, v in dict(f.get("drift") or {}).items()}
            for node, left in drift.items():
                item["drift"].setdefault(node, [])
                item["drift"][node] = sorted(set(item["drift"][node]) | set(left))
            item["clean"] = not any(item["drift"].values())
            if item["off"] is None:
                item["off"], item["off_offset_s"] = _iso(ts), offset(ts)
        elif phase == "refused":
            item["refused"] = f.get("error") or "refused"
            item["preflight"] = e.preflight
    return sorted(faults.values(), key=lambda x: (x["on"] is None, x["on"] or "", x["id"]))


def _breach_of(check: Mapping[str, Any]) -> dict[str, Any]:
    """The first breach of a failed check, with value and threshold when known."""
    cont = check.get("continuous") or {}
    structured = cont.get("breach_details") if isinstance(cont, Mapping) else None
    if isinstance(structured, list) and structured and isinstance(structured[0], Mapping):
        # prefer an availability breach (the hypothesis) over a pair's loss
        pick = next((b for b in structured if b.get("kind") == "availability"), structured[0])
        return {
            k: pick.get(k) for k in ("kind", "subject", "value", "threshold", "unit", "window_s", "message")
        }
    sentences = [str(b) for b in (cont.get("breaches") if isinstance(cont, Mapping) else None) or []]
    sentences += [line.strip() for line in str(check.get("summary") or "").splitlines()[1:]]
    for text in sorted(sentences, key=lambda t: not t.startswith("availability")):
        m = _AVAIL.search(text)
        if m:
            return {
                "kind": "availability",
                "subject": "all probes",
                "value": float(m["value"]),
                "threshold": float(m["threshold"]),
                "unit": "%",
                "window_s": int(m["window"]),
                "message": text,
            }
        m = _LOSS.match(text) or _OUTAGE.match(text)
        if m:
            unit = "%" if "loss" in text else "ms"
            return {
                "kind": "loss" if unit == "%" else "outage",
                "subject": m["subject"],
                "value": float(m["value"]),
                "threshold": float(m["threshold"]),
                "unit": unit,
                "window_s": None,
                "message": text,
            }
    return {
        "kind": "check",
        "subject": check.get("name"),
        "value": None,
        "threshold": None,
        "unit": None,
        "window_s": None,
        "message": str(check.get("summary") or "failed").splitlines()[0],
    }


def _availability(
    check: Mapping[str, Any], faults: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, float | None], dict[str, int]]:
    """Availability (percent) of a monitor's probes before, during and after the faults' window."""
    cont = check.get("continuous") or {}
    started = cont.get("started_at") if isinstance(cont, Mapping) else None
    timeline = (cont.get("timeline") or {}) if isinstance(cont, Mapping) else {}
    buckets = timeline.get("total") if isinstance(timeline, Mapping) else None
    ons = [_epoch(f["on"]) for f in faults if f.get("on")]
    offs = [_epoch(f["off"]) for f in faults if f.get("off")]
    sums = {"before_fault": [0, 0], "during_fault": [0, 0], "after_fault": [0, 0]}
    if isinstance(started, int | float) and isinstance(buckets, list) and ons:
        first_on = min(x for x in ons if x is not None)
        last_off = max((x for x in offs if x is not None), default=None)
        for b in buckets:
            if not isinstance(b, list | tuple) or len(b) < 3:
                continue
            start = float(started) + float(b[0])
            if start + 1.0 <= first_on:
                slot = "before_fault"
            elif last_off is None or start < last_off:
                slot = "during_fault"
            else:
                slot = "after_fault"
            sums[slot][0] += int(b[1])
            sums[slot][1] += int(b[2])
    pct = {k: (round(100.0 * (s - lost) / s, 3) if s else None) for k, (s, lost) in sums.items()}
    return pct, {k: s for k, (s, _lost) in sums.items()}


def _row(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": c.get("name"), "stage": c.get("stage"), "ok": c.get("ok"), "summary": c.get("summary")}


def steady_state(
    *,
    plan: Mapping[str, Any] | None,
    events: Sequence[Event],
    checks: Sequence[Mapping[str, Any]],
    status: str,
    t0: Any,
    message: str = "",
) -> dict[str, Any] | None:
    """The game-day section of the report (see the module docstring), ``None`` for other runs."""
    if not is_game_day(plan, events):
        return None
    start = _epoch(t0) if t0 else None
    faults = fold_faults(events, start)
    thresholds = _monitor_thresholds(plan)
    before = [c for c in checks if c.get("phase") == "preflight"]
    during_checks = [c for c in checks if c.get("phase") == "monitor"]
    after = [c for c in checks if c.get("phase") in _AFTER]
    during = []
    for c in during_checks:
        avail, probes = _availability(c, faults)
        during.append(
            {**_row(c), "threshold": thresholds.get((c.get("stage"), c.get("name"))), "availability": avail}
            | {"probes": probes}
        )
    breach = _first_breach((("before", before), ("during", during_checks), ("after", after)))
    requirements = next((e for e in events if isinstance(e, PreflightRequirements)), None)
    held, reason = _judge(
        breach=breach,
        status=status,
        message=message,
        faults=faults,
        requirements_failed=requirements is not None and requirements.outcome == Outcome.FAILED,
        all_ok=all(c.get("ok") for c in during_checks + after),
        during=during,
    )
    timeline = [item for f in faults for item in _fault_timeline(f)]
    if breach is not None:
        timeline.append(
            {
                "ts": breach["ts"],
                "offset_s": breach["offset_s"],
                "what": "breach",
                "label": f"{breach['check']}: {breach['message']}",
            }
        )
    timeline.sort(key=lambda x: (x["offset_s"] is None, x["offset_s"] or 0.0))
    return {
        "held": held,
        "verdict": HELD if held else NOT_HELD if held is False else NOT_JUDGED,
        "reason": reason,
        "breach": breach,
        "before": {"ok": all(c.get("ok") for c in before), "checks": [_row(c) for c in before]},
        "during": during,
        "after": {"ok": all(c.get("ok") for c in after), "checks": [_row(c) for c in after]},
        "faults": faults,
        "timeline": timeline,
    }


def _first_breach(groups: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> dict[str, Any] | None:
    """The first failed check of the hypothesis (before, during, then after the faults)."""
    for phase, group in groups:
        bad = next((c for c in group if c.get("ok") is False), None)
        if bad is not None:
            return {
                "phase": phase,
                "check": bad.get("name"),
                "stage": bad.get("stage"),
                "ts": bad.get("ended") or bad.get("started"),
                "offset_s": bad.get("offset_s"),
                **_breach_of(bad),
            }
    return None


def _judge(
    *,
    breach: Mapping[str, Any] | None,
    status: str,
    message: str,
    faults: Sequence[Mapping[str, Any]],
    requirements_failed: bool,
    all_ok: bool,
    during: Sequence[Mapping[str, Any]],
) -> tuple[bool | None, str]:
    """Held (True), not held (False) or not judged (None), and why."""
    went_on = [f for f in faults if f["on"]]
    refused = [f for f in faults if f["refused"]]
    if breach is not None:
        return False, _reason(breach)
    if status in ("running", "rolling-back", "interrupted"):
        return None, f"the run did not finish ({status})"
    if not went_on:
        why = (
            f"fault {refused[0]['id']} was refused: {refused[0]['refused']}"
            if refused
            else "the run's requirements failed"
            if requirements_failed
            else "no fault went on"
        )
        return None, why if refused or not message else f"{why}: {message}"
    if status not in ("succeeded", "rolled-back") and not all_ok:
        return None, message or status
    if status not in ("succeeded", "rolled-back"):
        return None, f"the run failed outside the hypothesis's checks: {message or status}"
    shown = ", ".join(
        f"{d['name']} {d['availability']['during_fault']:.2f}% during the fault"
        for d in during
        if d["availability"].get("during_fault") is not None
    )
    return True, "every check before, during and after the faults passed" + (f" ({shown})" if shown else "")


def _fault_timeline(f: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A fault's moments: refused, on, read back in effect, off."""
    timeline: list[dict[str, Any]] = []
    if f["refused"]:
        timeline.append({"ts": None, "offset_s": None, "what": "fault-refused", "label": str(f["refused"])})
    if f["on"]:
        timeline.append({"ts": f["on"], "offset_s": f["on_offset_s"], "what": "fault-on", "label": _label(f)})
    if f["in_effect"]:
        timeline.append(
            {
                "ts": f["in_effect"],
                "offset_s": f["in_effect_offset_s"],
                "what": "fault-in-effect",
                "label": f"{_label(f)}: read back on the node(s)",
            }
        )
    if f["off"]:
        clean = "" if f["clean"] is not False else " (drift!)"
        timeline.append(
            {"ts": f["off"], "offset_s": f["off_offset_s"], "what": "fault-off", "label": _label(f) + clean}
        )
    return timeline


def _label(f: Mapping[str, Any]) -> str:
    nodes = ", ".join(str(n) for n in f.get("nodes") or [])
    mech = f.get("mechanism")
    via = f" via {'/'.join(mech) if isinstance(mech, list) else mech}" if mech else ""
    return f"{f.get('kind')} {f.get('id')} on {nodes}{via}"


def _reason(b: Mapping[str, Any]) -> str:
    where = f" in stage {b['stage']}" if b.get("stage") else ""
    when = f" at +{float(b['offset_s']):.1f}s" if isinstance(b.get("offset_s"), int | float) else ""
    phase = {
        "before": "before the faults (gate)",
        "during": "during the faults",
        "after": "after the faults",
    }[str(b["phase"])]
    if b.get("value") is not None and b.get("threshold") is not None:
        unit = str(b.get("unit") or "")
        cmp = "<" if b.get("kind") == "availability" else ">"
        window = f" for {b['window_s']}s" if b.get("window_s") else ""
        subject = "" if b.get("kind") == "availability" else f" ({b.get('subject')})"
        what = f"{b.get('kind')} {b['value']:g}{unit} {cmp} {b['threshold']:g}{unit}{window}{subject}"
    else:
        what = str(b.get("message"))
    return f"{phase}: check {b.get('check')}{where}{when}: {what}"


def _monitor_thresholds(plan: Mapping[str, Any] | None) -> dict[tuple[Any, Any], dict[str, Any]]:
    """(stage, monitor name) -> its abort conditions, from the recorded plan."""
    out: dict[tuple[Any, Any], dict[str, Any]] = {}
    spec = plan.get("spec") if isinstance(plan, Mapping) else None
    for st in (spec.get("stages") if isinstance(spec, Mapping) else None) or []:
        if not isinstance(st, Mapping):
            continue
        for m in st.get("monitor") or []:
            if isinstance(m, Mapping):
                name = m.get("name") or m.get("type")
                out[(st.get("name"), name)] = {
                    k: m[k] for k in ("min_availability", "abort_after", "max_loss", "max_outage") if k in m
                }
    return out
