"""Reading probe results: pass rates per kind, baseline comparison, continuous loss and outage windows.

One-off verification (``reachability``)::

    summary = summarize(results, threshold=100.0, baseline=preflight_results)
    summary.passed            # every kind at or above its threshold, never-worked pairs set aside
    summary.regressions       # worked at baseline, fail now: these are the change's fault
    summary.never_worked      # failed at baseline too: reported, not blamed

Continuous probes (``continuous-probe``)::

    stats = continuous_stats(run.snapshot(), period_s=1 / rate_hz)
    verdict = check_continuous(stats, max_loss_pct=0.0, max_outage_ms=None)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from migrator.ports import ProbeKind, ProbeResult

PairKey = tuple[str, str, ProbeKind]
FLAKY_PREFIX = "flaky: "  # an ok result whose first attempt failed (see migrator.probe.engine)


def is_flaky(result: ProbeResult) -> bool:
    return result.ok and (result.error or "").startswith(FLAKY_PREFIX)


def pair_key(result: ProbeResult) -> PairKey:
    return (result.source, result.dest, result.kind)


def result_to_dict(result: ProbeResult) -> dict[str, Any]:
    data = asdict(result)
    data["kind"] = result.kind.value
    return data


def result_from_dict(data: Mapping[str, Any]) -> ProbeResult:
    latency = data.get("latency_ms")
    return ProbeResult(
        source=str(data["source"]),
        dest=str(data["dest"]),
        kind=ProbeKind(str(data["kind"])),
        ok=bool(data["ok"]),
        latency_ms=None if latency is None else float(latency),
        error=None if data.get("error") is None else str(data["error"]),
        ts=float(data.get("ts", 0.0)),
        elapsed_ms=None if data.get("elapsed_ms") is None else float(data["elapsed_ms"]),
    )


# ------------------------------------------------------------------------------------------ one-off


class PairStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"  # fails now, no baseline to compare with
    REGRESSED = "regressed"  # worked at baseline, fails now
    NEVER_WORKED = "never-worked"  # failed at baseline, fails now
    RECOVERED = "recovered"  # failed at baseline, works now


@dataclass(frozen=True)
class KindSummary:
    kind: ProbeKind
    total: int
    ok: int
    failed: int
    never_worked: int
    threshold_pct: float
    median_latency_ms: float | None
    flaky: int = 0

    @property
    def counted(self) -> int:
        """Pairs that count towards the pass rate (never-worked pairs are set aside)."""
        return self.total - self.never_worked

    @property
    def pass_pct(self) -> float:
        return 100.0 if self.counted == 0 else 100.0 * self.ok / self.counted

    @property
    def passed(self) -> bool:
        return self.pass_pct + 1e-9 >= self.threshold_pct

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "never_worked": self.never_worked,
            "flaky": self.flaky,
            "pass_pct": round(self.pass_pct, 3),
            "threshold_pct": self.threshold_pct,
            "passed": self.passed,
            "median_latency_ms": self.median_latency_ms,
        }


@dataclass(frozen=True)
class Summary:
    kinds: tuple[KindSummary, ...]
    statuses: Mapping[PairKey, PairStatus]
    failures: tuple[ProbeResult, ...]
    regressions: tuple[ProbeResult, ...] = ()
    never_worked: tuple[ProbeResult, ...] = ()
    recovered: tuple[ProbeResult, ...] = ()
    missing_from_baseline: int = 0
    has_baseline: bool = False

    @property
    def total(self) -> int:
        return sum(k.total for k in self.kinds)

    @property
    def ok(self) -> int:
        return sum(k.ok for k in self.kinds)

    @property
    def passed(self) -> bool:
        return all(k.passed for k in self.kinds)

    def kind(self, kind: ProbeKind) -> KindSummary | None:
        return next((k for k in self.kinds if k.kind is kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "total": self.total,
            "ok": self.ok,
            "has_baseline": self.has_baseline,
            "kinds": [k.to_dict() for k in self.kinds],
            "failures": [result_to_dict(r) for r in self.failures],
            "regressions": [result_to_dict(r) for r in self.regressions],
            "never_worked": [result_to_dict(r) for r in self.never_worked],
            "recovered": [result_to_dict(r) for r in self.recovered],
        }


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    value = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return round(value, 3)


def _threshold(threshold: float | Mapping[ProbeKind, float], kind: ProbeKind) -> float:
    if isinstance(threshold, Mapping):
        return float(threshold.get(kind, 100.0))
    return float(threshold)


def summarize(
    results: Sequence[ProbeResult],
    *,
    threshold: float | Mapping[ProbeKind, float] = 100.0,
    baseline: Sequence[ProbeResult] | None = None,
    identity: Mapping[str, str] | None = None,
) -> Summary:
    """Pass rate per kind against ``threshold`` (percent, per kind or for all).

    With a ``baseline`` (the preflight run), a pair failing now and at baseline is ``never-worked``: it is
    reported and does not count against the pass rate. A pair missing from the baseline counts as usual.
    If a pair appears several times in ``results`` (repeats), it is ok only if every attempt was.

    ``identity`` maps probe endpoints (pod keys) to stable names (their workload, see
    :func:`migrator.probe.matrix.workload_identities`): pods restarted during a migration get new names,
    so a pair missing from the baseline is looked up again by identities. It takes the baseline's status
    when every baseline pair with those identities agreed (all ok, or all failed), else it stays unknown.
    """
    current = _worst_attempts(results)
    base = None if baseline is None else _Baseline.of(baseline, identity or {})
    was_ok = {key: None if base is None else base.was_ok(key) for key in current}
    statuses = {key: _status(r.ok, was_ok[key]) for key, r in current.items()}

    def having(*wanted: PairStatus) -> tuple[ProbeResult, ...]:
        return tuple(current[k] for k, s in statuses.items() if s in wanted)

    return Summary(
        kinds=_kind_summaries(current, statuses, threshold),
        statuses=statuses,
        failures=having(PairStatus.FAILED, PairStatus.REGRESSED, PairStatus.NEVER_WORKED),
        regressions=having(PairStatus.REGRESSED),
        never_worked=having(PairStatus.NEVER_WORKED),
        recovered=having(PairStatus.RECOVERED),
        missing_from_baseline=0 if base is None else sum(ok is None for ok in was_ok.values()),
        has_baseline=base is not None,
    )


def _worst_attempts(results: Iterable[ProbeResult]) -> dict[PairKey, ProbeResult]:
    """One result per pair: its first failed attempt, else its first attempt."""
    current: dict[PairKey, ProbeResult] = {}
    for r in results:
        key = pair_key(r)
        prev = current.get(key)
        if prev is None or (prev.ok and not r.ok):
            current[key] = r
    return current


@dataclass(frozen=True)
class _Baseline:
    """Whether each pair worked at baseline (every attempt ok), by pair and by the identities of its
    endpoints (``None`` there: the baseline pairs with those identities disagreed)."""

    ok: Mapping[PairKey, bool]
    identity: Mapping[str, str]
    by_identity: Mapping[PairKey, bool | None]

    @classmethod
    def of(cls, baseline: Iterable[ProbeResult], identity: Mapping[str, str]) -> _Baseline:
        ok: dict[PairKey, bool] = {}
        for r in baseline:
            key = pair_key(r)
            ok[key] = ok.get(key, True) and r.ok
        by_identity: dict[PairKey, bool | None] = {}
        for key, worked in (ok if identity else {}).items():
            k = _identified(key, identity)
            by_identity[k] = worked if k not in by_identity or by_identity[k] == worked else None
        return cls(ok, identity, by_identity)

    def was_ok(self, key: PairKey) -> bool | None:
        """The pair's baseline status, looked up by identities when the pair itself is missing."""
        worked = self.ok.get(key)
        if worked is None and self.by_identity:
            worked = self.by_identity.get(_identified(key, self.identity))
        return worked


def _identified(key: PairKey, identity: Mapping[str, str]) -> PairKey:
    return (identity.get(key[0], key[0]), identity.get(key[1], key[1]), key[2])


def _status(ok: bool, was_ok: bool | None) -> PairStatus:
    """A pair's status from its result now and at baseline (``None``: no baseline for it)."""
    if ok:
        return PairStatus.RECOVERED if was_ok is False else PairStatus.OK
    if was_ok is None:
        return PairStatus.FAILED
    return PairStatus.REGRESSED if was_ok else PairStatus.NEVER_WORKED


def _kind_summaries(
    current: Mapping[PairKey, ProbeResult],
    statuses: Mapping[PairKey, PairStatus],
    threshold: float | Mapping[ProbeKind, float],
) -> tuple[KindSummary, ...]:
    """One summary per probe kind that has results, in :class:`ProbeKind` order."""
    by_kind: dict[ProbeKind, list[PairKey]] = defaultdict(list)
    for key in current:
        by_kind[key[2]].append(key)
    kinds = []
    for kind in ProbeKind:
        keys = by_kind.get(kind)
        if not keys:
            continue
        oks = [current[k] for k in keys if current[k].ok]
        never = sum(statuses[k] is PairStatus.NEVER_WORKED for k in keys)
        kinds.append(
            KindSummary(
                kind=kind,
                total=len(keys),
                ok=len(oks),
                failed=len(keys) - len(oks),
                never_worked=never,
                threshold_pct=_threshold(threshold, kind),
                median_latency_ms=_median([r.latency_ms for r in oks if r.latency_ms is not None]),
                flaky=sum(is_flaky(r) for r in oks),
            )
        )
    return tuple(kinds)


@dataclass(frozen=True)
class Grid:
    """A source x destination view of some results (for text matrices and heat maps)."""

    sources: tuple[str, ...]
    dests: tuple[str, ...]
    cells: Mapping[tuple[str, str], bool]  # absent: not probed; several kinds: ok only if all ok

    def cell(self, source: str, dest: str) -> bool | None:
        return self.cells.get((source, dest))


def grid(results: Iterable[ProbeResult], kinds: Iterable[ProbeKind] | None = None) -> Grid:
    wanted = set(kinds) if kinds is not None else None
    cells: dict[tuple[str, str], bool] = {}
    sources: dict[str, None] = {}
    dests: dict[str, None] = {}
    for r in results:
        if wanted is not None and r.kind not in wanted:
            continue
        sources[r.source] = None
        dests[r.dest] = None
        cells[(r.source, r.dest)] = cells.get((r.source, r.dest), True) and r.ok
    return Grid(tuple(sorted(sources)), tuple(sorted(dests)), cells)


# --------------------------------------------------------------------------------------- continuous


@dataclass(frozen=True)
class PairLoss:
    source: str
    dest: str
    kind: ProbeKind
    sent: int
    lost: int
    longest_outage_ms: float
    outages: int
    first_ts: float
    last_ts: float

    @property
    def loss_pct(self) -> float:
        return 0.0 if self.sent == 0 else 100.0 * self.lost / self.sent

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["loss_pct"] = round(self.loss_pct, 3)
        return data


def continuous_stats(results: Iterable[ProbeResult], *, period_s: float) -> list[PairLoss]:
    """Loss and outage windows per pair.

    An outage is a run of consecutive failed probes (by send time). Its window runs from the first failed
    probe to the next successful one; an outage still open at the end lasts until the last probe plus one
    period. A single lost probe at 20 Hz is thus a 50 ms outage.
    """
    per_pair: dict[PairKey, list[ProbeResult]] = defaultdict(list)
    for r in results:
        per_pair[pair_key(r)].append(r)
    out: list[PairLoss] = []
    for key, rs in sorted(per_pair.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2].value)):
        rs.sort(key=lambda r: r.ts)
        longest = 0.0
        outages = 0
        start: float | None = None
        for r in rs:
            if not r.ok and start is None:
                start = r.ts
                outages += 1
            elif r.ok and start is not None:
                longest = max(longest, r.ts - start)
                start = None
        if start is not None:
            longest = max(longest, rs[-1].ts - start + period_s)
        out.append(
            PairLoss(
                source=key[0],
                dest=key[1],
                kind=key[2],
                sent=len(rs),
                lost=sum(not r.ok for r in rs),
                longest_outage_ms=round(longest * 1000.0, 3),
                outages=outages,
                first_ts=rs[0].ts,
                last_ts=rs[-1].ts,
            )
        )
    return out


@dataclass(frozen=True)
class ContinuousVerdict:
    passed: bool
    breaches: tuple[str, ...] = ()
    pairs: tuple[PairLoss, ...] = field(default_factory=tuple)

    @property
    def total_sent(self) -> int:
        return sum(p.sent for p in self.pairs)

    @property
    def total_loss_pct(self) -> float:
        sent = self.total_sent
        return 0.0 if sent == 0 else 100.0 * sum(p.lost for p in self.pairs) / sent

    @property
    def longest_outage_ms(self) -> float:
        return max((p.longest_outage_ms for p in self.pairs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "breaches": list(self.breaches),
            "total_sent": self.total_sent,
            "total_loss_pct": round(self.total_loss_pct, 3),
            "longest_outage_ms": self.longest_outage_ms,
            "pairs": [p.to_dict() for p in self.pairs],
        }


def check_continuous(
    stats: Sequence[PairLoss], *, max_loss_pct: float | None = None, max_outage_ms: float | None = None
) -> ContinuousVerdict:
    """Breaches of per-pair limits (``None``: no limit). ``max_loss_pct=0`` means no probe may fail."""
    breaches: list[str] = []
    for p in stats:
        name = f"{p.source} -> {p.dest} ({p.kind.value})"
        if max_loss_pct is not None and p.loss_pct > max_loss_pct + 1e-9:
            breaches.append(f"{name}: loss {p.loss_pct:.1f}% > {max_loss_pct:g}% ({p.lost}/{p.sent})")
        if max_outage_ms is not None and p.longest_outage_ms > max_outage_ms:
            breaches.append(f"{name}: outage {p.longest_outage_ms:.0f} ms > {max_outage_ms:g} ms")
    return ContinuousVerdict(passed=not breaches, breaches=tuple(breaches), pairs=tuple(stats))


@dataclass(frozen=True)
class LossBucket:
    start_s: float  # seconds since the first probe
    sent: int
    lost: int

    @property
    def loss_pct(self) -> float:
        return 0.0 if self.sent == 0 else 100.0 * self.lost / self.sent


def loss_timeline(results: Sequence[ProbeResult], *, bucket_s: float = 1.0) -> list[LossBucket]:
    """Loss over time in fixed buckets (for the report's loss chart)."""
    if not results:
        return []
    t0 = min(r.ts for r in results)
    count = math.floor((max(r.ts for r in results) - t0) / bucket_s) + 1
    sent = [0] * count
    lost = [0] * count
    for r in results:
        i = min(count - 1, int((r.ts - t0) / bucket_s))
        sent[i] += 1
        lost[i] += 0 if r.ok else 1
    return [LossBucket(round(i * bucket_s, 6), sent[i], lost[i]) for i in range(count)]
