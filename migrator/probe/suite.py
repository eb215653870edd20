"""The verification suite: build the matrix for a target, probe it, summarise it.

This is what ``migrator verify`` runs, and what the ``reachability`` check and the ``continuous-probe``
monitor wrap::

    report = run_verify(target, options=MatrixOptions(scope=Scope.ALL), baseline=preflight.results)
    report.passed, report.summary.regressions, report.to_dict()

    run = start_monitor(target.prober, pairs, rate_hz=20, max_duration=600)
    ...                                   # every few seconds:
    verdict = monitor_verdict(run.snapshot(), rate_hz=20, max_loss_pct=0)   # abort when not passed
    require_no_breach(monitor_verdict(run.stop(), rate_hz=20, max_loss_pct=0))   # raises CheckFailed

    require_reachable(report)                                                     # raises CheckFailed
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.errors import CheckFailed, UsageError
from migrator.fsutil import atomic_write_json
from migrator.ports import ContinuousProbe, ProbeKind, Prober, ProbeResult, ProbeTarget, Target
from migrator.probe.analysis import (
    ContinuousVerdict,
    Summary,
    check_continuous,
    continuous_stats,
    result_from_dict,
    result_to_dict,
    summarize,
)
from migrator.probe.matrix import MatrixOptions, build_matrix, workload_identities


@dataclass(frozen=True)
class VerifyReport:
    target: str
    started_at: float
    duration_s: float
    options: MatrixOptions
    targets: tuple[ProbeTarget, ...]
    results: tuple[ProbeResult, ...]
    summary: Summary
    identities: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.summary.passed

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        return {
            "target": self.target,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
            "options": {
                "scope": o.scope.value,
                "kinds": None if o.kinds is None else sorted(k.value for k in o.kinds),
                "per_source": o.per_source,
                "seed": o.seed,
                "protocol": o.protocol.value,
                "timeout": o.timeout,
            },
            "summary": self.summary.to_dict(),
            "results": [result_to_dict(r) for r in self.results],
            "identities": dict(self.identities),
            **dict(self.extra),
        }


@dataclass(frozen=True)
class Baseline:
    """Results of an earlier run (preflight) and the workload identity of each pod then."""

    results: tuple[ProbeResult, ...]
    identities: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, report: VerifyReport) -> Baseline:
        return cls(report.results, dict(report.identities))


def require_prober(target: Target) -> Prober:
    if target.prober is None:
        raise UsageError(f"target {target.name!r} has no prober")
    return target.prober


def run_verify(
    target: Target,
    *,
    options: MatrixOptions | None = None,
    baseline: Baseline | Sequence[ProbeResult] | None = None,
    threshold: float | Mapping[ProbeKind, float] = 100.0,
    concurrency: int = 256,
    prober: Prober | None = None,
) -> VerifyReport:
    """Probe the whole matrix of ``target`` once and summarise it (``prober`` defaults to the target's).

    With a ``baseline`` (``Baseline.of(preflight_report)`` or :func:`load_baseline`), pairs that failed
    then too are reported as never-worked, also when their pods were re-created under new names since
    (matched by workload, see :func:`migrator.probe.analysis.summarize`).
    """
    opts = options or MatrixOptions()
    use = prober or require_prober(target)
    targets = build_matrix(target.cluster, opts)
    if not targets:
        raise UsageError(f"the matrix of {target.name!r} is empty (no ready pods with ports?)")
    started_at = time.time()
    t0 = time.perf_counter()
    results = use.probe(targets, concurrency=concurrency)
    duration = time.perf_counter() - t0
    identities = workload_identities(target.cluster)
    base: Baseline | None = None
    if baseline is not None:
        base = baseline if isinstance(baseline, Baseline) else Baseline(tuple(baseline))
    summary = summarize(
        results,
        threshold=threshold,
        baseline=None if base is None else base.results,
        identity=None if base is None else {**base.identities, **identities},
    )
    logger.info(
        "verify {}: {}/{} ok in {:.2f}s ({})",
        target.name,
        summary.ok,
        summary.total,
        duration,
        "passed" if summary.passed else "FAILED",
    )
    return VerifyReport(
        target.name, started_at, duration, opts, tuple(targets), tuple(results), summary, identities
    )


def save_results(
    path: Path, results: Sequence[ProbeResult], identities: Mapping[str, str] | None = None
) -> None:
    """Store results (a baseline) and the pods' workload identities atomically as JSON."""
    atomic_write_json(
        path, {"results": [result_to_dict(r) for r in results], "identities": dict(identities or {})}
    )


def save_baseline(path: Path, report: VerifyReport) -> None:
    save_results(path, report.results, report.identities)


def load_baseline(path: Path) -> Baseline:
    """Load what :func:`save_results` wrote, a ``report.json``, or a bare JSON list of results."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read probe results from {path}: {exc}") from exc
    identities: dict[str, str] = {}
    if isinstance(data, dict):
        identities = {str(k): str(v) for k, v in dict(data.get("identities") or {}).items()}
        data = data.get("results", [])
    try:
        return Baseline(tuple(result_from_dict(item) for item in data), identities)
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{path} does not hold probe results: {exc}") from exc


def load_results(path: Path) -> list[ProbeResult]:
    """The results of :func:`load_baseline`."""
    return list(load_baseline(path).results)


def start_monitor(
    prober: Prober, pairs: Sequence[ProbeTarget], *, rate_hz: float = 20.0, max_duration: float = 600.0
) -> ContinuousProbe:
    if not pairs:
        raise UsageError("a continuous probe needs at least one pair")
    return prober.start_continuous(pairs, rate_hz=rate_hz, max_duration=max_duration)


def monitor_verdict(
    results: Sequence[ProbeResult],
    *,
    rate_hz: float,
    max_loss_pct: float | None = None,
    max_outage_ms: float | None = None,
) -> ContinuousVerdict:
    """Loss and longest outage per pair, checked against the limits (for ``continuous-probe``)."""
    return check_continuous(
        continuous_stats(results, period_s=1.0 / rate_hz),
        max_loss_pct=max_loss_pct,
        max_outage_ms=max_outage_ms,
    )


def describe_failures(report: VerifyReport, *, limit: int = 10) -> str:
    """One line per failing kind, then up to ``limit`` failing pairs (never-worked ones marked)."""
    s = report.summary
    lines = [
        f"{k.kind.value}: {k.ok}/{k.counted} ok ({k.pass_pct:.1f}% < {k.threshold_pct:g}%)"
        for k in s.kinds
        if not k.passed
    ]
    never = {(r.source, r.dest, r.kind) for r in s.never_worked}
    for r in s.failures[:limit]:
        tag = " [never worked]" if (r.source, r.dest, r.kind) in never else ""
        lines.append(f"  {r.source} -> {r.dest} ({r.kind.value}): {r.error}{tag}")
    if len(s.failures) > limit:
        lines.append(f"  ... {len(s.failures) - limit} more")
    return "\n".join(lines)


def require_reachable(report: VerifyReport, *, check: str = "reachability") -> None:
    """Raise :class:`CheckFailed` (details: the summary as a dict) unless every kind passed."""
    if not report.passed:
        raise CheckFailed(
            f"{check} failed on {report.target}:\n{describe_failures(report)}",
            check=check,
            details=report.summary.to_dict(),
        )


def require_no_breach(verdict: ContinuousVerdict, *, check: str = "continuous-probe") -> None:
    """Raise :class:`CheckFailed` (details: the verdict as a dict) when a pair crossed a limit."""
    if not verdict.passed:
        shown = "\n".join(f"  {b}" for b in verdict.breaches[:10])
        more = f"\n  ... {len(verdict.breaches) - 10} more" if len(verdict.breaches) > 10 else ""
        raise CheckFailed(
            f"{check}: {len(verdict.breaches)} breaches\n{shown}{more}",
            check=check,
            details=verdict.to_dict(),
        )
