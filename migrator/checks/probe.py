"""The ``continuous-probe`` monitor: pairs probed at a fixed rate for a whole stage, aborting it on loss.

Lifecycle (see :class:`migrator.checks.base.Checker` and :mod:`migrator.engine.monitor`), state in
``ctx.store``:

- ``monitor_start`` picks the pairs and starts a continuous run (a *segment*).
- every ``run`` round (every ``monitor_interval``, 2 s by default) accounts the probes that are final
  (sent more than ``probe_timeout`` + 0.5 s ago), then fails the check, which aborts the stage, when a pair's
  loss passes ``max_loss``, its longest outage passes ``max_outage``, or the availability of all probes
  stayed under ``min_availability`` for ``abort_after``.
- ``monitor_stop`` stops the run, accounts everything, writes ``<stage>-continuous.json`` to the check's
  artifacts folder (loss per second, per-pair stats, segments, waves) and returns the final verdict.

Pairs and waves (``exclude_wave_nodes``). A stage's waves change while the monitor runs, and a drain moves
pods to other nodes under new names, so pairs are re-picked: a new segment starts (fresh pairs from the
current pods, leaving out the pods on the nodes of a wave in progress) after every wave end. The waves
come from the engine (``ctx.waves``: each wave's start, taken before its first step, and end, on the
clock of the probes' ``ts``, read at every round and again before the final accounting); outside the
engine from the run journal (``wave.start``/``wave.end`` of this stage); without a journal, from the
changes of ``ctx.nodes`` between rounds. A probe is *excused* (recorded as such, never counted as lost:
the pods on the changed nodes are expected to go) when its pair touches a node (its source pod's or
destination pod's node when the segment's pods were listed, or the node of a NodePort probe) of a wave
that had started by the time the probe's outcome was known (``ts`` + ``elapsed_ms``: a probe sent just
before the drain dies with the pod) and had not ended before the segment's pods were listed. The first
segment is picked before the first wave starts, so without this rule every pair touching a later wave's
node would fail its budget. With ``exclude_wave_nodes: false`` no pod is left out and nothing is excused
(pairs are still re-picked).

Pairs by ``scope``: ``cross-node`` (default) pod to pod on other nodes, ``all`` pod to pod anywhere,
``services`` pod to ClusterIP (its endpoints may sit on the changed nodes: such losses are not excused).
``nodeport: [NS/]NAME`` adds ``outside`` -> every node outside the current wave on that service's
NodePort. ``sample_pairs`` keeps a seeded sample of the pod pairs (NodePort probes are not sampled).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.actions.context import CheckContext, PreviewLine, WaveLog
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.errors import UsageError
from migrator.fsutil import atomic_write_json
from migrator.plan.models import ContinuousProbeCheck, ProbeScope
from migrator.policy.model import Verdict
from migrator.ports import Cluster, ContinuousProbe, ProbeKind, ProbeProtocol, ProbeResult, ProbeTarget
from migrator.probe.engine import CONTINUOUS_MAX_PROBES
from migrator.probe.matrix import OUTSIDE, MatrixOptions, build_matrix
from migrator.probe.policy import PolicyCase, PolicyOptions, PolicyStatus, judge, policy_cases
from migrator.probe.suite import require_prober
from migrator.runs.events import WaveEnd, WaveStart, parse_event

STORE_KEY = "continuous-probe"
SETTLE_S = 0.5
"""A probe is final once ``probe_timeout`` + this has passed since it was sent."""
MAX_LISTED_PAIRS = 200


# ------------------------------------------------------------------------------------------ waves


@dataclass
class Wave:
    index: int
    nodes: frozenset[str]
    start: float
    end: float | None = None


def _parse_ts(raw: str) -> float:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


@dataclass
class WaveTracker:
    """The waves of one stage: from the engine's :class:`~migrator.actions.context.WaveLog` when the check
    runs in the engine (exact, on the probes' clock, and never behind the steps); else from the journal
    (``wave.start``/``wave.end``, as of the last read); else from ``ctx.nodes`` seen at each round."""

    journal: Path
    stage: str | None
    log: WaveLog | None = None
    offset: int = 0
    pending: bytes = b""
    waves: dict[int, Wave] = field(default_factory=dict)
    from_journal: bool = False
    last_nodes: frozenset[str] = frozenset()
    last_round: float = 0.0

    def update(self, ctx_nodes: frozenset[str], now: float) -> None:
        if self.log is not None:
            self.waves = {w.index: Wave(w.index, w.nodes, w.start, w.end) for w in self.log.of(self.stage)}
        else:
            self._read_journal()
            if not self.from_journal:
                self._from_ctx(ctx_nodes, now)
        self.last_round = now

    def _read_journal(self) -> None:
        try:
            with self.journal.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        self.offset += len(data)
        data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            if b'"wave.' not in line:
                continue
            try:
                raw = json.loads(line)
                ev = parse_event(raw) if isinstance(raw, dict) else None
            except ValueError:  # not JSON, or not an event (EventError)
                continue
            if not isinstance(ev, WaveStart | WaveEnd) or ev.stage != self.stage:
                continue
            self.from_journal = True
            ts = _parse_ts(ev.ts)
            if isinstance(ev, WaveStart):
                self.waves[ev.wave] = Wave(ev.wave, frozenset(ev.nodes), ts)
            elif ev.wave in self.waves:
                self.waves[ev.wave].end = ts

    def _from_ctx(self, nodes: frozenset[str], now: float) -> None:
        if nodes == self.last_nodes:
            return
        current = self.in_progress()
        if current is not None:
            current.end = now
        if nodes:
            # it started at some time since the last round: be conservative
            start = self.last_round or now
            index = len(self.waves)
            self.waves[index] = Wave(index, nodes, start)
        self.last_nodes = nodes

    def in_progress(self) -> Wave | None:
        return next((w for w in self.waves.values() if w.end is None), None)

    def ended_since(self, ts: float) -> bool:
        return any(w.end is not None and w.end >= ts for w in self.waves.values())

    def to_list(self) -> list[dict[str, Any]]:
        return [
            {"wave": w.index, "nodes": sorted(w.nodes), "start": w.start, "end": w.end}
            for w in sorted(self.waves.values(), key=lambda w: w.index)
        ]


# -------------------------------------------------------------------------------------- accounting


@dataclass
class PairState:
    source: str
    dest: str
    kind: ProbeKind
    sent: int = 0
    lost: int = 0
    excused: int = 0
    outages: int = 0
    longest_outage_s: float = 0.0
    outage_start: float | None = None
    last_ts: float = 0.0
    holes: int = 0  # scope policy: expected deny, answered
    breaks: int = 0  # scope policy: expected allow, denied
    errors: int = 0  # scope policy: prober errors (inconclusive, counted as lost)
    expected_deny: int = 0  # scope policy: probes whose expected verdict was deny

    @property
    def loss_pct(self) -> float:
        return 0.0 if self.sent == 0 else 100.0 * self.lost / self.sent

    def outage_now_s(self, period: float) -> float:
        """The longest outage, counting an open one until the last probe plus one period."""
        open_s = 0.0 if self.outage_start is None else self.last_ts - self.outage_start + period
        return max(self.longest_outage_s, open_s)

    def add(self, r: ProbeResult) -> None:
        self.sent += 1
        self.last_ts = r.ts
        if r.ok:
            if self.outage_start is not None:
                self.longest_outage_s = max(self.longest_outage_s, r.ts - self.outage_start)
                self.outage_start = None
        else:
            self.lost += 1
            if self.outage_start is None:
                self.outage_start = r.ts
                self.outages += 1

    def to_dict(self, period: float) -> dict[str, Any]:
        return {
            "source": self.source,
            "dest": self.dest,
            "kind": self.kind.value,
            "sent": self.sent,
            "lost": self.lost,
            "excused": self.excused,
            "loss_pct": round(self.loss_pct, 3),
            "outages": self.outages,
            "longest_outage_ms": round(self.outage_now_s(period) * 1000.0, 1),
            **(
                {
                    "holes": self.holes,
                    "breaks": self.breaks,
                    "errors": self.errors,
                    "expected_deny": self.expected_deny,
                }
                if self.kind is ProbeKind.POLICY
                else {}
            ),
        }


@dataclass
class Segment:
    run: ContinuousProbe
    pairs: list[ProbeTarget]
    touches: dict[tuple[str, str, ProbeKind], frozenset[str]]
    picked_at: float
    ends_at: float
    excluded: frozenset[str]
    horizon: float = 0.0  # results sent before this are accounted
    stopped: bool = False
    expected: dict[tuple[str, str, ProbeKind], PolicyCase] = field(default_factory=dict)
    """scope policy: each pair's case (its expected verdict); a result is lost when it does not match."""


@dataclass
class MonitorState:
    check: ContinuousProbeCheck
    stage: str | None
    waves: WaveTracker
    started_at: float
    segments: list[Segment] = field(default_factory=list)
    pairs: dict[tuple[str, str, ProbeKind], PairState] = field(default_factory=dict)
    buckets: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    """second since start -> [sent, lost, excused]"""

    @property
    def period(self) -> float:
        return 1.0 / self.check.rate_hz

    def excused(self, seg: Segment, r: ProbeResult) -> bool:
        """Whether the pair of ``r`` touched a node of a wave while ``r`` was out: the wave had started by
        the time its outcome was known (a probe sent just before the drain dies with the pod) and had not
        ended before the segment's pods were listed (a later segment has the pods the wave moved)."""
        if not self.check.exclude_wave_nodes:  # every pair is judged, also those on the wave's nodes
            return False
        nodes = seg.touches.get((r.source, r.dest, r.kind), frozenset())
        if not nodes:
            return False
        done = r.done
        if done is None:  # the prober does not say when: judged by when it was sent
            done = r.ts + (r.latency_ms or 0.0) / 1000.0
        for w in self.waves.waves.values():
            if w.nodes & nodes and w.start <= done and (w.end is None or w.end >= seg.picked_at):
                return True
        return False

    def account(self, seg: Segment, upto: float) -> None:
        take = getattr(seg.run, "take", None)  # ContinuousRun: hands over the results once, forgets them
        if callable(take):
            results: list[ProbeResult] = take(upto)
        else:  # any ContinuousProbe: the results of the window not accounted yet
            results = [r for r in seg.run.snapshot() if seg.horizon <= r.ts < upto]
        for r in results:
            key = (r.source, r.dest, r.kind)
            pair = self.pairs.get(key)
            if pair is None:
                pair = self.pairs[key] = PairState(r.source, r.dest, r.kind)
            bucket = self.buckets[int(max(0.0, r.ts - self.started_at))]
            if self.excused(seg, r):
                pair.excused += 1
                bucket[2] += 1
                continue
            case = seg.expected.get(key)
            seen = r if case is None else self._judged(pair, case, r)
            pair.add(seen)
            bucket[0] += 1
            bucket[1] += 0 if seen.ok else 1
        seg.horizon = max(seg.horizon, upto)

    @staticmethod
    def _judged(pair: PairState, case: PolicyCase, r: ProbeResult) -> ProbeResult:
        """A policy probe as the loss accounting sees it: ok when it matched the expectation."""
        judged = judge(case, r)
        if case.expected is Verdict.DENY:
            pair.expected_deny += 1
        if judged.status is PolicyStatus.HOLE:
            pair.holes += 1
        elif judged.status is PolicyStatus.BREAK:
            pair.breaks += 1
        elif judged.status is PolicyStatus.ERROR:
            pair.errors += 1
        if judged.ok:
            return replace(r, ok=True, error=None)
        return replace(r, ok=False, error=f"{judged.status.value}: {r.error or 'answered'}")

    def policy_totals(self) -> dict[str, int]:
        pairs = [p for p in self.pairs.values() if p.kind is ProbeKind.POLICY]
        return {
            "holes": sum(p.holes for p in pairs),
            "breaks": sum(p.breaks for p in pairs),
            "errors": sum(p.errors for p in pairs),
            "expected_deny": sum(p.expected_deny for p in pairs),
            "expected_allow": sum(p.sent - p.expected_deny for p in pairs),
            "pairs_with_holes": sum(p.holes > 0 for p in pairs),
            "pairs_with_breaks": sum(p.breaks > 0 for p in pairs),
        }

    def totals(self) -> tuple[int, int, int]:
        sent = sum(p.sent for p in self.pairs.values())
        lost = sum(p.lost for p in self.pairs.values())
        excused = sum(p.excused for p in self.pairs.values())
        return sent, lost, excused

    def breaches(self, *, final: bool) -> list[str]:
        return [str(b["message"]) for b in self.breach_details(final=final)]

    def breach_details(self, *, final: bool) -> list[dict[str, Any]]:
        """Every abort condition passed: ``{kind: loss|outage|availability, subject, value, threshold, unit,
        window_s, from_s, to_s, message}`` (reports show value against threshold)."""
        c = self.check
        out: list[dict[str, Any]] = []

        def add(  # noqa: PLR0917 - a local helper, positional like the sentence it builds
            kind: str, subject: str, value: float, threshold: float, unit: str, message: str, **kw: Any
        ) -> None:
            out.append(
                {
                    "kind": kind,
                    "subject": subject,
                    "value": round(value, 3),
                    "threshold": round(threshold, 3),
                    "unit": unit,
                    "window_s": kw.get("window_s"),
                    "from_s": kw.get("from_s"),
                    "to_s": kw.get("to_s"),
                    "message": message,
                }
            )

        for p in sorted(self.pairs.values(), key=lambda p: (p.source, p.dest, p.kind.value)):
            name = f"{p.source} -> {p.dest} ({p.kind.value})"
            if p.kind is ProbeKind.POLICY and p.loss_pct > c.max_loss * 100.0 + 1e-9:
                add(
                    "policy",
                    name,
                    p.loss_pct,
                    c.max_loss * 100,
                    "%",
                    f"{name}: {p.holes} holes, {p.breaks} breaks, {p.errors} prober errors in {p.sent} "
                    f"probes ({p.loss_pct:.1f}% > {c.max_loss * 100:g}%)",
                )
            elif p.loss_pct > c.max_loss * 100.0 + 1e-9:
                add(
                    "loss",
                    name,
                    p.loss_pct,
                    c.max_loss * 100,
                    "%",
                    f"{name}: loss {p.loss_pct:.1f}% > {c.max_loss * 100:g}% ({p.lost}/{p.sent})",
                )
            outage = p.outage_now_s(self.period)
            if c.max_outage is not None and outage > c.max_outage:
                add(
                    "outage",
                    name,
                    outage * 1000,
                    c.max_outage * 1000,
                    "ms",
                    f"{name}: outage {outage * 1000:.0f} ms > {c.max_outage * 1000:.0f} ms",
                )
        if c.min_availability is not None:
            window = max(1, math.ceil(c.abort_after))
            done = sorted(self.buckets)
            last_complete = int(time.time() - self.started_at - c.probe_timeout - SETTLE_S) - 1
            if final:
                last_complete = done[-1] if done else -1
            seconds = [s for s in range(last_complete - window + 1, last_complete + 1) if s >= 0]
            if len(seconds) == window and all(self.buckets.get(s, [0])[0] > 0 for s in seconds):
                sent = sum(self.buckets[s][0] for s in seconds)
                ok = sent - sum(self.buckets[s][1] for s in seconds)
                if ok / sent < c.min_availability - 1e-9:
                    add(
                        "availability",
                        "all probes",
                        100 * ok / sent,
                        c.min_availability * 100,
                        "%",
                        f"availability {100 * ok / sent:.1f}% < {c.min_availability * 100:g}% "
                        f"for {window}s (seconds {seconds[0]}-{seconds[-1]} of the stage)",
                        window_s=window,
                        from_s=seconds[0],
                        to_s=seconds[-1] + 1,
                    )
        return out

    def details(self, *, final: bool) -> dict[str, Any]:
        sent, lost, excused = self.totals()
        pairs = sorted(self.pairs.values(), key=lambda p: (-p.lost, p.source, p.dest))
        return {
            "stage": self.stage,
            "rate_hz": self.check.rate_hz,
            "final": final,
            "sent": sent,
            "lost": lost,
            "excused": excused,
            "loss_pct": round(0.0 if sent == 0 else 100.0 * lost / sent, 3),
            "longest_outage_ms": round(
                max((p.outage_now_s(self.period) for p in self.pairs.values()), default=0.0) * 1000.0, 1
            ),
            "pairs_count": len(pairs),
            "pairs": [p.to_dict(self.period) for p in pairs[:MAX_LISTED_PAIRS]],
            "segments": len(self.segments),
            "waves": self.waves.to_list(),
            **({"policy": self.policy_totals()} if self.check.scope is ProbeScope.POLICY else {}),
        }

    def timeseries(self) -> list[dict[str, Any]]:
        if not self.buckets:
            return []
        last = max(self.buckets)
        out = []
        for s in range(last + 1):
            sent, lost, excused = self.buckets.get(s, [0, 0, 0])
            out.append(
                {
                    "t": s,
                    "sent": sent,
                    "lost": lost,
                    "excused": excused,
                    "loss_pct": round(0.0 if sent == 0 else 100.0 * lost / sent, 3),
                }
            )
        return out


# ------------------------------------------------------------------------------------------ pairs


def _nodeport_targets(
    cluster: Cluster, check: ContinuousProbeCheck, exclude: frozenset[str]
) -> list[ProbeTarget]:
    assert check.nodeport is not None
    ns, _, name = check.nodeport.rpartition("/")
    ns = ns or "default"
    svc = next((s for s in cluster.list_services(ns) if s.name == name and s.namespace == ns), None)
    if svc is None:
        raise UsageError(f"continuous-probe: no service {ns}/{name} for nodeport")
    port = next((p for p in svc.ports if p.node_port and p.protocol.upper() == "TCP"), None)
    if port is None or port.node_port is None:
        raise UsageError(f"continuous-probe: service {ns}/{name} has no TCP NodePort")
    return [
        ProbeTarget(
            source=OUTSIDE,
            dest=f"{ns}/{name}@{n.name}",
            kind=ProbeKind.NODEPORT,
            host=n.address,
            port=port.node_port,
            protocol=ProbeProtocol.HTTP,
            path=check.path,
            expect_status=200,
            timeout=check.probe_timeout,
        )
        for n in sorted(cluster.list_nodes(), key=lambda n: n.name)
        if n.name not in exclude
    ]


def pick_policy_pairs(
    cluster: Cluster, check: ContinuousProbeCheck, exclude: frozenset[str], *, salt: int = 0
) -> tuple[list[ProbeTarget], dict[tuple[str, str, ProbeKind], PolicyCase]]:
    """``scope: policy``: a seeded sample (``sample_pairs``) of the policy cases, allowed and denied."""
    options = PolicyOptions(
        namespaces=None if check.namespaces is None else frozenset(check.namespaces),
        timeout=check.probe_timeout,
        exclude_nodes=exclude if check.exclude_wave_nodes else frozenset(),
    )
    chosen, _ = policy_cases(cluster, options, sample=check.sample_pairs, seed=check.seed, salt=salt)
    if check.sample_pairs is None:
        chosen = [c for c in chosen if c.target is not None]
    pairs = [c.target for c in chosen if c.target is not None]
    return pairs, {(t.source, t.dest, t.kind): c for t, c in zip(pairs, chosen, strict=True)}


def pick_pairs(
    cluster: Cluster, check: ContinuousProbeCheck, exclude: frozenset[str], *, salt: int = 0
) -> tuple[list[ProbeTarget], dict[tuple[str, str, ProbeKind], frozenset[str]]]:
    """The pairs of a segment and, for each, the nodes it touches (for excusing wave losses)."""
    if check.scope is ProbeScope.POLICY:
        pairs, _ = pick_policy_pairs(cluster, check, exclude, salt=salt)
        return pairs, touched_nodes(cluster, pairs)
    kinds = {
        ProbeScope.CROSS_NODE: frozenset({ProbeKind.POD_CROSS_NODE}),
        ProbeScope.ALL: frozenset({ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE}),
        ProbeScope.SERVICES: frozenset({ProbeKind.SERVICE_IP}),
    }[check.scope]
    options = MatrixOptions(
        kinds=kinds,
        path=check.path,
        timeout=check.probe_timeout,
        exclude_nodes=exclude if check.exclude_wave_nodes else frozenset(),
    )
    pairs = build_matrix(cluster, options)
    if check.sample_pairs is not None and len(pairs) > check.sample_pairs:
        rng = random.Random(f"{check.seed}|{salt}")
        pairs = [pairs[i] for i in sorted(rng.sample(range(len(pairs)), check.sample_pairs))]
    if check.nodeport:
        pairs += _nodeport_targets(cluster, check, exclude if check.exclude_wave_nodes else frozenset())
    return pairs, touched_nodes(cluster, pairs)


def touched_nodes(
    cluster: Cluster, pairs: list[ProbeTarget]
) -> dict[tuple[str, str, ProbeKind], frozenset[str]]:
    """For each pair, the nodes it touches: its source pod's, its destination pod's (pod and policy
    probes; a policy probe's destination is ``ns/pod:port/protocol``), a NodePort probe's node."""
    node_of = {p.key: p.node for p in cluster.list_pods()}
    touches: dict[tuple[str, str, ProbeKind], frozenset[str]] = {}
    for t in pairs:
        nodes = {node_of.get(t.source, "")}
        if t.kind in (ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE):
            nodes.add(node_of.get(t.dest, ""))
        if t.kind is ProbeKind.POLICY:
            nodes.add(node_of.get(t.dest.rpartition(":")[0], ""))
        if t.kind is ProbeKind.NODEPORT:
            nodes = {t.dest.rpartition("@")[2]}
        touches[(t.source, t.dest, t.kind)] = frozenset(n for n in nodes if n)
    return touches


# ----------------------------------------------------------------------------------------- check


def _state(ctx: CheckContext) -> MonitorState:
    state = ctx.store.get(STORE_KEY)
    if not isinstance(state, MonitorState):
        raise UsageError("continuous-probe: the monitor was not started (monitor_start)")
    return state


def _start_segment(ctx: CheckContext, state: MonitorState) -> Segment | None:
    check = state.check
    picked = time.time()  # before the pods are listed: a wave ending while they are is this segment's
    state.waves.update(frozenset(n.name for n in ctx.nodes), picked)
    current = state.waves.in_progress()
    exclude = frozenset(n.name for n in ctx.nodes) | (current.nodes if current else frozenset())
    expected: dict[tuple[str, str, ProbeKind], PolicyCase] = {}
    if check.scope is ProbeScope.POLICY:
        pairs, expected = pick_policy_pairs(ctx.cluster, check, exclude, salt=len(state.segments))
        touches = touched_nodes(ctx.cluster, pairs)
    else:
        pairs, touches = pick_pairs(ctx.cluster, check, exclude, salt=len(state.segments))
    if not pairs:
        logger.warning("continuous-probe: no pair to probe outside nodes {}", sorted(exclude))
        return None
    room = CONTINUOUS_MAX_PROBES / (len(pairs) * check.rate_hz) * 0.9
    duration = max(1.0, min(check.max_duration - (time.time() - state.started_at), room))
    prober = require_prober(ctx.target)
    now = time.time()
    run = prober.start_continuous(pairs, rate_hz=check.rate_hz, max_duration=duration)
    seg = Segment(
        run,
        pairs,
        touches,
        picked_at=picked,
        ends_at=now + duration,
        excluded=exclude,
        horizon=now,
        expected=expected,
    )
    state.segments.append(seg)
    logger.info(
        "continuous-probe: segment {} with {} pairs at {:g} Hz (leaving out nodes {})",
        len(state.segments),
        len(pairs),
        check.rate_hz,
        sorted(exclude) or "none",
    )
    ctx.emit({"type": "continuous.segment", "pairs": len(pairs), "excluded": sorted(exclude)})
    return seg


def _stop_segment(state: MonitorState, seg: Segment) -> None:
    if not seg.stopped:
        seg.stopped = True
        seg.run.stop()
    state.account(seg, math.inf)


def _write(ctx: CheckContext, state: MonitorState, details: dict[str, Any]) -> Path:
    name = (state.stage or "stage").replace("/", "_").replace(" ", "_")
    path = ctx.artifacts() / f"{name}-continuous.json"
    atomic_write_json(path, {**details, "started_at": state.started_at, "timeseries": state.timeseries()})
    return path


@register_check("continuous-probe")
class ContinuousProbeChecker(Checker[ContinuousProbeCheck]):
    def monitor_start(self, ctx: CheckContext, check: ContinuousProbeCheck) -> None:
        now = time.time()
        tracker = WaveTracker(ctx.run_dir / "journal.jsonl", ctx.stage, ctx.waves)
        state = MonitorState(check, ctx.stage, tracker, now)
        state.waves.update(frozenset(n.name for n in ctx.nodes), now)
        ctx.store[STORE_KEY] = state
        if _start_segment(ctx, state) is None:
            raise UsageError("continuous-probe: no pair to probe (no ready pods outside the wave?)")

    def run(self, ctx: CheckContext, check: ContinuousProbeCheck) -> CheckResult:
        if STORE_KEY not in ctx.store:  # used as a plain verify check: a short burst
            return self._burst(ctx, check)
        state = _state(ctx)
        now = time.time()
        state.waves.update(frozenset(n.name for n in ctx.nodes), now)
        settled = now - check.probe_timeout - SETTLE_S
        seg = state.segments[-1] if state.segments else None
        if seg is not None:
            state.account(seg, settled)
        renew = seg is None or state.waves.ended_since(seg.picked_at) or now >= seg.ends_at
        if renew and now - state.started_at < check.max_duration:
            if seg is not None:
                _stop_segment(state, seg)
            _start_segment(ctx, state)
        found = state.breach_details(final=False)
        breaches = [str(b["message"]) for b in found]
        details = state.details(final=False)
        details["passed"] = not breaches
        if breaches:
            details["breaches"] = breaches
            details["breach_details"] = found
            details["timeseries_file"] = str(_write(ctx, state, details))
            return CheckResult(False, _summary(details, breaches), details)
        return CheckResult(True, _summary(details, []), details)

    def monitor_stop(self, ctx: CheckContext, check: ContinuousProbeCheck) -> CheckResult | None:
        state = _state(ctx)
        errors = []
        for seg in state.segments:  # stop probing first, then learn every wave, then account
            try:
                if not seg.stopped:
                    seg.stopped = True
                    seg.run.stop()
            except Exception as exc:  # noqa: BLE001 - every segment must be stopped; reported below
                errors.append(str(exc))
        # the waves that started since the last round (the last one may have had none) excuse its probes
        state.waves.update(frozenset(n.name for n in ctx.nodes), time.time())
        for seg in state.segments:
            state.account(seg, math.inf)
        found = state.breach_details(final=True)
        breaches = [str(b["message"]) for b in found]
        details = state.details(final=True)
        details["breaches"] = breaches
        details["breach_details"] = found
        details["errors"] = errors
        details["passed"] = not breaches and not errors
        details["timeseries_file"] = str(_write(ctx, state, details))
        ctx.store.pop(STORE_KEY, None)
        if errors:
            return CheckResult(False, f"continuous probe failed: {errors[0]}", details)
        return CheckResult(not breaches, _summary(details, breaches), details)

    def _burst(self, ctx: CheckContext, check: ContinuousProbeCheck) -> CheckResult:
        """Outside a monitor: probe for ``abort_after`` seconds (bounded) and judge the result."""
        self.monitor_start(ctx, check)
        try:
            end = time.monotonic() + min(check.abort_after, max(0.5, ctx.remaining() - 5.0))
            while time.monotonic() < end and not ctx.cancel.is_set():
                ctx.cancel.wait(min(0.2, max(0.0, end - time.monotonic())))
        finally:
            result = self.monitor_stop(ctx, check)
        assert result is not None
        return result

    def preview(self, ctx: CheckContext, check: ContinuousProbeCheck) -> list[PreviewLine]:
        where = "pods not on the wave's nodes" if check.exclude_wave_nodes else "all pods"
        np = f", plus outside -> NodePort of {check.nodeport}" if check.nodeport else ""
        limits = f"max loss {check.max_loss * 100:g}%"
        if check.max_outage is not None:
            limits += f", max outage {check.max_outage * 1000:.0f} ms"
        if check.min_availability is not None:
            floor = f"{check.min_availability * 100:g}%"
            limits += f", abort when availability < {floor} for {check.abort_after:g}s"
        lines: list[PreviewLine] = [
            f"continuous probe at {check.rate_hz:g} Hz, {check.scope.value} pairs between {where}{np};"
            f" {limits}"
        ]
        if check.nodeport:  # the service the run will probe, checked now as the run checks it
            try:
                _nodeport_targets(ctx.target.cluster, check, frozenset())
            except UsageError as exc:
                lines.append(f'would fail: {exc} (a NodePort Service, or "" for none)')
        return lines


def _summary(details: dict[str, Any], breaches: list[str]) -> str:
    head = (
        f"{details['sent']} probes, {details['lost']} lost ({details['loss_pct']:.2f}%), "
        f"longest outage {details['longest_outage_ms']:.0f} ms over {details['pairs_count']} pairs"
    )
    if details["excused"]:
        head += f", {details['excused']} excused (wave nodes)"
    if "policy" in details:
        pol = details["policy"]
        head += f"; policy: {pol['holes']} holes, {pol['breaks']} breaks, {pol['errors']} prober errors"
        if "expected_deny" in pol:
            head += f" ({pol['expected_deny']} probes expected denied, {pol['expected_allow']} allowed)"
    if not breaches:
        return head
    shown = "\n".join(f"  {b}" for b in breaches[:10])
    more = f"\n  ... {len(breaches) - 10} more" if len(breaches) > 10 else ""
    return f"{head}; {len(breaches)} breaches:\n{shown}{more}"
