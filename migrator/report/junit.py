"""``junit.xml`` for CI pipelines (the common Jenkins/Ant JUnit format, ``tests/report/junit.xsd``).

Choice of test cases, so that a CI job is red exactly when the run needs a look:

- suite ``run``: one case, ``verdict``; it fails unless the run succeeded or was rolled back on request
  (a run that failed and rolled back is a failure for CI even when every check passed: a step failed);
- suite ``checks``: one case per check execution (``classname`` ``migrator.<plan>.<phase>[.<stage>]``,
  ``name`` the check, with the wave's nodes when there are some), so the same check verifying three
  waves gives three cases; a monitor that aborted a stage is a failed case of phase ``monitor``;
- suite ``steps``: one case per step execution (per node for ``for_each`` stages), retries folded in
  (``system-out`` says how many attempts, and whether it was undone); a cancelled step is ``skipped``,
  a step still in flight when the journal ends is an ``error``;
- suite ``rollback`` (only when something was undone): one case per undo;
- suite ``steady-state`` (game days only, see :mod:`migrator.report.steadystate`): case ``hypothesis``
  fails when the steady state was not held (the reason: check, when, value against threshold) and is
  skipped when it was not judged; one case per fault, failing on drift after its revert.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from migrator.report.model import all_steps, parse_ts

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
MAX_TEXT = 20_000


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return _INVALID_XML.sub("?", text)[:MAX_TEXT]


def _time(seconds: Any) -> str:
    try:
        return f"{max(0.0, float(seconds)):.3f}"
    except (TypeError, ValueError):
        return "0.000"


def _stamp(ts: Any) -> str | None:
    t = parse_ts(ts)
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%S")


def _slug(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


class _Suite:
    def __init__(self, name: str, timestamp: str | None, hostname: str | None) -> None:
        self.el = ET.Element("testsuite", {"name": name})
        if timestamp:
            self.el.set("timestamp", timestamp)
        if hostname:
            self.el.set("hostname", _text(hostname))
        self.tests = self.failures = self.errors = self.skipped = 0
        self.time = 0.0

    def case(
        self,
        classname: str,
        name: str,
        seconds: Any,
        *,
        failure: str | None = None,
        error: str | None = None,
        skipped: str | None = None,
        kind: str = "failure",
        out: str | None = None,
    ) -> None:
        case = ET.SubElement(self.el, "testcase", {"name": _text(name), "classname": _text(classname)})
        case.set("time", _time(seconds))
        self.tests += 1
        self.time += float(_time(seconds))
        if skipped is not None:
            ET.SubElement(case, "skipped", {"message": _text(skipped)[:500]})
            self.skipped += 1
        elif error is not None:
            el = ET.SubElement(
                case, "error", {"message": _text(error.splitlines()[0] if error else "")[:500]}
            )
            el.set("type", kind)
            el.text = _text(error)
            self.errors += 1
        elif failure is not None:
            first = failure.splitlines()[0] if failure else ""
            el = ET.SubElement(case, "failure", {"message": _text(first)[:500], "type": kind})
            el.text = _text(failure)
            self.failures += 1
        if out:
            ET.SubElement(case, "system-out").text = _text(out)

    def close(self, suites: ET.Element) -> None:
        for key, value in (
            ("tests", self.tests),
            ("failures", self.failures),
            ("errors", self.errors),
            ("skipped", self.skipped),
        ):
            self.el.set(key, str(value))
        self.el.set("time", f"{self.time:.3f}")
        if self.tests:
            suites.append(self.el)


def render_junit(report: Mapping[str, Any]) -> str:
    r = report
    plan = _slug(r.get("plan") or "plan")
    stamp = _stamp(r.get("started"))
    host = (r.get("sessions") or [{}])[0].get("host")
    root = ET.Element("testsuites", {"name": _text(f"migrator run {r['run_id']}")})
    game_day = _steady_state_suite(r, plan, stamp, host)
    suites = [
        _run_suite(r, plan, stamp, host),
        *([game_day] if game_day is not None else []),
        _checks_suite(r, plan, stamp, host),
        _steps_suite(r, plan, stamp, host),
        _rollback_suite(r, plan, stamp, host),
    ]
    for suite in suites:
        suite.close(root)
    root.set("tests", str(sum(s.tests for s in suites)))
    root.set("failures", str(sum(s.failures for s in suites)))
    root.set("errors", str(sum(s.errors for s in suites)))
    root.set("time", _time(r.get("duration_s")))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _run_suite(r: Mapping[str, Any], plan: str, stamp: str | None, host: Any) -> _Suite:
    """Suite ``run``: the run's properties and one case, its verdict."""
    run = _Suite("run", stamp, host)
    props = ET.SubElement(run.el, "properties")
    for key in ("run_id", "plan", "target", "status", "exit_code"):
        ET.SubElement(props, "property", {"name": key, "value": _text(r.get(key))})
    v = r["verdict"]
    bad = v["level"] != "ok"
    detail = "\n".join(
        [str(r.get("message") or ""), *[f"{f['what']} {f['where']}: {f['message']}" for f in r["failures"]]]
    )
    next_cmds = "\n".join(v.get("next") or [])
    run.case(
        f"migrator.{plan}",
        "verdict",
        r.get("duration_s"),
        failure=f"{r['status']}: {v['title']}\n{detail}".strip() if bad else None,
        kind=str(r["status"]),
        out=f"{v['text']}\n{next_cmds}".strip(),
    )
    return run


def _checks_suite(r: Mapping[str, Any], plan: str, stamp: str | None, host: Any) -> _Suite:
    checks = _Suite("checks", stamp, host)
    for c in r["checks"]:
        classname = f"migrator.{plan}.{_slug(c['phase'])}" + (
            f".{_slug(c['stage'])}" if c.get("stage") else ""
        )
        name = str(c["name"]) + (f" [{', '.join(c['nodes'])}]" if c.get("nodes") else "")
        summary = str(c.get("summary") or "")
        if c["ok"] is None:
            checks.case(
                classname, name, c.get("duration_s"), error=f"did not finish: {summary}", kind="unfinished"
            )
        else:
            matrices = policy_text(c["policy"]) if c.get("policy") else ""
            out = summary if c["ok"] else None
            checks.case(
                classname,
                name,
                c.get("duration_s"),
                failure=(summary or "failed") if c["ok"] is False else None,
                kind=str(c.get("type") or "check"),
                out="\n\n".join(x for x in (out, matrices) if x) or None,
            )
    return checks


def policy_text(view: Mapping[str, Any]) -> str:
    """A policy verification's truth tables as plain text (the CI log shows them as ``system-out``)."""
    blocks = []
    for m in view.get("matrices") or []:
        pods = [str(p) for p in m["pods"]]
        width = max((len(p) for p in pods), default=1) + 1
        lines = [f"{m['port']}/{m['protocol']} (rows: source, columns: destination)"]
        lines.append(" " * width + "".join(f"{p:>{width}}" for p in pods))
        lines += [
            f"{p:<{width}}" + "".join(f"{x:>{width}}" for x in row)
            for p, row in zip(pods, m["rows"], strict=False)
        ]
        blocks.append("\n".join(lines))
    if blocks and view.get("legend"):
        blocks.append(str(view["legend"]))
    return "\n\n".join(blocks)


def _steps_suite(r: Mapping[str, Any], plan: str, stamp: str | None, host: Any) -> _Suite:
    steps = _Suite("steps", stamp, host)
    for s in all_steps(r):
        classname = f"migrator.{plan}.{_slug(s['stage'])}"
        name = str(s["step"]) + (f"@{s['node']}" if s.get("node") else "")
        undo = s.get("undo") or {}
        notes = [f"action {s['action']}, {s['attempts']} attempt(s)"]
        if undo:
            notes.append(
                "undo: skipped (no_undo)" if undo.get("skipped") else f"undone: {undo.get('outcome')}"
            )
        out = "; ".join(notes)
        outcome = s["outcome"]
        if outcome == "succeeded":
            steps.case(classname, name, s.get("duration_s"), out=out)
        elif outcome == "cancelled":
            steps.case(
                classname, name, s.get("duration_s"), skipped=f"cancelled: {s.get('error') or ''}", out=out
            )
        elif outcome in ("failed", "timeout"):
            steps.case(
                classname,
                name,
                s.get("duration_s"),
                failure=f"{outcome}: {s.get('error') or ''}",
                kind=str(s.get("error_type") or outcome),
                out=out,
            )
        else:
            steps.case(
                classname, name, s.get("duration_s"), error="did not finish", kind="unfinished", out=out
            )
    return steps


def _rollback_suite(r: Mapping[str, Any], plan: str, stamp: str | None, host: Any) -> _Suite:
    rollback = _Suite("rollback", stamp, host)
    rb = r.get("rollback") or {}
    for u in rb.get("steps") or []:
        classname = f"migrator.{plan}.rollback.{_slug(u.get('stage'))}"
        name = f"undo {u.get('step')}" + (f"@{u['node']}" if u.get("node") else "")
        if u.get("outcome") == "succeeded":
            rollback.case(
                classname, name, u.get("duration_s"), out="skipped (no_undo)" if u.get("skipped") else None
            )
        else:
            rollback.case(
                classname, name, u.get("duration_s"), failure=f"undo failed: {u.get('error')}", kind="undo"
            )
    return rollback


def _steady_state_suite(r: Mapping[str, Any], plan: str, stamp: str | None, host: Any) -> _Suite | None:
    """Suite ``steady-state`` (game days only): case ``hypothesis`` fails when the steady state was not
    held and is skipped when it was not judged; one case per fault fails on drift after its revert."""
    ss = r.get("steady_state")
    if not ss:
        return None
    suite = _Suite("steady-state", stamp, host)
    rows = []
    for d in ss.get("during") or []:
        a = d.get("availability") or {}
        rows.append(
            f"{d['name']}: availability before/during/after the faults"
            f" {a.get('before_fault')}/{a.get('during_fault')}/{a.get('after_fault')} %"
        )
    avail = "\n".join(rows)
    text = f"{ss['verdict']}: {ss.get('reason') or ''}"
    suite.case(
        f"migrator.{plan}.steady-state",
        "hypothesis",
        r.get("duration_s"),
        failure=text if ss.get("held") is False else None,
        skipped=text if ss.get("held") is None else None,
        kind="steady-state-not-held",
        out=f"{text}\n{avail}".strip(),
    )
    for f in ss.get("faults") or []:
        name = f"fault {f.get('kind')} {f['id']} on {', '.join(f.get('nodes') or [])}"
        drift = {n: v for n, v in (f.get("drift") or {}).items() if v}
        seconds = None
        if f.get("on_offset_s") is not None and f.get("off_offset_s") is not None:
            seconds = float(f["off_offset_s"]) - float(f["on_offset_s"])
        evidence = "\n".join(
            f"[{node}] {cmd}: {len(lines or [])} lines"
            for node, block in (f.get("evidence") or {}).items()
            if isinstance(block, Mapping)
            for cmd, lines in block.items()
        )
        suite.case(
            f"migrator.{plan}.faults",
            name,
            seconds,
            failure=f"state left on the nodes after the revert: {drift}" if drift else None,
            error=f"refused: {f['refused']}" if f.get("refused") else None,
            skipped="not reverted when the journal ends"
            if f.get("clean") is None and not f.get("refused")
            else None,
            kind="fault-drift" if drift else "fault-refused",
            out=f"mechanism {f.get('mechanism')}, on {f.get('on')}, off {f.get('off')}\n{evidence}".strip(),
        )
    return suite
