"""``report.md``: the run for a terminal or a pull-request comment (GitHub-flavoured Markdown)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrator.report.model import all_steps

ICON = {
    "succeeded": "✅",
    "ok": "✅",
    "failed": "❌",
    "timeout": "⏱️",
    "cancelled": "⊘",
    "running": "…",
    "failed-continued": "⚠️",
    "stopped": "⛔",
    None: "·",
}
VERDICT_ICON = {"ok": "✅", "warn": "⚠️", "bad": "🛑", "running": "⏳"}
MAX_ROWS = 60


def cell(value: Any) -> str:
    """A value safe inside a Markdown table cell: one line, pipes and HTML escaped."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;")  # no markup; ">" alone is harmless
    text = text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")
    return text.replace("`", "\\`")


def dur(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def _icon(outcome: Any) -> str:
    return ICON.get(outcome, "·") if isinstance(outcome, str | None) else "·"


def render_markdown(report: Mapping[str, Any]) -> str:
    r = report
    lines = _head(r)
    if r.get("steady_state"):
        lines += _steady_state(r["steady_state"])
    lines += _failures(r) + _stages(r) + _steps(r) + _checks(r)
    detail = [line for c in r["checks"] for line in _connectivity(c) + _policy(c) + _continuous(c)]
    if detail:
        lines += ["### Verifications and monitors", "", *detail, ""]
    lines += _rollback(r)
    if r["warnings"]:
        lines += ["### Warnings", "", *[f"- {cell(w)}" for w in r["warnings"][:MAX_ROWS]], ""]
    if r["journal"].get("torn"):
        lines += [f"> journal: {cell(r['journal']['torn'])}", ""]
    lines.append(f"<sub>migrator report {cell(r['schema'])} · generated {cell(r['generated'])}</sub>")
    return "\n".join(lines) + "\n"


def _head(r: Mapping[str, Any]) -> list[str]:
    """The verdict, the next commands, the run's table and its message."""
    v = r["verdict"]
    lines: list[str] = [
        f"## {VERDICT_ICON.get(v['level'], '')} {cell(v['title'])}: run `{cell(r['run_id'])}`",
        "",
        f"{cell(v['text'])}",
        "",
    ]
    if v.get("next"):
        lines += ["**Next:**", "", "```sh", *v["next"], "```", ""]
    lines += [
        "| plan | target | status | exit | started | duration |",
        "|---|---|---|---|---|---|",
        f"| {cell(r['plan'])} | {cell(r['target'])} | {cell(r['status'])} | {cell(r['exit_code'])} |"
        f" {cell(r['started'])} | {dur(r['duration_s'])} |",
        "",
    ]
    if r.get("message"):
        first = str(r["message"]).strip().splitlines()[0]
        lines += [f"> {cell(first)}", ""]
    return lines


def _failures(r: Mapping[str, Any]) -> list[str]:
    if not r["failures"]:
        return []
    lines = ["### Failures", ""]
    for f in r["failures"][:MAX_ROWS]:
        msg = str(f["message"]).strip().splitlines() or [""]
        also = f" (also: {cell(', '.join(f['also']))})" if f.get("also") else ""
        lines.append(f"- **{cell(f['what'])}** `{cell(f['where'])}`{also}: {cell(msg[0])}")
        lines += [f"  - {cell(m.strip())}" for m in msg[1:8]]
    lines.append("")
    return lines


def _stages(r: Mapping[str, Any]) -> list[str]:
    lines = [
        "### Stages",
        "",
        "| # | stage | outcome | duration | waves | steps |",
        "|---|---|---|---|---|---|",
    ]
    for st in r["stages"]:
        nsteps = len(st["steps"]) + sum(len(run["steps"]) for w in st["waves"] for run in w["node_runs"])
        waves = " ".join(
            f"{_icon(w['outcome'])}{w['index'] + 1}:{cell(','.join(w['nodes']))}" for w in st["waves"]
        )
        lines.append(
            f"| {'' if st['index'] is None else st['index'] + 1} | {cell(st['name'])} |"
            f" {_icon(st['outcome'])} {cell(st['outcome'] or 'not run')} | {dur(st['duration_s'])} |"
            f" {waves or '-'} | {nsteps} |"
        )
    lines.append("")
    return lines


def _steps(r: Mapping[str, Any]) -> list[str]:
    steps = all_steps(r)
    if not steps:
        return []
    lines = [
        "<details><summary>Steps</summary>",
        "",
        "| step | node | action | outcome | attempts | duration | undo |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps[:200]:
        undo = s.get("undo") or {}
        undo_text = "skipped" if undo.get("skipped") else undo.get("outcome") or ""
        lines.append(
            f"| {cell(s['stage'])}/{cell(s['step'])} | {cell(s['node'] or '')} | {cell(s['action'])} |"
            f" {_icon(s['outcome'])} {cell(s['outcome'])} | {s['attempts']} | {dur(s['duration_s'])} |"
            f" {cell(undo_text)} |"
        )
    lines += ["", "</details>", ""]
    return lines


def _checks(r: Mapping[str, Any]) -> list[str]:
    if not r["checks"]:
        return []
    lines = [
        "### Checks",
        "",
        "| check | type | phase | stage | result | summary |",
        "|---|---|---|---|---|---|",
    ]
    for c in r["checks"][: MAX_ROWS * 2]:
        ok = "✅" if c["ok"] else "❌" if c["ok"] is False else "…"
        first = (str(c["summary"] or "").splitlines() or [""])[0]
        lines.append(
            f"| {cell(c['name'])} | {cell(c['type'])} | {cell(c['phase'])} | {cell(c['stage'] or '')} |"
            f" {ok} | {cell(first)} |"
        )
    lines.append("")
    return lines


def _rollback(r: Mapping[str, Any]) -> list[str]:
    rb = r.get("rollback")
    if not rb:
        return []
    lines = [
        "### Rollback",
        "",
        f"{_icon(rb['outcome'])} {cell(rb['outcome'])}: {rb['undone']} steps undone"
        f" in {dur(rb['duration_s'])} (reason: {cell(rb['reason'])})",
        "",
    ]
    bad = [u for u in rb["steps"] if u["outcome"] != "succeeded"]
    for u in bad:
        lines.append(f"- ❌ undo `{cell(u['key'])}`: {cell(u['error'])}")
    if bad:
        lines.append("")
    return lines


def _label(c: Mapping[str, Any]) -> str:
    where = f" · stage {c['stage']}" if c.get("stage") else ""
    nodes = f" · nodes {', '.join(c['nodes'])}" if c.get("nodes") else ""
    return f"{'✅' if c['ok'] else '❌'} {cell(c['name'])} ({cell(c['phase'])}{cell(where)}{cell(nodes)})"


def _title(c: Mapping[str, Any]) -> str:
    return f"#### {_label(c)}"


def _connectivity(c: Mapping[str, Any]) -> list[str]:
    v = c.get("connectivity")
    if not v:
        return []
    if v.get("passed") and not v["failing"]:
        return [f"- {_label(c)}: {v['ok']}/{v['total']} probes ok"]
    lines = ["", _title(c), "", f"{v['ok']}/{v['total']} probes ok", ""]
    if v["kinds"]:
        lines += ["| kind | ok | failed | never worked | pass % | threshold % |", "|---|---|---|---|---|---|"]
        for k in v["kinds"]:
            lines.append(
                f"| {cell(k.get('kind'))} | {k.get('ok')} | {k.get('failed')} | {k.get('never_worked')} |"
                f" {k.get('pass_pct')} | {k.get('threshold_pct')} |"
            )
        lines.append("")
    if v["failing"]:
        lines += [f"Failing pairs ({v['failing_total']}):", ""]
        for f in v["failing"][:30]:
            lines.append(
                f"- `{cell(f['source'])}` → `{cell(f['dest'])}` ({cell(f['kind'])}, {cell(f['status'])}):"
                f" {cell(f['error'])}"
            )
        if v["failing_total"] > 30:
            lines.append(f"- … {v['failing_total'] - 30} more (see report.json)")
        lines.append("")
    return lines


def _policy(c: Mapping[str, Any]) -> list[str]:
    """The expected-vs-observed truth table per (port, protocol), then every mismatch listed."""
    v = c.get("policy")
    if not v:
        return []
    s = v["summary"]
    figures = (
        f"policy: {s['ok']}/{s['total']} probes as expected ({s['expected_deny']} expected denied),"
        f" {s['holes']} holes, {s['breaks']} breaks, {s['errors']} prober errors"
        + (f", {s['unsupported']} not probed (unsupported protocol)" if s.get("unsupported") else "")
    )
    lines = ["", _title(c), "", figures, ""]
    if v["policies"]:
        lines += [f"Policies: {', '.join(f'`{cell(p)}`' for p in v['policies'][:40])}", ""]
    for m in v["matrices"]:
        pods = m["pods"]
        width = max((len(p) for p in pods), default=1) + 1
        note = " only the pods of a mismatch" + (", the first 40" if m.get("truncated") else "")
        lines += [
            f"{cell(m['port'])}/{cell(m['protocol'])} (rows: source, columns: destination"
            f"{';' + note if m.get('filtered') else ''}):",
            "",
            "```",
        ]
        lines.append(" " * width + "".join(f"{p:>{width}}" for p in pods))
        lines += [
            f"{p:<{width}}" + "".join(f"{x:>{width}}" for x in row)
            for p, row in zip(pods, m["rows"], strict=False)
        ]
        lines += ["```", ""]
    if v["matrices"]:
        lines += [f"<sub>{cell(v['legend'])}</sub>", ""]
    if v["mismatches"]:
        lines += [f"Mismatches ({v['mismatches_count']}):", ""]
        for x in v["mismatches"][:30]:
            policies = ", ".join(x.get("policies") or []) or "no policy selects either pod"
            lines.append(
                f"- **{cell(x.get('status'))}** `{cell(x.get('source'))}` → `{cell(x.get('dest'))}`"
                f" {cell(x.get('port'))}/{cell(x.get('protocol'))}: expected {cell(x.get('expected'))},"
                f" observed {cell(x.get('observed'))}"
                + (f" ({cell(x.get('error'))})" if x.get("error") else "")
                + f"; deciding: {cell(policies)}"
            )
        if v["mismatches_count"] > 30:
            lines.append(f"- … {v['mismatches_count'] - 30} more (see the check's results file)")
        lines.append("")
    return lines


def _continuous(c: Mapping[str, Any]) -> list[str]:
    v = c.get("continuous")
    if not v:
        return []
    pol = v.get("policy")
    figures = (
        f"{v['total_sent']} probes at {v.get('rate_hz') or '?'} Hz over {v['pairs_count']} pairs:"
        f" loss {v['total_loss_pct']:.2f}%, longest outage {v['longest_outage_ms']:.0f} ms"
        + (f", {v['excused']} excused (wave nodes)" if v.get("excused") else "")
        + (
            f"; policy: {pol.get('holes', 0)} holes, {pol.get('breaks', 0)} breaks,"
            f" {pol.get('errors', 0)} prober errors"
            if pol
            else ""
        )
    )
    if v.get("passed") and not v.get("lost"):
        return [f"- {_label(c)}: {figures}"]
    lines = ["", _title(c), "", figures, ""]
    worst = [p for p in v["pairs"] if float(p.get("loss_pct") or 0) > 0][:15]
    if worst:
        lines += ["| source | destination | kind | loss % | longest outage ms |", "|---|---|---|---|---|"]
        for p in worst:
            lines.append(
                f"| {cell(p.get('source'))} | {cell(p.get('dest'))} | {cell(p.get('kind'))} |"
                f" {p.get('loss_pct')} | {p.get('longest_outage_ms')} |"
            )
        lines.append("")
    for b in v["breaches"][:5]:
        lines.append(f"- ❌ {cell(b)}")
    if len(v["breaches"]) > 5:
        lines.append(f"- … {len(v['breaches']) - 5} more breaches (see report.json)")
    if v["breaches"]:
        lines.append("")
    return lines


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f}%"


def _steady_state(ss: Mapping[str, Any]) -> list[str]:
    """The game-day section: verdict and reason, the monitors' availability around the faults, the
    faults' on/off timeline and the node state read back (tc/iptables) after the install and the revert."""
    icon = {True: "✅", False: "❌", None: "⚠️"}[ss.get("held")]
    lines = ["### Steady state", "", f"**{icon} {cell(ss['verdict'])}**: {cell(ss.get('reason') or '')}", ""]
    if ss.get("during"):
        lines += [
            "| monitor | stage | ok | availability before / during / after the faults | probes | abort |",
            "|---|---|---|---|---|---|",
        ]
        for d in ss["during"]:
            a, n = d.get("availability") or {}, d.get("probes") or {}
            limits = ", ".join(f"{k} {v}" for k, v in (d.get("threshold") or {}).items())
            ok = _icon("succeeded" if d.get("ok") else "failed")
            pct = " / ".join(_pct(a.get(k)) for k in ("before_fault", "during_fault", "after_fault"))
            probes = " / ".join(str(n.get(k, 0)) for k in ("before_fault", "during_fault", "after_fault"))
            lines.append(
                f"| {cell(d['name'])} | {cell(d.get('stage'))} | {ok} | {pct} | {probes} | {cell(limits)} |"
            )
        lines.append("")
    if ss.get("timeline"):
        lines += ["| at | event |", "|---|---|"]
        for t in ss["timeline"]:
            at = "—" if t.get("offset_s") is None else f"+{float(t['offset_s']):.1f} s"
            lines.append(f"| {at} | **{cell(t['what'])}** {cell(t['label'])} |")
        lines.append("")
    for f in (ss.get("faults") or [])[:MAX_ROWS]:
        lines.append(
            f"#### Fault `{cell(f['id'])}` {cell(f.get('kind'))} on {cell(', '.join(f.get('nodes') or []))}"
        )
        lines.append("")
        if f.get("refused"):
            lines += [f"Refused: {cell(f['refused'])}", ""]
            continue
        for title, key in (
            ("Commands", "commands"),
            ("Node state after the install", "evidence"),
            ("Node state after the revert", "after_revert"),
        ):
            block = f.get(key) or {}
            if not block:
                continue
            lines += [f"{title}:", "", "```"]
            for node, value in block.items():
                if isinstance(value, dict):
                    for cmd, out in value.items():
                        lines.append(f"[{node}] $ {cmd}")
                        lines += [f"  {line}" for line in list(out or [])[:40]]
                else:
                    lines += [f"[{node}] {line}" for line in list(value or [])[:40]]
            lines += ["```", ""]
        drift = {n: v for n, v in (f.get("drift") or {}).items() if v}
        clean = (
            "no drift (nothing left on the nodes)"
            if f.get("clean")
            else f"drift: {drift}"
            if drift
            else "not reverted yet"
        )
        lines += [f"After the revert: {cell(clean)}", ""]
    return lines
