"""Opt-in tests against a real cluster (kind or k3d): set MIGRATOR_TEST_KUBECONFIG (see docs/kube-target.md).

They use a throwaway namespace and only the first worker node; the drain test also needs
MIGRATOR_TEST_ALLOW_DRAIN=1 because it evicts that node's pods.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from migrator.errors import LockHeld, StepTimeout
from migrator.targets.kube import ApplyAction, KubeCluster, KubeCniOps, KubeNotFound, RolloutKind
from migrator.targets.kube.doctor import run_doctor

KUBECONFIG = os.environ.get("MIGRATOR_TEST_KUBECONFIG")
CONTEXT = os.environ.get("MIGRATOR_TEST_CONTEXT")
pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="set MIGRATOR_TEST_KUBECONFIG to run against a real cluster"
)


@pytest.fixture(scope="module")
def real() -> Iterator[KubeCluster]:
    cluster = KubeCluster(kubeconfig=KUBECONFIG, context=CONTEXT, run_id=f"test-{uuid.uuid4().hex[:6]}")
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def namespace(real: KubeCluster) -> Iterator[str]:
    name = f"migrator-test-{uuid.uuid4().hex[:6]}"
    real.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    real.delete("v1", "Namespace", name)


def first_worker(real: KubeCluster) -> str:
    workers = [n for n in real.list_nodes() if not n.is_control_plane]
    if not workers:
        pytest.skip("the cluster has no worker node")
    return sorted(n.name for n in workers)[0]


def test_identity_and_nodes(real: KubeCluster) -> None:
    assert "#kube-system=" in real.identity()
    nodes = real.list_nodes()
    assert nodes and all(n.address for n in nodes)
    assert real.get_node(nodes[0].name).name == nodes[0].name


def test_label_cordon_roundtrip(real: KubeCluster) -> None:
    node = first_worker(real)
    try:
        real.label_node(node, {"migrator.io/test": "yes"})
        assert real.get_node(node).labels["migrator.io/test"] == "yes"
        real.set_schedulable(node, False)
        assert not real.get_node(node).schedulable
    finally:
        real.set_schedulable(node, True)
        real.label_node(node, {"migrator.io/test": None})
    assert real.get_node(node).schedulable and "migrator.io/test" not in real.get_node(node).labels


def test_apply_dry_run_then_apply(real: KubeCluster, namespace: str) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": namespace},
        "data": {"a": "1"},
    }
    assert real.apply(cm, dry_run=True)[0].action is ApplyAction.CREATED
    with pytest.raises(KubeNotFound):
        real.api.read("read", real.api.core.read_namespaced_config_map, "probe", namespace)
    assert real.apply(cm)[0].action is ApplyAction.CREATED
    assert real.apply(cm)[0].action is ApplyAction.UNCHANGED


def test_lock(real: KubeCluster, namespace: str) -> None:
    first = real.lock("run-a", namespace=namespace, duration=5)
    first.acquire()
    try:
        with pytest.raises(LockHeld, match="run-a"):
            real.lock("run-b", namespace=namespace, duration=5).acquire()
    finally:
        first.release()


def test_doctor_and_cni(real: KubeCluster) -> None:
    report = run_doctor(real)
    assert report.error is None and report.checks
    assert KubeCniOps(real).detect_cni().kind  # kind's default CNI (kindnet) is reported as unknown


@pytest.mark.skipif(
    os.environ.get("MIGRATOR_TEST_ALLOW_DRAIN") != "1", reason="set MIGRATOR_TEST_ALLOW_DRAIN=1"
)
def test_drain_with_pdb(real: KubeCluster, namespace: str) -> None:
    node = first_worker(real)
    labels = {"app": "migrator-test-web"}
    real.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": node},
                            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}],
                        },
                    },
                },
            },
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
            },
        ]
    )
    real.wait_rollout(RolloutKind.DEPLOYMENT, namespace, "web", timeout=120)
    time.sleep(2)
    try:
        with pytest.raises(StepTimeout, match=f"PodDisruptionBudget {namespace}/web"):
            real.drain_node(node, timeout=10)
    finally:
        real.set_schedulable(node, True)


def test_kube_prober_on_a_real_cluster(real: KubeCluster) -> None:
    """Deploys the probe DaemonSet (pulls ``$MIGRATOR_PROBE_IMAGE`` or python:3.12-alpine), probes the
    probe Service and every probe pod from every node, then removes the namespace."""
    from migrator.ports import ProbeKind, ProbeProtocol, ProbeTarget  # noqa: PLC0415
    from migrator.targets.kube.prober import NAME, NAMESPACE, KubeProber  # noqa: PLC0415

    prober = KubeProber(real, image=os.environ.get("MIGRATOR_PROBE_IMAGE", "python:3.12-alpine"))
    try:
        prober.deploy()
        pods = prober.probe_pods()
        assert pods, "at least one Ready probe pod"
        svc = next(s for s in real.list_services(NAMESPACE) if s.name == NAME)
        assert svc.cluster_ip
        targets = [
            ProbeTarget(
                node, f"{NAMESPACE}/{NAME}", ProbeKind.SERVICE_IP, svc.cluster_ip, 80, ProbeProtocol.HTTP
            )
            for node in pods
        ] + [
            ProbeTarget(src, dst.key, ProbeKind.POD_CROSS_NODE, dst.ip or "", 8080, ProbeProtocol.HTTP)
            for src in pods
            for dst in pods.values()
            if dst.node != src
        ]
        results = prober.probe(targets)
        failed = [r for r in results if not r.ok]
        assert not failed, failed
        run = prober.start_continuous(targets[:2], rate_hz=5, max_duration=10)
        time.sleep(3)
        assert all(r.ok for r in run.stop())
        # NodePorts "from outside": from the host network of another node (DaemonSet migrator-probe-host)
        nodes = real.list_nodes()
        if len(nodes) > 1:
            (np_svc,) = real.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "migrator-probe-np", "namespace": NAMESPACE},
                    "spec": {
                        "type": "NodePort",
                        "selector": {"app.kubernetes.io/name": NAME},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                }
            )
            node_port = int(np_svc.obj["spec"]["ports"][0]["nodePort"])
            outside = [
                ProbeTarget(
                    "outside",
                    f"{NAMESPACE}/migrator-probe-np@{n.name}",
                    ProbeKind.NODEPORT,
                    n.address,
                    node_port,
                    ProbeProtocol.HTTP,
                    path="/healthz",
                )
                for n in nodes
            ]
            failed = [r for r in prober.probe(outside) if not r.ok]
            assert not failed, failed
    finally:
        prober.cleanup(wait_timeout=120)
    with pytest.raises(KubeNotFound):
        real.api.read("read namespace", real.api.core.read_namespace, NAMESPACE)
