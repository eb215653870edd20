"""The lab's workloads: bookinfo, the generic echo pods, cluster DNS and the DaemonSets; pod scheduling."""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Iterable, Mapping

from migrator.lab.spec import DNS_SERVICE_IP, SERVICE_NETWORK, AppKind, LabSpec
from migrator.lab.state import (
    ContainerPortState,
    NamespaceState,
    NodeState,
    PodState,
    PodTemplate,
    ServicePortState,
    ServiceState,
    Workload,
)

APP_PORT = 9080
SIDECAR_PORT = 15000
PRODUCTPAGE_NODE_PORT = 30080
ECHO_NODE_PORT = 30081
BOOKINFO_NS = "default"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-flannel")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
NETPOL_NAMESPACES = ("x", "y", "z")
NETPOL_PODS = ("a", "b", "c")
NETPOL_PORTS = (80, 81)
NETPOL_PROTOCOLS = ("TCP", "UDP")
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _svc(
    name: str, ns: str, ip: str, selector: Mapping[str, str], node_port: int | None = None
) -> ServiceState:
    return ServiceState(
        name=name,
        namespace=ns,
        cluster_ip=ip,
        ports=[ServicePortState(name="http", port=APP_PORT, target_port=APP_PORT, node_port=node_port)],
        selector=dict(selector),
    )


def _http(
    name: str, app: str, version: str, replicas: int, *, calls: Iterable[str] = (), sidecar: bool = False
) -> Workload:
    return Workload(
        name=name,
        namespace=BOOKINFO_NS,
        replicas=replicas,
        template=PodTemplate(
            app=app,
            version=version,
            calls=list(calls),
            sidecar_port=SIDECAR_PORT if sidecar else None,
            labels={"app": app, "version": version},
        ),
    )


def cluster_ip_for(key: str, seed: int, taken: set[str]) -> str:
    """A deterministic ClusterIP in 10.96.0.0/16 for service ``key`` (skips taken and reserved ones)."""
    digest = int(hashlib.sha256(f"{seed}/{key}".encode()).hexdigest(), 16)
    base = int(SERVICE_NETWORK.network_address)
    n = digest % (254 * 254)
    while True:
        ip = str(ipaddress.IPv4Address(base + ((n // 254 % 254 + 1) << 8) + n % 254 + 1))
        if ip not in taken and ip != DNS_SERVICE_IP:
            return ip
        n = (n + 1) % (254 * 254)


def agent_daemonset(
    agent: str, node_selector: Mapping[str, str] | None = None, config: Mapping[str, str] | None = None
) -> Workload:
    """The DaemonSet of a node agent the lab emulates: ``flannel``, ``calico-node``, ``canal``, ``weave-net``
    or ``kube-proxy`` (named as in the upstream manifests)."""
    name, ns, labels = {
        "flannel": ("kube-flannel-ds", "kube-flannel", {"app": "flannel", "k8s-app": "flannel"}),
        "calico-node": ("calico-node", "kube-system", {"k8s-app": "calico-node"}),
        "canal": ("canal", "kube-system", {"k8s-app": "canal"}),
        "weave-net": ("weave-net", "kube-system", {"name": "weave-net"}),
        "kube-proxy": ("kube-proxy", "kube-system", {"k8s-app": "kube-proxy"}),
    }[agent]
    return Workload(
        name=name,
        namespace=ns,
        kind="DaemonSet",
        host_network=True,
        node_selector=dict(node_selector or {}),
        template=PodTemplate(kind="agent", app=agent, labels=labels, config=dict(config or {})),
    )


CNI_AGENTS = {"flannel": "flannel", "calico": "calico-node", "canal": "canal", "weave": "weave-net"}
"""The lab's ``--cni`` -> the DaemonSet app of its node agent."""


def agent_daemonsets(cni: str) -> list[Workload]:
    return [agent_daemonset("kube-proxy"), agent_daemonset(CNI_AGENTS[cni])]


def namespace_state(name: str, labels: Mapping[str, str] | None = None) -> NamespaceState:
    """A namespace with ``kubernetes.io/metadata.name`` set (as the API server does; it cannot be changed)."""
    return NamespaceState(name=name, labels={**(labels or {}), NAMESPACE_NAME_LABEL: name})


def default_namespaces(spec: LabSpec) -> list[NamespaceState]:
    out = [namespace_state(n) for n in SYSTEM_NAMESPACES]
    if spec.has_app(AppKind.NETPOL):
        out += [namespace_state(n, {"ns": n}) for n in NETPOL_NAMESPACES]
    return out


def netpol_ports() -> list[ContainerPortState]:
    """The e2e netpol pods' ports: one "container" per (port, protocol), ``cont-80-tcp`` serving
    ``serve-80-tcp`` (as upstream's model.go names them)."""
    return [
        ContainerPortState(
            port=port,
            protocol=proto,
            name=f"serve-{port}-{proto.lower()}",
            container=f"cont-{port}-{proto.lower()}",
        )
        for port in NETPOL_PORTS
        for proto in NETPOL_PROTOCOLS
    ]


def netpol_objects(seed: int, taken: set[str]) -> tuple[list[Workload], list[ServiceState]]:
    """Namespaces x, y, z with bare pods a, b, c each (label ``pod=<name>``) and Services ``s-<ns>-<pod>``."""
    wls: list[Workload] = []
    svcs: list[ServiceState] = []
    for ns in NETPOL_NAMESPACES:
        for pod in NETPOL_PODS:
            wls.append(
                Workload(
                    name=pod,
                    namespace=ns,
                    kind="Pod",
                    template=PodTemplate(
                        kind="netpol",
                        app="netpol",
                        port=NETPOL_PORTS[0],
                        labels={"pod": pod},
                        container_ports=netpol_ports(),
                    ),
                )
            )
            name = f"s-{ns}-{pod}"
            ip = cluster_ip_for(f"{ns}/{name}", seed, taken)
            taken.add(ip)
            ports = [
                ServicePortState(
                    name=f"service-port-{proto.lower()}-{port}", port=port, target_port=port, protocol=proto
                )
                for port in NETPOL_PORTS
                for proto in NETPOL_PROTOCOLS
            ]
            svcs.append(
                ServiceState(name=name, namespace=ns, cluster_ip=ip, ports=ports, selector={"pod": pod})
            )
    return wls, svcs


def default_objects(spec: LabSpec) -> tuple[list[Workload], list[ServiceState]]:
    """Workloads and services the lab deploys for ``spec``."""
    ns = BOOKINFO_NS
    workloads: list[Workload] = [
        Workload(
            name="coredns",
            namespace="kube-system",
            replicas=2,
            template=PodTemplate(kind="dns", app="kube-dns", port=53, labels={"k8s-app": "kube-dns"}),
        ),
    ]
    workloads += agent_daemonsets(spec.cni.value)
    dns = ServiceState(
        name="kube-dns",
        namespace="kube-system",
        cluster_ip=DNS_SERVICE_IP,
        ports=[
            ServicePortState(name="dns", port=53, target_port=53, protocol="UDP"),
            ServicePortState(name="dns-tcp", port=53, target_port=53, protocol="TCP"),
        ],
        selector={"k8s-app": "kube-dns"},
    )
    services: list[ServiceState] = [dns]
    wanted: list[tuple[str, dict[str, str], int | None]] = []
    if spec.has_app(AppKind.BOOKINFO):
        dom = f"{ns}.svc.cluster.local"
        workloads += [
            _http("details-v1", "details", "v1", 2),
            _http("ratings-v1", "ratings", "v1", 2),
            _http("reviews-v1", "reviews", "v1", 1),
            _http("reviews-v2", "reviews", "v2", 1, calls=[f"ratings.{dom}:{APP_PORT}"]),
            _http("reviews-v3", "reviews", "v3", 1, calls=[f"ratings:{APP_PORT}"]),
            _http(
                "productpage-v1",
                "productpage",
                "v1",
                2,
                calls=[f"details:{APP_PORT}", f"reviews.{dom}:{APP_PORT}"],
                sidecar=True,
            ),
        ]
        wanted += [
            ("details", {"app": "details"}, None),
            ("ratings", {"app": "ratings"}, None),
            ("reviews", {"app": "reviews"}, None),
            ("productpage", {"app": "productpage"}, PRODUCTPAGE_NODE_PORT),
        ]
    if spec.pods_per_node > 0:
        workloads.append(_http("echo", "echo", "v1", spec.pods_per_node * spec.nodes))
        wanted.append(("echo", {"app": "echo"}, ECHO_NODE_PORT))
    taken = {DNS_SERVICE_IP}
    for name, selector, node_port in wanted:
        ip = cluster_ip_for(f"{ns}/{name}", spec.seed, taken)
        taken.add(ip)
        services.append(_svc(name, ns, ip, selector, node_port))
    if spec.has_app(AppKind.NETPOL):
        wls, svcs = netpol_objects(spec.seed, taken)
        workloads += wls
        services += svcs
    return workloads, services


# ------------------------------------------------------------------------------------------ scheduling


def rs_hash(workload: Workload, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}/{workload.key}/{workload.template.model_dump_json()}".encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def pod_name(workload: Workload, seed: int, counter: int, node: str | None = None) -> str:
    rng = random.Random(f"{seed}/{workload.key}/{counter}")
    suffix = "".join(rng.choice(_ALPHABET) for _ in range(5))
    if workload.kind == "Pod":
        return workload.name
    if workload.kind == "DaemonSet":
        return f"{workload.name}-{suffix}"
    return f"{workload.name}-{rs_hash(workload, seed)}-{suffix}"


def spread_key(workload: Workload) -> str:
    """Pods with the same key are spread over the nodes (the netpol pods as one group: the nine of them go
    round-robin, so that both same-node and cross-node pairs exist)."""
    if workload.template.kind == "netpol":
        return "netpol"
    return workload.template.labels.get("app") or workload.template.labels.get("k8s-app") or workload.name


def schedule(
    workload: Workload,
    nodes: Mapping[str, NodeState],
    pods: Iterable[PodState],
    workloads: Mapping[str, Workload],
    *,
    exclude: Iterable[str] = (),
) -> str | None:
    """A schedulable node: fewest pods of the same app, then fewest pods, then by index; else ``None``."""
    excluded = set(exclude)
    candidates = [n for n in nodes.values() if n.schedulable and n.name not in excluded]
    if not candidates:
        return None
    key = spread_key(workload)
    same: dict[str, int] = {n.name: 0 for n in candidates}
    total: dict[str, int] = {n.name: 0 for n in candidates}
    for p in pods:
        if p.node not in total or p.host_network:
            continue
        total[p.node] += 1
        owner = workloads.get(f"{p.namespace}/{(p.owner or '').split('/', 1)[-1]}")
        if owner is not None and spread_key(owner) == key:
            same[p.node] += 1
    best = min(candidates, key=lambda n: (same[n.name], total[n.name], n.index))
    return best.name
