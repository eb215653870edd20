"""Server-side apply and dry run, delete with propagation, DaemonSet scheduling patches and waits.

Over HTTP (``fake``) where the test checks the requests sent, else in-process (``local``)."""

from __future__ import annotations

import time

import pytest

from migrator.errors import StepTimeout
from migrator.targets.kube import ApplyAction, ApplyConflict, KubeCluster, RolloutKind
from migrator.testing.kube_server import FakeApiServer, LocalKube, add_nodes, make_daemonset, make_pod

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata:
  name: calico-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: calico-config
  namespace: calico-system
data:
  veth_mtu: "1450"
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: calico-node
  namespace: calico-system
  labels: {k8s-app: calico-node}
spec:
  selector: {matchLabels: {k8s-app: calico-node}}
  template:
    metadata: {labels: {k8s-app: calico-node}}
    spec:
      hostNetwork: true
      nodeSelector: {migrator.io/cni: calico}
      containers:
      - name: calico-node
        image: quay.io/calico/node:v3.28.0
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: flannel-compat
spec: {cidr: 10.244.0.0/16, vxlanMode: Always, blockSize: 24}
"""


def test_server_side_apply_create_unchanged_configured(fake: FakeApiServer, cluster: KubeCluster) -> None:
    results = cluster.apply(MANIFEST)
    assert [(r.kind, r.action) for r in results] == [
        ("Namespace", ApplyAction.CREATED),
        ("ConfigMap", ApplyAction.CREATED),
        ("DaemonSet", ApplyAction.CREATED),
        ("IPPool", ApplyAction.CREATED),
    ]
    assert results[1].ref == "ConfigMap/calico-system/calico-config" and results[3].namespace is None
    patches = [(p, q) for m, p, q in fake.api.requests if m == "PATCH"]
    assert all(q["fieldManager"] == "migrator" and "dryRun" not in q for _, q in patches)
    cm = fake.api.get("ConfigMap", "calico-config", "calico-system")
    assert cm is not None and cm["metadata"]["managedFields"][0]["manager"] == "migrator"
    again = cluster.apply(MANIFEST)
    assert {r.action for r in again} == {ApplyAction.UNCHANGED}
    changed = cluster.apply(MANIFEST.replace('"1450"', '"1410"'))
    assert changed[1].action is ApplyAction.CONFIGURED
    assert fake.api.get("ConfigMap", "calico-config", "calico-system")["data"]["veth_mtu"] == "1410"  # type: ignore[index]


def test_server_side_dry_run_changes_nothing(fake: FakeApiServer, cluster: KubeCluster) -> None:
    cluster.apply(MANIFEST)
    rv_before = fake.api.last_rv
    fake.api.requests.clear()
    snapshot = {k: dict(v) for k, v in fake.api.objects.items()}
    results = cluster.apply(
        MANIFEST.replace('"1450"', '"1410"').replace("flannel-compat", "new-pool"), dry_run=True
    )
    assert [r.action for r in results] == [
        ApplyAction.UNCHANGED,
        ApplyAction.CONFIGURED,
        ApplyAction.UNCHANGED,
        ApplyAction.CREATED,
    ]
    assert all(r.dry_run for r in results)
    assert results[1].obj["data"]["veth_mtu"] == "1410"  # what the server would store
    assert fake.api.last_rv == rv_before
    assert {k: dict(v) for k, v in fake.api.objects.items()} == snapshot
    assert all(q.get("dryRun") == "All" for m, p, q in fake.api.requests if m == "PATCH")


def test_apply_conflict_and_force(local: LocalKube, local_cluster: KubeCluster) -> None:
    local_cluster.apply(MANIFEST)
    local_cluster.api.call(
        "edit by someone else",
        local_cluster.api.core.patch_namespaced_config_map,
        "calico-config",
        "calico-system",
        {"data": {"veth_mtu": "1300"}},
        field_manager="kubectl-edit",
        _content_type="application/merge-patch+json",
    )
    with pytest.raises(ApplyConflict, match="kubectl-edit"):
        local_cluster.apply(MANIFEST)
    result = local_cluster.apply(MANIFEST, force_conflicts=True)
    assert result[1].action is ApplyAction.CONFIGURED
    assert local.api.get("ConfigMap", "calico-config", "calico-system")["data"]["veth_mtu"] == "1450"  # type: ignore[index]


def test_delete_with_propagation(fake: FakeApiServer, cluster: KubeCluster) -> None:
    cluster.apply(MANIFEST)
    assert cluster.delete("apps/v1", "DaemonSet", "calico-node", "calico-system", dry_run=True)
    assert fake.api.get("DaemonSet", "calico-node", "calico-system") is not None
    assert cluster.delete("apps/v1", "DaemonSet", "calico-node", "calico-system", wait_timeout=5)
    assert fake.api.get("DaemonSet", "calico-node", "calico-system") is None
    assert not cluster.delete("apps/v1", "DaemonSet", "calico-node", "calico-system")
    deletes = [p for m, p, _ in fake.api.requests if m == "DELETE"]
    assert deletes[0] == "/apis/apps/v1/namespaces/calico-system/daemonsets/calico-node"


def test_delete_waits_by_watch_until_gone(fake: FakeApiServer, cluster: KubeCluster) -> None:
    add_nodes(fake.api, workers=1, control_planes=0)
    fake.api.add(make_pod("slow", "default", node="w1", ip="10.244.0.9"))
    fake.api.pod_termination_seconds = 1.5  # terminating, then gone
    fake.api.requests.clear()
    started = time.monotonic()
    assert cluster.delete("v1", "Pod", "slow", "default", wait_timeout=10)
    assert 1.0 < time.monotonic() - started < 8
    assert fake.api.get("Pod", "slow", "default") is None
    path = "/api/v1/namespaces/default/pods"
    gets = [p for m, p, q in fake.api.requests if m == "GET" and p == f"{path}/slow"]
    watches = [q for m, p, q in fake.api.requests if m == "GET" and p == path and q.get("watch")]
    assert len(gets) <= 2 and watches, "a watch, not a GET every 0.2 s"
    assert watches[0]["fieldSelector"] == "metadata.name=slow"
    fake.api.add(make_pod("stuck", "default", node="w1", ip="10.244.0.10"))
    fake.api.pod_termination_seconds = 30
    with pytest.raises(StepTimeout, match="Pod stuck still exists 1s after its deletion"):
        cluster.delete("v1", "Pod", "stuck", "default", wait_timeout=1)


def test_daemonset_scheduling_patch_and_wait_for_its_pod(fake: FakeApiServer, cluster: KubeCluster) -> None:
    add_nodes(fake.api, workers=2, control_planes=0)
    fake.api.daemonset_ready_delay = 0.5
    cluster.apply(MANIFEST)
    assert fake.api.find("Pod", "calico-system") == []  # no node is labelled for Calico yet
    with pytest.raises(StepTimeout, match="no pod is scheduled there"):
        cluster.wait_daemonset_pod_ready("calico-system", "calico-node", "w1", timeout=1)
    cluster.label_node("w1", {"migrator.io/cni": "calico"})
    pod = cluster.wait_daemonset_pod_ready("calico-system", "calico-node", "w1", timeout=5)
    assert pod.node == "w1" and pod.ready and pod.owner == "DaemonSet/calico-node" and pod.host_network
    status = cluster.wait_rollout(RolloutKind.DAEMONSET, "calico-system", "calico-node", timeout=5)
    assert status.complete and status.desired == 1
    # patch the selector away: the DaemonSet then runs on every node; the rollout waits for both
    cluster.patch_daemonset_scheduling(
        "calico-system", "calico-node", node_selector={"migrator.io/cni": None}, dry_run=True
    )
    ds = fake.api.get("DaemonSet", "calico-node", "calico-system")
    assert ds is not None and ds["spec"]["template"]["spec"]["nodeSelector"] == {"migrator.io/cni": "calico"}
    cluster.patch_daemonset_scheduling(
        "calico-system", "calico-node", node_selector={"migrator.io/cni": None}
    )
    status = cluster.wait_rollout(RolloutKind.DAEMONSET, "calico-system", "calico-node", timeout=5)
    assert status.complete and status.desired == 2 and status.available == 2
    assert any(q.get("watch") == "true" for m, p, q in fake.api.requests if p.endswith("/daemonsets"))


def test_rollout_timeout_is_clear(local: LocalKube, local_cluster: KubeCluster) -> None:
    add_nodes(local.api, workers=1, control_planes=0)
    local.api.daemonset_ready_delay = None
    local.api.ensure_namespace("kube-system")
    local.api.add(make_daemonset("stuck", "kube-system", labels={"app": "stuck"}))
    with pytest.raises(
        StepTimeout,
        match=r"rollout of DaemonSet kube-system/stuck not complete after 1s: "
        r"1/1 updated, 0/1 available",
    ):
        local_cluster.wait_rollout(RolloutKind.DAEMONSET, "kube-system", "stuck", timeout=1)


def test_daemonset_affinity_patch_and_removal(local: LocalKube, local_cluster: KubeCluster) -> None:
    local.api.add(make_daemonset("kube-flannel-ds", "kube-system", labels={"app": "flannel"}))
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "migrator.io/cni", "operator": "NotIn", "values": ["calico"]}
                        ]
                    }
                ]
            }
        }
    }
    local_cluster.patch_daemonset_scheduling("kube-system", "kube-flannel-ds", affinity=affinity)
    spec = local.api.get("DaemonSet", "kube-flannel-ds", "kube-system")["spec"]["template"]["spec"]  # type: ignore[index]
    assert spec["affinity"] == affinity
    local_cluster.patch_daemonset_scheduling("kube-system", "kube-flannel-ds", remove_affinity=True)
    spec = local.api.get("DaemonSet", "kube-flannel-ds", "kube-system")["spec"]["template"]["spec"]  # type: ignore[index]
    assert "affinity" not in spec


CRD_BATCH = """
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.migrator.io}
spec:
  group: example.migrator.io
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
    # a bare {type: object} would make the server prune spec (structural schema): keep unknown fields
    - {name: v1, served: true, storage: true,
       schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
---
apiVersion: example.migrator.io/v1
kind: Widget
metadata: {name: w, namespace: demo}
spec: {size: 3}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: demo}
data: {a: "1"}
"""


def test_apply_a_batch_with_its_crd_and_namespace(local: LocalKube, local_cluster: KubeCluster) -> None:
    preview = local_cluster.apply(CRD_BATCH, dry_run=True)
    assert [(r.kind, r.action, r.validated) for r in preview] == [
        ("Namespace", ApplyAction.CREATED, True),
        ("CustomResourceDefinition", ApplyAction.CREATED, True),
        ("Widget", ApplyAction.CREATED, False),
        ("ConfigMap", ApplyAction.CREATED, False),
    ]
    assert "CustomResourceDefinition is created by this apply" in preview[2].note
    assert "namespace demo is created by this apply" in preview[3].note
    assert local.api.get("Namespace", "demo") is None
    assert local.api.get("CustomResourceDefinition", "widgets.example.migrator.io") is None
    results = local_cluster.apply(CRD_BATCH)
    assert [(r.kind, r.action, r.validated) for r in results] == [
        ("Namespace", ApplyAction.CREATED, True),
        ("CustomResourceDefinition", ApplyAction.CREATED, True),
        ("Widget", ApplyAction.CREATED, True),
        ("ConfigMap", ApplyAction.CREATED, True),
    ]
    assert local.api.get("Widget", "w", "demo")["spec"] == {"size": 3}  # type: ignore[index]
    assert {r.action for r in local_cluster.apply(CRD_BATCH, dry_run=True)} == {ApplyAction.UNCHANGED}
