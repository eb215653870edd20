"""The e2e netpol model as policy-model inputs: the 9 pods with fake IPs (10.244.<ns>.<pod>) and their four
serve ports, the namespaces and their labels, and a :class:`World` that applies a case's non-probe steps
(policies parsed with :func:`parse_network_policy`, placeholders resolved with :data:`IPS`)."""

from __future__ import annotations

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
    NAMESPACE_LABEL,
    NAMESPACES,
    POD_NAMES,
    PODS,
    Apply,
    Delete,
    LabelNamespace,
    LabelPod,
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
