"""Build the reachability matrix: :class:`ProbeTarget`s from a :class:`Cluster`'s pods, services and nodes.

Kinds (``ProbeKind``) and what they probe:

- ``container``: from a pod to ``127.0.0.1:PORT`` for each port of pods declaring two or more ports
  (two containers sharing the pod's namespace);
- ``pod-same-node`` / ``pod-cross-node``: pod to pod IP on the destination's first port;
- ``service-ip``: pod to ``ClusterIP:port``; ``service-dns``: pod to ``NAME.NS.svc.cluster.local:port``
  (the prober resolves the name through the source's resolver);
- ``node-to-pod``: node to the pods it hosts (what kubelet probes need); ``node_to_pod="all"`` for all pods;
- ``nodeport``: from ``outside`` to ``NODE_ADDRESS:nodePort``, for every node;
- ``dns``: pod asks the cluster resolver for each service name and expects its ClusterIP.

Targets of protocol ``dns`` put the resolver in ``host:port``, the name in ``path`` and the expected
address in ``expect_body``.

NetworkPolicy: these kinds probe what must flow. A probe the cluster's NetworkPolicies deny (the policy
model's verdict, :class:`PolicyFilter`) is left out of the matrix and counted
(:attr:`MatrixBuilder.left_out`); ``scope: policy`` verifies those, denied and allowed. A Service, DNS or
NodePort probe is left out when policy denies it for any endpoint (which endpoint answers is kube-proxy's
choice); a NodePort probe also when an endpoint is ingress-isolated at all (the source its endpoint sees
depends on the node's SNAT). Traffic from a node to its own pods is never filtered (Kubernetes allows it).

Sampling (``per_source``) keeps the size linear in the number of pods: each source gets at most that many
destinations per group (pods, services, DNS names); each node gets that many NodePort services and local
pods. The choice is seeded by ``seed`` and the source's name, so it is stable between runs and between the
baseline and later verifications.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from loguru import logger

from migrator.errors import UsageError
from migrator.policy.model import PolicyModel, Verdict
from migrator.policy.model import Protocol as L4
from migrator.ports import Cluster, Node, Pod, ProbeKind, ProbeProtocol, ProbeTarget, Service, ServicePort
from migrator.probe.policy import policy_pod

OUTSIDE = "outside"
DNS_SERVICE_NAMES = (("kube-system", "kube-dns"), ("kube-system", "coredns"))

T = TypeVar("T")


class Scope(StrEnum):
    ALL = "all"
    CROSS_NODE = "cross-node"
    SERVICES = "services"
    PODS = "pods"
    POLICY = "policy"  # allowed and denied pairs per NetworkPolicy: see migrator.probe.policy


class NodeToPod(StrEnum):
    LOCAL = "local"
    ALL = "all"


SCOPE_KINDS: dict[Scope, frozenset[ProbeKind]] = {
    Scope.ALL: frozenset(ProbeKind) - {ProbeKind.POLICY},
    Scope.CROSS_NODE: frozenset({ProbeKind.POD_CROSS_NODE}),
    Scope.SERVICES: frozenset(
        {ProbeKind.SERVICE_IP, ProbeKind.SERVICE_DNS, ProbeKind.NODEPORT, ProbeKind.DNS}
    ),
    Scope.PODS: frozenset(
        {ProbeKind.CONTAINER, ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE, ProbeKind.NODE_TO_POD}
    ),
    Scope.POLICY: frozenset({ProbeKind.POLICY}),  # built by migrator.probe.policy, not by MatrixBuilder
}


@dataclass(frozen=True)
class MatrixOptions:
    """What to put in the matrix.

    ``kinds`` overrides ``scope``. ``per_source`` samples destinations (``None``: all). ``protocol`` is
    used for every TCP destination (``http``: GET ``path``, expecting ``expect_status``). ``pod_port``
    overrides each pod's first declared port. ``dns_server`` defaults to the ClusterIP of
    ``kube-system/kube-dns`` (or ``coredns``). ``namespaces`` restricts pods and services;
    ``exclude_nodes`` drops every pod on those nodes (and the nodes) from sources and destinations.
    Destination ports in ``tcp_ports`` (default 53: DNS pods and ``kube-dns``'s TCP port) are probed with a
    TCP connect, not HTTP.
    """

    scope: Scope = Scope.ALL
    kinds: frozenset[ProbeKind] | None = None
    per_source: int | None = None
    seed: int = 0
    protocol: ProbeProtocol = ProbeProtocol.HTTP
    path: str = "/"
    expect_status: int | None = 200
    timeout: float = 1.0
    pod_port: int | None = None
    dns_server: str | None = None
    node_to_pod: NodeToPod = NodeToPod.LOCAL
    include_self: bool = False
    namespaces: frozenset[str] | None = None
    exclude_nodes: frozenset[str] = frozenset()
    tcp_ports: frozenset[int] = frozenset({53})

    @property
    def wanted(self) -> frozenset[ProbeKind]:
        return self.kinds if self.kinds is not None else SCOPE_KINDS[self.scope]


def sample(items: Sequence[T], k: int | None, seed: int, source: str, group: str) -> list[T]:
    """At most ``k`` items, chosen by a generator seeded with (seed, source, group); order kept."""
    if k is None or len(items) <= k:
        return list(items)
    if k < 0:
        raise UsageError(f"per_source must be >= 0, got {k}")
    rng = random.Random(f"{seed}|{source}|{group}")
    chosen = sorted(rng.sample(range(len(items)), k))
    return [items[i] for i in chosen]


def find_dns_server(services: Iterable[Service]) -> str | None:
    by_key = {(s.namespace, s.name): s for s in services}
    for key in DNS_SERVICE_NAMES:
        svc = by_key.get(key)
        if svc is not None and svc.cluster_ip and svc.cluster_ip != "None":
            return svc.cluster_ip
    return None


def _tcp_ports(svc: Service) -> list[ServicePort]:
    return [p for p in svc.ports if p.protocol.upper() == "TCP"]


def _service_dest(svc: Service, port: ServicePort) -> str:
    suffix = f":{port.port}" if len(_tcp_ports(svc)) > 1 else ""
    return f"{svc.namespace}/{svc.name}{suffix}"


class PolicyFilter:
    """Which probes of the matrix the cluster's NetworkPolicies deny (the policy model's verdict)."""

    def __init__(self, cluster: Cluster, pods: Sequence[Pod]) -> None:
        policies = cluster.list_network_policies()
        self.model: PolicyModel | None = None
        if policies:
            self.model = PolicyModel(list(policies), cluster.list_namespaces(), [policy_pod(p) for p in pods])

    def denied(self, src: str, dst_ip: str, port: int, protocol: L4 = L4.TCP) -> bool:
        """Whether policy denies pod ``src`` (its key) -> ``dst_ip:port``."""
        if self.model is None:
            return False
        return self.model.decide(self.model.pod(src), dst_ip, port, protocol).verdict is Verdict.DENY

    def any_denied(self, src: str, endpoints: Iterable[str], port: int, protocol: L4 = L4.TCP) -> bool:
        return any(self.denied(src, ip, port, protocol) for ip in endpoints)

    def ingress_isolated(self, endpoints: Iterable[str]) -> bool:
        """Whether a policy isolates any of these addresses (pods) for ingress."""
        if self.model is None:
            return False
        model = self.model
        return any(model.ingress_policies(pod) for ip in endpoints if (pod := model.pod_at(ip)) is not None)


class MatrixBuilder:
    def __init__(self, cluster: Cluster, options: MatrixOptions) -> None:
        self.o = options
        nodes = sorted(cluster.list_nodes(), key=lambda n: n.name)
        self.nodes: list[Node] = [n for n in nodes if n.name not in options.exclude_nodes]
        listed = cluster.list_pods()
        self.policy = PolicyFilter(cluster, listed)
        self.left_out = 0
        """Probes left out of the matrix because NetworkPolicy denies them."""
        self.pods: list[Pod] = sorted(
            (
                p
                for p in listed
                if p.ready
                and p.ip
                and not p.host_network
                and p.node not in options.exclude_nodes
                and (options.namespaces is None or p.namespace in options.namespaces)
            ),
            key=lambda p: p.key,
        )
        all_services = cluster.list_services()
        self.dns_server = options.dns_server or find_dns_server(all_services)
        self.services: list[Service] = sorted(
            (
                s
                for s in all_services
                if s.cluster_ip
                and s.cluster_ip != "None"
                and _tcp_ports(s)
                and (options.namespaces is None or s.namespace in options.namespaces)
            ),
            key=lambda s: (s.namespace, s.name),
        )
        self.dns_service = next((s for s in all_services if s.cluster_ip == self.dns_server), None)

    def _keep(self, denied: bool) -> bool:
        if denied:
            self.left_out += 1
        return not denied

    def _target(self, source: str, dest: str, kind: ProbeKind, host: str, port: int) -> ProbeTarget:
        return ProbeTarget(
            source=source,
            dest=dest,
            kind=kind,
            host=host,
            port=port,
            protocol=ProbeProtocol.TCP if port in self.o.tcp_ports else self.o.protocol,
            path=self.o.path,
            expect_status=self.o.expect_status,
            timeout=self.o.timeout,
        )

    def _pod_port(self, pod: Pod) -> int | None:
        return self.o.pod_port or (pod.ports[0] if pod.ports else None)

    def container(self) -> list[ProbeTarget]:
        out: list[ProbeTarget] = []
        for pod in self.pods:
            if len(pod.ports) >= 2:
                out.extend(  # the container's own port too: same netns, so it must answer on localhost
                    self._target(pod.key, f"{pod.key}:{port}", ProbeKind.CONTAINER, "127.0.0.1", port)
                    for port in pod.ports
                )
        return out

    def pod_to_pod(self, wanted: frozenset[ProbeKind]) -> list[ProbeTarget]:
        out: list[ProbeTarget] = []
        for src in self.pods:
            candidates: list[tuple[Pod, int]] = []
            for dst in self.pods:
                port = self._pod_port(dst)
                if port is None or (dst.key == src.key and not self.o.include_self):
                    continue
                kind = ProbeKind.POD_SAME_NODE if dst.node == src.node else ProbeKind.POD_CROSS_NODE
                if kind in wanted and self._keep(self.policy.denied(src.key, str(dst.ip), port)):
                    candidates.append((dst, port))
            for dst, port in sample(candidates, self.o.per_source, self.o.seed, src.key, "pods"):
                kind = ProbeKind.POD_SAME_NODE if dst.node == src.node else ProbeKind.POD_CROSS_NODE
                assert dst.ip is not None
                out.append(self._target(src.key, dst.key, kind, dst.ip, port))
        return out

    def services_from_pods(self, wanted: frozenset[ProbeKind]) -> list[ProbeTarget]:
        out: list[ProbeTarget] = []
        pairs = [(s, p) for s in self.services for p in _tcp_ports(s)]
        for src in self.pods:
            allowed = [
                (svc, port)
                for svc, port in pairs
                if self._keep(self.policy.any_denied(src.key, svc.endpoints, port.target_port))
            ]
            for svc, port in sample(allowed, self.o.per_source, self.o.seed, src.key, "services"):
                dest = _service_dest(svc, port)
                if ProbeKind.SERVICE_IP in wanted:
                    assert svc.cluster_ip is not None
                    out.append(self._target(src.key, dest, ProbeKind.SERVICE_IP, svc.cluster_ip, port.port))
                if ProbeKind.SERVICE_DNS in wanted:
                    out.append(self._target(src.key, dest, ProbeKind.SERVICE_DNS, svc.dns_name, port.port))
        return out

    def dns(self) -> list[ProbeTarget]:
        if self.dns_server is None:
            logger.warning("no cluster DNS service found and no dns_server given: skipping the dns kind")
            return []
        out: list[ProbeTarget] = []
        resolvers = self.dns_service.endpoints if self.dns_service is not None else ()
        for src in self.pods:
            if not self._keep(self.policy.any_denied(src.key, resolvers, 53, L4.UDP)):
                continue
            for svc in sample(self.services, self.o.per_source, self.o.seed, src.key, "dns"):
                out.append(
                    ProbeTarget(
                        source=src.key,
                        dest=svc.dns_name,
                        kind=ProbeKind.DNS,
                        host=self.dns_server,
                        port=53,
                        protocol=ProbeProtocol.DNS,
                        path=svc.dns_name,
                        expect_status=None,
                        expect_body=svc.cluster_ip,
                        timeout=self.o.timeout,
                    )
                )
        return out

    def node_to_pod(self) -> list[ProbeTarget]:
        out: list[ProbeTarget] = []
        for node in self.nodes:
            local = self.o.node_to_pod is NodeToPod.LOCAL
            candidates = [p for p in self.pods if self._pod_port(p) and (not local or p.node == node.name)]
            for pod in sample(candidates, self.o.per_source, self.o.seed, node.name, "node-to-pod"):
                port = self._pod_port(pod)
                assert pod.ip is not None and port is not None
                out.append(self._target(node.name, pod.key, ProbeKind.NODE_TO_POD, pod.ip, port))
        return out

    def nodeport(self) -> list[ProbeTarget]:
        out: list[ProbeTarget] = []
        pairs = [
            (s, p)
            for s in self.services
            for p in _tcp_ports(s)
            if p.node_port and self._keep(self.policy.ingress_isolated(s.endpoints))
        ]
        for node in self.nodes:
            for svc, port in sample(pairs, self.o.per_source, self.o.seed, node.name, "nodeport"):
                assert port.node_port is not None
                dest = f"{_service_dest(svc, port)}@{node.name}"
                out.append(self._target(OUTSIDE, dest, ProbeKind.NODEPORT, node.address, port.node_port))
        return out

    def build(self) -> list[ProbeTarget]:
        wanted = self.o.wanted
        out: list[ProbeTarget] = []
        if ProbeKind.CONTAINER in wanted:
            out += self.container()
        if wanted & {ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE}:
            out += self.pod_to_pod(wanted)
        if wanted & {ProbeKind.SERVICE_IP, ProbeKind.SERVICE_DNS}:
            out += self.services_from_pods(wanted)
        if ProbeKind.NODE_TO_POD in wanted:
            out += self.node_to_pod()
        if ProbeKind.NODEPORT in wanted:
            out += self.nodeport()
        if ProbeKind.DNS in wanted:
            out += self.dns()
        return out


def build_matrix(cluster: Cluster, options: MatrixOptions | None = None) -> list[ProbeTarget]:
    """Every probe of the matrix for ``cluster`` under ``options`` (deterministic for a given cluster)."""
    builder = MatrixBuilder(cluster, options or MatrixOptions())
    targets = builder.build()
    logger.debug("matrix: {} targets", len(targets))
    if builder.left_out:
        logger.info(
            "matrix: {} probe(s) left out, denied by NetworkPolicy (scope policy verifies them)",
            builder.left_out,
        )
    return targets


def workload_identities(cluster: Cluster) -> dict[str, str]:
    """Pod key -> ``namespace/owner`` (its Deployment, DaemonSet...), for pods that have an owner.

    Probe endpoints that survive a pod restart under another name; see ``summarize(identity=...)``.
    """
    return {p.key: f"{p.namespace}/{p.owner}" for p in cluster.list_pods() if p.owner}


def pods_on(cluster: Cluster, nodes: Iterable[str]) -> frozenset[str]:
    wanted = set(nodes)
    return frozenset(p.key for p in cluster.list_pods() if p.node in wanted)


def split_by_nodes(
    targets: Sequence[ProbeTarget], cluster: Cluster, nodes: Iterable[str]
) -> tuple[list[ProbeTarget], list[ProbeTarget]]:
    """(targets touching ``nodes`` as source or destination, the others).

    For a ``continuous-probe`` monitor: the second list is the pairs that must not lose a packet while
    ``nodes`` change (``max_loss: 0``). Service and NodePort destinations count as touching only through
    their source, as their endpoints may live anywhere.
    """
    node_set = set(nodes)
    touched = pods_on(cluster, node_set) | node_set
    touching: list[ProbeTarget] = []
    other: list[ProbeTarget] = []
    for t in targets:
        (touching if t.source in touched or t.dest in touched else other).append(t)
    return touching, other
