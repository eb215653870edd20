"""Connectivity views of a check's results, for heat maps and loss charts.

:func:`analyze_check` reads what a ``reachability`` or ``continuous-probe`` check left: the ``details`` of
its ``check.end`` (or ``monitor.failed``) event and the files in its artifacts folder. It accepts the
shapes of :mod:`migrator.probe.analysis` / :mod:`migrator.probe.suite` and degrades gracefully:

- ``VerifyReport.to_dict()`` (``results`` + ``summary``), possibly nested under ``report``/``verify``;
- ``Summary.to_dict()`` alone (``kinds`` + ``failures``): counts and failing pairs, the heat map only
  shows failing cells (``complete: false``);
- ``ContinuousVerdict.to_dict()`` (``pairs`` with ``loss_pct``), with a time series in the artifacts
  folder: a JSON list of probe results (or ``{"results": [...]}``), or JSON lines of them, or
  ready-made buckets (``{"timeline": [{"start_s", "sent", "lost"}, ...]}``).

Returned shapes (``None`` when the check has nothing of the kind)::

    connectivity  {passed, total, ok, has_baseline, complete, kinds: [kind summary], failing: [{source, dest,
                   kind, status, error}], failing_total, node_of: {pod: node},
                   grids: [{title, kinds, rows: [{label, group}], cols: [{label, group}],
                            cells: [[row, col, status]], counts: {status: n}}]}
    continuous    {passed, total_sent, total_loss_pct, longest_outage_ms, breaches, pairs: [pair loss],
                   timeline: {bucket_s, total: [[t, sent, lost]], pairs: [{pair, buckets: [[t, sent, lost]]}]}
                   | null, series_file}

Cell statuses: ``ok``, ``failed`` (fails, no baseline), ``regressed`` (worked at baseline), ``never-worked``
(failed at baseline too), ``recovered``; a cell absent from ``cells`` was not probed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.ports import ProbeKind, ProbeResult
from migrator.probe.analysis import continuous_stats, result_from_dict

POD_KINDS = (ProbeKind.POD_SAME_NODE.value, ProbeKind.POD_CROSS_NODE.value)
SERVICE_KINDS = (ProbeKind.SERVICE_IP.value, ProbeKind.SERVICE_DNS.value, ProbeKind.DNS.value)
EDGE_KINDS = (ProbeKind.NODE_TO_POD.value, ProbeKind.NODEPORT.value, ProbeKind.CONTAINER.value)
GRIDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Pod → pod", POD_KINDS),
    ("Pod → service (ClusterIP, DNS name, DNS lookup)", SERVICE_KINDS),
    ("Node → pod, outside → NodePort, pod → own containers", EDGE_KINDS),
)
STATUS_ORDER = ("ok", "recovered", "never-worked", "failed", "regressed")
MAX_FAILING = 300
MAX_LISTED_PAIRS = 200
MAX_SERIES_BYTES = 64 * 1024 * 1024


def _rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else 0


def _find(details: Any, wanted: Sequence[str], depth: int = 0) -> Mapping[str, Any] | None:
    """The first mapping (details itself, or nested a level or two) holding every key in ``wanted``."""
    if isinstance(details, Mapping):
        if all(k in details for k in wanted):
            return details
        if depth < 2:
            for value in details.values():
                found = _find(value, wanted, depth + 1)
                if found is not None:
                    return found
    elif isinstance(details, list) and depth < 2:
        for value in details:
            found = _find(value, wanted, depth + 1)
            if found is not None:
                return found
    return None


def _results(items: Any) -> list[ProbeResult]:
    out: list[ProbeResult] = []
    if not isinstance(items, list):
        return out
    for item in items:
        if isinstance(item, Mapping):
            try:
                out.append(result_from_dict(item))
            except (KeyError, ValueError, TypeError):
                continue
    return out


# ------------------------------------------------------------------------------------- one-off


def _pod_of(dest: str) -> str:
    """``ns/pod:port`` -> ``ns/pod``; a DNS name ``svc.ns.svc.cluster.local`` -> ``ns/svc``."""
    if dest.endswith(".svc.cluster.local"):
        parts = dest.split(".")
        if len(parts) >= 3:
            return f"{parts[1]}/{parts[0]}"
    if "/" in dest and ":" in dest.rsplit("/", 1)[1]:
        return dest.rsplit(":", 1)[0]
    return dest


def node_placement(results: Iterable[ProbeResult], given: Mapping[str, str] | None = None) -> dict[str, str]:
    """Pod -> node: given by the check, else learnt from node-to-pod probes (a node probes its own pods)."""
    placement: dict[str, str] = {}
    for r in results:
        if r.kind is ProbeKind.NODE_TO_POD:
            placement.setdefault(_pod_of(r.dest), r.source)
    placement.update({str(k): str(v) for k, v in (given or {}).items()})
    return placement


def _short(name: str) -> str:
    return name.split("/", 1)[1] if name.startswith("default/") else name


def _axis(
    names: Iterable[str], node_of: Mapping[str, str], *, nodes: set[str], default: str = "other"
) -> list[dict[str, str]]:
    """Axis entries sorted by group: pods by their node, nodes and ``outside`` first as their own group."""

    def group(name: str) -> str:
        if name in nodes or name == "outside":
            return "nodes" if name != "outside" else "outside"
        if "@" in name:  # nodeport destination svc@node
            return name.rsplit("@", 1)[1]
        return node_of.get(name) or node_of.get(_pod_of(name)) or default

    entries = [{"name": n, "label": _short(n), "group": group(n)} for n in set(names)]
    special = {"outside": 0, "nodes": 1}
    entries.sort(key=lambda e: (special.get(e["group"], 2), e["group"] == default, e["group"], e["label"]))
    return entries


def _statuses(summary: Mapping[str, Any] | None, *, listed: bool = False) -> dict[tuple[str, str, str], str]:
    """Pair -> status from a summary's lists (or, ``listed``, from items carrying their ``status``)."""
    out: dict[tuple[str, str, str], str] = {}
    if not summary:
        return out
    if listed:
        for item in summary.get("listed") or []:
            if isinstance(item, Mapping) and item.get("status"):
                out[(str(item.get("source")), str(item.get("dest")), str(item.get("kind")))] = str(
                    item["status"]
                )
        return out
    for key, status in (
        ("never_worked", "never-worked"),
        ("regressions", "regressed"),
        ("recovered", "recovered"),
    ):
        for item in summary.get(key) or []:
            if isinstance(item, Mapping):
                out[(str(item.get("source")), str(item.get("dest")), str(item.get("kind")))] = status
    return out


def resolve_artifact(raw: Any, folder: Path | None) -> Path | None:
    """A file a check named (absolute when recorded): as recorded, else by name in its artifacts folder
    (a run folder that was moved or trimmed into a fixture)."""
    if not raw:
        return None
    path = Path(str(raw))
    if path.is_file():
        return path
    if folder is not None and (folder / path.name).is_file():
        return folder / path.name
    return None


def _load_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        if path.stat().st_size > MAX_SERIES_BYTES:
            logger.warning("report: {} is too big for the report, skipped", path)
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _compact_cells(compact: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """Cells of a :func:`migrator.checks.reachability.compact_grid` (``1`` ok, ``0`` failed, ``-`` none)."""
    cells: dict[tuple[str, str], str] = {}
    sources = [str(x) for x in compact.get("sources") or []]
    dests = [str(x) for x in compact.get("dests") or []]
    for s, row in zip(sources, compact.get("rows") or [], strict=False):
        for d, mark in zip(dests, str(row), strict=False):
            if mark in "01":
                cells[(s, d)] = "ok" if mark == "1" else "failed"
    return cells


_COMPACT_TO_GRID = {
    "pods": 0,
    "services": 1,
    "dns": 1,
    "node-to-pod": 2,
    "nodeport": 2,
    "container": 2,
}


def reachability_view(details: Any, folder: Path | None) -> dict[str, Any] | None:
    """Counts, failing pairs and heat-map grids of one verification (see the module docstring)."""
    if not isinstance(details, Mapping):
        return None
    full = _find(details, ("results", "summary"))
    if full is None:
        full = _find(
            _load_json(resolve_artifact(details.get("results_file"), folder)), ("results", "summary")
        )
    summary: Mapping[str, Any] | None = _find(details, ("kinds", "failures"))
    if summary is None and full is not None:
        summary = full.get("summary")
    if summary is None:
        return None
    results = _results(full.get("results")) if full is not None else []
    complete = bool(results)
    statuses = _statuses(full.get("summary") if full is not None else None)
    statuses.update(_statuses({"listed": summary.get("failures")}, listed=True))
    if not results:  # only failures are known
        results = _results(summary.get("failures"))
    node_of = _placement(details, results, complete)
    nodes = set(node_of.values()) | {r.source for r in results if r.kind is ProbeKind.NODE_TO_POD}

    def status_of(r: ProbeResult) -> str:
        found = statuses.get((r.source, r.dest, r.kind.value))
        if found is not None and (not r.ok or found == "recovered"):
            return found
        return "ok" if r.ok else "failed"

    if complete:
        per_grid, kinds_in = _cells_of_results(results, status_of)
    else:  # fall back on the check's compact grids (bounded, maybe filtered to failing rows)
        per_grid, kinds_in = _cells_of_compact(details.get("grids"))
    failing: list[dict[str, str]] = [
        {
            "source": r.source,
            "dest": r.dest,
            "kind": r.kind.value,
            "status": status_of(r),
            "error": r.error or "",
        }
        for r in results
        if not r.ok
    ]
    failing.sort(key=lambda f: (-_rank(f["status"]), f["kind"], f["source"], f["dest"]))
    kinds_list = [dict(k) for k in summary.get("kinds") or [] if isinstance(k, Mapping)]
    total = sum(int(k.get("total") or 0) for k in kinds_list)
    ok = sum(int(k.get("ok") or 0) for k in kinds_list)
    return {
        "passed": summary.get("passed", details.get("passed")),
        "total": summary.get("total", total),
        "ok": summary.get("ok", ok),
        "has_baseline": bool(summary.get("has_baseline", details.get("has_baseline"))),
        "complete": complete,
        "kinds": kinds_list,
        "failing": failing[:MAX_FAILING],
        "failing_total": max(len(failing), int(details.get("failures_count") or 0)),
        "node_of": node_of,
        "grids": _grids(per_grid, kinds_in, node_of, nodes),
    }


_Cells = list[dict[tuple[str, str], str]]  # per grid: (row, column) -> status


def _placement(details: Mapping[str, Any], results: Sequence[ProbeResult], complete: bool) -> dict[str, str]:
    """Pod -> node, from the check's details, the results and (incomplete results) its compact grids."""
    given = None
    for key in ("node_of", "placement", "pod_nodes"):
        if isinstance(details.get(key), Mapping):
            given = details[key]
    node_of = node_placement(results, given)
    compact_n2p = (
        details.get("grids", {}).get("node-to-pod") if isinstance(details.get("grids"), Mapping) else None
    )
    if not complete and isinstance(compact_n2p, Mapping):  # a node probes its own pods: placement again
        for (node, dest), _status in _compact_cells(compact_n2p).items():
            node_of.setdefault(_pod_of(dest), node)
    return node_of


def _worse(cells: dict[tuple[str, str], str], cell: tuple[str, str], status: str) -> None:
    prev = cells.get(cell)
    if prev is None or _rank(status) > _rank(prev):
        cells[cell] = status


def _cells_of_results(
    results: Sequence[ProbeResult], status_of: Callable[[ProbeResult], str]
) -> tuple[_Cells, list[set[str]]]:
    per_grid: _Cells = [{} for _ in GRIDS]
    kinds_in: list[set[str]] = [set() for _ in GRIDS]
    for r in results:
        index = next((i for i, (_, kinds) in enumerate(GRIDS) if r.kind.value in kinds), None)
        if index is None:
            continue
        kinds_in[index].add(r.kind.value)
        dest = _pod_of(r.dest) if r.kind is not ProbeKind.CONTAINER else r.dest
        _worse(per_grid[index], (r.source, dest), status_of(r))
    return per_grid, kinds_in


def _cells_of_compact(compact: Any) -> tuple[_Cells, list[set[str]]]:
    per_grid: _Cells = [{} for _ in GRIDS]
    kinds_in: list[set[str]] = [set() for _ in GRIDS]
    if not isinstance(compact, Mapping):
        return per_grid, kinds_in
    for name, g in compact.items():
        index = _COMPACT_TO_GRID.get(str(name))
        if index is None or not isinstance(g, Mapping):
            continue
        kinds_in[index].add(str(name))
        for (s, raw_dest), status in _compact_cells(g).items():
            _worse(per_grid[index], (s, _pod_of(raw_dest)), status)
    return per_grid, kinds_in


def _grids(
    per_grid: _Cells, kinds_in: list[set[str]], node_of: Mapping[str, str], nodes: set[str]
) -> list[dict[str, Any]]:
    grids = []
    for index, ((title, _), cells, kinds) in enumerate(zip(GRIDS, per_grid, kinds_in, strict=True)):
        if not cells:
            continue
        rows = _axis({s for s, _ in cells}, node_of, nodes=nodes)
        cols = _axis(
            {d for _, d in cells}, node_of, nodes=nodes, default="services" if index == 1 else "other"
        )
        ri = {e["name"]: i for i, e in enumerate(rows)}
        ci = {e["name"]: i for i, e in enumerate(cols)}
        grids.append(
            {
                "title": title,
                "kinds": sorted(kinds),
                "rows": [{"label": e["label"], "group": e["group"]} for e in rows],
                "cols": [{"label": e["label"], "group": e["group"]} for e in cols],
                "cells": sorted([ri[s], ci[d], st] for (s, d), st in cells.items()),
                "counts": dict(Counter(cells.values())),
            }
        )
    return grids


# ------------------------------------------------------------------------------------- continuous


def _timeline_from_results(results: Sequence[ProbeResult]) -> list[list[float]]:
    """``[[t, sent, lost, excused], ...]`` per second since the first probe."""
    t0 = min(r.ts for r in results)
    count = int(max(r.ts for r in results) - t0) + 1
    sent = [0] * count
    lost = [0] * count
    for r in results:
        i = min(count - 1, max(0, int(r.ts - t0)))
        sent[i] += 1
        lost[i] += 0 if r.ok else 1
    return [[float(i), sent[i], lost[i], 0] for i in range(count)]


def continuous_view(details: Any, folder: Path | None, *, stage: str | None = None) -> dict[str, Any] | None:
    """Loss, outages, breaches and loss over time of one continuous probe (see the module docstring).

    Reads the check's details and the time series file it names (``timeseries_file``), or, for a monitor
    that left no event (it passed), ``<stage>-continuous.json`` in its artifacts folder.
    """
    inline: Mapping[str, Any] = details if isinstance(details, Mapping) else {}
    path = resolve_artifact(inline.get("timeseries_file"), folder)
    if path is None and folder is not None and folder.is_dir():
        named = folder / f"{(stage or 'stage').replace('/', '_').replace(' ', '_')}-continuous.json"
        candidates = [named] if named.is_file() else sorted(folder.glob("*-continuous.json"))
        path = candidates[0] if candidates else None
    from_file = _load_json(path)
    data: dict[str, Any] = dict(from_file) if isinstance(from_file, Mapping) else {}
    data.update(inline)
    raw_results = _results(data.get("results")) if isinstance(data.get("results"), list) else []
    if isinstance(details, list):
        raw_results = _results(details)
    if "pairs" not in data and not raw_results:
        return None
    pairs = [dict(p) for p in data.get("pairs") or [] if isinstance(p, Mapping)]
    rate = data.get("rate_hz")
    if not pairs and raw_results:
        period = 1.0 / float(rate) if rate else 0.05
        pairs = [p.to_dict() for p in continuous_stats(raw_results, period_s=period)]
    pairs.sort(key=lambda p: (-float(p.get("loss_pct") or 0.0), -float(p.get("longest_outage_ms") or 0.0)))
    series = data.get("timeseries")
    if isinstance(series, Mapping):
        series = None
    total: list[list[float]] = []
    if isinstance(series, list):
        for b in series:
            if isinstance(b, Mapping):
                total.append(
                    [
                        float(b.get("t", b.get("start_s", 0.0)) or 0.0),
                        int(b.get("sent") or 0),
                        int(b.get("lost") or 0),
                        int(b.get("excused") or 0),
                    ]
                )
    elif raw_results:
        total = _timeline_from_results(raw_results)
    started_at = data.get("started_at")
    waves = []
    for w in data.get("waves") or []:
        if isinstance(w, Mapping) and isinstance(started_at, int | float):
            start = w.get("start")
            end = w.get("end")
            waves.append(
                {
                    "wave": w.get("wave"),
                    "nodes": list(w.get("nodes") or []),
                    "start_s": None if start is None else round(float(start) - started_at, 3),
                    "end_s": None if end is None else round(float(end) - started_at, 3),
                }
            )
    sent = int(data.get("sent", data.get("total_sent", sum(int(p.get("sent") or 0) for p in pairs))) or 0)
    lost = int(data.get("lost", sum(int(p.get("lost") or 0) for p in pairs)) or 0)
    breaches = [str(b) for b in data.get("breaches") or []]
    passed = data.get("passed")
    if passed is None and "breaches" in data:
        passed = not breaches and not data.get("errors")
    return {
        "passed": passed,
        "rate_hz": rate,
        "total_sent": sent,
        "lost": lost,
        "excused": int(data.get("excused") or 0),
        "total_loss_pct": float(
            data.get("loss_pct", data.get("total_loss_pct", round(100.0 * lost / sent, 3) if sent else 0.0))
        ),
        "longest_outage_ms": float(
            data.get(
                "longest_outage_ms",
                max((float(p.get("longest_outage_ms") or 0.0) for p in pairs), default=0.0),
            )
        ),
        "pairs_count": int(data.get("pairs_count") or len(pairs)),
        "pairs": pairs[:MAX_LISTED_PAIRS],
        "breaches": breaches,
        "breach_details": [dict(b) for b in data.get("breach_details") or [] if isinstance(b, Mapping)],
        "errors": [str(e) for e in data.get("errors") or []],
        "timeline": {"bucket_s": 1.0, "total": total} if total else None,
        "waves": waves,
        "series_file": path.name if path is not None else None,
        "started_at": started_at if isinstance(started_at, int | float) else None,
        "policy": dict(data["policy"]) if isinstance(data.get("policy"), Mapping) else None,
    }


POLICY_MARKS = (".", "X", "H", "B", "?")
MAX_POLICY_MISMATCHES = 100


def policy_view(details: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``reachability`` check with ``scope: policy`` left (``PolicyReport.details``), bounded::

    {passed, summary: {total, ok, holes, breaks, errors, unsupported, expected_allow, expected_deny},
     policies, matrices: [{port, protocol, pods, rows, counts}], mismatches: [result], mismatches_count,
     legend}
    """
    summary = dict(details.get("summary") or {})
    matrices = []
    for m in details.get("matrices") or []:
        pods = [str(p) for p in m.get("pods") or []]
        rows = [str(r) for r in m.get("rows") or []]
        if len(rows) != len(pods) or any(len(r) != len(pods) for r in rows):
            logger.warning("report: a policy matrix of {} pods has malformed rows; left out", len(pods))
            continue
        counts = {mark: sum(r.count(mark) for r in rows) for mark in POLICY_MARKS}
        matrices.append(
            {
                "port": m.get("port"),
                "protocol": m.get("protocol"),
                "pods": pods,
                "rows": rows,
                "counts": counts,
            }
        )
    mismatches = [dict(x) for x in (details.get("mismatches") or [])][:MAX_POLICY_MISMATCHES]
    return {
        "passed": details.get("passed"),
        "summary": {
            k: summary.get(k, 0)
            for k in (
                "total",
                "ok",
                "holes",
                "breaks",
                "errors",
                "unsupported",
                "expected_allow",
                "expected_deny",
            )
        },
        "policies": [str(p) for p in details.get("policies") or []],
        "matrices": matrices,
        "mismatches": mismatches,
        "mismatches_count": int(details.get("mismatches_count") or len(mismatches)),
        "legend": str(details.get("legend") or ""),
    }


def analyze_check(
    details: Any, folder: Path | None, *, check_type: str | None = None, stage: str | None = None
) -> dict[str, Any]:
    """``{"connectivity": ..., "continuous": ..., "policy": ...}`` for one check execution (values may be
    ``None``). A ``reachability`` check with ``scope: policy`` has a ``policy`` view instead of
    connectivity; a ``continuous-probe`` monitor with ``scope: policy`` has both a continuous view and,
    in it, ``policy`` (holes, breaks and prober errors counted among the pairs it watched)."""
    out: dict[str, Any] = {"connectivity": None, "continuous": None, "policy": None}
    try:
        if isinstance(details, Mapping) and details.get("kind") == "policy":
            out["policy"] = policy_view(details)
        elif check_type == "continuous-probe" or (
            check_type is None and isinstance(details, Mapping) and "pairs" in details
        ):
            out["continuous"] = continuous_view(details, folder, stage=stage)
        elif check_type in ("reachability", None) or (isinstance(details, Mapping) and "kinds" in details):
            out["connectivity"] = reachability_view(details, folder)
    except Exception:  # noqa: BLE001 - a surprising shape must not break the report
        logger.opt(exception=True).warning("report: cannot read the details of a {} check", check_type)
    return out
