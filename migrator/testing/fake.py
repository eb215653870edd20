"""An in-memory fake target: :class:`FakeCluster` and :func:`fake_target`.

Used by the tests and by ``--target fake`` (demos). Thread-safe. With ``state_file`` (or the
``MIGRATOR_FAKE_STATE`` environment variable through :func:`fake_target`) the cluster is backed by a
JSON file, re-read before and written atomically after every operation, so that a killed process and
the ``resume`` that follows see the same cluster.

Fault injection: ``cluster.inject("drain_node", node="worker-1", error=TemporaryError("boom"), times=2)``
makes the next two drains of worker-1 raise; ``times=-1`` means forever.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from migrator.errors import MigratorError, PermanentError, StepFailed, UsageError
from migrator.fsutil import atomic_write_json
from migrator.policy.model import (
    NAMESPACE_NAME_LABEL,
    ContainerPort,
    Decision,
    Namespace,
    NetworkPolicy,
    PolicyPod,
    Verdict,
    parse_namespace,
    parse_network_policy,
)
from migrator.policy.model import Protocol as L4
from migrator.ports import (
    CONTROL_PLANE_ROLE,
    ContinuousProbe,
    DrainResult,
    Node,
    Pod,
    ProbeProtocol,
    ProbeResult,
    ProbeTarget,
    Service,
    ServicePort,
    Target,
)

NETPOL_NAMESPACES = ("x", "y", "z")
NETPOL_PODS = ("a", "b", "c")
NETPOL_PORTS = (
    ContainerPort(80, L4.TCP, "serve-80-tcp"),
    ContainerPort(81, L4.TCP, "serve-81-tcp"),
    ContainerPort(80, L4.UDP, "serve-80-udp"),
    ContainerPort(81, L4.UDP, "serve-81-udp"),
)


@dataclass
class Fault:
    op: str
    node: str | None
    error: MigratorError
    times: int = 1  # -1: forever


@dataclass
class FakeCluster:
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    network_policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    policy_objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The API objects of policies applied with :meth:`apply_network_policy` (what a state file keeps)."""
    state_file: Path | None = None
    ident: str = field(default_factory=lambda: f"fake-{uuid.uuid4().hex[:8]}")
    faults: list[Fault] = field(default_factory=list)
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        # list_pods' index: (the pods dict it was built from, its size, every pod by key, pods by node);
        # rebuilt when ``pods`` is replaced (a state-file reload), changes size, or is written here
        self._pod_index: tuple[dict[str, Pod], int, list[Pod], dict[str, list[Pod]]] | None = None
        if self.state_file is not None:
            if self.state_file.exists():
                self._load()
            else:
                self._save()

    # ------------------------------------------------------------------------------- construction

    @classmethod
    def with_nodes(
        cls,
        count: int = 4,
        *,
        control_planes: int = 1,
        pods_per_node: int = 2,
        state_file: Path | None = None,
    ) -> FakeCluster:
        nodes: dict[str, Node] = {}
        for i in range(count):
            cp = i < control_planes
            name = f"cp-{i + 1}" if cp else f"worker-{i - control_planes + 1}"
            labels = {"kubernetes.io/hostname": name}
            if cp:
                labels["node-role.kubernetes.io/control-plane"] = ""
            else:
                labels["node-role.kubernetes.io/worker"] = ""
            nodes[name] = Node(
                name=name,
                address=f"198.18.0.{10 + i}",
                roles=frozenset({CONTROL_PLANE_ROLE} if cp else {"worker"}),
                labels=labels,
                pod_cidr=f"10.244.{i}.0/24",
                cni="flannel",
            )
        pods: dict[str, Pod] = {}
        n = 0
        for node in nodes.values():
            if node.is_control_plane:
                continue
            for _ in range(pods_per_node):
                n += 1
                pod = Pod(
                    name=f"web-{n}",
                    namespace="default",
                    node=node.name,
                    ip=None,
                    labels={"app": "web"},
                    owner="web",
                    ports=(8080,),
                )
                pods[pod.key] = pod
        services = {
            "default/web": Service(
                name="web",
                namespace="default",
                cluster_ip="10.96.0.10",
                ports=(ServicePort(80, 8080),),
                selector={"app": "web"},
            )
        }
        cluster = cls(nodes=nodes, pods=pods, services=services)
        cluster._reassign_ips()
        if state_file is not None:
            cluster.state_file = state_file
            if state_file.exists():
                cluster._load()
            else:
                cluster._save()
        return cluster

    @classmethod
    def netpol(cls, nodes: int = 3, *, state_file: Path | None = None) -> FakeCluster:
        """The model of the Kubernetes e2e netpol suite: namespaces x, y, z (label ``ns: <name>``), pods
        a, b, c in each (label ``pod: <name>``, spread over the workers), each serving TCP and UDP on 80
        and 81 with the named ports ``serve-80-tcp``...; Services ``s-<ns>-<pod>``. No bookinfo pods."""
        cluster = cls.with_nodes(nodes + 1, pods_per_node=0)
        workers = sorted(n.name for n in cluster.nodes.values() if not n.is_control_plane)
        i = 0
        for ns in NETPOL_NAMESPACES:
            cluster.namespaces[ns] = Namespace(ns, {"ns": ns, NAMESPACE_NAME_LABEL: ns})
            for name in NETPOL_PODS:
                pod = Pod(
                    name=name,
                    namespace=ns,
                    node=workers[i % len(workers)],
                    ip=None,
                    labels={"pod": name},
                    ports=(80, 81),
                    container_ports=NETPOL_PORTS,
                )
                i += 1
                cluster.pods[pod.key] = pod
                cluster.services[f"{ns}/s-{ns}-{name}"] = Service(
                    name=f"s-{ns}-{name}",
                    namespace=ns,
                    cluster_ip=f"10.96.1.{i}",
                    ports=(ServicePort(80, 80, "TCP", "service-port-tcp-80"),),
                    selector={"pod": name},
                )
        del cluster.services["default/web"]
        cluster._reassign_ips()
        if state_file is not None:
            cluster.state_file = state_file
            cluster._save()
        return cluster

    # -------------------------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.ident,
            "nodes": [
                {
                    "name": n.name,
                    "address": n.address,
                    "roles": sorted(n.roles),
                    "labels": dict(n.labels),
                    "schedulable": n.schedulable,
                    "pod_cidr": n.pod_cidr,
                    "cni": n.cni,
                }
                for n in self.nodes.values()
            ],
            "pods": [
                {
                    "name": p.name,
                    "namespace": p.namespace,
                    "node": p.node,
                    "ip": p.ip,
                    "labels": dict(p.labels),
                    "owner": p.owner,
                    "host_network": p.host_network,
                    "ports": list(p.ports),
                    "ready": p.ready,
                    "container_ports": [[c.port, c.protocol.value, c.name] for c in p.container_ports],
                }
                for p in self.pods.values()
            ],
            "namespaces": [{"name": n.name, "labels": dict(n.labels)} for n in self.namespaces.values()],
            "network_policies": list(self.policy_objects.values()),
            "services": [
                {
                    "name": s.name,
                    "namespace": s.namespace,
                    "cluster_ip": s.cluster_ip,
                    "ports": [[p.port, p.target_port, p.protocol, p.name, p.node_port] for p in s.ports],
                    "selector": dict(s.selector),
                }
                for s in self.services.values()
            ],
        }

    def state(self) -> dict[str, Any]:
        """Comparable view of the cluster (nodes and which node each pod is on), for tests."""
        with self._lock:
            self._refresh()
            return {
                "nodes": {
                    n.name: {"schedulable": n.schedulable, "labels": dict(sorted(n.labels.items()))}
                    for n in sorted(self.nodes.values(), key=lambda n: n.name)
                },
                "pods": {k: p.node for k, p in sorted(self.pods.items())},
            }

    def _load(self) -> None:
        assert self.state_file is not None
        data = json.loads(self.state_file.read_text())
        self.ident = data["identity"]
        self.nodes = {
            d["name"]: Node(
                name=d["name"],
                address=d["address"],
                roles=frozenset(d["roles"]),
                labels=dict(d["labels"]),
                schedulable=d["schedulable"],
                pod_cidr=d.get("pod_cidr"),
                cni=d.get("cni"),
            )
            for d in data["nodes"]
        }
        self.pods = {}
        for d in data["pods"]:
            pod = Pod(
                name=d["name"],
                namespace=d["namespace"],
                node=d["node"],
                ip=d["ip"],
                labels=d["labels"],
                owner=d["owner"],
                host_network=d["host_network"],
                ports=tuple(d["ports"]),
                ready=d["ready"],
                container_ports=tuple(
                    ContainerPort(int(c[0]), L4(c[1]), str(c[2])) for c in d.get("container_ports", [])
                ),
            )
            self.pods[pod.key] = pod
        self.namespaces = {
            d["name"]: Namespace(d["name"], dict(d["labels"])) for d in data.get("namespaces", [])
        }
        self.policy_objects = {}
        self.network_policies = {}
        for obj in data.get("network_policies", []):
            policy = parse_network_policy(obj, where=str(self.state_file))
            self.policy_objects[policy.key] = obj
            self.network_policies[policy.key] = policy
        self.services = {}
        for d in data["services"]:
            svc = Service(
                name=d["name"],
                namespace=d["namespace"],
                cluster_ip=d["cluster_ip"],
                ports=tuple(ServicePort(p[0], p[1], p[2], p[3], p[4]) for p in d["ports"]),
                selector=d["selector"],
            )
            self.services[f"{svc.namespace}/{svc.name}"] = svc

    def _refresh(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            self._load()

    def _save(self) -> None:
        if self.state_file is not None:
            unsaved = sorted(set(self.network_policies) - set(self.policy_objects))
            if unsaved:
                raise PermanentError(
                    f"fake cluster: policies {', '.join(unsaved)} were added as dataclasses and cannot be "
                    "kept in a state file; use apply_network_policy with the API object"
                )
            atomic_write_json(self.state_file, self.to_json())

    # --------------------------------------------------------------------------------------- faults

    def inject(
        self, op: str, node: str | None = None, error: MigratorError | None = None, times: int = 1
    ) -> None:
        """Make the next ``times`` calls of ``op`` (on ``node``, or any node) raise ``error``."""
        with self._lock:
            self.faults.append(
                Fault(op, node, error or StepFailed(f"injected fault in {op}", node=node), times)
            )

    def _call(self, op: str, node: str | None = None) -> None:
        self.calls.append((op, node))
        for fault in self.faults:
            if fault.op == op and (fault.node is None or fault.node == node) and fault.times != 0:
                if fault.times > 0:
                    fault.times -= 1
                raise fault.error

    # ------------------------------------------------------------------------------- Cluster port

    def identity(self) -> str:
        with self._lock:
            self._refresh()
            return self.ident

    def list_nodes(self) -> list[Node]:
        with self._lock:
            self._refresh()
            self._call("list_nodes")
            return sorted(self.nodes.values(), key=lambda n: n.name)

    def get_node(self, name: str) -> Node:
        with self._lock:
            self._refresh()
            self._call("get_node", name)
            try:
                return self.nodes[name]
            except KeyError:
                raise PermanentError(f"node {name!r} not found in the cluster") from None

    def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        with self._lock:
            self._refresh()
            self._call("label_node", name)
            node = self._node(name)
            new = dict(node.labels)
            for key, value in labels.items():
                if value is None:
                    new.pop(key, None)
                else:
                    new[key] = value
            self.nodes[name] = replace(node, labels=new)
            self._save()

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        with self._lock:
            self._refresh()
            self._call("set_schedulable", name)
            self.nodes[name] = replace(self._node(name), schedulable=schedulable)
            self._save()

    def drain_node(self, name: str, *, timeout: float, cancel: threading.Event | None = None) -> DrainResult:
        with self._lock:
            self._refresh()
            self._call("drain_node", name)
            self.nodes[name] = replace(self._node(name), schedulable=False)
            targets = sorted(
                n.name
                for n in self.nodes.values()
                if n.schedulable and n.name != name and not n.is_control_plane
            )
            evicted: list[str] = []
            skipped: list[str] = []
            for i, pod in enumerate(
                sorted((p for p in self.pods.values() if p.node == name), key=lambda p: p.key)
            ):
                if pod.host_network or not targets:
                    skipped.append(pod.key)
                    continue
                self.pods[pod.key] = replace(pod, node=targets[i % len(targets)])
                evicted.append(pod.key)
            self._reassign_ips()
            self._save()
            return DrainResult(node=name, evicted=tuple(evicted), skipped=tuple(skipped))

    def list_pods(self, namespace: str | None = None, node: str | None = None) -> list[Pod]:
        with self._lock:
            self._refresh()
            every, by_node = self._pods_index()
            pods = every if node is None else by_node.get(node, [])
            return [p for p in pods if namespace is None or p.namespace == namespace]

    def _pods_index(self) -> tuple[list[Pod], dict[str, list[Pod]]]:
        """Every pod sorted by key, and per node (built once, not per call: a dry run lists the pods of
        each node, 5,000 of them, and sorting every pod each time made it quadratic)."""
        index = self._pod_index
        if index is None or index[0] is not self.pods or index[1] != len(self.pods):
            every = sorted(self.pods.values(), key=lambda p: p.key)
            by_node: dict[str, list[Pod]] = {}
            for pod in every:
                by_node.setdefault(pod.node, []).append(pod)
            index = self._pod_index = (self.pods, len(self.pods), every, by_node)
        return index[2], index[3]

    def list_services(self, namespace: str | None = None) -> list[Service]:
        with self._lock:
            self._refresh()
            return [s for s in self.services.values() if namespace is None or s.namespace == namespace]

    def list_namespaces(self) -> list[Namespace]:
        """The namespaces created here, plus one for every namespace a pod is in (as the API server
        requires them to exist), each with ``kubernetes.io/metadata.name``."""
        with self._lock:
            self._refresh()
            out = dict(self.namespaces)
            for pod in self.pods.values():
                out.setdefault(pod.namespace, Namespace(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace}))
            return [out[k] for k in sorted(out)]

    def list_network_policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        with self._lock:
            self._refresh()
            return [
                self.network_policies[k]
                for k in sorted(self.network_policies)
                if namespace is None or self.network_policies[k].namespace == namespace
            ]

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> Namespace:
        """Create or relabel a namespace; ``kubernetes.io/metadata.name`` is set as the API server does."""
        meta = {"name": name, "labels": dict(labels or {})}
        obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
        return self.apply_namespace(obj)

    def apply_namespace(self, obj: Mapping[str, Any], *, where: str = "") -> Namespace:
        ns = parse_namespace(obj, where=where)
        labels = {**ns.labels, NAMESPACE_NAME_LABEL: ns.name}
        ns = Namespace(ns.name, labels)
        with self._lock:
            self._refresh()
            self.namespaces[ns.name] = ns
            self._save()
        return ns

    def apply_network_policy(self, obj: Mapping[str, Any], *, where: str = "") -> NetworkPolicy:
        """Create or replace a NetworkPolicy from its API object, validated as the API server does
        (:class:`~migrator.policy.model.PolicyError` names the field); its namespace must exist."""
        policy = parse_network_policy(obj, where=where)
        self._add_policy(policy, dict(obj))
        return policy

    def add_network_policy(self, policy: NetworkPolicy) -> None:
        """Add an already-built policy (in memory only: a state-file cluster refuses it)."""
        self._add_policy(policy, None)

    def _add_policy(self, policy: NetworkPolicy, obj: dict[str, Any] | None) -> None:
        if obj is None and self.state_file is not None:
            raise PermanentError(
                f"fake cluster: policy {policy.key} was added as a dataclass and cannot be kept in a state "
                "file; use apply_network_policy with the API object"
            )
        with self._lock:
            self._refresh()
            known = {n.name for n in self.list_namespaces()}
            if policy.namespace not in known:
                raise UsageError(f"namespaces {policy.namespace!r} not found (policy {policy.key})")
            self.network_policies[policy.key] = policy
            if obj is None:
                self.policy_objects.pop(policy.key, None)
            else:
                self.policy_objects[policy.key] = obj
            self._save()

    def delete_network_policy(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        with self._lock:
            self._refresh()
            if key not in self.network_policies:
                raise UsageError(f"networkpolicies {name!r} not found in namespace {namespace!r}")
            del self.network_policies[key]
            self.policy_objects.pop(key, None)
            self._save()

    def set_pod(self, pod: Pod) -> None:
        """Add or replace a pod (tests: labels, readiness, host network)."""
        with self._lock:
            self._refresh()
            self.pods[pod.key] = pod
            self._pod_index = None
            self._save()

    def restart_pods(self, node: str) -> list[str]:
        with self._lock:
            self._refresh()
            self._call("restart_pods", node)
            self._node(node)
            restarted = [p.key for p in self.pods.values() if p.node == node and not p.host_network]
            self._save()
            return sorted(restarted)

    # ------------------------------------------------------------------------------------ helpers

    def _node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise PermanentError(f"node {name!r} not found in the cluster") from None

    def _reassign_ips(self) -> None:
        per_node: dict[str, int] = {}
        for key in sorted(self.pods):
            pod = self.pods[key]
            node = self.nodes.get(pod.node)
            if node is None or node.pod_cidr is None:
                continue
            per_node[pod.node] = per_node.get(pod.node, 0) + 1
            base = node.pod_cidr.split("/")[0].rsplit(".", 1)[0]
            self.pods[key] = replace(pod, ip=f"{base}.{per_node[pod.node] + 1}")
        self._pod_index = None
        for key, svc in list(self.services.items()):
            endpoints = tuple(
                f"{p.ip}:{svc.ports[0].target_port if svc.ports else 0}"
                for p in sorted(self.pods.values(), key=lambda p: p.key)
                if p.ip
                and p.namespace == svc.namespace
                and all(p.labels.get(k) == v for k, v in svc.selector.items())
            )
            self.services[key] = replace(svc, endpoints=endpoints)


# ------------------------------------------------------------------------------------------ prober

PolicyKey = tuple[str, str, int, str]
"""(source pod key, destination pod key, port, protocol ``tcp``/``udp``)."""


class DenyMode(StrEnum):
    REJECT = "reject"  # TCP reset / ICMP port unreachable: ``refused``
    DROP = "drop"  # no answer: ``timeout``


class FakeProber:
    """A :class:`~migrator.ports.Prober` over a :class:`FakeCluster`'s pods, answering as an enforcement
    the test describes (so that tests can make policy holes and breaks).

    What it checks, as the real probers do: the source must be a ready pod of the cluster (else
    ``netns: ...``, as the lab prober answers for a source it has no namespace for); the destination
    address must be a pod's IP declaring the port for that protocol (else ``refused``: nothing listens;
    an IP that is no pod's: ``timeout``); only ``tcp``, ``udp`` and ``http`` probes to pods are known.
    Then a key in ``blocked`` (or for which ``deny(key)`` is true) is denied per ``mode``; a key in
    ``errors`` fails with that error string (say ``os-error: ...``); everything else answers.
    """

    def __init__(
        self,
        cluster: FakeCluster,
        *,
        blocked: Iterable[PolicyKey] = (),
        deny: Callable[[PolicyKey], bool] | None = None,
        errors: Mapping[PolicyKey, str] | None = None,
        mode: DenyMode = DenyMode.REJECT,
    ) -> None:
        self.cluster = cluster
        self.blocked = set(blocked)
        self.deny = deny
        self.errors = dict(errors or {})
        self.mode = mode
        self.calls: list[int] = []

    def _answer(self, target: ProbeTarget, pods: Mapping[str, Pod], by_ip: Mapping[str, Pod]) -> str | None:
        src = pods.get(target.source)
        if src is None or not src.ready or src.ip is None:
            return f"netns: no network namespace known for source {target.source}"
        if target.protocol not in (ProbeProtocol.TCP, ProbeProtocol.UDP, ProbeProtocol.HTTP):
            return f"os-error: the fake prober has no {target.protocol.value} probe"
        dst = by_ip.get(target.host)
        if dst is None:
            return f"timeout: after {target.timeout:g}s"
        proto = "udp" if target.protocol is ProbeProtocol.UDP else "tcp"
        declared = dst.container_ports or tuple(ContainerPort(p) for p in dst.ports)
        if not any(c.port == target.port and c.protocol.value.lower() == proto for c in declared):
            return f"refused: {target.host}:{target.port}"
        key = (src.key, dst.key, target.port, proto)
        if key in self.errors:
            return self.errors[key]
        if key in self.blocked or (self.deny is not None and self.deny(key)):
            if self.mode is DenyMode.DROP:
                return f"timeout: after {target.timeout:g}s"
            return f"refused: {target.host}:{target.port}"
        return None

    def probe(self, targets: Sequence[ProbeTarget], *, concurrency: int = 256) -> list[ProbeResult]:
        if concurrency < 1:
            raise UsageError(f"concurrency must be >= 1, got {concurrency}")
        self.calls.append(len(targets))
        pods = {p.key: p for p in self.cluster.list_pods()}
        by_ip = {p.ip: p for p in pods.values() if p.ip and not p.host_network}
        now = time.time()
        out = []
        for t in targets:
            error = self._answer(t, pods, by_ip)
            latency = None if error else 0.1
            out.append(ProbeResult(t.source, t.dest, t.kind, error is None, latency, error, now))
        return out

    def start_continuous(
        self, targets: Sequence[ProbeTarget], *, rate_hz: float, max_duration: float
    ) -> ContinuousProbe:
        return FakeContinuous(self, list(targets), rate_hz=rate_hz, max_duration=max_duration)


class FakeContinuous:
    """A continuous run of :class:`FakeProber`: ``rate_hz`` rounds a second (bounded by ``max_duration``),
    each round answered by the prober as it is configured at the time the round is read."""

    def __init__(
        self, prober: FakeProber, targets: list[ProbeTarget], *, rate_hz: float, max_duration: float
    ) -> None:
        if rate_hz <= 0 or max_duration <= 0:
            raise UsageError("rate_hz and max_duration must be positive")
        self.prober = prober
        self.targets = targets
        self.period = 1.0 / rate_hz
        self.start = time.time()
        self.end = self.start + max_duration
        self._results: list[ProbeResult] = []
        self._rounds = 0
        self._stopped = False
        self._lock = threading.Lock()

    def _catch_up(self) -> None:
        now = min(time.time(), self.end)
        due = min(int((now - self.start) / self.period) + 1, 100_000)
        while self._rounds < due:
            ts = self.start + self._rounds * self.period
            for r in self.prober.probe(self.targets):
                self._results.append(replace(r, ts=ts))
            self._rounds += 1

    def snapshot(self) -> list[ProbeResult]:
        with self._lock:
            if not self._stopped:
                self._catch_up()
            return sorted(self._results, key=lambda r: r.ts)

    def stop(self) -> list[ProbeResult]:
        with self._lock:
            if not self._stopped:
                self._catch_up()
                self._stopped = True
            return sorted(self._results, key=lambda r: r.ts)


# ---------------------------------------------------------------------------------- policy model

PolicyRule = Callable[[PolicyPod, PolicyPod, int, L4], str | None]
"""Returns the deciding policy key when the pair is denied, ``None`` when allowed."""


class TableModel:
    """A verdict source (``migrator.probe.policy.VerdictSource``) from a rule: for tests of the policy
    verification, which do not need the real model. Use it as the ``model_factory`` (it returns itself);
    it records what it was built with and every question."""

    def __init__(self, rule: PolicyRule) -> None:
        self.rule = rule
        self.asked: list[tuple[str, str, int, L4]] = []
        self.built_with: tuple[list[NetworkPolicy], list[Namespace], list[PolicyPod]] | None = None

    def __call__(
        self, policies: list[NetworkPolicy], namespaces: list[Namespace], pods: list[PolicyPod]
    ) -> TableModel:
        self.built_with = (policies, namespaces, pods)
        return self

    def decide(self, src: PolicyPod | str, dst: PolicyPod | str, port: int, protocol: L4) -> Decision:
        if not isinstance(src, PolicyPod) or not isinstance(dst, PolicyPod):
            raise UsageError("TableModel decides between pods only")
        self.asked.append((src.key, dst.key, port, protocol))
        policy = self.rule(src, dst, port, protocol)
        if policy is None:
            return Decision(Verdict.ALLOW, Verdict.ALLOW, Verdict.ALLOW, ())
        return Decision(Verdict.DENY, Verdict.DENY, Verdict.ALLOW, (policy,))


def deny_into_y(src: PolicyPod, dst: PolicyPod, port: int, protocol: L4) -> str | None:
    """A :class:`TableModel` rule: pods of ``y`` accept only pods of ``y`` (policy ``y/deny-other-ns``)."""
    if dst.namespace == "y" and src.namespace != "y":
        return "y/deny-other-ns"
    return None


def y_denied(key: PolicyKey) -> bool:
    """A :class:`FakeProber` ``deny`` enforcing what :func:`deny_into_y` expects."""
    return key[1].startswith("y/") and not key[0].startswith("y/")


def fake_target(
    nodes: int = 4, *, state_file: Path | None = None, name: str = "fake", markers_dir: Path | None = None
) -> Target:
    """A :class:`Target` over a :class:`FakeCluster`; ``state_file`` defaults to ``$MIGRATOR_FAKE_STATE``."""
    if state_file is None and os.environ.get("MIGRATOR_FAKE_STATE"):
        state_file = Path(os.environ["MIGRATOR_FAKE_STATE"])
    count = int(os.environ.get("MIGRATOR_FAKE_NODES", nodes)) if state_file is not None else nodes
    cluster = FakeCluster.with_nodes(count, state_file=state_file)
    if state_file is None:
        # nothing survives the process anyway: let resume/rollback of a demo run find "the same" cluster
        cluster.ident = "fake:in-memory"
    if markers_dir is None and state_file is not None:
        markers_dir = state_file.parent / f"{state_file.stem}.markers"
    return Target(name=name, cluster=cluster, markers_dir=markers_dir)


def open_fake_target(name: str | None) -> Target:
    """``--target fake[:NAME]`` (the ``migrator.targets`` entry point ``fake``)."""
    return fake_target(name="fake" if not name else f"fake:{name}")
