"""The 48 upstream e2e netpol cases through the policy verification on the fake target.

Expected side: the real :class:`PolicyModel` over the policies applied to a :class:`FakeCluster` (each
parsed and validated as the API server would). Observed side: a :class:`FakeProber` whose enforcement is
the case's own expected matrix (built with upstream's Reachability operations, independent of the model).
At every probe step, the verification must report every cell of that port/protocol as expected, and its
observed matrix must equal the case's matrix cell by cell (loopback excluded, as upstream). SCTP cases
are reported as unsupported (not probed), with their expected verdicts still computed and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from migrator.policy.model import ContainerPort, Verdict
from migrator.policy.model import Protocol as L4
from migrator.ports import Target
from migrator.probe.policy import Observed, PolicyReport, PolicyStatus, run_policy_verify
from migrator.testing.fake import FakeCluster, FakeProber
from tests.policy.e2e_cases import CASES, PODS, Apply, Case, Delete, LabelNamespace, LabelPod, Probe, resolve
from tests.policy.netpol_world import IPS

Key = tuple[str, str, int, str]


def netpol_cluster(*, sctp: bool = False) -> FakeCluster:
    cluster = FakeCluster.netpol()
    for key, ip in IPS.items():
        pod = cluster.pods[key]
        ports = pod.container_ports
        if sctp:
            ports = (*ports, *(ContainerPort(p, L4.SCTP, f"serve-{p}-sctp") for p in (80, 81)))
        cluster.set_pod(replace(pod, ip=ip, container_ports=ports))
    return cluster


def apply_step(cluster: FakeCluster, step: Apply | Delete | LabelNamespace | LabelPod) -> None:
    match step:
        case Apply():
            cluster.apply_network_policy(resolve(step.policy, IPS), where=f"case step {step.key}")
        case Delete():
            cluster.delete_network_policy(step.namespace, step.name)
        case LabelNamespace():
            ns = next(n for n in cluster.list_namespaces() if n.name == step.namespace)
            cluster.create_namespace(step.namespace, {**ns.labels, **step.labels})
        case LabelPod():
            pod = cluster.pods[f"{step.namespace}/{step.pod}"]
            cluster.set_pod(replace(pod, labels={**pod.labels, **step.labels}))


def enforcing(probe: Probe) -> Callable[[Key], bool]:
    """Denies exactly what the case's matrix denies on the probe's port/protocol (and nothing else)."""
    allowed = {(s, d): ok for s, d, ok in probe.cells()}
    proto = probe.protocol.lower()

    def deny(key: Key) -> bool:
        src, dst, port, p = key
        return port == probe.port and p == proto and not allowed[(src, dst)]

    return deny


def check_probe(case: Case, n: int, probe: Probe, report: PolicyReport) -> None:
    where = f"{case.title}, probe {n} ({probe.port}/{probe.protocol})"
    expected = {(s, d): ok for s, d, ok in probe.cells()}
    if probe.protocol == "SCTP":
        cells = {(c.source, c.dest): c for c in report.unsupported if c.port == probe.port}
        assert set(cells) == set(expected), where
        wrong = [k for k, c in cells.items() if (c.expected is Verdict.ALLOW) != expected[k]]
        assert not wrong, f"{where}: the model disagrees with upstream on {wrong[:5]}"
        return
    results = {
        (r.case.source, r.case.dest): r
        for r in report.results
        if r.case.port == probe.port and r.case.protocol.value == probe.protocol
    }
    assert set(results) == set(expected), where
    bad = [r.describe() for r in results.values() if r.status is not PolicyStatus.OK]
    assert not bad, f"{where}:\n" + "\n".join(bad[:10])
    observed = {k: r.observed is Observed.ALLOW for k, r in results.items()}
    assert observed == expected, where


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-{c.name[:60]}" for c in CASES])
def test_case_through_the_policy_verification(case: Case) -> None:
    cluster = netpol_cluster(sctp=case.feature == "SCTP")
    n = 0
    for step in case.steps:
        if not isinstance(step, Probe):
            apply_step(cluster, step)
            continue
        n += 1
        prober = FakeProber(cluster, deny=enforcing(step))
        report = run_policy_verify(Target("fake", cluster, prober=prober))
        check_probe(case, n, step, report)
        assert report.summary.unsupported == (8 * 9 * 2 if case.feature == "SCTP" else 0)
    assert n == len(case.probes) > 0


def test_an_enforcer_off_by_one_cell_is_a_hole_or_a_break_at_that_cell() -> None:
    case = next(
        c for c in CASES if c.feature is None and any(not ok for p in c.probes for _, _, ok in p.cells())
    )
    cluster = netpol_cluster()
    probe = None
    for step in case.steps:
        if isinstance(step, Probe):
            probe = step
            break
        apply_step(cluster, step)
    assert probe is not None
    allowed = {(s, d): ok for s, d, ok in probe.cells()}
    denied_cell = next(k for k, ok in allowed.items() if not ok)
    allowed_cell = next(k for k, ok in allowed.items() if ok)
    proto = probe.protocol.lower()

    def deny(key: Key) -> bool:
        src, dst, port, p = key
        if port != probe.port or p != proto:
            return False
        if (src, dst) == denied_cell:
            return False  # the enforcer lets it through: a hole
        if (src, dst) == allowed_cell:
            return True  # the enforcer blocks it: a break
        return not allowed[(src, dst)]

    report = run_policy_verify(Target("fake", cluster, prober=FakeProber(cluster, deny=deny)))
    ours = [
        r for r in report.mismatches if r.case.port == probe.port and r.case.protocol.value == probe.protocol
    ]
    assert {((r.case.source, r.case.dest), r.status) for r in ours} == {
        (denied_cell, PolicyStatus.HOLE),
        (allowed_cell, PolicyStatus.BREAK),
    }
    hole = next(r for r in ours if r.status is PolicyStatus.HOLE)
    assert hole.case.decision.policies, "a hole names the policies that should have denied it"
    assert not report.passed


def test_every_pod_of_the_model_is_in_the_matrix() -> None:
    cluster = netpol_cluster()
    report = run_policy_verify(Target("fake", cluster, prober=FakeProber(cluster)))
    assert report.pods() == list(PODS)
    assert report.passed and report.summary.expected_deny == 0  # no policy: everything allowed
