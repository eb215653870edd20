"""``report.html``: one self-contained page (inline CSS and SVG, no script, no external asset).

Top to bottom, in the order an SRE needs it: the verdict (and the exact next command when the run needs
attention), key figures, the failures with their messages, a timeline of stages, waves and nodes (with
annotations such as rollbacks, monitor aborts and injected faults), a connectivity heat map per
verification (source x destination, grouped by node), continuous-probe loss over time per monitor, then
every check and step. Every text from the run (plan names, node names, errors) is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from migrator.report.markdown import dur
from migrator.report.model import all_steps, parse_ts

COLORS = {
    "succeeded": "#2da44e",
    "ok": "#2da44e",
    "failed": "#cf222e",
    "regressed": "#cf222e",
    "timeout": "#bc4c00",
    "cancelled": "#8c959f",
    "running": "#d4a72c",
    "retrying": "#d4a72c",
    "failed-continued": "#d4a72c",
    "stopped": "#cf222e",
    "never-worked": "#6e7781",
    "recovered": "#54aeff",
    "undo": "#8250df",
    None: "#afb8c1",
}
CELL_LEGEND = (
    ("ok", "ok"),
    ("regressed", "failed (worked at baseline)"),
    ("failed", "failed"),
    ("never-worked", "never worked (failed at baseline too)"),
    ("recovered", "recovered"),
)
NOT_PROBED = "#eaeef2"
LEVEL_ICON = {"ok": "✔", "warn": "↺", "bad": "⚠", "running": "⏳"}


def e(value: Any) -> str:
    """Escape any value for HTML text and attributes."""
    return escape("" if value is None else str(value), quote=True)


def _color(outcome: Any) -> str:
    return COLORS.get(outcome if isinstance(outcome, str) else None, COLORS[None])


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.3g}s"
    return f"{seconds / 60:.3g}m"


def _nice_step(span: float, ticks: int = 8) -> float:
    raw = max(span / ticks, 1e-3)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def _trunc(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


# ------------------------------------------------------------------------------------------ CSS

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;margin:0;
background:#f6f8fa}
main{max-width:1360px;margin:0 auto;padding:16px 24px 48px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.verdict{color:#fff;padding:18px 24px;border-radius:10px;margin-top:8px}
.v-ok{background:#1a7f37}.v-warn{background:#9a6700}.v-bad{background:#cf222e}.v-running{background:#57606a}
.verdict .title{font-size:30px;font-weight:700;letter-spacing:.2px}
.verdict .icon{display:inline-block;width:1.2em}
.verdict .text{font-size:15px;margin-top:4px;max-width:1000px}
.verdict .next{margin-top:12px;background:rgba(0,0,0,.28);border-radius:6px;padding:10px 14px}
.verdict .next b{display:block;font-size:12px;text-transform:uppercase;letter-spacing:.6px;opacity:.9}
.verdict .next code{color:#fff;font-size:15px;display:block;margin-top:2px}
.meta{display:flex;flex-wrap:wrap;gap:6px 22px;margin-top:12px;font-size:13px;opacity:.95}
.meta span b{font-weight:600;opacity:.8;margin-right:4px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:150px}
.card .n{font-size:22px;font-weight:700}.card .l{font-size:12px;color:#57606a}
.card.bad{border-color:#cf222e}.card.bad .n{color:#cf222e}
.card.good .n{color:#1a7f37}
.panel{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin-top:8px;
overflow-x:auto}
.fail{border-left:4px solid #cf222e;background:#fff;padding:8px 12px;margin:6px 0;border-radius:4px}
.fail .w{font-weight:600}.fail pre{white-space:pre-wrap;margin:4px 0 0;color:#82071e}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.pill{display:inline-block;padding:0 7px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.muted{color:#57606a}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:12px;margin:6px 0}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-2px}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
summary h3{display:inline}
svg text{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
.grids{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
footer{margin-top:30px;font-size:12px;color:#57606a}
"""


# ---------------------------------------------------------------------------------------- header


def _header(r: Mapping[str, Any]) -> str:
    v = r["verdict"]
    nxt = ""
    if v.get("next"):
        cmds = "".join(f"<code>$ {e(c)}</code>" for c in v["next"])
        nxt = f'<div class="next"><b>Next</b>{cmds}</div>'
    meta = [
        ("plan", r.get("plan")),
        ("target", r.get("target")),
        ("run", r.get("run_id")),
        ("status", r.get("status")),
        ("exit code", r.get("exit_code")),
        ("started", str(r.get("started") or "").replace("T", " ").replace("Z", " UTC")),
        ("duration", dur(r.get("duration_s"))),
        (
            "sessions",
            " → ".join(str(x.get("mode")) for x in r.get("sessions") or [])
            if len(r.get("sessions") or []) > 1
            else None,
        ),
    ]
    meta_html = "".join(f"<span><b>{e(k)}</b>{e(val)}</span>" for k, val in meta if val not in (None, ""))
    lines = str(r.get("message") or "").strip().splitlines()
    first = _trunc(lines[0], 300) if lines else ""
    more = (
        " (details under Failures)" if len(lines) > 1 or len(first) < len(lines[0] if lines else "") else ""
    )
    message = f'<div class="text mono">{e(first)}{e(more)}</div>' if first else ""
    return (
        f'<header class="verdict v-{e(v["level"])}">'
        f'<div class="title"><span class="icon">{e(LEVEL_ICON.get(v["level"], ""))}</span>'
        f"{e(v['title'])}</div>"
        f'<div class="text">{e(v["text"])}</div>{message}{nxt}<div class="meta">{meta_html}</div></header>'
    )


def _cards(r: Mapping[str, Any]) -> str:
    stages = r["stages"]
    ok_stages = sum(1 for s in stages if s["outcome"] == "succeeded")
    steps = all_steps(r)
    bad_steps = sum(1 for s in steps if s["outcome"] not in ("succeeded",))
    checks = r["checks"]
    bad_checks = sum(1 for c in checks if c["ok"] is False)
    cards = [
        (
            f"{ok_stages}/{len(stages)}",
            "stages succeeded",
            "good" if ok_stages == len(stages) and stages else "bad",
        ),
        (f"{len(steps) - bad_steps}/{len(steps)}", "steps succeeded", "bad" if bad_steps else "good"),
        (f"{len(checks) - bad_checks}/{len(checks)}", "checks passed", "bad" if bad_checks else "good"),
    ]
    reach = [c for c in checks if c.get("connectivity")]
    if reach:

        def ratio(c: Mapping[str, Any]) -> float:
            v = c["connectivity"]
            return float(v["ok"] or 0) / float(v["total"] or 1)

        worst = min(reach, key=ratio)  # the first of the worst
        v = worst["connectivity"]
        cards.append(
            (
                f"{v['ok']}/{v['total']}",
                f"probes ok (worst verification: {worst['name']}, {worst['phase']})",
                "good" if v["passed"] else "bad",
            )
        )
    cont = [c["continuous"] for c in checks if c.get("continuous")]
    if cont:
        worst = max(cont, key=lambda c: float(c["total_loss_pct"]))
        cards.append(
            (f"{worst['total_loss_pct']:.2f}%", "worst monitor loss", "bad" if worst["lost"] else "good")
        )
        longest = max(float(c["longest_outage_ms"]) for c in cont)
        cards.append((f"{longest:.0f} ms", "longest outage", "bad" if longest else "good"))
    rb = r.get("rollback")
    if rb:
        bad = rb["outcome"] not in ("succeeded",)
        cards.append((str(rb["undone"]), f"steps undone (rollback {rb['outcome']})", "bad" if bad else ""))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {cls}"><div class="n">{e(n)}</div><div class="l">{e(label)}</div></div>'
            for n, label, cls in cards
        )
        + "</div>"
    )


def _failures(r: Mapping[str, Any]) -> str:
    if not r["failures"]:
        return ""
    items = []
    for f in r["failures"][:100]:
        at = (
            f" <span class='muted'>at +{_fmt_s(float(f['offset_s']))}</span>"
            if f.get("offset_s") is not None
            else ""
        )
        items.append(
            f'<div class="fail"><span class="w">{e(f["what"])}</span> <code>{e(f["where"])}</code>{at}'
            + (f"<div class='muted'>also: {e(', '.join(f.get('also') or []))}</div>" if f.get("also") else "")
            + f"<pre>{e(_trunc(str(f['message']), 4000))}</pre></div>"
        )
    more = (
        f"<p class='muted'>… {len(r['failures']) - 100} more in report.json</p>"
        if len(r["failures"]) > 100
        else ""
    )
    return f'<h2 id="failures">Failures ({len(r["failures"])})</h2>' + "".join(items) + more


# -------------------------------------------------------------------------------------- timeline


def _row(
    label: str, depth: int, bars: list[dict[str, Any]], *, bold: bool = False, marks: Sequence[Any] = ()
) -> dict[str, Any]:
    return {"label": label, "depth": depth, "bars": bars, "bold": bold, "marks": list(marks)}


def _bar(start: Any, end: Any, outcome: Any, tip: str, *, undone: bool = False) -> dict[str, Any]:
    return {"start": start, "end": end, "outcome": outcome, "tip": tip, "undone": undone}


def _span_end(item: Mapping[str, Any]) -> Any:
    return (
        None
        if item["offset_s"] is None or item["duration_s"] is None
        else item["offset_s"] + item["duration_s"]
    )


def _timeline_rows(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The timeline's rows, top to bottom: preflight, each stage (its steps, waves, nodes), the rollback
    (its undos), the final verifications."""
    rows: list[dict[str, Any]] = []
    checks_by_id = {c["id"]: c for c in r["checks"]}
    pf = r.get("preflight")
    if pf:
        start = _off(r, pf.get("started"))
        end = _off(r, pf.get("ended"))
        marks = [checks_by_id[i] for i in pf["checks"] if i in checks_by_id]
        bars = [_bar(start, end, pf.get("outcome"), f"preflight {pf.get('outcome')}")]
        rows.append(_row("preflight", 0, bars, bold=True, marks=marks))
    for st in r["stages"]:
        rows += _stage_rows(st, checks_by_id)
    if r.get("rollback"):
        rows += _rollback_rows(r["rollback"])
    final = [c for c in r["checks"] if not c.get("stage") and c["phase"] in ("verify", "post-rollback")]
    for phase in ("verify", "post-rollback"):
        mine = [c for c in final if c["phase"] == phase]
        if mine:
            s0 = min(float(c["offset_s"] or 0) for c in mine)
            s1 = max(float(c["offset_s"] or 0) + float(c.get("duration_s") or 0) for c in mine)
            ok = all(c["ok"] for c in mine)
            bars = [_bar(s0, s1, "succeeded" if ok else "failed", f"{phase}: {'passed' if ok else 'FAILED'}")]
            rows.append(_row(phase, 0, bars, bold=True, marks=mine))
    return rows


def _stage_rows(st: Mapping[str, Any], checks_by_id: Mapping[str, Any]) -> list[dict[str, Any]]:
    if st["outcome"] is None and st["offset_s"] is None:
        return [_row(f"stage {st['name']} (not run)", 0, [], bold=False)]
    tip = f"stage {st['name']}: {st['outcome']} in {dur(st['duration_s'])}" + (
        f"\n{st['error']}" if st.get("error") else ""
    )
    marks = [checks_by_id[i] for i in st["checks"] if i in checks_by_id]
    rows = [
        _row(
            f"stage {st['name']}",
            0,
            [_bar(st["offset_s"], _span_end(st), st["outcome"], tip)],
            bold=True,
            marks=marks,
        )
    ]
    for s in st["steps"]:
        rows.append(_row(s["step"] + (f" @{s['node']}" if s.get("node") else ""), 1, [_step_bar(s)]))
    for w in st["waves"]:
        wtip = f"wave {w['index'] + 1} ({', '.join(w['nodes'])}): {w['outcome']} in {dur(w['duration_s'])}"
        rows.append(
            _row(f"wave {w['index'] + 1}", 1, [_bar(w["offset_s"], _span_end(w), w["outcome"], wtip)])
        )
        for run in w["node_runs"]:
            rows.append(_row(f"{run['node']}", 2, [_step_bar(s) for s in run["steps"]]))
    return rows


def _rollback_rows(rb: Mapping[str, Any]) -> list[dict[str, Any]]:
    outcome = "undo" if rb["outcome"] == "succeeded" else rb["outcome"]
    tip = f"rollback {rb['outcome']}: {rb['undone']} undone"
    rows = [_row("rollback", 0, [_bar(rb["offset_s"], _span_end(rb), outcome, tip)], bold=True)]
    for u in rb["steps"]:
        if u.get("skipped"):
            continue
        d = float(u.get("duration_s") or 0.0)
        endu = u.get("offset_s")
        startu = None if endu is None else float(endu) - d
        label = f"undo {u['step']}" + (f" @{u['node']}" if u.get("node") else "")
        out = "undo" if u["outcome"] == "succeeded" else u["outcome"]
        tip = f"{label}: {u['outcome']}" + (f"\n{u['error']}" if u.get("error") else "")
        rows.append(_row(label, 1, [_bar(startu, endu, out, tip)]))
    return rows


def _timeline(r: Mapping[str, Any]) -> str:
    rows = _timeline_rows(r)
    if not rows:
        return "<p class='muted'>Nothing ran.</p>"
    total = max(run_span(r), 1e-3)
    label_w, chart_w, row_h, top = TIMELINE_LABEL_W, TIMELINE_CHART_W, 20, 34
    bottom = top + row_h * len(rows)
    lanes = ANNOTATION_LANES if r.get("annotations") else 0
    height = bottom + 10 + 12 * lanes
    scale = chart_w / total
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + chart_w + 60}" height="{height}" '
        f'viewBox="0 0 {label_w + chart_w + 60} {height}" role="img" aria-label="timeline">'
    ]
    step = _nice_step(total)
    t = 0.0
    while t <= total + 1e-9:
        x = label_w + t * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{bottom}" stroke="#eaeef2"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{top - 10}" font-size="11" fill="#57606a" text-anchor="middle">'
            f"{e(_fmt_s(t))}</text>"
        )
        t += step
    for i, rw in enumerate(rows):
        parts += _timeline_row(rw, i, top + i * row_h, row_h=row_h, total=total, scale=scale)
    parts += _annotations(r, label_w, scale, top, bottom)
    parts.append("</svg>")
    legend = _legend(
        [
            ("succeeded", "succeeded"),
            ("failed", "failed"),
            ("timeout", "timed out"),
            ("cancelled", "cancelled"),
            ("undo", "undo / rollback"),
        ]
    )
    note = (
        "<span class='muted'>◆ check (green passed, red failed) · dashed purple outline: step later undone ·"
        " hover for details</span>"
    )
    return f'<div class="panel">{"".join(parts)}{legend}{note}</div>'


def _timeline_row(
    rw: Mapping[str, Any], i: int, y: int, *, row_h: int, total: float, scale: float
) -> list[str]:
    """One row of the timeline: its label, its bars (each with its duration after the last) and checks."""
    label_w, chart_w = TIMELINE_LABEL_W, TIMELINE_CHART_W
    parts: list[str] = []
    if i % 2 == 0:
        parts.append(
            f'<rect x="0" y="{y}" width="{label_w + chart_w + 60}" height="{row_h}" fill="#f6f8fa"/>'
        )
    weight = "700" if rw["bold"] else "400"
    x_label = 6 + 14 * rw["depth"]
    parts.append(
        f'<text x="{x_label}" y="{y + 14}" font-size="12" font-weight="{weight}" fill="#1f2328">'
        f"{e(_trunc(rw['label'], 34 - 2 * rw['depth']))}<title>{e(rw['label'])}</title></text>"
    )
    for b in rw["bars"]:
        if b["start"] is None:
            continue
        x0 = label_w + float(b["start"]) * scale
        end = b["end"] if b["end"] is not None else total
        w = max(2.0, (float(end) - float(b["start"])) * scale)
        h = 12 if rw["depth"] else 14
        yb = y + (row_h - h) / 2
        extra = (
            ' stroke="#8250df" stroke-width="2" stroke-dasharray="3 2" fill-opacity="0.55"'
            if b["undone"]
            else ' stroke="#ffffff" stroke-width="1"'  # adjacent steps of a node stay apart
        )
        parts.append(
            f'<rect x="{x0:.1f}" y="{yb:.1f}" width="{w:.1f}" height="{h}" rx="2" '
            f'fill="{_color(b["outcome"])}"{extra}>'
            f"<title>{e(b['tip'])}</title></rect>"
        )
        if b["end"] is not None and b is rw["bars"][-1]:
            d = float(b["end"]) - float(b["start"])
            parts.append(
                f'<text x="{x0 + w + 4:.1f}" y="{y + 14}" font-size="10.5" fill="#57606a">'
                f"{e(_fmt_s(d))}</text>"
            )
    for c in rw["marks"]:
        if c.get("offset_s") is None:
            continue
        xc = label_w + (float(c["offset_s"]) + float(c.get("duration_s") or 0)) * scale
        col = "#1a7f37" if c["ok"] else "#cf222e"
        yc = y + row_h / 2
        tip = f"{c['phase']} check {c['name']}: {'ok' if c['ok'] else 'FAILED'}\n{c.get('summary') or ''}"
        parts.append(
            f'<path d="M{xc:.1f} {yc - 6:.1f} L{xc + 6:.1f} {yc:.1f} L{xc:.1f} {yc + 6:.1f} '
            f'L{xc - 6:.1f} {yc:.1f} Z" '
            f'fill="{col}" stroke="#fff" stroke-width="1"><title>{e(tip)}</title></path>'
        )
    return parts


def run_span(r: Mapping[str, Any]) -> float:
    """Seconds from the run's start to its last known moment (the time axis of every chart)."""
    end_total = 0.0
    for c in r["checks"]:
        if c.get("offset_s") is not None:
            end_total = max(end_total, float(c["offset_s"]) + float(c.get("duration_s") or 0))
    if r.get("duration_s"):
        end_total = max(end_total, float(r["duration_s"]))
    return max(end_total, 1e-3)


TIMELINE_LABEL_W = 250
TIMELINE_CHART_W = 1000
ANNOTATION_LANES = 3


def _off(r: Mapping[str, Any], ts: Any) -> float | None:
    from migrator.report.model import seconds_between  # noqa: PLC0415

    return seconds_between(r.get("started"), ts) if ts else None


def _step_bar(s: Mapping[str, Any]) -> dict[str, Any]:
    undo = s.get("undo") or {}
    undone = bool(undo) and not undo.get("skipped") and undo.get("outcome") == "succeeded"
    tip = (
        f"{s['stage']}/{s['step']}"
        + (f"@{s['node']}" if s.get("node") else "")
        + f" ({s['action']}): {s['outcome']} in {dur(s['duration_s'])}, {s['attempts']} attempt(s)"
        + (f"\n{s['error']}" if s.get("error") else "")
        + ("\nundone by the rollback" if undone else "")
    )
    end = None if s["offset_s"] is None or s["duration_s"] is None else s["offset_s"] + s["duration_s"]
    return {"start": s["offset_s"], "end": end, "outcome": s["outcome"], "tip": tip, "undone": undone}


def _annotations(r: Mapping[str, Any], label_w: int, scale: float, top: int, bottom: int) -> list[str]:
    """Vertical markers (rollback, resume, monitor abort, signal) and shaded fault windows; their labels
    go under the rows, in up to three lanes so that close markers do not overlap."""
    parts: list[str] = []
    anns = [a for a in r.get("annotations") or [] if a.get("offset_s") is not None]
    open_faults: dict[str, tuple[float, str]] = {}
    lanes = [-1e9] * ANNOTATION_LANES

    labels: list[tuple[float, str, str]] = []

    def label(x: float, text: str, color: str) -> None:
        labels.append((x, text, color))

    def place_labels() -> None:
        for x, text, color in sorted(labels, key=lambda item: item[0]):
            width = 5.6 * len(text) + 6
            free = [i for i, end in enumerate(lanes) if x >= end]
            lane = free[0] if free else min(range(len(lanes)), key=lambda i: lanes[i])
            lanes[lane] = x + width
            parts.append(
                f'<text x="{x + 2:.1f}" y="{bottom + 12 + 12 * lane}" font-size="10" fill="{color}">'
                f"{e(text)}</text>"
            )

    def band(x0: float, x1: float, tip: str) -> None:
        parts.append(
            f'<rect x="{x0:.1f}" y="{top - 4}" width="{max(2.0, x1 - x0):.1f}" height="{bottom - top + 4}" '
            f'fill="#bc4c00" fill-opacity="0.12"><title>{e(tip)}</title></rect>'
        )

    for a in anns:
        x = label_w + float(a["offset_s"]) * scale
        kind = str(a.get("kind"))
        if kind.startswith("fault"):
            group = str(a.get("group") or a.get("label"))
            if kind == "fault-on":
                open_faults[group] = (x, str(a.get("label")))
                continue
            if kind == "fault-off" and group in open_faults:
                x0, name = open_faults.pop(group)
                band(x0, x, f"fault {name}: {a.get('detail')}")
                label(x0, f"⚡ {_trunc(name, 30)}", "#bc4c00")
                continue
        color = {
            "rollback": "#8250df",
            "monitor-failed": "#cf222e",
            "resume": "#0969da",
            "signal": "#bc4c00",
        }.get(kind, "#bc4c00")
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="{color}" '
            f'stroke-width="1.5" stroke-dasharray="4 3"><title>{e(a.get("label"))}: {e(a.get("detail"))}'
            "</title></line>"
        )
        label(x, _trunc(str(a.get("label")), 28), color)
    for name, (x0, _label) in open_faults.items():  # a fault still on at the end
        band(x0, label_w + TIMELINE_CHART_W, f"fault {name} (never turned off)")
        label(x0, f"⚡ {_trunc(name, 30)} (still on)", "#bc4c00")
    place_labels()
    return parts


def _legend(items: Sequence[tuple[str, str]], counts: Mapping[str, int] | None = None) -> str:
    spans = []
    for key, label in items:
        n = f" ({counts.get(key, 0)})" if counts is not None else ""
        if counts is not None and not counts.get(key):
            continue
        spans.append(f'<span><i style="background:{_color(key)}"></i>{e(label)}{e(n)}</span>')
    return f'<div class="legend">{"".join(spans)}</div>'


# ------------------------------------------------------------------------------------ heat maps


def _groups(axis: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    """``(group, first index, count)`` runs along an axis."""
    out: list[tuple[str, int, int]] = []
    for i, item in enumerate(axis):
        g = str(item.get("group"))
        if out and out[-1][0] == g:
            out[-1] = (g, out[-1][1], out[-1][2] + 1)
        else:
            out.append((g, i, 1))
    return out


def heatmap_svg(grid: Mapping[str, Any]) -> str:
    rows, cols = grid["rows"], grid["cols"]
    n, m = len(rows), len(cols)
    cell = max(7, min(18, int(620 / max(n, m, 1))))
    font = 10 if cell >= 11 else 8.5
    ch = font * 0.58
    max_row_label = min(30, max((len(str(x["label"])) for x in rows), default=4))
    max_col_label = min(30, max((len(str(x["label"])) for x in cols), default=4))
    band = 18
    left = band + 6 + int(max_row_label * ch) + 6
    top = band + 6 + int(max_col_label * ch) + 6
    width = left + m * cell + 10
    height = top + n * cell + 10
    p = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} '
        f'{height}" '
        f'role="img" aria-label="{e(grid["title"])}">',
        f'<rect x="{left}" y="{top}" width="{m * cell}" height="{n * cell}" fill="{NOT_PROBED}"/>',
    ]
    # group bands (nodes) along both axes
    for idx, (g, start, count) in enumerate(_groups(rows)):
        y0 = top + start * cell
        fill = "#dde4ea" if idx % 2 == 0 else "#c9d3dc"
        p.append(
            f'<rect x="0" y="{y0}" width="{band}" height="{count * cell}" fill="{fill}"><title>{e(g)}</title>'
            "</rect>"
        )
        if count * cell >= 24:
            cy = y0 + count * cell / 2
            text = _trunc(g, max(2, int(count * cell / 6.5)))
            p.append(
                f'<text x="{band / 2 + 4}" y="{cy:.1f}" font-size="10.5" font-weight="600" '
                'text-anchor="middle" '
                f'transform="rotate(-90 {band / 2 + 4} {cy:.1f})">{e(text)}</text>'
            )
        if start:
            p.append(
                f'<line x1="{band}" y1="{y0}" x2="{left + m * cell}" y2="{y0}" stroke="#57606a" '
                'stroke-width="1.2"/>'
            )
    for idx, (g, start, count) in enumerate(_groups(cols)):
        x0 = left + start * cell
        fill = "#dde4ea" if idx % 2 == 0 else "#c9d3dc"
        p.append(
            f'<rect x="{x0}" y="0" width="{count * cell}" height="{band}" fill="{fill}"><title>{e(g)}</title>'
            "</rect>"
        )
        if count * cell >= 24:
            text = _trunc(g, max(2, int(count * cell / 6.5)))
            p.append(
                f'<text x="{x0 + count * cell / 2:.1f}" y="{band - 5}" font-size="10.5" font-weight="600" '
                f'text-anchor="middle">{e(text)}</text>'
            )
        if start:
            p.append(
                f'<line x1="{x0}" y1="{band}" x2="{x0}" y2="{top + n * cell}" stroke="#57606a" '
                'stroke-width="1.2"/>'
            )
    for i, item in enumerate(rows):
        y = top + i * cell + cell / 2 + font / 3
        p.append(
            f'<text x="{left - 4}" y="{y:.1f}" font-size="{font}" text-anchor="end">'
            f"{e(_trunc(str(item['label']), 30))}<title>{e(item['label'])} ({e(item['group'])})</title>"
            "</text>"
        )
    for j, item in enumerate(cols):
        x = left + j * cell + cell / 2 + font / 3
        p.append(
            f'<text x="{x:.1f}" y="{top - 4}" font-size="{font}" transform="rotate(-90 {x:.1f} {top - 4})">'
            f"{e(_trunc(str(item['label']), 30))}<title>{e(item['label'])} ({e(item['group'])})</title>"
            "</text>"
        )
    for ri, ci, status in grid["cells"]:
        x = left + ci * cell
        y = top + ri * cell
        tip = f"{rows[ri]['label']} → {cols[ci]['label']}: {status}"
        p.append(
            f'<rect x="{x + 0.5}" y="{y + 0.5}" width="{cell - 1}" height="{cell - 1}" '
            f'fill="{_color(status)}">'
            f"<title>{e(tip)}</title></rect>"
        )
    p.append("</svg>")
    return "".join(p)


def _connectivity(c: Mapping[str, Any], *, open_: bool = True) -> str:
    v = c["connectivity"]
    passed = v.get("passed")
    pill = _pill(
        "passed" if passed else "failed" if passed is False else "?", "succeeded" if passed else "failed"
    )
    where = " · ".join(
        x
        for x in (
            c["phase"],
            f"stage {c['stage']}" if c.get("stage") else "",
            ", ".join(c.get("nodes") or []),
        )
        if x
    )
    head = (
        f"<h3>{pill} {e(c['name'])} <span class='muted'>({e(where)}) · {e(v['ok'])}/{e(v['total'])} "
        "probes ok</span></h3>"
    )
    kinds = ""
    if v["kinds"]:
        body = "".join(
            f"<tr><td>{e(k.get('kind'))}</td><td class='num'>{e(k.get('total'))}</td><td class='num'>"
            f"{e(k.get('ok'))}</td>"
            f"<td class='num'>{e(k.get('failed'))}</td><td class='num'>{e(k.get('never_worked'))}</td>"
            f"<td class='num'>{e(k.get('pass_pct'))}</td><td class='num'>{e(k.get('threshold_pct'))}</td>"
            f"<td class='num'>{e(k.get('median_latency_ms'))}</td><td>"
            f"{_pill('ok', 'ok') if k.get('passed') else _pill('below', 'failed')}</td></tr>"
            for k in v["kinds"]
        )
        kinds = (
            "<table><tr><th>kind</th><th class='num'>probes</th><th class='num'>ok</th><th class='num'>"
            "failed</th>"
            "<th class='num'>never worked</th><th class='num'>pass %</th><th class='num'>threshold %</th>"
            f"<th class='num'>p50 ms</th><th></th></tr>{body}</table>"
        )
    grids = ""
    if v["grids"]:
        note = (
            ""
            if v.get("complete")
            else "<p class='muted'>The full results were not available: only failing cells (or the check's"
            " bounded grids) are shown.</p>"
        )
        figures = "".join(
            f"<figure style='margin:0'><figcaption><b>{e(g['title'])}</b> <span class='muted'>rows: source,"
            f" columns: destination; bands: node</span></figcaption>{heatmap_svg(g)}"
            f"{_legend(CELL_LEGEND, g['counts'])}</figure>"
            for g in v["grids"]
        )
        grids = f"{note}<div class='grids'>{figures}</div>"
    failing = ""
    if v["failing"]:
        items = "".join(
            f"<tr><td class='mono'>{e(f['source'])}</td><td class='mono'>{e(f['dest'])}</td><td>"
            f"{e(f['kind'])}</td>"
            f"<td>{_pill(f['status'], f['status'])}</td><td class='mono'>{e(f['error'])}</td></tr>"
            for f in v["failing"][:60]
        )
        more = (
            f"<p class='muted'>… {v['failing_total'] - 60} more in report.json</p>"
            if v["failing_total"] > 60
            else ""
        )
        failing = (
            f"<details {'open' if v['failing_total'] <= 20 else ''}><summary>Failing pairs "
            f"({e(v['failing_total'])})</summary>"
            "<table><tr><th>source</th><th>destination</th><th>kind</th><th>status</th><th>error</th></tr>"
            f"{items}</table>{more}</details>"
        )
    if not open_:
        return (
            f'<div class="panel"><details><summary style="font-weight:400">{head}</summary>'
            f"{kinds}{grids}{failing}"
            "</details></div>"
        )
    return f'<div class="panel">{head}{kinds}{grids}{failing}</div>'


def _pill(text: str, outcome: str) -> str:
    return f'<span class="pill" style="background:{_color(outcome)}">{e(text)}</span>'


# ---------------------------------------------------------------------------------- continuous


def loss_chart_svg(v: Mapping[str, Any], *, offset_s: float = 0.0, span_s: float | None = None) -> str:
    """Loss % per second of one monitor, on the run's time axis (aligned with the timeline above when
    ``span_s`` is the run's span and ``offset_s`` the monitor's start since the run's start)."""
    tl = v.get("timeline") or {}
    buckets = tl.get("total") or []
    if not buckets:
        return "<p class='muted'>No time series was recorded.</p>"
    bucket_s = float(tl.get("bucket_s") or 1.0)
    own_end = max(float(b[0]) for b in buckets) + bucket_s
    for w in v.get("waves") or []:
        if w.get("end_s") is not None:
            own_end = max(own_end, float(w["end_s"]))
    span = max(span_s or 0.0, offset_s + own_end)
    left, plot_w = TIMELINE_LABEL_W, TIMELINE_CHART_W
    width, top, plot_h = left + plot_w + 60, 14, 120
    height = top + plot_h + 46
    sx = plot_w / max(span, 1e-3)

    def x_of(t: float) -> float:
        return left + (offset_s + t) * sx

    pct = [100.0 * b[2] / b[1] if b[1] else 0.0 for b in buckets]
    peak = max(max(pct, default=0.0), 1.0)
    ymax = next(x for x in (1, 2, 5, 10, 20, 50, 100) if x >= peak - 1e-9)
    p = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} '
        f'{height}" '
        'role="img" aria-label="loss over time">'
    ]
    for w in v.get("waves") or []:
        if w.get("start_s") is None:
            continue
        x0 = x_of(max(0.0, float(w["start_s"])))
        x1 = x_of(float(w["end_s"]) if w.get("end_s") is not None else own_end)
        label = f"wave {int(w.get('wave') or 0) + 1}: {', '.join(w.get('nodes') or [])}"
        p.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{max(1.0, x1 - x0):.1f}" height="{plot_h}" fill="#ddf4ff">'
            f"<title>{e(label)}</title></rect>"
        )
        p.append(
            f'<text x="{x0 + 3:.1f}" y="{top + 11}" font-size="10" fill="#0969da">'
            f"{e(_trunc(label, int(max(4, (x1 - x0) / 6))))}</text>"
        )
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        p.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#d0d7de"/>')
        p.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#57606a">'
            f"{ymax * frac:g}% lost</text>"
        )
    step = _nice_step(span)
    t = 0.0
    while t <= span + 1e-9:
        x = left + t * sx
        p.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 34}" font-size="10" text-anchor="middle" fill="#57606a">'
            f"{e(_fmt_s(t))}</text>"
        )
        t += step
    bw = max(1.0, bucket_s * sx - 1)
    for b, lp in zip(buckets, pct, strict=True):
        x = x_of(float(b[0]))
        excused = int(b[3]) if len(b) > 3 else 0
        tip = f"+{_fmt_s(float(b[0]))} of the monitor: {b[2]}/{b[1]} lost ({lp:.1f}%)" + (
            f", {excused} excused" if excused else ""
        )
        if lp > 0:
            h = max(2.0, plot_h * min(lp, ymax) / ymax)
            p.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                'fill="#cf222e">'
                f"<title>{e(tip)}</title></rect>"
            )
        elif b[1]:
            p.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - 2:.1f}" width="{bw:.1f}" height="2" fill="#2da44e">'
                f"<title>{e(tip)}</title></rect>"
            )
        if excused:  # a strip under the axis: probes not counted (pairs touching the wave's nodes)
            p.append(
                f'<rect x="{x:.1f}" y="{top + plot_h + 4}" width="{bw:.1f}" height="6" fill="#d4a72c">'
                f"<title>{e(tip)}</title></rect>"
            )
    p.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#57606a"/>'
    )
    p.append(
        f'<text x="{left - 4}" y="{top + plot_h + 13}" font-size="9" text-anchor="end" fill="#9a6700">'
        "excused</text>"
    )
    p.append("</svg>")
    return "".join(p)


def _monitor_offset(r: Mapping[str, Any], v: Mapping[str, Any]) -> float:
    """Seconds between the run's start and the monitor's start (0 when unknown)."""
    start = parse_ts(r.get("started"))
    at = v.get("started_at")
    if start is None or not isinstance(at, int | float):
        return 0.0
    return max(0.0, float(at) - start.timestamp())


def _continuous(r: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    v = c["continuous"]
    passed = v.get("passed")
    pill = _pill(
        "passed" if passed else "failed" if passed is False else "?", "succeeded" if passed else "failed"
    )
    stage = f"stage {c['stage']}" if c.get("stage") else c["phase"]
    excused = f", {v['excused']} excused (wave nodes)" if v.get("excused") else ""
    head = (
        f"<h3>{pill} {e(c['name'])} <span class='muted'>({e(stage)}) · {e(v['total_sent'])} probes at"
        f" {e(v.get('rate_hz') or '?')} Hz over {e(v['pairs_count'])} pairs · loss "
        f"{v['total_loss_pct']:.2f}% ·"
        f" longest outage {v['longest_outage_ms']:.0f} ms{e(excused)}</span></h3>"
    )
    shown = "\n".join(v["breaches"][:20])
    more = f"\n... {len(v['breaches']) - 20} more" if len(v["breaches"]) > 20 else ""
    breaches = f"<div class='fail'><pre>{e(shown + more)}</pre></div>" if v["breaches"] else ""
    errors = "".join(f"<div class='fail'><pre>{e(x)}</pre></div>" for x in v.get("errors") or [])
    legend = (
        "<div class='legend'><span><i style='background:#cf222e'></i>lost %</span>"
        "<span><i style='background:#d4a72c'></i>excused probes (pairs touching the wave's nodes, not "
        "counted)</span>"
        "<span><i style='background:#2da44e'></i>no loss</span><span><i style='background:#ddf4ff'></i>wave "
        "in progress</span></div>"
    )
    rows = "".join(
        f"<tr><td class='mono'>{e(p.get('source'))}</td><td class='mono'>{e(p.get('dest'))}</td><td>"
        f"{e(p.get('kind'))}</td>"
        f"<td class='num'>{e(p.get('sent'))}</td><td class='num'>{e(p.get('lost'))}</td>"
        f"<td class='num'>{e(p.get('loss_pct'))}</td><td class='num'>{e(p.get('longest_outage_ms'))}</td>"
        "</tr>"
        for p in v["pairs"][:40]
    )
    table = (
        f"<details><summary>Pairs, worst first ({e(v['pairs_count'])})</summary><table><tr><th>source</th>"
        "<th>destination</th>"
        "<th>kind</th><th class='num'>sent</th><th class='num'>lost</th><th class='num'>loss %</th>"
        f"<th class='num'>longest outage ms</th></tr>{rows}</table></details>"
        if rows
        else ""
    )
    chart = loss_chart_svg(v, offset_s=_monitor_offset(r, v), span_s=run_span(r))
    return f'<div class="panel">{head}{breaches}{errors}{chart}{legend}{table}</div>'


# ------------------------------------------------------------------------------------- tables


def _checks_table(r: Mapping[str, Any]) -> str:
    if not r["checks"]:
        return ""

    def mark(ok: Any) -> str:
        return (
            _pill("ok", "ok") if ok else _pill("FAILED", "failed") if ok is False else _pill("?", "running")
        )

    body = "".join(
        f"<tr><td>{mark(c['ok'])}</td>"
        f"<td>{e(c['name'])}</td><td>{e(c['type'])}</td><td>{e(c['phase'])}</td><td>"
        f"{e(c['stage'] or '')}</td>"
        f"<td>{e(', '.join(c.get('nodes') or []))}</td><td class='num'>{e(dur(c.get('duration_s')))}</td>"
        f"<td class='mono' style='white-space:pre-wrap'>{e(_trunc(str(c.get('summary') or ''), 1500))}</td>"
        "</tr>"
        for c in r["checks"]
    )
    return (
        f"<h2 id='checks'>Checks ({len(r['checks'])})</h2><div class='panel'><table><tr><th></th><th>"
        "check</th>"
        "<th>type</th><th>phase</th><th>stage</th><th>nodes</th><th class='num'>time</th><th>summary</th>"
        f"</tr>{body}</table></div>"
    )


def _steps_table(r: Mapping[str, Any]) -> str:
    steps = all_steps(r)
    if not steps:
        return ""
    body = []
    for s in steps:
        undo = s.get("undo") or {}
        undo_text = "no undo needed" if undo.get("skipped") else str(undo.get("outcome") or "")
        body.append(
            f"<tr><td>{_pill(s['outcome'], s['outcome'])}</td><td>{e(s['stage'])}</td><td>{e(s['step'])}</td>"
            f"<td>{e(s['node'] or '')}</td><td class='mono'>{e(s['action'])}</td><td class='num'>"
            f"{e(s['attempts'])}</td>"
            f"<td class='num'>{e(dur(s['duration_s']))}</td><td>{e(undo_text)}</td>"
            f"<td class='mono' style='white-space:pre-wrap'>{e(_trunc(str(s.get('error') or ''), 1500))}</td>"
            "</tr>"
        )
    return (
        f"<h2 id='steps'>Steps ({len(steps)})</h2><div class='panel'><details><summary>Every step</summary>"
        "<table><tr><th></th>"
        "<th>stage</th><th>step</th><th>node</th><th>action</th><th class='num'>attempts</th><th class='num'>"
        "time</th>"
        f"<th>undo</th><th>error</th></tr>{''.join(body)}</table></details></div>"
    )


# ----------------------------------------------------------------------------------- steady state


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f}%"


def _node_block(block: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for node, value in block.items():
        if isinstance(value, Mapping):
            for cmd, out in value.items():
                lines.append(f"[{node}] $ {cmd}")
                lines += [f"  {line}" for line in list(out or [])[:60]]
        else:
            lines += [f"[{node}] {line}" for line in list(value or [])[:60]]
    return f"<pre>{e(chr(10).join(lines))}</pre>"


def _steady_state(r: Mapping[str, Any]) -> str:
    """Game days: the verdict on the steady-state hypothesis, availability around the faults, the faults'
    on/off timeline and the node state read back after the install and after the revert."""
    ss = r.get("steady_state")
    if not ss:
        return ""
    outcome = {True: "succeeded", False: "failed"}.get(ss.get("held"), "cancelled")
    parts = [
        "<h2 id='steady-state'>Steady state</h2><div class='panel'>",
        f"<p>{_pill(str(ss['verdict']), outcome)} {e(ss.get('reason') or '')}</p>",
    ]
    if ss.get("during"):
        parts.append(
            "<table><tr><th>monitor</th><th>stage</th><th>ok</th><th>availability before the faults</th>"
            "<th>during</th><th>after</th><th>probes (before / during / after)</th><th>abort when</th></tr>"
        )
        for d in ss["during"]:
            a, n = d.get("availability") or {}, d.get("probes") or {}
            limits = ", ".join(f"{k} {v}" for k, v in (d.get("threshold") or {}).items())
            probes = " / ".join(str(n.get(k, 0)) for k in ("before_fault", "during_fault", "after_fault"))
            ok = _pill("ok", "succeeded") if d.get("ok") else _pill("failed", "failed")
            parts.append(
                f"<tr><td>{e(d['name'])}</td><td>{e(d.get('stage'))}</td><td>{ok}</td>"
                f"<td>{_pct(a.get('before_fault'))}</td><td>{_pct(a.get('during_fault'))}</td>"
                f"<td>{_pct(a.get('after_fault'))}</td><td>{e(probes)}</td><td>{e(limits)}</td></tr>"
            )
        parts.append("</table>")
    if ss.get("timeline"):
        parts.append("<table><tr><th>at</th><th>event</th><th></th></tr>")
        for t in ss["timeline"]:
            at = "—" if t.get("offset_s") is None else f"+{float(t['offset_s']):.1f} s"
            parts.append(f"<tr><td>{e(at)}</td><td>{e(t['what'])}</td><td>{e(t['label'])}</td></tr>")
        parts.append("</table>")
    for f in ss.get("faults") or []:
        nodes = ", ".join(str(n) for n in f.get("nodes") or [])
        clean = (
            "refused"
            if f.get("refused")
            else "no drift after the revert"
            if f.get("clean")
            else "not reverted when the journal ends"
            if f.get("clean") is None
            else f"drift: {f.get('drift')}"
        )
        parts.append(
            f"<details><summary>fault <code>{e(f['id'])}</code> {e(f.get('kind'))} on {e(nodes)}"
            f" ({e(clean)})</summary>"
        )
        if f.get("refused"):
            parts.append(f"<p>{e(f['refused'])}</p>")
        for title, key in (
            ("commands", "commands"),
            ("node state after the install", "evidence"),
            ("node state after the revert", "after_revert"),
        ):
            if f.get(key):
                parts.append(f"<p class='muted'>{e(title)}</p>{_node_block(f[key])}")
        parts.append("</details>")
    parts.append("</div>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------- policy

POLICY_CELLS = {
    ".": ("#d9f2dd", "allowed, as expected"),
    "X": ("#dfe3ea", "denied, as expected"),
    "H": ("#e5484d", "HOLE: expected deny, allowed"),
    "B": ("#f76b15", "BREAK: expected allow, denied"),
    "?": ("#ffd43b", "prober error (inconclusive)"),
    "-": ("#ffffff", "not probed"),
}


def _policy_matrix(m: Mapping[str, Any]) -> str:
    """One truth table: rows sources, columns destinations; each cell's title says what it is."""
    pods = [str(p) for p in m["pods"]]
    head = "".join(f"<th class='mono' style='writing-mode:vertical-rl'>{e(p)}</th>" for p in pods)
    body = []
    for src, row in zip(pods, m["rows"], strict=False):
        cells = []
        for dst, mark in zip(pods, row, strict=False):
            color, meaning = POLICY_CELLS.get(mark, ("#ffffff", "?"))
            weight = "font-weight:700;color:#fff;" if mark in "HB" else ""
            cells.append(
                f"<td class='mono' style='text-align:center;background:{color};{weight}' "
                f"title='{e(src)} → {e(dst)}: {e(meaning)}'>{e(mark)}</td>"
            )
        body.append(f"<tr><th class='mono' style='text-align:left'>{e(src)}</th>{''.join(cells)}</tr>")
    counts = " · ".join(f"{e(k)} {e(v)}" for k, v in (m.get("counts") or {}).items() if v)
    if m.get("filtered"):
        counts += " · only the pods of a mismatch" + (", the first 40" if m.get("truncated") else "")
    return (
        f"<figure style='margin:0'><figcaption><b>{e(m['port'])}/{e(m['protocol'])}</b> "
        f"<span class='muted'>rows: source, columns: destination · {counts}</span></figcaption>"
        f"<table style='width:auto'><tr><th></th>{head}</tr>{''.join(body)}</table></figure>"
    )


def _policy(c: Mapping[str, Any]) -> str:
    v = c["policy"]
    s = v["summary"]
    passed = v.get("passed")
    pill = _pill(
        "passed" if passed else "failed" if passed is False else "?", "succeeded" if passed else "failed"
    )
    where = " · ".join(x for x in (c["phase"], f"stage {c['stage']}" if c.get("stage") else "") if x)
    head = (
        f"<h3>{pill} {e(c['name'])} <span class='muted'>({e(where)}) · {e(s['ok'])}/{e(s['total'])} as "
        f"expected · {e(s['holes'])} holes · {e(s['breaks'])} breaks · {e(s['errors'])} prober errors"
        f"{' · ' + e(s['unsupported']) + ' not probed (unsupported)' if s.get('unsupported') else ''}"
        "</span></h3>"
    )
    policies = (
        "<p class='muted'>policies: " + ", ".join(f"<code>{e(p)}</code>" for p in v["policies"][:40]) + "</p>"
        if v["policies"]
        else "<p class='muted'>no NetworkPolicy: every pair is expected to be allowed</p>"
    )
    legend = " ".join(
        f"<span class='pill' style='background:{color};color:#000'>{e(mark)}</span> {e(text)}"
        for mark, (color, text) in POLICY_CELLS.items()
    )
    grids = "".join(_policy_matrix(m) for m in v["matrices"])
    mismatches = ""
    if v["mismatches"]:
        rows = "".join(
            f"<tr><td>{_pill(str(x.get('status')), 'failed')}</td><td class='mono'>{e(x.get('source'))}</td>"
            f"<td class='mono'>{e(x.get('dest'))}</td><td class='mono'>{e(x.get('port'))}/"
            f"{e(x.get('protocol'))}</td><td>{e(x.get('expected'))}</td><td>{e(x.get('observed'))}</td>"
            f"<td class='mono'>{e(', '.join(x.get('policies') or []) or '-')}</td>"
            f"<td class='mono'>{e(x.get('error'))}</td></tr>"
            for x in v["mismatches"]
        )
        more = (
            f"<p class='muted'>… {e(v['mismatches_count'] - len(v['mismatches']))} more in the check's"
            " results file</p>"
            if v["mismatches_count"] > len(v["mismatches"])
            else ""
        )
        mismatches = (
            f"<details open><summary>Mismatches ({e(v['mismatches_count'])})</summary><table><tr><th>status"
            "</th><th>source</th><th>destination</th><th>port</th><th>expected</th><th>observed</th>"
            f"<th>deciding policies</th><th>error</th></tr>{rows}</table>{more}</details>"
        )
    return (
        f'<div class="panel">{head}{policies}<p class="muted">{legend}</p>'
        f"<div class='grids'>{grids}</div>{mismatches}</div>"
    )


# ---------------------------------------------------------------------------------------- page


def render_html(report: Mapping[str, Any]) -> str:
    r = report
    reach = [c for c in r["checks"] if c.get("connectivity")]
    cont = [c for c in r["checks"] if c.get("continuous")]
    sections = [_header(r), _cards(r), _steady_state(r), _failures(r), "<h2 id='timeline'>Timeline</h2>"]
    sections.append(_timeline(r))
    if cont:
        sections.append(
            f"<h2 id='continuous'>Continuous probes ({len(cont)} monitor{'s' if len(cont) > 1 else ''})</h2>"
        )
        sections += [_continuous(r, c) for c in cont]
    if reach:
        sections.append(
            f"<h2 id='connectivity'>Connectivity ({len(reach)}"
            f" verification{'s' if len(reach) > 1 else ''})</h2>"
        )
        for i, c in enumerate(reach):
            # failing verifications, the first (baseline) and the last are open; passing ones between fold
            shown = i in (0, len(reach) - 1) or not c["connectivity"].get("passed")
            sections.append(_connectivity(c, open_=shown))
    policy = [c for c in r["checks"] if c.get("policy")]
    if policy:
        sections.append(
            f"<h2 id='policy'>NetworkPolicy ({len(policy)} verification{'s' if len(policy) > 1 else ''}:"
            " expected vs observed)</h2>"
        )
        sections += [_policy(c) for c in policy]
    sections += [_checks_table(r), _steps_table(r)]
    if r.get("warnings"):
        sections.append(
            "<h2>Warnings</h2><div class='panel'><ul>"
            + "".join(f"<li>{e(w)}</li>" for w in r["warnings"])
            + "</ul></div>"
        )
    if r["journal"].get("torn"):
        sections.append(f"<p class='muted'>journal: {e(r['journal']['torn'])}</p>")
    params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
    sections.append(
        f"<footer>migrator report ({e(r['schema'])}) · generated {e(r['generated'])} · "
        f"{e(r['journal']['events'])} journal"
        f" events · params: {e(params or 'none')} · re-render with <code>migrator report "
        f"{e(r['run_id'])}</code></footer>"
    )
    title = f"{r['verdict']['title']} · {r.get('plan')} · {r['run_id']}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>{''.join(sections)}</main></body>"
        "</html>\n"
    )
