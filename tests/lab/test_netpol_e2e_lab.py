"""The 48 upstream e2e NetworkPolicy cases (tests/policy/e2e_cases.py) enforced by the lab's policy agents.

On the session's netpol lab (3 calico nodes, pods a, b, c in x, y, z): every step of a case goes through
the lab's own commands (``Lab.apply``/``Lab.delete``/``Lab.label``, i.e. ``lab apply``/``lab delete``/
``lab label``), and at every probe step all 72 ordered pairs (loopback excluded, as upstream) are probed
from inside the source pods on the case's port and protocol; the observed matrix must equal the case's
expected matrix cell by cell. An observed deny is only a refused/reset/timeout, never a prober error.
Cases that probe SCTP need a kernel feature this one lacks (capability ``sctp``): they are reported as
skipped with that reason, checked against the lab's recorded capability.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.lab.lab import Lab
from migrator.policy.model import Protocol
from migrator.probe.policy import Observed, PolicyOptions, PolicyReport, run_policy_verify
from migrator.targets.lab.cluster import open_lab_target
from tests.lab.netpol_probe import Cell, pod_ip, probe_grouped, write_docs
from tests.policy.e2e_cases import CASES, Apply, Case, Delete, LabelNamespace, LabelPod, Probe, resolve

pytestmark = pytest.mark.lab


def _mismatches(lab: Lab, step: Probe, ips: dict[str, str]) -> list[str]:
    proto = step.protocol.lower()
    cells = {Cell(src, ips[dst], step.port, proto): (src, dst, want) for src, dst, want in step.cells()}
    seen = probe_grouped(lab, list(cells))
    bad: list[str] = []
    for cell, (src, dst, want) in cells.items():
        got = seen[cell].verdict
        expected = "allow" if want else "deny"
        if got != expected:
            bad.append(f"{src} -> {dst} {step.port}/{step.protocol}: expected {expected}, observed {got}")
    return bad


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_e2e_case(netpol_clean: Lab, tmp_path: Path, case: Case) -> None:
    lab = netpol_clean
    if case.feature == "SCTP":
        cap = next(c for c in lab.require().capabilities if c.name == "sctp")
        if not cap.available:
            pytest.skip(f"{case.title}: the kernel lacks SCTP ({cap.detail})")
    ips = {key: pod_ip(lab, key) for key in lab.require().pods if key.split("/")[0] in ("x", "y", "z")}
    for n, step in enumerate(case.steps):
        match step:
            case Apply():
                lab.apply([write_docs(tmp_path, [resolve(step.policy, ips)], f"step{n}.yaml")])
            case Delete():
                doc = {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": step.name, "namespace": step.namespace},
                }
                lab.delete([write_docs(tmp_path, [doc], f"step{n}.yaml")])
            case LabelNamespace():
                lab.label("namespace", step.namespace, dict(step.labels))
            case LabelPod():
                lab.label("pod", f"{step.namespace}/{step.pod}", dict(step.labels))
            case Probe():
                bad = _mismatches(lab, step, ips)
                assert not bad, (
                    f"{case.title}, step {n + 1}:\n" + "\n".join(bad) + "\nexpected:\n" + step.render()
                )
                _verify_agrees(lab, case, n, step)


def _verify_agrees(lab: Lab, case: Case, n: int, step: Probe) -> None:
    """The product's own policy verification (``verify --scope policy``: the model's expectation, the lab
    prober's probes) on the same lab state: its observed matrix on the step's port and protocol is upstream's
    expected matrix, and it finds no hole, break or prober error on any port or protocol."""
    report: PolicyReport = run_policy_verify(
        open_lab_target(lab.name), PolicyOptions(namespaces=frozenset({"x", "y", "z"}))
    )
    want = {(src, dst): allowed for src, dst, allowed in step.cells()}
    proto = Protocol(step.protocol)
    got = {
        (r.case.source, r.case.dest): r.observed
        for r in report.results
        if r.case.port == step.port and r.case.protocol is proto
    }
    assert set(got) == set(want), f"{case.title}: verify probed other pairs: {sorted(set(got) ^ set(want))}"
    wrong = [
        f"{src} -> {dst}: upstream expects {'allow' if allowed else 'deny'}, "
        f"verify observed {got[src, dst].value}"
        for (src, dst), allowed in want.items()
        if got[src, dst] is not (Observed.ALLOW if allowed else Observed.DENY)
    ]
    assert not wrong, f"{case.title}, step {n + 1} (verify):\n" + "\n".join(wrong)
    s = report.summary
    assert report.passed and (s.holes, s.breaks, s.errors) == (0, 0, 0), (
        f"{case.title}, step {n + 1}: verify --scope policy reports mismatches:\n{report.describe(limit=20)}"
    )
