"""Policy verification: probe allowed AND denied pairs, compare with what the NetworkPolicies say.

For every ordered pair of ready, non-host-network pods (self excluded, as upstream excludes loopback;
optionally only some namespaces) and every declared container port of the destination, one
``ProbeKind.POLICY`` target: TCP ports with a ``tcp`` connect, UDP ports with a ``udp`` datagram. SCTP
ports are not probed (the probers have no SCTP probe): they are listed as ``unsupported``.

The expected verdict of each (source, destination, port, protocol) comes from
:class:`migrator.policy.model.PolicyModel` over ``cluster.list_network_policies()``,
``cluster.list_namespaces()`` and the pods. Each result is classified::

    expected allow, observed allow -> ok          expected deny, observed deny  -> ok
    expected deny,  observed allow -> hole        expected allow, observed deny -> break
    any prober error (observed error)             -> error (inconclusive: fails, never a deny)

An observed deny is only a failed probe whose error code is ``timeout``, ``refused``, ``reset`` or
``unreachable`` (what REJECT and DROP rules produce); every other error (``netns``, ``os-error``,
``saturated``, ``forbidden``...) is the prober's problem, not the policy's.

Probe destinations are named ``ns/pod:port/protocol`` so that every (pair, port, protocol) has its own
result key (continuous monitors account by key); results carry ``ns/pod`` apart.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from loguru import logger

from migrator.errors import UsageError
from migrator.policy.model import (
    ContainerPort,
    Decision,
    Namespace,
    NetworkPolicy,
    PolicyModel,
    PolicyPod,
    Verdict,
)
from migrator.policy.model import Protocol as L4
from migrator.ports import Cluster, Pod, ProbeKind, ProbeProtocol, Prober, ProbeResult, ProbeTarget, Target

DENY_CODES = frozenset({"timeout", "refused", "reset", "unreachable"})
"""Error codes (the first word of a probe error) that are an observed deny."""
DEFAULT_TIMEOUT = 0.5
"""Per probe: the lab REJECTs (a reset or an ICMP error comes back at once); only a DROP waits this long."""
DEFAULT_CONCURRENCY = 128
MAX_LISTED = 200
"""Mismatches listed in check details (all of them are in the full results file)."""
MAX_GRID_SIDE = 40
"""Pods per side of a matrix in check details and text (beyond: only the pods of a mismatch, then 40)."""

PROBE_PROTOCOLS: dict[L4, ProbeProtocol] = {L4.TCP: ProbeProtocol.TCP, L4.UDP: ProbeProtocol.UDP}
"""What the probers can probe; any other protocol (SCTP) is reported as unsupported."""


class Observed(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ERROR = "error"


class PolicyStatus(StrEnum):
    OK = "ok"
    HOLE = "hole"  # expected deny, observed allow
    BREAK = "break"  # expected allow, observed deny
    ERROR = "error"  # the prober failed: inconclusive


MARKS: dict[tuple[PolicyStatus, Verdict], str] = {
    (PolicyStatus.OK, Verdict.ALLOW): ".",
    (PolicyStatus.OK, Verdict.DENY): "X",
    (PolicyStatus.HOLE, Verdict.DENY): "H",
    (PolicyStatus.BREAK, Verdict.ALLOW): "B",
    (PolicyStatus.ERROR, Verdict.ALLOW): "?",
    (PolicyStatus.ERROR, Verdict.DENY): "?",
}
LEGEND = (
    ". allowed as expected, X denied as expected, H hole (expected deny, allowed), "
    "B break (expected allow, denied), ? prober error, - not probed"
)


class VerdictSource(Protocol):
    """What the classification needs of the policy model (``PolicyModel`` is one)."""

    def decide(self, src: PolicyPod | str, dst: PolicyPod | str, port: int, protocol: L4) -> Decision: ...


ModelFactory = Callable[[list[NetworkPolicy], list[Namespace], list[PolicyPod]], VerdictSource]


def default_model(
    policies: list[NetworkPolicy], namespaces: list[Namespace], pods: list[PolicyPod]
) -> VerdictSource:
    """The expectation: :class:`PolicyModel` (``model_factory=None`` everywhere means this one)."""
    return PolicyModel(policies, namespaces, pods)


def observed_of(result: ProbeResult) -> Observed:
    """Allow on success (also a flaky success), deny only on a deny code, else error."""
    if result.ok:
        return Observed.ALLOW
    code = (result.error or "").split(":", 1)[0].strip()
    return Observed.DENY if code in DENY_CODES else Observed.ERROR


def classify(expected: Verdict, observed: Observed) -> PolicyStatus:
    if observed is Observed.ERROR:
        return PolicyStatus.ERROR
    if observed.value == expected.value:
        return PolicyStatus.OK
    return PolicyStatus.HOLE if expected is Verdict.DENY else PolicyStatus.BREAK


# ---------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class PolicyCase:
    """One (source pod, destination pod, port, protocol) and its expected decision."""

    source: str
    dest: str
    port: int
    protocol: L4
    decision: Decision
    port_name: str = ""
    target: ProbeTarget | None = None  # None: not probed (a protocol the probers lack)

    @property
    def expected(self) -> Verdict:
        return self.decision.verdict

    @property
    def column(self) -> tuple[int, str]:
        """The matrix this case belongs to: (port, protocol in lower case)."""
        return (self.port, self.protocol.value.lower())


def probe_dest(pod_key: str, port: int, protocol: L4) -> str:
    return f"{pod_key}:{port}/{protocol.value.lower()}"


def policy_pod(pod: Pod) -> PolicyPod:
    """The model's view of a pod; a pod without ``container_ports`` declares its ``ports`` as TCP."""
    ports = pod.container_ports or tuple(ContainerPort(p, L4.TCP) for p in pod.ports)
    return PolicyPod(
        namespace=pod.namespace,
        name=pod.name,
        labels=dict(pod.labels),
        ip=pod.ip,
        ports=tuple(ports),
        host_network=pod.host_network,
    )


def _dest_ports(pod: PolicyPod) -> list[ContainerPort]:
    seen: dict[tuple[int, L4], ContainerPort] = {}
    for cp in pod.ports:
        seen.setdefault((cp.port, cp.protocol), cp)
    return [seen[k] for k in sorted(seen, key=lambda k: (k[0], k[1].value))]


@dataclass(frozen=True)
class PolicyOptions:
    """``namespaces``: only pods of these (sources and destinations). ``timeout``: seconds per probe.
    ``exclude_nodes``: leave out the pods on these nodes (a monitor, during a wave on them)."""

    namespaces: frozenset[str] | None = None
    exclude_nodes: frozenset[str] = frozenset()
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY


@dataclass(frozen=True)
class PolicyInputs:
    """What the expectation was computed from (counts for reports)."""

    policies: tuple[str, ...]
    namespaces: int
    pods: int


def policy_cases(
    cluster: Cluster,
    options: PolicyOptions | None = None,
    *,
    model_factory: ModelFactory | None = None,
    sample: int | None = None,
    seed: int = 0,
    salt: int = 0,
) -> tuple[list[PolicyCase], PolicyInputs]:
    """Every case of the policy matrix, in order (source, destination, port, protocol), and its inputs.

    With ``sample``: at most that many probed cases (TCP/UDP), seeded by ``seed`` and ``salt``, order kept;
    only those are decided by the model (a monitor's sample of a big cluster costs its size, not the
    cluster's square).
    """
    o = options or PolicyOptions()
    if o.timeout <= 0 or o.timeout > 30:
        raise UsageError(f"policy probe timeout must be in (0, 30] seconds, got {o.timeout:g}")
    if sample is not None and sample < 1:
        raise UsageError(f"sample must be >= 1, got {sample}")
    policies = cluster.list_network_policies()
    namespaces = cluster.list_namespaces()
    listed = cluster.list_pods()
    every = [policy_pod(p) for p in listed]
    ready = {p.key for p in listed if p.ready and p.node not in o.exclude_nodes}
    model = (model_factory or default_model)(list(policies), list(namespaces), every)
    pods = sorted(
        (
            p
            for p in every
            if p.key in ready
            and p.ip
            and not p.host_network
            and (o.namespaces is None or p.namespace in o.namespaces)
        ),
        key=lambda p: p.key,
    )
    cells = [(src, dst, cp) for src in pods for dst in pods if dst.key != src.key for cp in _dest_ports(dst)]
    if sample is not None:
        probed = [c for c in cells if c[2].protocol in PROBE_PROTOCOLS]
        if len(probed) > sample:
            rng = random.Random(f"{seed}|{salt}|policy")
            probed = [probed[i] for i in sorted(rng.sample(range(len(probed)), sample))]
        cells = probed
    cases = [_case(model, src, dst, cp, o.timeout) for src, dst, cp in cells]
    inputs = PolicyInputs(tuple(sorted(p.key for p in policies)), len(namespaces), len(pods))
    return cases, inputs


def _case(
    model: VerdictSource, src: PolicyPod, dst: PolicyPod, cp: ContainerPort, timeout: float
) -> PolicyCase:
    assert dst.ip is not None
    decision = model.decide(src, dst, cp.port, cp.protocol)
    proto = PROBE_PROTOCOLS.get(cp.protocol)
    target = None
    if proto is not None:
        target = ProbeTarget(
            source=src.key,
            dest=probe_dest(dst.key, cp.port, cp.protocol),
            kind=ProbeKind.POLICY,
            host=dst.ip,
            port=cp.port,
            protocol=proto,
            expect_status=None,
            timeout=timeout,
        )
    return PolicyCase(src.key, dst.key, cp.port, cp.protocol, decision, cp.name, target)


# -------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PolicyResult:
    case: PolicyCase
    observed: Observed
    status: PolicyStatus
    error: str | None = None
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is PolicyStatus.OK

    @property
    def mark(self) -> str:
        return MARKS[(self.status, self.case.expected)]

    def describe(self) -> str:
        c = self.case
        why = ", ".join(c.decision.policies) or "no policy selects either pod"
        head = f"{c.source} -> {c.dest} {c.port}/{c.protocol.value.lower()}"
        if self.status is PolicyStatus.ERROR:
            return f"error: {head}: expected {c.expected.value}, prober error {self.error} (deciding: {why})"
        what = "hole" if self.status is PolicyStatus.HOLE else "break"
        tail = f" ({self.error})" if self.error and self.observed is Observed.DENY else ""
        seen = f"observed {self.observed.value}{tail}"
        return f"{what}: {head}: expected {c.expected.value}, {seen} (deciding: {why})"

    def to_dict(self) -> dict[str, Any]:
        c = self.case
        return {
            "kind": ProbeKind.POLICY.value,
            "source": c.source,
            "dest": c.dest,
            "port": c.port,
            "port_name": c.port_name,
            "protocol": c.protocol.value.lower(),
            "expected": c.expected.value,
            "observed": self.observed.value,
            "ok": self.ok,
            "status": self.status.value,
            "policies": list(c.decision.policies),
            "ingress": c.decision.ingress.value,
            "egress": c.decision.egress.value,
            "error": self.error,
            "latency_ms": self.latency_ms,
        }


def judge(case: PolicyCase, result: ProbeResult) -> PolicyResult:
    observed = observed_of(result)
    return PolicyResult(case, observed, classify(case.expected, observed), result.error, result.latency_ms)


@dataclass(frozen=True)
class PolicySummary:
    total: int
    ok: int
    holes: int
    breaks: int
    errors: int
    unsupported: int
    expected_allow: int
    expected_deny: int
    by_column: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def mismatches(self) -> int:
        return self.holes + self.breaks

    @property
    def passed(self) -> bool:
        return self.total > 0 and self.holes == 0 and self.breaks == 0 and self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "ok": self.ok,
            "holes": self.holes,
            "breaks": self.breaks,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "unsupported": self.unsupported,
            "expected_allow": self.expected_allow,
            "expected_deny": self.expected_deny,
            "passed": self.passed,
            "by_port": {k: dict(v) for k, v in self.by_column.items()},
        }


def summarize_policy(results: Sequence[PolicyResult], unsupported: int = 0) -> PolicySummary:
    by_column: dict[str, dict[str, int]] = {}
    for r in results:
        port, proto = r.case.column
        col = by_column.setdefault(f"{port}/{proto}", {s.value: 0 for s in PolicyStatus})
        col[r.status.value] += 1
    count = {s: sum(r.status is s for r in results) for s in PolicyStatus}
    return PolicySummary(
        total=len(results),
        ok=count[PolicyStatus.OK],
        holes=count[PolicyStatus.HOLE],
        breaks=count[PolicyStatus.BREAK],
        errors=count[PolicyStatus.ERROR],
        unsupported=unsupported,
        expected_allow=sum(r.case.expected is Verdict.ALLOW for r in results),
        expected_deny=sum(r.case.expected is Verdict.DENY for r in results),
        by_column=by_column,
    )


def policy_matrices(
    results: Iterable[PolicyResult], pods: Sequence[str] | None = None, *, max_side: int | None = None
) -> list[dict[str, Any]]:
    """One expected-vs-observed grid per (port, protocol): ``rows[i][j]`` is the mark of ``pods[i]`` ->
    ``pods[j]`` (see :data:`LEGEND`), ``-`` not probed (the diagonal). ``counts`` are over every cell.

    With ``max_side`` and more pods than that, a grid keeps only the pods of a mismatch or error (as
    source or destination; ``filtered``), and at most ``max_side`` of them (``truncated``), so that
    check details and reports stay bounded whatever the cluster.
    """
    cells: dict[tuple[int, str], dict[tuple[str, str], str]] = {}
    names: set[str] = set(pods or ())
    for r in results:
        cells.setdefault(r.case.column, {})[(r.case.source, r.case.dest)] = r.mark
        names.update((r.case.source, r.case.dest))
    every = list(pods) if pods is not None else sorted(names)
    out = []
    for (port, proto), grid in sorted(cells.items()):
        counts = {m: sum(1 for v in grid.values() if v == m) for m in ".XHB?"}
        order, filtered, truncated = every, False, False
        if max_side is not None and len(every) > max_side:
            bad = {p for key, v in grid.items() if v in "HB?" for p in key}
            order, filtered = [p for p in every if p in bad], True
            if len(order) > max_side:
                order, truncated = order[:max_side], True
        rows = ["".join(grid.get((s, d), "-") for d in order) for s in order]
        out.append(
            {
                "port": port,
                "protocol": proto,
                "pods": order,
                "rows": rows,
                "counts": counts,
                "filtered": filtered,
                "truncated": truncated,
            }
        )
    return out


@dataclass(frozen=True)
class PolicyReport:
    target: str
    started_at: float
    duration_s: float
    options: PolicyOptions
    results: tuple[PolicyResult, ...]
    unsupported: tuple[PolicyCase, ...]
    inputs: PolicyInputs
    summary: PolicySummary

    @property
    def passed(self) -> bool:
        return self.summary.passed

    @property
    def mismatches(self) -> list[PolicyResult]:
        return [r for r in self.results if not r.ok]

    def pods(self) -> list[str]:
        return sorted({r.case.source for r in self.results} | {r.case.dest for r in self.results})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "policy",
            "target": self.target,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
            "options": {
                "scope": "policy",
                "namespaces": None if self.options.namespaces is None else sorted(self.options.namespaces),
                "timeout": self.options.timeout,
            },
            "inputs": {
                "policies": list(self.inputs.policies),
                "namespaces": self.inputs.namespaces,
                "pods": self.inputs.pods,
            },
            "summary": self.summary.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "unsupported": [
                {
                    "source": c.source,
                    "dest": c.dest,
                    "port": c.port,
                    "protocol": c.protocol.value.lower(),
                    "expected": c.expected.value,
                    "reason": f"unsupported: no {c.protocol.value} probe",
                }
                for c in self.unsupported
            ],
            "matrices": policy_matrices(self.results, self.pods()),
        }

    def details(self, *, results_file: str | None = None) -> dict[str, Any]:
        """Bounded: what check results and run reports keep (the full list goes to ``results_file``)."""
        mismatches = self.mismatches
        return {
            "kind": "policy",
            "target": self.target,
            "passed": self.passed,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "summary": self.summary.to_dict(),
            "policies": list(self.inputs.policies),
            "mismatches": [r.to_dict() for r in mismatches[:MAX_LISTED]],
            "mismatches_count": len(mismatches),
            "matrices": policy_matrices(self.results, self.pods(), max_side=MAX_GRID_SIDE),
            "legend": LEGEND,
            "results_file": results_file,
        }

    def describe(self, *, limit: int = 10) -> str:
        s = self.summary
        lines = [
            f"policy: {s.ok}/{s.total} as expected, {s.holes} holes, {s.breaks} breaks, "
            f"{s.errors} prober errors"
        ]
        bad = self.mismatches
        lines += [f"  {r.describe()}" for r in bad[:limit]]
        if len(bad) > limit:
            lines.append(f"  ... {len(bad) - limit} more")
        return "\n".join(lines)


def judge_all(cases: Sequence[PolicyCase], results: Sequence[ProbeResult]) -> list[PolicyResult]:
    """Pair results with the probed cases by (source, destination) (each destination names its port and
    protocol); every probed case must have exactly one result, and every result a case."""
    by_key: dict[tuple[str, str], ProbeResult] = {}
    for result in results:
        key = (result.source, result.dest)
        if key in by_key:
            raise UsageError(f"the prober returned two results for {result.source} -> {result.dest}")
        by_key[key] = result
    out = []
    for case in cases:
        if case.target is None:
            continue
        key = (case.target.source, case.target.dest)
        if key not in by_key:
            raise UsageError(f"the prober returned no result for {case.target.source} -> {case.target.dest}")
        out.append(judge(case, by_key.pop(key)))
    if by_key:
        source, dest = next(iter(by_key))
        raise UsageError(f"the prober returned a result for {source} -> {dest}, which was not probed")
    return out


def run_policy_verify(
    target: Target,
    options: PolicyOptions | None = None,
    *,
    prober: Prober | None = None,
    model_factory: ModelFactory | None = None,
) -> PolicyReport:
    """Build the policy matrix of ``target``, probe it once and classify every result."""
    o = options or PolicyOptions()
    use = prober or target.prober
    if use is None:
        raise UsageError(f"target {target.name!r} has no prober")
    cases, inputs = policy_cases(target.cluster, o, model_factory=model_factory)
    if not cases:
        raise UsageError(
            f"the policy matrix of {target.name!r} is empty (fewer than two ready pods with ports?)"
        )
    probed = [c.target for c in cases if c.target is not None]
    started_at = time.time()
    t0 = time.perf_counter()
    raw = use.probe(probed, concurrency=o.concurrency) if probed else []
    duration = time.perf_counter() - t0
    results = judge_all(cases, raw)
    unsupported = tuple(c for c in cases if c.target is None)
    summary = summarize_policy(results, len(unsupported))
    logger.info(
        "policy verify {}: {}/{} as expected, {} holes, {} breaks, {} errors in {:.2f}s",
        target.name,
        summary.ok,
        summary.total,
        summary.holes,
        summary.breaks,
        summary.errors,
        duration,
    )
    return PolicyReport(target.name, started_at, duration, o, tuple(results), unsupported, inputs, summary)
