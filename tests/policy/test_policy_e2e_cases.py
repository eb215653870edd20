"""All 48 cases of the upstream e2e NetworkPolicy suite through the policy model alone.

The 9 pods get fake IPs (10.244.<ns>.<pod>); every step of a case is applied in order (policies parsed
with :func:`parse_network_policy`, so each case's objects also pass our API-server validation), and at
every probe step the model's whole matrix is compared with the case's expected matrix cell by cell,
loopback excluded, as upstream does.
"""

from __future__ import annotations

import pytest

from migrator.policy.model import (
    ContainerPort,
    Namespace,
    NetworkPolicy,
    PolicyModel,
    PolicyPod,
    Protocol,
    parse_network_policy,
)
from tests.policy.e2e_cases import (
    CASES,
    NAMESPACE_LABEL,
    NAMESPACES,
    POD_NAMES,
    PODS,
    Apply,
    Case,
    Delete,
    LabelNamespace,
    LabelPod,
    Probe,
    resolve,
)

SERVE_PORTS = tuple(
    ContainerPort(port, Protocol(proto), f"serve-{port}-{proto.lower()}")
    for port in (80, 81)
    for proto in ("TCP", "UDP")
)
IPS = {
    f"{ns}/{pod}": f"10.244.{n + 1}.{m + 10}"
    for n, ns in enumerate(NAMESPACES)
    for m, pod in enumerate(POD_NAMES)
}


class World:
    """The netpol model's namespaces and pods, the applied policies; steps change it."""

    def __init__(self) -> None:
        self.ns_labels = {ns: {"ns": ns, NAMESPACE_LABEL: ns} for ns in NAMESPACES}
        self.pod_labels = {key: {"pod": key.split("/")[1]} for key in PODS}
        self.policies: dict[str, NetworkPolicy] = {}

    def step(self, step: Apply | Delete | LabelNamespace | LabelPod) -> None:
        match step:
            case Apply():
                parsed = parse_network_policy(resolve(step.policy, IPS), where=f"case step {step.key}")
                self.policies[parsed.key] = parsed
            case Delete():
                del self.policies[f"{step.namespace}/{step.name}"]
            case LabelNamespace():
                self.ns_labels[step.namespace].update(step.labels)
            case LabelPod():
                self.pod_labels[f"{step.namespace}/{step.pod}"].update(step.labels)

    def model(self) -> PolicyModel:
        namespaces = [Namespace(ns, dict(labels)) for ns, labels in self.ns_labels.items()]
        pods = [
            PolicyPod(key.split("/")[0], key.split("/")[1], dict(labels), IPS[key], SERVE_PORTS)
            for key, labels in self.pod_labels.items()
        ]
        return PolicyModel(self.policies.values(), namespaces, pods)


def mismatches(model: PolicyModel, probe: Probe) -> list[str]:
    matrix = model.matrix(probe.port, Protocol(probe.protocol))
    wrong = []
    for src, dst, expected in probe.cells():
        got = matrix.allowed(src, dst)
        decided = model.decide(model.pod(src), model.pod(dst), probe.port, Protocol(probe.protocol))
        if got != expected or (decided.verdict.value == "allow") != expected:
            wrong.append(f"{src} -> {dst}: expected {expected}, matrix {got}, decide {decided}")
    return wrong


def test_there_are_48_cases_with_distinct_lines_and_a_probe_each() -> None:
    assert len(CASES) == 48
    assert len({c.line for c in CASES}) == 48
    assert all(c.probes for c in CASES)
    assert {c.feature for c in CASES} == {None, "SCTP"}
    assert sum(c.feature == "SCTP" for c in CASES) == 3


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-{c.name[:60]}" for c in CASES])
def test_case_through_the_model(case: Case) -> None:
    world = World()
    probes = 0
    for step in case.steps:
        if isinstance(step, Probe):
            probes += 1
            wrong = mismatches(world.model(), step)
            assert not wrong, f"{case.title}, probe {probes} ({step.port}/{step.protocol}):\n" + "\n".join(
                wrong
            )
        else:
            world.step(step)
    assert probes == len(case.probes)


def test_a_wrong_expectation_is_caught() -> None:
    """The comparison can fail: flip one non-loopback cell of a case and the model disagrees."""
    case = CASES[0]
    world = World()
    world.step(case.steps[0])  # type: ignore[arg-type]
    probe = case.probes[0]
    flipped = [list(row) for row in probe.expected]
    flipped[3][0] = not flipped[3][0]
    bad = Probe(probe.port, probe.protocol, tuple(tuple(r) for r in flipped))
    wrong = mismatches(world.model(), bad)
    assert len(wrong) == 1
    assert wrong[0].startswith("y/a -> x/a: expected True, matrix False")
