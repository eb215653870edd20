"""The ``reachability`` check: the whole probe matrix once, gated on thresholds and the preflight baseline.

Phases (``ctx.phase``):

- ``preflight``: probes the matrix and records it as the run's baseline in ``runs/<id>/baseline.json``
  (results and the pods' workload identities; several reachability checks in a preflight merge into one
  file). Judged against ``preflight_threshold`` (default: ``threshold``).
- ``wave-verify``, ``stage-verify``, ``verify``, ``monitor``: probes again; with ``compare_baseline`` a
  pair failing now and at baseline is reported as never-worked and does not count against the threshold;
  a pair that worked then and fails now is a regression.
- ``post-rollback``: proves the target is back to the baseline: it passes only with no regression at all
  (whatever the threshold) and every kind at its threshold.

The result's details (see :func:`report_details`) hold per-kind counts, the failing pairs, regressions and
never-worked pairs (bounded lists), compact source x destination grids (bounded) and the path of the full
results in the check's artifacts folder.

``migrator verify`` runs the same code: :func:`matrix_options`, :func:`evaluate` and :func:`report_details`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.actions.context import CheckContext, PreviewLine
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.errors import UsageError
from migrator.fsutil import atomic_write_json
from migrator.plan.models import ProbeScope, ReachabilityCheck
from migrator.ports import ProbeKind, ProbeResult, Target
from migrator.probe.analysis import PairStatus, grid, result_to_dict
from migrator.probe.matrix import MatrixOptions, Scope
from migrator.probe.policy import PolicyOptions, PolicyReport, run_policy_verify
from migrator.probe.suite import Baseline, VerifyReport, describe_failures, load_baseline, run_verify

BASELINE_FILE = "baseline.json"
MAX_LISTED = 100
"""Failing pairs, regressions and never-worked pairs listed in the details (the full list is in the file)."""
MAX_GRID_SIDE = 40
"""A grid wider or taller than this keeps only the rows and columns with a failure, then the first 40."""

GRID_GROUPS: dict[str, tuple[ProbeKind, ...]] = {
    "pods": (ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE),
    "services": (ProbeKind.SERVICE_IP, ProbeKind.SERVICE_DNS),
    "dns": (ProbeKind.DNS,),
    "node-to-pod": (ProbeKind.NODE_TO_POD,),
    "nodeport": (ProbeKind.NODEPORT,),
    "container": (ProbeKind.CONTAINER,),
}

_SCOPES = {
    ProbeScope.ALL: Scope.ALL,
    ProbeScope.CROSS_NODE: Scope.CROSS_NODE,
    ProbeScope.SERVICES: Scope.SERVICES,
    ProbeScope.POLICY: Scope.POLICY,
}


def parse_kinds(kinds: Iterable[str] | None) -> frozenset[ProbeKind] | None:
    """Probe kinds by name (``pod-cross-node``, ...); :class:`UsageError` names the valid ones."""
    if kinds is None:
        return None
    valid = {k.value: k for k in ProbeKind}
    out: set[ProbeKind] = set()
    for name in kinds:
        if name not in valid:
            raise UsageError(f"unknown probe kind {name!r}; valid kinds: {', '.join(valid)}")
        out.add(valid[name])
    return frozenset(out)


def matrix_options(check: ReachabilityCheck) -> MatrixOptions:
    return MatrixOptions(
        scope=_SCOPES[check.scope],
        kinds=parse_kinds(check.kinds),
        per_source=check.sample_per_source,
        seed=check.seed,
        path=check.path,
        timeout=check.probe_timeout,
    )


# ------------------------------------------------------------------------------------------ details


def compact_grid(
    results: Sequence[ProbeResult], kinds: Iterable[ProbeKind], *, max_side: int = MAX_GRID_SIDE
) -> dict[str, Any] | None:
    """A bounded source x destination grid: ``rows[i][j]`` is ``1`` ok, ``0`` failed, ``-`` not probed.

    When there are more than ``max_side`` sources or destinations, only those with a failure are kept
    (``filtered``), and at most ``max_side`` of each (``truncated``).
    """
    g = grid(results, kinds)
    if not g.sources:
        return None
    sources, dests = list(g.sources), list(g.dests)
    failed = sorted(k for k, ok in g.cells.items() if not ok)
    filtered = truncated = False
    if len(sources) > max_side or len(dests) > max_side:
        filtered = True
        sources = sorted({s for s, _ in failed})
        dests = sorted({d for _, d in failed})
    if len(sources) > max_side or len(dests) > max_side:
        truncated = True
        sources, dests = sources[:max_side], dests[:max_side]
    rows = [
        "".join("-" if (c := g.cell(s, d)) is None else ("1" if c else "0") for d in dests) for s in sources
    ]
    return {
        "sources": sources,
        "dests": dests,
        "rows": rows,
        "pairs": len(g.cells),
        "failed": len(failed),
        "filtered": filtered,
        "truncated": truncated,
    }


def _listed(
    results: Sequence[ProbeResult], statuses: dict[Any, PairStatus] | None = None
) -> list[dict[str, Any]]:
    out = []
    for r in results[:MAX_LISTED]:
        item = {"source": r.source, "dest": r.dest, "kind": r.kind.value, "error": r.error}
        if statuses is not None:
            item["status"] = statuses.get((r.source, r.dest, r.kind), PairStatus.FAILED).value
        out.append(item)
    return out


def report_details(report: VerifyReport, *, results_file: Path | None = None) -> dict[str, Any]:
    """What reports need from one verification, bounded in size whatever the cluster."""
    s = report.summary
    statuses = dict(s.statuses)
    grids = {
        name: g
        for name, kinds in GRID_GROUPS.items()
        if (g := compact_grid(report.results, kinds)) is not None
    }
    return {
        "target": report.target,
        "passed": report.passed,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 3),
        "total": s.total,
        "ok": s.ok,
        "has_baseline": s.has_baseline,
        "kinds": [k.to_dict() for k in s.kinds],
        "failures": _listed(s.failures, statuses),
        "failures_count": len(s.failures),
        "regressions": _listed(s.regressions),
        "regressions_count": len(s.regressions),
        "never_worked": _listed(s.never_worked),
        "never_worked_count": len(s.never_worked),
        "recovered_count": len(s.recovered),
        "grids": grids,
        "results_file": None if results_file is None else str(results_file),
    }


# ------------------------------------------------------------------------------------------- running


def baseline_path(run_dir: Path) -> Path:
    return run_dir / BASELINE_FILE


def record_baseline(run_dir: Path, report: VerifyReport) -> Path:
    """Write (or merge into) ``run_dir/baseline.json``: a later pair result replaces an earlier one."""
    path = baseline_path(run_dir)
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    identities: dict[str, str] = {}
    if path.exists():
        old = load_baseline(path)
        identities.update(old.identities)
        for r in old.results:
            merged[(r.source, r.dest, r.kind.value)] = result_to_dict(r)
    for r in report.results:
        merged[(r.source, r.dest, r.kind.value)] = result_to_dict(r)
    identities.update(report.identities)
    atomic_write_json(path, {"results": list(merged.values()), "identities": identities})
    return path


def evaluate(
    target: Target,
    options: MatrixOptions,
    *,
    threshold_pct: float = 100.0,
    baseline: Baseline | None = None,
) -> VerifyReport:
    """One verification (what the check and ``migrator verify`` both run)."""
    return run_verify(target, options=options, baseline=baseline, threshold=threshold_pct)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def write_results(folder: Path, report: VerifyReport, *, label: str) -> Path:
    """The full report (every result) as ``results-<label>-<time>.json`` in ``folder``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(report.started_at))
    path = folder / f"results-{_slug(label)}-{stamp}-{int(report.started_at * 1000) % 1000:03d}.json"
    atomic_write_json(path, report.to_dict())
    return path


def _summary_line(report: VerifyReport, phase: str, baseline: bool) -> str:
    s = report.summary
    parts = [f"{s.ok}/{s.total} probes ok in {report.duration_s:.2f}s"]
    if baseline:
        parts.append(f"{len(s.regressions)} regressions, {len(s.never_worked)} never worked")
    else:
        parts.append(f"{len(s.failures)} failing")
    if phase == "preflight":
        parts.append("baseline recorded")
    return ", ".join(parts)


def policy_options(check: ReachabilityCheck) -> PolicyOptions:
    return PolicyOptions(
        namespaces=None if check.namespaces is None else frozenset(check.namespaces),
        timeout=check.probe_timeout,
    )


def write_policy_results(folder: Path, report: PolicyReport, *, label: str) -> Path:
    """Every policy result as ``policy-<label>-<time>.json`` in ``folder``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(report.started_at))
    path = folder / f"policy-{_slug(label)}-{stamp}-{int(report.started_at * 1000) % 1000:03d}.json"
    atomic_write_json(path, report.to_dict())
    return path


def run_policy_check(ctx: CheckContext, check: ReachabilityCheck) -> CheckResult:
    """``scope: policy``: holes, breaks and prober errors fail it, in every phase (the expectation is the
    policies, not a baseline: ``threshold`` and ``compare_baseline`` do not apply)."""
    report = run_policy_verify(ctx.target, policy_options(check))
    label = "-".join([ctx.phase, ctx.stage or "", *(n.name for n in ctx.nodes)])
    results_file = write_policy_results(ctx.artifacts(), report, label=label)
    details = report.details(results_file=str(results_file))
    details["phase"] = ctx.phase
    details["nodes"] = [n.name for n in ctx.nodes]
    s = report.summary
    summary = (
        f"policy: {s.ok}/{s.total} probes as expected ({s.expected_deny} expected denied) in "
        f"{report.duration_s:.2f}s, {s.holes} holes, {s.breaks} breaks, {s.errors} prober errors"
    )
    if not report.passed:
        summary = f"{summary}\n{report.describe()}"
    return CheckResult(report.passed, summary, details)


@register_check("reachability")
class Reachability(Checker[ReachabilityCheck]):
    def run(self, ctx: CheckContext, check: ReachabilityCheck) -> CheckResult:
        if check.scope is ProbeScope.POLICY:
            return run_policy_check(ctx, check)
        options = matrix_options(check)
        threshold = check.threshold
        if ctx.phase == "preflight" and check.preflight_threshold is not None:
            threshold = check.preflight_threshold
        baseline: Baseline | None = None
        if ctx.phase != "preflight" and check.compare_baseline:
            path = baseline_path(ctx.run_dir)
            if path.exists():
                baseline = load_baseline(path)
            else:
                logger.warning("reachability: no baseline in {} (no reachability check at preflight?)", path)
        report = evaluate(ctx.target, options, threshold_pct=threshold * 100.0, baseline=baseline)
        label = "-".join([ctx.phase, ctx.stage or "", *(n.name for n in ctx.nodes)])
        results_file = write_results(ctx.artifacts(), report, label=label)
        if ctx.phase == "preflight":
            record_baseline(ctx.run_dir, report)
        details = report_details(report, results_file=results_file)
        details["phase"] = ctx.phase
        details["nodes"] = [n.name for n in ctx.nodes]
        ok = report.passed
        summary = _summary_line(report, ctx.phase, baseline is not None)
        if ctx.phase == "post-rollback" and baseline is not None and report.summary.regressions:
            ok = False
            summary = f"not back to the baseline: {summary}"
        if not ok:
            summary = f"{summary}\n{describe_failures(report)}"
        return CheckResult(ok, summary, details)

    def preview(self, ctx: CheckContext, check: ReachabilityCheck) -> list[PreviewLine]:
        if check.scope is ProbeScope.POLICY:
            where = f" in namespaces {', '.join(check.namespaces)}" if check.namespaces else ""
            return [
                f"policy verification: every pod pair{where} on every declared TCP/UDP port, allowed and "
                "denied, against the NetworkPolicies; any hole, break or prober error fails it"
            ]
        kinds = ", ".join(check.kinds) if check.kinds else f"scope {check.scope.value}"
        sample = f", {check.sample_per_source} destinations per source" if check.sample_per_source else ""
        threshold = check.threshold
        if ctx.phase == "preflight":
            base = "; records the baseline (runs/<id>/baseline.json)"
            threshold = check.preflight_threshold if check.preflight_threshold is not None else threshold
        elif ctx.phase == "post-rollback":
            base = "; must be back to the preflight baseline (no regression)"
        else:
            base = ", compared with the preflight baseline" if check.compare_baseline else ""
        return [f"reachability ({kinds}{sample}) at >= {threshold * 100:g}%{base}"]
