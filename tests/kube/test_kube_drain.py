"""Drain like kubectl drain: Eviction API, PodDisruptionBudgets, skips, timeouts and cancellation.

The tests that check what goes over the wire (evictions sent, watches, dry-run queries, a hung server)
use the HTTP fake server (``fake``); the others the same fake in-process (``local``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from migrator.errors import Interrupted, StepFailed, StepTimeout
from migrator.targets.kube import KubeCluster, KubeNotFound, PodDisposition
from migrator.testing.kube_server import FakeApiServer, Fault, LocalKube, add_nodes, make_pdb, make_pod


def web_app(fake: FakeApiServer | LocalKube, *, replicas_on_w1: int = 2, min_available: int = 1) -> None:
    fake.api.ensure_namespace("shop")
    for i in range(replicas_on_w1):
        fake.api.add(
            make_pod(
                f"web-{i + 1}",
                "shop",
                node="w1",
                ip=f"10.244.0.{10 + i}",
                labels={"app": "web"},
                owner=("ReplicaSet", "web-abc"),
            )
        )
    fake.api.add(make_pdb("web-pdb", "shop", selector={"app": "web"}, min_available=min_available))
    fake.api.ensure_namespace("kube-flannel")
    fake.api.add(
        make_pod(
            "kube-flannel-ds-x",
            "kube-flannel",
            node="w1",
            ip="198.18.0.20",
            host_network=True,
            owner=("DaemonSet", "kube-flannel-ds"),
        )
    )
    fake.api.add(make_pod("kube-apiserver-w1", "kube-system", node="w1", ip="198.18.0.20", mirror=True))


def evictions(fake: FakeApiServer) -> list[str]:
    return [p for m, p, _ in fake.api.requests if m == "POST" and p.endswith("/eviction")]


def test_drain_honours_the_pdb_until_a_replacement_is_ready(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=3, control_planes=0)
    web_app(fake)
    fake.api.replacement_ready_delay = 1.0
    cluster = make_cluster(run_id="run-7")
    start = time.monotonic()
    result = cluster.drain_node("w1", timeout=15)
    elapsed = time.monotonic() - start
    assert sorted(result.evicted) == ["shop/web-1", "shop/web-2"]
    assert sorted(result.skipped) == ["kube-flannel/kube-flannel-ds-x", "kube-system/kube-apiserver-w1"]
    # the second eviction was refused (429) until the first replacement became Ready elsewhere
    assert elapsed >= 0.9
    assert len(evictions(fake)) >= 3
    assert fake.api.get("Node", "w1")["spec"]["unschedulable"] is True  # type: ignore[index]  # cordoned
    left_on_w1 = {p["metadata"]["name"] for p in fake.api.find("Pod") if p["spec"]["nodeName"] == "w1"}
    assert left_on_w1 == {"kube-flannel-ds-x", "kube-apiserver-w1"}
    web = [p for p in fake.api.find("Pod", "shop")]
    assert len(web) == 2 and all(p["spec"]["nodeName"] != "w1" for p in web)
    assert any(
        e["message"] == "drained (2 pods evicted) by migrator run run-7 for CNI migration"
        for e in fake.api.find("Event")
    )


def test_drain_times_out_naming_the_pod_and_the_pdb(
    local: LocalKube, make_local_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(local.api, workers=2, control_planes=0)
    web_app(local, replicas_on_w1=1, min_available=1)
    cluster = make_local_cluster()
    start = time.monotonic()
    with pytest.raises(StepTimeout) as info:
        cluster.drain_node("w1", timeout=1.5)
    elapsed = time.monotonic() - start
    assert 1.4 <= elapsed < 10
    message = str(info.value)
    assert "drain of node w1 timed out after 1.5s" in message
    assert "pod shop/web-1" in message and "PodDisruptionBudget shop/web-pdb" in message
    assert "disruptionsAllowed=0" in message
    assert info.value.node == "w1"
    assert local.api.get("Pod", "web-1", "shop") is not None  # nothing was forced


def test_drain_refuses_emptydir_and_unmanaged_pods_unless_allowed(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=2, control_planes=0)
    fake.api.ensure_namespace("shop")
    fake.api.add(
        make_pod(
            "cache-1", "shop", node="w1", ip="10.244.0.9", owner=("ReplicaSet", "cache-x"), empty_dir=True
        )
    )
    fake.api.add(make_pod("naked", "shop", node="w1", ip="10.244.0.8"))
    cluster = make_cluster()
    with pytest.raises(StepFailed) as info:
        cluster.drain_node("w1", timeout=5)
    assert "emptyDir" in str(info.value) and "shop/cache-1" in str(info.value)
    assert "not managed by a controller: shop/naked" in str(info.value)
    assert evictions(fake) == []
    result = cluster.drain_node("w1", timeout=5, delete_emptydir_data=True, force=True)
    assert sorted(result.evicted) == ["shop/cache-1", "shop/naked"]


def test_drain_waits_for_terminating_pods_by_watch(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=2, control_planes=0)
    fake.api.ensure_namespace("shop")
    fake.api.add(make_pod("web-1", "shop", node="w1", ip="10.244.0.9", owner=("ReplicaSet", "web-x")))
    fake.api.pod_termination_seconds = 0.8
    cluster = make_cluster()
    start = time.monotonic()
    result = cluster.drain_node("w1", timeout=10)
    assert time.monotonic() - start >= 0.7
    assert result.evicted == ("shop/web-1",)
    assert fake.api.get("Pod", "web-1", "shop") is None
    assert any(q.get("watch") == "true" for m, p, q in fake.api.requests if p == "/api/v1/pods")


def test_drain_timeout_while_pods_terminate(
    local: LocalKube, make_local_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(local.api, workers=2, control_planes=0)
    local.api.ensure_namespace("shop")
    local.api.add(make_pod("slow", "shop", node="w1", ip="10.244.0.9", owner=("ReplicaSet", "slow-x")))
    local.api.pod_termination_seconds = 30
    with pytest.raises(StepTimeout, match="waiting for evicted pods to terminate: shop/slow"):
        make_local_cluster().drain_node("w1", timeout=1.2)


def test_drain_is_cancellable(local: LocalKube, make_local_cluster: Callable[..., KubeCluster]) -> None:
    add_nodes(local.api, workers=2, control_planes=0)
    web_app(local, replicas_on_w1=1, min_available=1)
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(Interrupted, match="cancelled"):
            make_local_cluster().drain_node("w1", timeout=30, cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 8


def test_drain_is_idempotent(local: LocalKube, make_local_cluster: Callable[..., KubeCluster]) -> None:
    add_nodes(local.api, workers=2, control_planes=0)
    web_app(local, replicas_on_w1=1, min_available=0)
    cluster = make_local_cluster()
    assert cluster.drain_node("w1", timeout=5).evicted == ("shop/web-1",)
    again = cluster.drain_node("w1", timeout=5)
    assert again.evicted == () and len(again.skipped) == 2


def test_preview_drain_changes_nothing_and_shows_pdb_refusals(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=2, control_planes=0)
    web_app(fake, replicas_on_w1=1, min_available=1)
    fake.api.add(
        make_pod("cache", "shop", node="w1", ip="10.244.0.30", owner=("ReplicaSet", "c"), empty_dir=True)
    )
    cluster = make_cluster()
    rv = fake.api.last_rv
    preview = cluster.preview_drain("w1")
    assert preview.to_evict == ["shop/web-1"] and preview.refused == ["shop/cache"]
    assert set(preview.blocked) == {"shop/web-1"} and "disruption budget" in preview.blocked["shop/web-1"]
    assert preview.pods["kube-system/kube-apiserver-w1"] is PodDisposition.SKIP_MIRROR
    assert fake.api.get("Pod", "web-1", "shop") is not None
    assert not fake.api.get("Node", "w1")["spec"].get("unschedulable")  # type: ignore[index]
    evictions_sent = [q for m, p, q in fake.api.requests if m == "POST" and p.endswith("/eviction")]
    assert evictions_sent and all(q.get("dryRun") == "All" for q in evictions_sent)
    assert fake.api.last_rv - rv <= 1  # at most the PDB status refresh; no pod or node changed


def test_a_wave_drains_in_parallel_and_the_pdb_serialises_the_evictions(
    local: LocalKube, make_local_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(local.api, workers=4, control_planes=0)
    local.api.ensure_namespace("shop")
    for i, node in enumerate(("w1", "w2", "w3")):
        local.api.add(
            make_pod(
                f"web-{i}",
                "shop",
                node=node,
                ip=f"10.244.{i}.9",
                labels={"app": "web"},
                owner=("ReplicaSet", "web-abc"),
            )
        )
    local.api.add(make_pdb("web-pdb", "shop", selector={"app": "web"}, max_unavailable=1))
    local.api.replacement_ready_delay = 0.6
    cluster = make_local_cluster()
    for node in ("w1", "w2"):
        cluster.set_schedulable(node, False)  # the wave is cordoned first, so replacements avoid it
    results: dict[str, object] = {}

    def drain(node: str) -> None:
        try:
            results[node] = cluster.drain_node(node, timeout=15)
        except Exception as err:  # reported by the assertion below
            results[node] = err

    threads = [threading.Thread(target=drain, args=(n,)) for n in ("w1", "w2")]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    assert time.monotonic() - start >= 0.5  # the second eviction waited for the first replacement
    web_nodes = {p["spec"]["nodeName"] for p in local.api.find("Pod", "shop")}
    assert "w1" not in web_nodes and "w2" not in web_nodes


def test_drain_of_an_unknown_node_is_a_clear_error(local_cluster: KubeCluster) -> None:
    with pytest.raises(KubeNotFound, match="nope"):
        local_cluster.drain_node("nope", timeout=2)


def test_drain_against_a_hung_api_server_ends_at_its_timeout(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=2, control_planes=0)
    web_app(fake, replicas_on_w1=1, min_available=0)
    fake.api.faults.append(Fault(path="/eviction$", status=504, delay=20, times=5))
    start = time.monotonic()
    with pytest.raises(StepTimeout, match="shop/web-1"):
        make_cluster().drain_node("w1", timeout=2)
    assert time.monotonic() - start < 8
