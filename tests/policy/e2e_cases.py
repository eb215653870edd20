"""The 48 cases of the Kubernetes e2e NetworkPolicy suite, as data.

Ported from ``../shared/upstream/k8s-netpol/network_policy.go`` (semantics from ``reachability.go``,
``truthtable.go`` and ``model.go``). Each :class:`Case` has the ``It(...)`` string, its line in
network_policy.go, the feature it needs beyond TCP/UDP (``"SCTP"`` for the three SCTP-probing cases;
the two cases that only *declare* SCTP in a policy but probe TCP need nothing) and its steps in order:

- :class:`Apply`: create or update (same namespace/name replaces) a NetworkPolicy given as a plain dict,
  exactly what ``kubectl apply`` would receive (``metadata.namespace`` always set);
- :class:`Delete`: delete one policy; :class:`LabelNamespace` / :class:`LabelPod`: add (or overwrite)
  labels, as upstream's AddNamespaceLabel / AddPodLabels;
- :class:`Probe`: probe every ordered pair of the 9 pods on ``port``/``protocol`` and compare with
  ``expected`` (``expected[i][j]``: pod ``PODS[i]`` may reach ``PODS[j]``), built with upstream's own
  Reachability operations (ExpectPeer, ExpectAllIngress, ExpectAllEgress, Expect). Loopback cells
  (``i == j``) are ignored, as upstream does (``ignoreLoopback``); :meth:`Probe.cells` leaves them out.

The model: namespaces x, y, z (labels ``ns: <name>`` and ``kubernetes.io/metadata.name: <name>``; upstream
adds a random suffix to the names, which no case depends on), pods a, b, c in each (label ``pod: <name>``),
each serving TCP and UDP on 80 and 81 with named ports ``serve-80-tcp``, ``serve-81-tcp``,
``serve-80-udp``, ``serve-81-udp``.

Pod IPs: the three ipBlock cases need pod addresses. Their CIDRs are written as placeholders
``"@<ns>/<pod>/<prefix length>"`` (e.g. ``"@y/b/32"``: y/b's IP with /32; ``"@x/a/4"``: x/a's IP with /4,
host bits set, as upstream writes it); :func:`resolve` replaces them, given each pod's IP.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PODS = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES)
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
UPSTREAM = "network_policy.go"

Matrix = tuple[tuple[bool, ...], ...]


@dataclass(frozen=True)
class Apply:
    """Create or update a NetworkPolicy (a plain object, possibly with ``@ns/pod/len`` CIDRs)."""

    policy: Mapping[str, Any]

    @property
    def key(self) -> str:
        meta = self.policy["metadata"]
        return f"{meta['namespace']}/{meta['name']}"


@dataclass(frozen=True)
class Delete:
    namespace: str
    name: str


@dataclass(frozen=True)
class LabelNamespace:
    namespace: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class LabelPod:
    namespace: str
    pod: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Probe:
    port: int
    protocol: str
    expected: Matrix

    def cells(self) -> Iterator[tuple[str, str, bool]]:
        """(source, destination, expected allowed) for every ordered pair, loopback excluded."""
        for i, src in enumerate(PODS):
            for j, dst in enumerate(PODS):
                if i != j:
                    yield src, dst, self.expected[i][j]

    def render(self) -> str:
        """The truth table as upstream prints it (``.`` allowed, ``X`` denied)."""
        lines = ["-\t" + "\t".join(PODS)]
        for i, src in enumerate(PODS):
            lines.append(src + "\t" + "\t".join("." if v else "X" for v in self.expected[i]))
        return "\n".join(lines)


Step = Apply | Delete | LabelNamespace | LabelPod | Probe


@dataclass(frozen=True)
class Case:
    name: str
    line: int
    steps: tuple[Step, ...]
    feature: str | None = None  # what it needs beyond TCP/UDP (SCTP)

    @property
    def id(self) -> str:
        return f"L{self.line}"

    @property
    def title(self) -> str:
        return f"{self.name} ({UPSTREAM}:{self.line})"

    @property
    def probes(self) -> tuple[Probe, ...]:
        return tuple(s for s in self.steps if isinstance(s, Probe))


# ---------------------------------------------------------------------------------- upstream's helpers


class Reachability:
    """Upstream's Reachability (default expectation: connected), then :meth:`probe` freezes it."""

    def __init__(self) -> None:
        self.values = [[True] * len(PODS) for _ in PODS]

    @staticmethod
    def _match(pod: str, ns: str | None, name: str | None) -> bool:
        pns, pname = pod.split("/")
        return (ns is None or ns == pns) and (name is None or name == pname)

    def expect_peer(
        self, src: tuple[str | None, str | None], dst: tuple[str | None, str | None], ok: bool
    ) -> None:
        """``ExpectPeer(&Peer{Namespace, Pod}, &Peer{...}, ok)``; ``None`` matches anything."""
        for i, a in enumerate(PODS):
            if self._match(a, *src):
                for j, b in enumerate(PODS):
                    if self._match(b, *dst):
                        self.values[i][j] = ok

    def expect(self, src: str, dst: str, ok: bool) -> None:
        self.values[PODS.index(src)][PODS.index(dst)] = ok

    def expect_all_ingress(self, dst: str, ok: bool) -> None:
        j = PODS.index(dst)
        for row in self.values:
            row[j] = ok

    def expect_all_egress(self, src: str, ok: bool) -> None:
        self.values[PODS.index(src)] = [ok] * len(PODS)

    def probe(self, port: int, protocol: str = "TCP") -> Probe:
        return Probe(port, protocol, tuple(tuple(row) for row in self.values))


ANY: tuple[str | None, str | None] = (None, None)


def ns(name: str) -> tuple[str | None, str | None]:
    return (name, None)


def pod(namespace: str, name: str) -> tuple[str | None, str | None]:
    return (namespace, name)


def reach(*ops: Callable[[Reachability], None]) -> Reachability:
    r = Reachability()
    for op in ops:
        op(r)
    return r


def allow_all() -> Reachability:
    return Reachability()


def policy(
    name: str,
    namespace: str,
    pod_selector: Mapping[str, Any],
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
    policy_types: list[str] | None = None,
) -> dict[str, Any]:
    """GenNetworkPolicyWithNameAndPodSelector + SetSpecIngressRules/SetSpecEgressRules: each Set adds its
    policyType (so a policy made with only SetSpecEgressRules has ``policyTypes: [Egress]``)."""
    spec: dict[str, Any] = {"podSelector": dict(pod_selector)}
    types: list[str] = []
    if ingress is not None:
        spec["ingress"] = ingress
        types.append("Ingress")
    if egress is not None:
        spec["egress"] = egress
        types.append("Egress")
    spec["policyTypes"] = policy_types if policy_types is not None else types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def match_labels(**labels: str) -> dict[str, Any]:
    return {"matchLabels": dict(labels)}


def ns_label(value: str) -> dict[str, Any]:
    return {"matchLabels": {NAMESPACE_LABEL: value}}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": operator, "values": list(values)}]}


def tcp(port: int | str | None = None) -> dict[str, Any]:
    return _port("TCP", port)


def udp(port: int | str | None = None) -> dict[str, Any]:
    return _port("UDP", port)


def sctp(port: int | str | None = None) -> dict[str, Any]:
    return _port("SCTP", port)


def _port(protocol: str, port: int | str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": protocol}
    if port is not None:
        out["port"] = port
    return out


_CIDR = re.compile(r"^@(?P<ns>[a-z0-9-]+)/(?P<pod>[a-z0-9-]+)/(?P<len>\d+)$")


def resolve(obj: Mapping[str, Any], ips: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a policy object with every ``@ns/pod/len`` CIDR replaced by ``<ip of ns/pod>/len``."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and (m := _CIDR.match(value)):
            return f"{ips[m['ns'] + '/' + m['pod']]}/{m['len']}"
        return value

    return dict(walk(copy.deepcopy(dict(obj))))


# ------------------------------------------------------------------------------------------- the cases

E: dict[str, Any] = {}  # the empty selector


def _deny_ingress_x() -> Reachability:
    return reach(lambda r: r.expect_peer(ANY, ns("x"), False))


def _only_y_to_xa() -> Reachability:
    return reach(
        lambda r: r.expect_peer(ns("x"), pod("x", "a"), False),
        lambda r: r.expect_peer(ns("z"), pod("x", "a"), False),
    )


def _only_ya_to_xa() -> Reachability:
    return reach(lambda r: r.expect_all_ingress("x/a", False), lambda r: r.expect("y/a", "x/a", True))


def _general() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    add(
        Case(
            "should support a 'default-deny-ingress' policy",
            120,
            (
                Apply(policy("deny-ingress", "x", E, ingress=[])),
                _deny_ingress_x().probe(80),
            ),
        )
    )
    add(
        Case(
            "should support a 'default-deny-all' policy",
            147,
            (
                Apply(policy("deny-all", "x", E, ingress=[], egress=[])),
                reach(
                    lambda r: r.expect_peer(ANY, ns("x"), False), lambda r: r.expect_peer(ns("x"), ANY, False)
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
            162,
            (
                Apply(
                    policy(
                        "x-a-allows-x-b",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"from": [{"podSelector": match_labels(pod="b")}]}],
                    )
                ),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False), lambda r: r.expect("x/b", "x/a", True)
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy to allow ingress traffic for a target",
            185,
            (
                Apply(policy("deny-all", "x", E, ingress=[])),
                Apply(
                    policy(
                        "allow-all-to-a",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"from": [{"podSelector": E, "namespaceSelector": E}]}],
                    )
                ),
                reach(
                    lambda r: r.expect_all_ingress("x/a", True),
                    lambda r: r.expect_all_ingress("x/b", False),
                    lambda r: r.expect_all_ingress("x/c", False),
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy to allow ingress traffic from pods in all namespaces",
            210,
            (
                Apply(
                    policy(
                        "allow-from-another-ns",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {}}}]}],
                    )
                ),
                allow_all().probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",  # noqa: E501
            224,
            (
                Apply(
                    policy(
                        "allow-client-a-via-ns-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"from": [{"namespaceSelector": ns_label("y")}]}],
                    )
                ),
                _only_y_to_xa().probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy based on PodSelector with MatchExpressions",
            242,
            (
                Apply(
                    policy(
                        "x-a-allows-x-b",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"from": [{"podSelector": expr("pod", "In", "b")}]}],
                    )
                ),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False), lambda r: r.expect("x/b", "x/a", True)
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy based on NamespaceSelector with MatchExpressions",
            267,
            (
                Apply(
                    policy(
                        "allow-ns-y-match-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"from": [{"namespaceSelector": expr(NAMESPACE_LABEL, "In", "y")}]}],
                    )
                ),
                _only_y_to_xa().probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy based on PodSelector or NamespaceSelector",
            292,
            (
                Apply(
                    policy(
                        "allow-ns-y-match-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {"namespaceSelector": expr(NAMESPACE_LABEL, "NotIn", "x")},
                                    {"podSelector": match_labels(pod="b")},
                                ]
                            }
                        ],
                    )
                ),
                reach(lambda r: r.expect("x/a", "x/a", False), lambda r: r.expect("x/c", "x/a", False)).probe(
                    80
                ),
            ),
        )
    )
    add(
        Case(
            "should enforce policy based on PodSelector and NamespaceSelector",
            321,
            (
                Apply(
                    policy(
                        "allow-ns-y-podselector-and-nsselector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {
                                        "namespaceSelector": expr(NAMESPACE_LABEL, "NotIn", "x"),
                                        "podSelector": match_labels(pod="b"),
                                    },
                                ]
                            }
                        ],
                    )
                ),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False),
                    lambda r: r.expect("y/b", "x/a", True),
                    lambda r: r.expect("z/b", "x/a", True),
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
            351,
            (
                Apply(
                    policy(
                        "allow-ns-y-z-pod-b-c",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {
                                        "namespaceSelector": expr(NAMESPACE_LABEL, "NotIn", "x"),
                                        "podSelector": expr("pod", "In", "b", "c"),
                                    },
                                ]
                            }
                        ],
                    )
                ),
                reach(
                    lambda r: r.expect_peer(ns("x"), pod("x", "a"), False),
                    lambda r: r.expect("y/a", "x/a", False),
                    lambda r: r.expect("z/a", "x/a", False),
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy based on any PodSelectors",
            384,
            (
                Apply(
                    policy(
                        "allow-ns-x-pod-b-c",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {"podSelector": match_labels(pod="b")},
                                    {"podSelector": match_labels(pod="c")},
                                ]
                            }
                        ],
                    )
                ),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False),
                    lambda r: r.expect("x/b", "x/a", True),
                    lambda r: r.expect("x/c", "x/a", True),
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",  # noqa: E501
            406,
            (
                Apply(
                    policy(
                        "allow-ns-y-pod-a-via-namespace-pod-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {
                                        "namespaceSelector": ns_label("y"),
                                        "podSelector": match_labels(pod="a"),
                                    },
                                ]
                            }
                        ],
                    )
                ),
                _only_ya_to_xa().probe(80),
            ),
        )
    )
    y_81 = {"from": [{"namespaceSelector": ns_label("y")}], "ports": [tcp(81)]}
    only_y = reach(
        lambda r: r.expect_peer(ns("x"), pod("x", "a"), False),
        lambda r: r.expect_peer(ns("y"), pod("x", "a"), True),
        lambda r: r.expect_peer(ns("z"), pod("x", "a"), False),
    )
    add(
        Case(
            "should enforce policy based on Ports",
            433,
            (
                Apply(policy("allow-client-a-via-ns-selector", "x", match_labels(pod="a"), ingress=[y_81])),
                only_y.probe(81),
            ),
        )
    )
    add(
        Case(
            "should enforce multiple, stacked policies with overlapping podSelectors",
            458,
            (
                Apply(policy("allow-client-a-via-ns-selector", "x", match_labels(pod="a"), ingress=[y_81])),
                only_y.probe(81),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(80),
                Apply(
                    policy(
                        "allow-client-a-via-ns-selector-80",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": ns_label("y")}], "ports": [tcp(80)]},
                        ],
                    )
                ),
                only_y.probe(80),
            ),
        )
    )
    add(
        Case(
            "should support allow-all policy",
            500,
            (
                Apply(policy("allow-all", "x", match_labels(), ingress=[{}])),
                allow_all().probe(80),
                allow_all().probe(81),
            ),
        )
    )
    add(
        Case(
            "should allow ingress access on one named port",
            515,
            (
                Apply(
                    policy("allow-all", "x", match_labels(), ingress=[{"ports": [{"port": "serve-81-tcp"}]}])
                ),
                allow_all().probe(81),
                _deny_ingress_x().probe(80),
            ),
        )
    )
    add(
        Case(
            "should allow ingress access from namespace on one named port",
            536,
            (
                Apply(
                    policy(
                        "allow-client-a-via-ns-selector-80",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": ns_label("y")}], "ports": [tcp("serve-80-tcp")]},
                        ],
                    )
                ),
                _only_y_to_xa().probe(80),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(81),
            ),
        )
    )
    add(
        Case(
            "should allow egress access on one named port",
            566,
            (
                Apply(
                    policy(
                        "allow-egress", "x", match_labels(), egress=[{"ports": [{"port": "serve-80-tcp"}]}]
                    )
                ),
                allow_all().probe(80),
                reach(lambda r: r.expect_peer(ns("x"), ANY, False)).probe(81),
            ),
        )
    )
    add(
        Case(
            "should enforce updated policy",
            587,
            (
                Apply(policy("allow-all-mutate-to-deny-all", "x", match_labels(), ingress=[{}])),
                allow_all().probe(81),
                Apply(policy("allow-all-mutate-to-deny-all", "x", match_labels(), ingress=[])),
                _deny_ingress_x().probe(81),
            ),
        )
    )
    add(
        Case(
            "should allow ingress access from updated namespace",
            609,
            (
                Apply(
                    policy(
                        "allow-client-a-via-ns-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": match_labels(ns2="updated")}]},
                        ],
                    )
                ),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(80),
                LabelNamespace("y", {"ns2": "updated"}),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False), lambda r: r.expect_peer(ns("y"), ANY, True)
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should allow ingress access from updated pod",
            640,
            (
                Apply(
                    policy(
                        "allow-client-a-via-pod-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {"from": [{"podSelector": match_labels(pod="b", pod2="updated")}]},
                        ],
                    )
                ),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(80),
                LabelPod("x", "b", {"pod": "b", "pod2": "updated"}),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False), lambda r: r.expect("x/b", "x/a", True)
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should deny ingress from pods on other namespaces",
            669,
            (
                Apply(
                    policy(
                        "deny-empty-policy",
                        "x",
                        E,
                        ingress=[{"from": [{"podSelector": {"matchLabels": {}}}]}],
                    )
                ),
                reach(
                    lambda r: r.expect_peer(ns("y"), ns("x"), False),
                    lambda r: r.expect_peer(ns("z"), ns("x"), False),
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should deny ingress access to updated pod",
            686,
            (
                Apply(
                    policy(
                        "deny-ingress-via-label-selector", "x", match_labels(target="isolated"), ingress=[]
                    )
                ),
                allow_all().probe(80),
                LabelPod("x", "a", {"target": "isolated"}),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(80),
            ),
        )
    )
    add(
        Case(
            "should deny egress from pods based on PodSelector",
            708,
            (
                Apply(policy("deny-egress-pod-a", "x", match_labels(pod="a"), egress=[])),
                reach(lambda r: r.expect_all_egress("x/a", False)).probe(80),
            ),
        )
    )
    add(
        Case(
            "should deny egress from all pods in a namespace",
            722,
            (
                Apply(policy("deny-egress-ns-x", "x", E, egress=[])),
                reach(lambda r: r.expect_peer(ns("x"), ANY, False)).probe(80),
            ),
        )
    )
    add(
        Case(
            "should work with Ingress, Egress specified together",
            736,
            (
                Apply(
                    policy(
                        "allow-client-a-via-pod-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"from": [{"podSelector": match_labels(pod="b")}]}],
                        egress=[{"ports": [{"port": 80}]}],
                        policy_types=["Egress", "Ingress"],
                    )
                ),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False), lambda r: r.expect("x/b", "x/a", True)
                ).probe(80),
                reach(
                    lambda r: r.expect_all_ingress("x/a", False),
                    lambda r: r.expect_all_egress("x/a", False),
                    lambda r: r.expect("x/b", "x/a", True),
                ).probe(81),
            ),
        )
    )
    from_xa = [{"from": [{"namespaceSelector": ns_label("x"), "podSelector": match_labels(pod="a")}]}]
    add(
        Case(
            "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",  # noqa: E501
            774,
            (
                Apply(
                    policy(
                        "allow-to-ns-y-pod-a",
                        "x",
                        match_labels(pod="a"),
                        egress=[
                            {
                                "to": [
                                    {"namespaceSelector": ns_label("y"), "podSelector": match_labels(pod="a")}
                                ]
                            },
                        ],
                    )
                ),
                Apply(
                    policy("allow-from-xa-on-ya-match-selector", "y", match_labels(pod="a"), ingress=from_xa)
                ),
                Apply(
                    policy("allow-from-xa-on-yb-match-selector", "y", match_labels(pod="b"), ingress=from_xa)
                ),
                reach(
                    lambda r: r.expect_peer(pod("x", "a"), ANY, False),
                    lambda r: r.expect_peer(ANY, pod("y", "a"), False),
                    lambda r: r.expect_peer(pod("x", "a"), pod("y", "a"), True),
                    lambda r: r.expect_peer(ANY, pod("y", "b"), False),
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",  # noqa: E501
            870,
            (
                Apply(
                    policy(
                        "allow-to-ns-y-pod-a",
                        "x",
                        match_labels(pod="a"),
                        egress=[
                            {
                                "to": [
                                    {"namespaceSelector": ns_label("y"), "podSelector": match_labels(pod="a")}
                                ]
                            },
                        ],
                    )
                ),
                reach(
                    lambda r: r.expect_all_egress("x/a", False), lambda r: r.expect("x/a", "y/a", True)
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
            896,
            (
                Apply(
                    policy("allow-ingress-by-proto", "x", match_labels(pod="a"), ingress=[{"ports": [tcp()]}])
                ),
                allow_all().probe(80, "TCP"),
                reach(lambda r: r.expect_peer(ANY, pod("x", "a"), False)).probe(80, "UDP"),
            ),
        )
    )
    add(
        Case(
            "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
            914,
            (
                Apply(
                    policy("allow-ingress-port-80", "x", match_labels(), ingress=[{"ports": [{"port": 80}]}])
                ),
                _deny_ingress_x().probe(81),
                Apply(policy("allow-ingress", "x", match_labels(), ingress=[{}])),
                allow_all().probe(81),
            ),
        )
    )
    add(
        Case(
            "should enforce multiple egress policies with egress allow-all policy taking precedence",
            939,
            (
                Apply(
                    policy("allow-egress-port-80", "x", match_labels(), egress=[{"ports": [{"port": 80}]}])
                ),
                reach(lambda r: r.expect_peer(ns("x"), ANY, False)).probe(81),
                Apply(policy("allow-egress", "x", match_labels(), egress=[{}])),
                allow_all().probe(81),
            ),
        )
    )
    add(
        Case(
            "should stop enforcing policies after they are deleted",
            964,
            (
                Apply(policy("deny-all", "x", E, ingress=[], egress=[])),
                reach(
                    lambda r: r.expect_peer(ns("x"), ANY, False), lambda r: r.expect_peer(ANY, ns("x"), False)
                ).probe(80),
                Delete("x", "deny-all"),  # upstream: cleanNetworkPolicies (every policy of x, y, z)
                allow_all().probe(80),
            ),
        )
    )
    add(
        Case(
            "should allow egress access to server in CIDR block",
            992,
            (
                Apply(
                    policy(
                        "allow-client-a-via-cidr-egress-rule",
                        "x",
                        match_labels(pod="a"),
                        egress=[
                            {"to": [{"ipBlock": {"cidr": "@y/b/32"}}]},
                        ],
                    )
                ),
                reach(
                    lambda r: r.expect_all_egress("x/a", False), lambda r: r.expect("x/a", "y/b", True)
                ).probe(80),
            ),
        )
    )
    except_xb = [{"to": [{"ipBlock": {"cidr": "@x/a/4", "except": ["@x/b/32"]}}]}]
    add(
        Case(
            "should enforce except clause while egress access to server in CIDR block",
            1019,
            (
                Apply(
                    policy(
                        "allow-client-a-via-cidr-egress-rule", "x", match_labels(pod="a"), egress=except_xb
                    )
                ),
                reach(lambda r: r.expect("x/a", "x/b", False)).probe(80),
            ),
        )
    )
    add(
        Case(
            "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
            1053,
            (
                Apply(
                    policy(
                        "allow-client-a-via-cidr-egress-rule", "x", match_labels(pod="a"), egress=except_xb
                    )
                ),
                reach(lambda r: r.expect("x/a", "x/b", False)).probe(80),
                Apply(
                    policy(
                        "allow-client-a-via-cidr-egress-rule",
                        "x",
                        match_labels(pod="a"),
                        egress=[
                            {"to": [{"ipBlock": {"cidr": "@x/b/32"}}]},
                        ],
                    )
                ),  # upstream: UpdatePolicy (same name)
                reach(
                    lambda r: r.expect_all_egress("x/a", False), lambda r: r.expect("x/a", "x/b", True)
                ).probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",  # noqa: E501
            1102,
            (
                Apply(policy("allow-egress-for-target", "x", match_labels(pod="a"), egress=[{}])),
                allow_all().probe(80),
                Apply(policy("deny-ingress-via-label-selector", "x", match_labels(pod="a"), ingress=[])),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(80),
            ),
        )
    )
    add(
        Case(
            "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",  # noqa: E501
            1139,
            (
                Apply(policy("deny-ingress", "x", E, ingress=[])),
                Apply(
                    policy(
                        "allow-only-sctp-ingress-on-port-81",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"ports": [sctp(81)]}],
                    )
                ),
                _deny_ingress_x().probe(81),
            ),
        )
    )
    add(
        Case(
            "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",  # noqa: E501
            1165,
            (
                Apply(
                    policy(
                        "allow-only-sctp-ingress-on-port-80",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"ports": [sctp(80)]}],
                    )
                ),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(81),
            ),
        )
    )
    add(
        Case(
            "should not allow access by TCP when a policy specifies only UDP",
            1182,
            (
                Apply(
                    policy(
                        "allow-only-udp-ingress-on-port-81",
                        "x",
                        match_labels(pod="a"),
                        ingress=[{"ports": [udp(81)]}],
                    )
                ),
                reach(lambda r: r.expect_all_ingress("x/a", False)).probe(81),
            ),
        )
    )
    add(
        Case(
            "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",  # noqa: E501
            1201,
            (
                Apply(
                    policy(
                        "allow-client-a-via-ns-selector-for-immutable-ns-label",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": ns_label("y")}]},
                        ],
                    )
                ),
                _only_y_to_xa().probe(80),
            ),
        )
    )
    add(
        Case(
            "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
            1224,
            (
                Apply(
                    policy(
                        "allow-ns-y-match-selector-for-immutable-ns-label",
                        "x",
                        match_labels(pod="a"),
                        egress=[
                            {"to": [{"namespaceSelector": expr(NAMESPACE_LABEL, "NotIn", "y")}]},
                        ],
                    )
                ),
                reach(lambda r: r.expect_peer(pod("x", "a"), ns("y"), False)).probe(80),
            ),
        )
    )
    return cases


def _by_protocol(protocol: str, lines: tuple[int, int, int], feature: str | None) -> list[Case]:
    """The three cases of the UDP context (and, the same, of the SCTP one)."""
    deny, ports, pod_ns = lines
    name = "allow-ingress-on-port-81-ns-x"
    return [
        Case(
            "should support a 'default-deny-ingress' policy",
            deny,
            (
                Apply(policy("deny-all", "x", E, ingress=[])),
                _deny_ingress_x().probe(80, protocol),
            ),
            feature,
        ),
        Case(
            "should enforce policy based on Ports",
            ports,
            (
                Apply(
                    policy(
                        name,
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {"from": [{"namespaceSelector": ns_label("y")}], "ports": [_port(protocol, 81)]},
                        ],
                    )
                ),
                _only_y_to_xa().probe(81, protocol),
            ),
            feature,
        ),
        Case(
            "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",  # noqa: E501
            pod_ns,
            (
                Apply(
                    policy(
                        "allow-ns-y-pod-a-via-namespace-pod-selector",
                        "x",
                        match_labels(pod="a"),
                        ingress=[
                            {
                                "from": [
                                    {
                                        "namespaceSelector": ns_label("y"),
                                        "podSelector": match_labels(pod="a"),
                                    },
                                ]
                            }
                        ],
                    )
                ),
                _only_ya_to_xa().probe(80, protocol),
            ),
            feature,
        ),
    ]


CASES: tuple[Case, ...] = (
    *_general(),
    *_by_protocol("UDP", (1260, 1274, 1299), None),
    *_by_protocol("SCTP", (1340, 1354, 1378), "SCTP"),
)
