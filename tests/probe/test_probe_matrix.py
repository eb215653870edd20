from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbt_fakes import FakeCluster

from migrator.errors import UsageError
from migrator.policy.objects import NetworkPolicy
from migrator.policy.parse import parse_network_policy
from migrator.ports import Node, Pod, ProbeKind, ProbeProtocol, Service, ServicePort
from migrator.probe.matrix import (
    MatrixBuilder,
    MatrixOptions,
    NodeToPod,
    Scope,
    build_matrix,
    sample,
    split_by_nodes,
)


def make_cluster(nodes: int = 8, pods_per_node: int = 4, services: int = 8) -> FakeCluster:
    node_objs = [Node(name=f"n{i}", address=f"192.0.2.{10 + i}") for i in range(nodes)]
    pods = []
    for i in range(nodes):
        for j in range(pods_per_node):
            ports = (8080, 8081) if j == 0 else (8080,)
            pods.append(
                Pod(
                    name=f"web-{i}-{j}",
                    namespace="default",
                    node=f"n{i}",
                    ip=f"10.244.{i}.{j + 2}",
                    ports=ports,
                )
            )
    pods.append(
        Pod(
            name="hostnet",
            namespace="kube-system",
            node="n0",
            ip="192.0.2.10",
            host_network=True,
            ports=(10250,),
        )
    )
    pods.append(Pod(name="pending", namespace="default", node="n1", ip=None, ports=(8080,)))
    svcs = [
        Service(
            name=f"svc-{s}",
            namespace="default",
            cluster_ip=f"10.96.0.{10 + s}",
            ports=(ServicePort(port=80, target_port=8080, node_port=30000 + s),),
        )
        for s in range(services)
    ]
    svcs.append(
        Service(
            name="kube-dns",
            namespace="kube-system",
            cluster_ip="10.96.0.10",
            ports=(ServicePort(port=53, target_port=53, protocol="UDP"),),
        )
    )
    svcs.append(
        Service(name="headless", namespace="default", cluster_ip="None", ports=(ServicePort(80, 8080),))
    )
    return FakeCluster(node_objs, pods, svcs)


def test_full_matrix_counts() -> None:
    cluster = make_cluster()
    targets = build_matrix(cluster)
    kinds = Counter(t.kind for t in targets)
    pods = 32
    assert kinds[ProbeKind.CONTAINER] == 8 * 2
    assert kinds[ProbeKind.POD_SAME_NODE] == pods * 3
    assert kinds[ProbeKind.POD_CROSS_NODE] == pods * 28
    assert kinds[ProbeKind.SERVICE_IP] == pods * 8
    assert kinds[ProbeKind.SERVICE_DNS] == pods * 8
    assert kinds[ProbeKind.NODE_TO_POD] == pods
    assert kinds[ProbeKind.NODEPORT] == 8 * 8
    assert kinds[ProbeKind.DNS] == pods * 8
    # unique pair keys (the analysis keys results by source, dest, kind)
    assert len({(t.source, t.dest, t.kind) for t in targets}) == len(targets)
    # hostNetwork, pending and headless never appear
    assert not any("hostnet" in t.source or "hostnet" in t.dest or "pending" in t.dest for t in targets)
    assert not any("headless" in t.dest for t in targets)


def test_kinds_details() -> None:
    targets = build_matrix(make_cluster(nodes=2, pods_per_node=2, services=1))
    dns = [t for t in targets if t.kind is ProbeKind.DNS]
    assert {t.host for t in dns} == {"10.96.0.10"}
    assert all(t.protocol is ProbeProtocol.DNS and t.port == 53 for t in dns)
    assert dns[0].path == "svc-0.default.svc.cluster.local" and dns[0].expect_body == "10.96.0.10"
    sdns = [t for t in targets if t.kind is ProbeKind.SERVICE_DNS]
    assert {t.host for t in sdns} == {"svc-0.default.svc.cluster.local"} and {t.port for t in sdns} == {80}
    cont = [t for t in targets if t.kind is ProbeKind.CONTAINER]
    assert {(t.source, t.host, t.port) for t in cont} == {
        ("default/web-0-0", "127.0.0.1", 8080),
        ("default/web-0-0", "127.0.0.1", 8081),
        ("default/web-1-0", "127.0.0.1", 8080),
        ("default/web-1-0", "127.0.0.1", 8081),
    }
    np = [t for t in targets if t.kind is ProbeKind.NODEPORT]
    assert {(t.source, t.host, t.port) for t in np} == {
        ("outside", "192.0.2.10", 30000),
        ("outside", "192.0.2.11", 30000),
    }
    n2p = [t for t in targets if t.kind is ProbeKind.NODE_TO_POD]
    assert all(t.dest.startswith(f"default/web-{t.source[1:]}-") for t in n2p)
    everything = build_matrix(
        make_cluster(nodes=2, pods_per_node=2), MatrixOptions(node_to_pod=NodeToPod.ALL)
    )
    assert sum(t.kind is ProbeKind.NODE_TO_POD for t in everything) == 2 * 4


def test_scopes_and_kinds() -> None:
    cluster = make_cluster()
    cross = build_matrix(cluster, MatrixOptions(scope=Scope.CROSS_NODE))
    assert {t.kind for t in cross} == {ProbeKind.POD_CROSS_NODE}
    svcs = build_matrix(cluster, MatrixOptions(scope=Scope.SERVICES))
    assert {t.kind for t in svcs} == {
        ProbeKind.SERVICE_IP,
        ProbeKind.SERVICE_DNS,
        ProbeKind.NODEPORT,
        ProbeKind.DNS,
    }
    only = build_matrix(cluster, MatrixOptions(kinds=frozenset({ProbeKind.NODEPORT})))
    assert {t.kind for t in only} == {ProbeKind.NODEPORT}


def test_sampling_seeded_and_linear() -> None:
    small = make_cluster(nodes=4)
    big = make_cluster(nodes=40)
    opts = MatrixOptions(per_source=5, seed=7)
    a = build_matrix(big, opts)
    b = build_matrix(big, opts)
    c = build_matrix(big, MatrixOptions(per_source=5, seed=8))
    assert a == b
    assert a != c
    pods_big = 160
    pod_pairs = [t for t in a if t.kind in (ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE)]
    assert len(pod_pairs) == pods_big * 5
    assert Counter(t.source for t in pod_pairs) == dict.fromkeys({t.source for t in pod_pairs}, 5)
    # linear: 10x the nodes -> 10x the targets (same per-source budget)
    n_small = len(build_matrix(small, opts))
    assert len(a) == pytest.approx(10 * n_small, rel=0.05)
    # the same source keeps its destinations when other pods are added elsewhere (seed by source name)
    assert sample(list(range(100)), 5, 3, "default/x", "pods") == sample(
        list(range(100)), 5, 3, "default/x", "pods"
    )


@given(n=st.integers(0, 60), k=st.integers(0, 70), seed=st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_sample_properties(n: int, k: int, seed: int) -> None:
    items = list(range(n))
    got = sample(items, k, seed, "s", "g")
    assert len(got) == min(n, k)
    assert got == sorted(set(got))
    assert set(got) <= set(items)


def test_sample_negative() -> None:
    with pytest.raises(UsageError):
        sample([1, 2, 3], -1, 0, "s", "g")


def test_exclude_nodes_and_split() -> None:
    cluster = make_cluster(nodes=3, pods_per_node=2, services=1)
    full = build_matrix(cluster)
    touching, other = split_by_nodes(full, cluster, ["n1"])
    assert touching and other
    assert all(t.source not in {"n1", "default/web-1-0", "default/web-1-1"} for t in other)
    assert all(not t.dest.startswith("default/web-1-") for t in other)
    excl = build_matrix(cluster, MatrixOptions(exclude_nodes=frozenset({"n1"})))
    assert not any(t.source == "n1" or "web-1-" in t.source or "web-1-" in t.dest for t in excl)


def test_dns_ports_probed_with_tcp() -> None:
    cluster = make_cluster(nodes=2, pods_per_node=1, services=1)
    dns_pod = Pod(
        name="coredns-1",
        namespace="kube-system",
        node="n0",
        ip="10.244.0.53",
        ports=(53,),
        labels={"k8s-app": "kube-dns"},
    )
    dns_svc = Service(
        name="kube-dns",
        namespace="kube-system",
        cluster_ip="10.96.0.10",
        ports=(ServicePort(53, 53, "UDP", "dns"), ServicePort(53, 53, "TCP", "dns-tcp")),
    )
    fake = FakeCluster(
        cluster.list_nodes(),
        [*cluster.list_pods(), dns_pod],
        [s for s in cluster.list_services() if s.name != "kube-dns"] + [dns_svc],
    )
    targets = build_matrix(fake)
    to_dns = [t for t in targets if t.port == 53 and t.protocol is not ProbeProtocol.DNS]
    assert to_dns and all(t.protocol is ProbeProtocol.TCP for t in to_dns)
    assert {t.kind for t in to_dns} >= {ProbeKind.SERVICE_IP, ProbeKind.POD_CROSS_NODE}
    assert all(t.protocol is ProbeProtocol.HTTP for t in targets if t.port == 8080)


class PolicyCluster(FakeCluster):
    """The fake with NetworkPolicies (parsed as the API server validates them)."""

    def __init__(self, base: FakeCluster, docs: list[dict[str, object]]) -> None:
        super().__init__(base.list_nodes(), base.list_pods(), base.list_services())
        self._policies = [parse_network_policy(d, where=f"policy {i}") for i, d in enumerate(docs)]

    def list_network_policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        return [p for p in self._policies if namespace is None or p.namespace == namespace]


def test_probes_that_policy_denies_are_left_out_and_counted() -> None:
    base = make_cluster(nodes=3, pods_per_node=2, services=2)
    # svc-0's endpoint web-1-0 only, reachable from web-0-0 only; every pod of n2 denies all egress
    base._services[0] = dataclasses.replace(base._services[0], endpoints=("10.244.1.2",))
    deny_from_all_but_one = {
        "metadata": {"name": "only-web-0-0", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"id": "web-1-0"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"id": "web-0-0"}}}]}],
        },
    }
    for i, p in enumerate(base._pods):
        base._pods[i] = dataclasses.replace(p, labels={**p.labels, "id": p.name})
    cluster = PolicyCluster(base, [deny_from_all_but_one])
    options = MatrixOptions(
        kinds=frozenset({ProbeKind.POD_CROSS_NODE, ProbeKind.SERVICE_IP, ProbeKind.NODEPORT})
    )
    builder = MatrixBuilder(cluster, options)
    targets = builder.build()
    to_web_1_0 = {t.source for t in targets if t.dest == "default/web-1-0"}
    assert to_web_1_0 == {"default/web-0-0"}  # every other source is denied by the policy
    via_svc = {t.source for t in targets if t.kind is ProbeKind.SERVICE_IP and t.dest == "default/svc-0"}
    assert via_svc == {"default/web-0-0"}
    # svc-0's only endpoint is ingress-isolated: its NodePort is not probed (the source it sees is the node's)
    assert not [t for t in targets if t.kind is ProbeKind.NODEPORT and t.dest.startswith("default/svc-0@")]
    assert [t for t in targets if t.kind is ProbeKind.NODEPORT and t.dest.startswith("default/svc-1@")]
    # 3 cross-node sources denied, 5 service sources (web-1-0 itself too: its hairpin through the
    # ClusterIP comes from a pod the policy does not allow), svc-0's NodePort
    cross_sources = {"default/web-0-1", "default/web-2-0", "default/web-2-1"}
    assert builder.left_out == len(cross_sources) + 5 + 1
    # without the policy, the same matrix has them all
    plain = MatrixBuilder(base, options)
    # (svc-0's NodePort on each of the 3 nodes)
    assert len(plain.build()) == len(targets) + len(cross_sources) + 5 + 3 and plain.left_out == 0
