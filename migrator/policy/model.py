"""The NetworkPolicy vocabulary and the policy model (the contract; see the functions' docstrings).

Everything here is a frozen dataclass built from plain Kubernetes objects (dicts as read from YAML or the
API). :func:`parse_network_policy` validates like the API server does and raises :class:`PolicyError`
naming the field. :class:`PolicyModel` answers verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from migrator.errors import UsageError

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class PolicyError(UsageError):
    """An invalid NetworkPolicy (or Namespace, or Pod) object; the message names the field."""


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class PolicyType(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LabelSelector:
    """``matchLabels`` and ``matchExpressions`` (ANDed). The empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` entry. ``ip_block`` excludes the selectors. With only ``pod_selector``: pods of
    the policy's namespace; with only ``namespace_selector``: every pod of the matching namespaces; with
    both: the matching pods of the matching namespaces."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    """``port`` is a number, a named port (``str``) or ``None`` (every port of ``protocol``)."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule. Empty ``peers``: every peer; empty ``ports``: every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[PolicyType]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Namespace:
    """A namespace and its labels; ``kubernetes.io/metadata.name`` is always set (as the API server does)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerPort:
    """A declared container port (``name`` may be empty)."""

    port: int
    protocol: Protocol = Protocol.TCP
    name: str = ""


@dataclass(frozen=True)
class PolicyPod:
    """What the model needs of a pod. Host-network pods and pods without an IP are never selected."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Decision:
    """The verdict for one (source, destination, port, protocol), and why.

    ``ingress`` / ``egress``: the verdict of each side alone (``ALLOW`` when the side is not isolated).
    ``policies``: the keys (``ns/name``) of the policies that decide it: for an allow, the policies whose
    rules allow it on an isolated side; for a deny, the policies that isolate the denying side (none of
    them allows it). Sorted.
    """

    verdict: Verdict
    ingress: Verdict
    egress: Verdict
    policies: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortMatch:
    """A resolved port: ``port`` ``None`` is every port of ``protocol``; ``end_port`` makes a range."""

    protocol: Protocol
    port: int | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class PeerMatch:
    """Resolved peers: the IPs of the selected pods, and the ipBlocks (each with its excepts)."""

    pod_ips: frozenset[str] = frozenset()
    ip_blocks: tuple[IPBlock, ...] = ()


@dataclass(frozen=True)
class CompiledRule:
    """One rule of one policy, resolved against the current pods and namespaces, for an enforcer.

    ``peers`` ``None``: any peer. ``ports`` ``None``: every port and protocol. Named ports are resolved:
    on ingress against the selected pod itself; on egress a rule with a named port is expanded into one
    compiled rule per (protocol, number), its ``peers`` narrowed to the pods that declare that name (an
    ipBlock peer cannot match a named port).
    """

    policy: str
    peers: PeerMatch | None
    ports: tuple[PortMatch, ...] | None


@dataclass(frozen=True)
class PodRules:
    """What an enforcer programs for one pod: each direction is isolated (default deny) when a policy
    selects the pod for it; traffic is then allowed when any rule of that direction matches."""

    pod: PolicyPod
    ingress_isolated: bool
    egress_isolated: bool
    ingress: tuple[CompiledRule, ...] = ()
    egress: tuple[CompiledRule, ...] = ()


def parse_selector(obj: Mapping[str, Any] | None, *, where: str) -> LabelSelector:
    raise NotImplementedError


def parse_network_policy(obj: Mapping[str, Any], *, where: str = "") -> NetworkPolicy:
    """A NetworkPolicy object (``apiVersion: networking.k8s.io/v1``) -> :class:`NetworkPolicy`.

    Validates as the API server does (selectors, operators and values, CIDRs and excepts inside them,
    protocols, ports and endPort, policyTypes, names) and raises :class:`PolicyError` with ``where`` and
    the field path (``spec.ingress[0].from[1].ipBlock.except[0]: ...``). ``policyTypes`` defaults as the
    API server does (Ingress, plus Egress when there are egress rules).
    """
    raise NotImplementedError


def parse_namespace(obj: Mapping[str, Any], *, where: str = "") -> Namespace:
    raise NotImplementedError


class PolicyModel:
    """The expected verdicts for a set of policies, namespaces and pods.

    Built once (selectors evaluated once per policy); :meth:`decide` is then cheap, :meth:`matrix` is
    the fast whole-matrix form. Pods are matched by key; an IP that is no pod's (``dst``/``src`` given as
    an address string) is matched against ``ipBlock`` peers only.
    """

    def __init__(
        self,
        policies: Iterable[NetworkPolicy],
        namespaces: Iterable[Namespace],
        pods: Iterable[PolicyPod],
    ) -> None:
        raise NotImplementedError

    def decide(self, src: PolicyPod | str, dst: PolicyPod | str, port: int, protocol: Protocol) -> Decision:
        raise NotImplementedError

    def ingress_policies(self, pod: PolicyPod) -> tuple[NetworkPolicy, ...]:
        """The policies that select ``pod`` for ingress (it is ingress-isolated iff this is non-empty)."""
        raise NotImplementedError

    def egress_policies(self, pod: PolicyPod) -> tuple[NetworkPolicy, ...]:
        raise NotImplementedError

    def pod_rules(self, pod: PolicyPod) -> PodRules:
        """The compiled rules of ``pod`` (what the lab's policy agent turns into chains and ipsets)."""
        raise NotImplementedError
