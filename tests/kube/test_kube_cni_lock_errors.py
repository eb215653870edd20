"""CNI detection, the Lease run lock and the ApiException → migrator error mapping."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from migrator.cni import CniKind, detect_from_objects
from migrator.errors import LockHeld, PermanentError, TemporaryError, UsageError
from migrator.targets.kube import (
    KubeCluster,
    KubeCniOps,
    KubeConflict,
    KubeForbidden,
    KubeNotFound,
    WatchExpired,
)
from migrator.testing.kube_server import (
    FakeApiServer,
    Fault,
    add_nodes,
    make_configmap,
    make_daemonset,
    make_node,
)

NET_CONF = {
    "Network": "10.244.0.0/16",
    "SubnetLen": 24,
    "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": False},
}


def flannel(fake: FakeApiServer, net_conf: dict[str, object] | None = None) -> None:
    fake.api.ensure_namespace("kube-flannel")
    fake.api.add(
        make_daemonset(
            "kube-flannel-ds",
            "kube-flannel",
            labels={"app": "flannel"},
            containers=[{"name": "kube-flannel", "image": "docker.io/flannel/flannel:v0.25.1"}],
        )
    )
    fake.api.add(
        make_configmap(
            "kube-flannel-cfg",
            "kube-flannel",
            {"net-conf.json": json.dumps(net_conf or NET_CONF), "cni-conf.json": "{}"},
        )
    )
    for i in range(2):
        fake.api.add(
            make_node(
                f"n{i}",
                ip=f"198.18.0.{i + 1}",
                pod_cidr=f"10.244.{i}.0/24",
                annotations={
                    "flannel.alpha.coreos.com/backend-type": "vxlan",
                    "flannel.alpha.coreos.com/backend-data": json.dumps(
                        {"VNI": 1, "VtepMAC": f"aa:bb:cc:dd:ee:0{i}"}
                    ),
                    "flannel.alpha.coreos.com/public-ip": f"198.18.0.{i + 1}",
                    "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                },
            )
        )


def test_detect_flannel_with_its_source_config(fake: FakeApiServer, cluster: KubeCluster) -> None:
    flannel(fake)
    info = KubeCniOps(cluster).detect_cni()
    assert info.kind is CniKind.FLANNEL and info.present == (CniKind.FLANNEL,) and info.supported_source
    assert (info.namespace, info.daemonset, info.version) == ("kube-flannel", "kube-flannel-ds", "v0.25.1")
    assert info.flannel is not None
    assert (
        info.flannel.network,
        info.flannel.subnet_len,
        info.flannel.backend_type,
        info.flannel.vni,
        info.flannel.port,
        info.flannel.direct_routing,
    ) == ("10.244.0.0/16", 24, "vxlan", 1, 8472, False)
    assert info.flannel.migration_blockers() == []
    assert info.config["configmap"] == "kube-flannel/kube-flannel-cfg"
    n1 = info.flannel_nodes["n1"]
    assert n1.vtep_ip == "10.244.1.0"
    assert (n1.pod_cidr, n1.public_ip, n1.vtep_mac, n1.vni) == (
        "10.244.1.0/24",
        "198.18.0.2",
        "aa:bb:cc:dd:ee:01",
        1,
    )


def test_flannel_blockers(fake: FakeApiServer, cluster: KubeCluster) -> None:
    flannel(fake, {"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}})
    info = KubeCniOps(cluster).detect_cni()
    assert info.flannel is not None and info.flannel.migration_blockers() == [
        "flannel backend 'host-gw' is not vxlan"
    ]
    conf = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True}}
    fake.api.update(
        "ConfigMap",
        "kube-flannel-cfg",
        "kube-flannel",
        lambda cm: cm["data"].update({"net-conf.json": json.dumps(conf)}),
    )
    info = KubeCniOps(cluster).detect_cni()
    assert info.flannel is not None and info.flannel.migration_blockers() == ["flannel DirectRouting is on"]


def test_flannel_is_the_source_while_calico_is_being_installed(
    fake: FakeApiServer, cluster: KubeCluster
) -> None:
    flannel(fake)
    cluster.apply(
        {
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.244.0.0/16", "vxlanMode": "Always", "blockSize": 24},
        }
    )
    fake.api.add(
        make_daemonset(
            "calico-node",
            "kube-system",
            labels={"k8s-app": "calico-node"},
            containers=[{"name": "calico-node", "image": "quay.io/calico/node:v3.28.0"}],
        )
    )
    info = KubeCniOps(cluster).detect_cni()
    assert info.kind is CniKind.FLANNEL and info.present == (CniKind.FLANNEL, CniKind.CALICO)
    assert [(p.name, p.cidr, p.vxlan_mode, p.block_size) for p in info.calico_pools] == [
        ("p", "10.244.0.0/16", "Always", 24)
    ]


@pytest.mark.parametrize(
    ("name", "namespace", "containers", "configmap", "kind", "check"),
    [
        (
            "calico-node",
            "calico-system",
            [
                {
                    "name": "calico-node",
                    "image": "quay.io/calico/node:v3.27.2",
                    "env": [
                        {"name": "CALICO_IPV4POOL_CIDR", "value": "192.168.0.0/16"},
                        {"name": "CALICO_NETWORKING_BACKEND", "value": "bird"},
                    ],
                }
            ],
            None,
            CniKind.CALICO,
            ("env", "CALICO_IPV4POOL_CIDR", "192.168.0.0/16"),
        ),
        (
            "canal",
            "kube-system",
            [
                {"name": "calico-node", "image": "quay.io/calico/node:v3.27.2"},
                {"name": "kube-flannel", "image": "flannel/flannel:v0.24.0"},
            ],
            ("canal-config", {"net-conf.json": json.dumps(NET_CONF), "veth_mtu": "1450"}),
            CniKind.CANAL,
            ("veth_mtu", None, "1450"),
        ),
        (
            "weave-net",
            "kube-system",
            [
                {
                    "name": "weave",
                    "image": "weaveworks/weave-kube:2.8.1",
                    "env": [{"name": "IPALLOC_RANGE", "value": "10.40.0.0/16"}],
                }
            ],
            None,
            CniKind.WEAVE,
            ("IPALLOC_RANGE", None, "10.40.0.0/16"),
        ),
        (
            "cilium",
            "kube-system",
            [{"name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.15.0"}],
            ("cilium-config", {"cluster-pool-ipv4-cidr": "10.0.0.0/8", "routing-mode": "tunnel"}),
            CniKind.CILIUM,
            ("cluster-pool-ipv4-cidr", None, "10.0.0.0/8"),
        ),
    ],
)
def test_detect_other_cnis(
    fake: FakeApiServer,
    cluster: KubeCluster,
    name: str,
    namespace: str,
    containers: list[dict[str, object]],
    configmap: tuple[str, dict[str, str]] | None,
    kind: CniKind,
    check: tuple[str, str | None, str],
) -> None:
    fake.api.ensure_namespace(namespace)
    fake.api.add(make_daemonset(name, namespace, labels={"k8s-app": name}, containers=containers))
    if configmap is not None:
        fake.api.add(make_configmap(configmap[0], "kube-system", configmap[1]))
    info = KubeCniOps(cluster).detect_cni()
    assert info.kind is kind and info.daemonset == name
    # Canal: wire-compatible, like flannel; Weave Net: the dual-overlay method
    assert info.supported_source is (kind in (CniKind.CANAL, CniKind.WEAVE))
    key, sub, value = check
    assert (info.config[key][sub] if sub else info.config[key]) == value
    if kind is CniKind.CANAL:
        assert info.flannel is not None and info.flannel.vni == 1


def test_detect_nothing(cluster: KubeCluster) -> None:
    assert KubeCniOps(cluster).detect_cni().kind is CniKind.UNKNOWN


# ---------------------------------------------------------------------------------------------- lock


def test_lease_lock_stops_a_second_holder_and_allows_takeover_after_expiry(
    fake: FakeApiServer, cluster: KubeCluster
) -> None:
    first = cluster.lock("run-A", duration=1.0, holder="host-a")
    first.acquire()
    lease = fake.api.get("Lease", "migrator-run-lock", "kube-system")
    assert lease is not None and lease["metadata"]["annotations"]["migrator.io/run-id"] == "run-A"
    assert (
        lease["spec"]["holderIdentity"] == "host-a run run-A" and lease["spec"]["leaseDurationSeconds"] == 1
    )
    first.acquire()  # re-entrant for the same run
    second = cluster.lock("run-B", duration=1.0, holder="host-b")
    with pytest.raises(LockHeld) as info:
        second.acquire()
    assert info.value.holder_run_id == "run-A" and "run-A" in str(info.value)
    current = second.current()
    assert current is not None and current.run_id == "run-A"
    first.renew()
    time.sleep(1.3)  # run A stops renewing: its lease expires
    assert second.current() is None
    second.acquire()
    lease = fake.api.get("Lease", "migrator-run-lock", "kube-system")
    assert lease is not None and lease["metadata"]["annotations"]["migrator.io/run-id"] == "run-B"
    assert lease["spec"]["leaseTransitions"] == 1
    with pytest.raises(LockHeld, match="run-B"):
        first.renew()  # A lost it
    first.release()  # not ours any more: no-op
    assert fake.api.get("Lease", "migrator-run-lock", "kube-system") is not None
    second.release()
    assert fake.api.get("Lease", "migrator-run-lock", "kube-system") is None


def test_lease_lock_context_manager_renews(fake: FakeApiServer, cluster: KubeCluster) -> None:
    with cluster.lock("run-C", duration=1.5) as lock:
        time.sleep(2.5)  # longer than the duration: the background renewer keeps it
        with pytest.raises(LockHeld):
            cluster.lock("run-D").acquire()
        assert lock.current() is not None
    assert fake.api.get("Lease", "migrator-run-lock", "kube-system") is None


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "headers", "error", "text"),
    [
        (401, {}, KubeForbidden, "docs/rbac.yaml"),
        (403, {}, KubeForbidden, "migrator doctor --target kube"),
        (404, {}, KubeNotFound, "not found"),
        (409, {}, KubeConflict, "HTTP 409"),
        (429, {"Retry-After": "7"}, TemporaryError, "HTTP 429"),
        (500, {}, TemporaryError, "HTTP 500"),
        (503, {"Retry-After": "3"}, TemporaryError, "HTTP 503"),
        (422, {}, PermanentError, "HTTP 422"),
    ],
)
def test_api_errors_are_translated(
    fake: FakeApiServer,
    make_cluster: Callable[..., KubeCluster],
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    text: str,
) -> None:
    add_nodes(fake.api, workers=1, control_planes=0)
    fake.api.faults.append(Fault(path="^/api/v1/nodes/w1$", status=status, headers=headers))
    cluster = make_cluster(read_attempts=1)
    with pytest.raises(error, match=text) as info:
        cluster.get_node("w1")
    assert isinstance(info.value.__cause__, Exception)  # raised from the ApiException
    if status in (401, 403, 404, 422):
        assert isinstance(info.value, PermanentError)
    else:
        assert isinstance(info.value, TemporaryError)
    if "Retry-After" in headers:
        assert isinstance(info.value, TemporaryError)
        assert info.value.delay == float(headers["Retry-After"])


def test_reads_are_retried_on_temporary_errors(
    fake: FakeApiServer, make_cluster: Callable[..., KubeCluster]
) -> None:
    add_nodes(fake.api, workers=1, control_planes=0)
    fake.api.faults.append(Fault(path="^/api/v1/nodes/w1$", status=503, times=2))
    assert make_cluster(read_attempts=3).get_node("w1").name == "w1"


def test_wrong_token_is_a_permanent_error_with_a_hint(fake: FakeApiServer, tmp_path: Path) -> None:
    config = fake.write_kubeconfig(tmp_path / "bad", token="wrong")
    cluster = KubeCluster(kubeconfig=str(config))
    with pytest.raises(KubeForbidden, match="HTTP 401"):
        cluster.identity()


def test_refused_connection_is_temporary(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "kc"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "x", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            }
        )
    )
    cluster = KubeCluster(kubeconfig=str(config), read_attempts=1)
    with pytest.raises(TemporaryError, match="cannot reach the Kubernetes API server"):
        cluster.list_nodes()


def test_missing_kubeconfig_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot load Kubernetes config"):
        KubeCluster(kubeconfig=str(tmp_path / "nope"))


def test_in_cluster_service_account_without_a_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from migrator.targets.kube import api as kube_api  # noqa: PLC0415 - the module's own constant

    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("in-cluster-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(kube_api, "SERVICE_ACCOUNT_DIR", str(sa))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = kube_api.load_api_client()
    conf = client.configuration
    assert conf.host == "https://10.96.0.1:443"
    assert conf.api_key["BearerToken"].lower() == "bearer in-cluster-token"
    assert conf.ssl_ca_cert == str(sa / "ca.crt")
    assert conf.retries.status == 0, "migrator's own client configuration (no status retries)"
    client.close()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(UsageError, match=r"cannot load Kubernetes config.*Service host/port is not set"):
        kube_api.load_api_client()


def test_watch_replays_and_expires(fake: FakeApiServer, cluster: KubeCluster) -> None:
    add_nodes(fake.api, workers=1, control_planes=0)
    rv = str(fake.api.last_rv)
    cluster.label_node("w1", {"a": "1"})
    events = list(
        cluster.api.watch(
            "watch nodes", cluster.api.core.list_node, resource_version=rv, deadline=time.monotonic() + 1
        )
    )
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("MODIFIED", "w1")]
    fake.api.events_dropped_rv = fake.api.last_rv
    with pytest.raises(WatchExpired):
        list(
            cluster.api.watch(
                "watch nodes", cluster.api.core.list_node, resource_version=rv, deadline=time.monotonic() + 1
            )
        )


def test_background_renewer_reports_a_lost_lock(fake: FakeApiServer, cluster: KubeCluster) -> None:
    lock = cluster.lock("run-E", duration=1.0)
    lock.acquire()
    lock.start_renewing(interval=0.2)
    try:
        fake.api.update(
            "Lease",
            "migrator-run-lock",
            "kube-system",
            lambda lease: lease["metadata"]["annotations"].update({"migrator.io/run-id": "run-F"}),
        )
        assert lock.lost.wait(timeout=5)
    finally:
        lock.stop_renewing()


def test_migration_blockers_from_objects() -> None:
    flannel_ds = make_daemonset("kube-flannel-ds", "kube-flannel", labels={"app": "flannel"})
    cms = {
        ("kube-flannel", "kube-flannel-cfg"): make_configmap(
            "kube-flannel-cfg", "kube-flannel", {"net-conf.json": json.dumps(NET_CONF)}
        )
    }

    def pool(name: str, cidr: str, **spec: object) -> dict[str, object]:
        return {"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}

    good = detect_from_objects(
        [flannel_ds], cms, [], [pool("compat", "10.244.0.0/16", blockSize=24, vxlanMode="Always")]
    )
    assert good.migration_blockers() == []
    other = detect_from_objects([flannel_ds], cms, [], [pool("far", "192.168.0.0/16", ipipMode="Always")])
    assert other.migration_blockers() == []  # does not overlap flannel's network
    bad = detect_from_objects(
        [flannel_ds], cms, [], [pool("default-ipv4-ippool", "10.244.0.0/16", blockSize=26, ipipMode="Always")]
    )
    (problem,) = bad.migration_blockers()
    assert "Calico IPPool default-ipv4-ippool conflicts with flannel" in problem
    assert "blockSize 26" in problem and "ipipMode Always" in problem and "vxlanMode" in problem
    canal = make_daemonset("canal", "kube-system", labels={"k8s-app": "canal"})
    canal_blockers = detect_from_objects([canal], {}, [], []).migration_blockers()
    assert canal_blockers == [
        "canal runs but its net-conf.json (ConfigMap canal-config) was not found or not valid"
    ]
    weave = make_daemonset("weave-net", "kube-system", labels={"name": "weave-net"})
    assert detect_from_objects([weave], {}, [], []).migration_blockers() == []  # the dual overlay
    bad_range = [
        {
            "name": "weave",
            "image": "weaveworks/weave-kube:2.8.1",
            "env": [{"name": "IPALLOC_RANGE", "value": "10.32/12"}],
        }
    ]
    odd = make_daemonset("weave-net", "kube-system", labels={"name": "weave-net"}, containers=bad_range)
    assert detect_from_objects([odd], {}, [], []).migration_blockers() == [
        "Weave Net's IPALLOC_RANGE '10.32/12' is not an IPv4 CIDR"
    ]
    assert detect_from_objects([], {}, [], []).migration_blockers()[0].startswith("no CNI was recognised")
    no_conf = detect_from_objects([flannel_ds], {}, [], [])
    assert "net-conf.json" in no_conf.migration_blockers()[0]
