"""The NetworkPolicy vocabulary: frozen dataclasses built from plain Kubernetes objects (see :mod:`.parse`),
and the compiled form an enforcer programs (:class:`PodRules`). Re-exported by :mod:`migrator.policy.model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from migrator.errors import UsageError

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class PolicyError(UsageError):
    """An invalid NetworkPolicy (or Namespace, or Pod) object; the message names the field.

    ``fields``: the field path of every problem (``spec.ingress[0].ports[0].endPort``), in order; the
    message has one line per problem: ``WHERE (KIND NS/NAME): PATH: MESSAGE``.
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


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

    def matches(self, labels: Mapping[str, str]) -> bool:
        """As k8s.io/apimachinery labels.Requirement: ``NotIn`` and ``DoesNotExist`` match a missing key."""
        match self.operator:
            case Operator.IN:
                return self.key in labels and labels[self.key] in self.values
            case Operator.NOT_IN:
                return self.key not in labels or labels[self.key] not in self.values
            case Operator.EXISTS:
                return self.key in labels
            case Operator.DOES_NOT_EXIST:
                return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """``matchLabels`` and ``matchExpressions`` (ANDed). The empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    @property
    def cache_key(self) -> tuple[tuple[tuple[str, str], ...], tuple[Requirement, ...]]:
        """A hashable identity (the dataclass holds a dict): equal selectors have equal keys."""
        return tuple(sorted(self.match_labels.items())), tuple(
            sorted(self.match_expressions, key=lambda r: (r.key, r.operator.value, sorted(r.values)))
        )


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
