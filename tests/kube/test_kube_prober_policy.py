"""``policy`` probes on the kube target: the privileged ``migrator-probe-netns`` DaemonSet and its runner,
which enters the SOURCE pod's network namespace (found through the pod's cgroup) for each probe.

The fake API server runs no containers, so the test plays the kubelet (as in test_kube_prober.py): for
each probe pod it starts the container's own script from the shipped ConfigMap, with the API URL and
token in its environment, and appends what it prints to the pod's log. For the netns DaemonSet it also
plays the node: ``MIGRATOR_PROBE_PROC`` points the runner at a /proc tree the test builds, where the
"process" of pod x/a is a real network namespace the test creates (``np-kube-<pid>``, loopback only) with
a TCP server on 127.0.0.1 inside it; nothing listens on that port in the test's own namespace. A probe
that reaches the server proves it left from the pod's namespace; the same probe from the probe pod's own
namespace is refused. Every namespace and process is removed at the end, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.ports import ProbeKind, ProbeProtocol, ProbeTarget
from migrator.targets.kube import KubeCluster
from migrator.targets.kube.netns_runner import UID_KEY, pod_processes, resolve
from migrator.targets.kube.prober import (
    AGENT_CONFIGMAP,
    NAME,
    NAMESPACE,
    NETNS_NAME,
    NETNS_RUNNER,
    POD_SECURITY,
    KubeProber,
    OutsideMode,
    PolicyMode,
)
from migrator.testing.kube_server import (
    FakeApiServer,
    FakeKubeApi,
    Fault,
    LocalKube,
    add_nodes,
    make_pod,
    seed_netpol_model,
)
from tests.kube.test_kube_prober import Kubelet

ROOT = Path(__file__).resolve().parents[2]
HAVE_NETNS = os.geteuid() == 0 and shutil.which("ip") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pod_netns() -> Iterator[tuple[str, int]]:
    """A network namespace standing for pod x/a, with a TCP server and a UDP echo on 127.0.0.1:<port> inside
    it."""
    if not HAVE_NETNS:
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"np-kube-{os.getpid()}"
    port = _free_port()
    server: subprocess.Popen[str] | None = None
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        code = (
            "import socket,sys,threading\n"
            f"u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', {port}))\n"
            "def echo():\n"
            "    for _ in range(1000):\n"
            "        data, peer = u.recvfrom(2048); u.sendto(b'pod x/a udp', peer)\n"
            "threading.Thread(target=echo, daemon=True).start()\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {port})); s.listen(64); print('ready', flush=True)\n"
            "s.settimeout(60)\n"
            "for _ in range(1000):\n"
            "    try:\n        c, _a = s.accept(); c.close()\n"
            "    except OSError:\n        break\n"
        )
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield f"/var/run/netns/{name}", port
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def _proc_tree(root: Path, processes: dict[int, tuple[str, str]]) -> Path:
    """A /proc with pid 1 in this process's namespace (the "host") and, per pid, a cgroup line and a
    ``ns/net`` link."""
    (root / "1" / "ns").mkdir(parents=True)
    (root / "1" / "ns" / "net").symlink_to("/proc/self/ns/net")
    (root / "1" / "cgroup").write_text("0::/init.scope\n")
    for pid, (cgroup, netns) in processes.items():
        (root / str(pid) / "ns").mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")
        (root / str(pid) / "ns" / "net").symlink_to(netns)
    return root


def _systemd_cgroup(uid: str) -> str:
    u = uid.replace("-", "_")
    slice_ = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"
    return f"{slice_}/cri-containerd-ab12.scope"


def _seed(api: FakeKubeApi) -> dict[str, str]:
    api.token = "test-token"
    add_nodes(api, workers=2, control_planes=1)
    ips = seed_netpol_model(api, ["w1", "w2"])
    api.add(make_pod("hostnet", "x", node="w1", ip="198.18.0.20", host_network=True, labels={"pod": "h"}))
    return ips


def _uid(api: FakeKubeApi, key: str) -> str:
    ns, name = key.split("/")
    pod = api.get("Pod", name, ns)
    assert pod is not None
    return str(pod["metadata"]["uid"])


def _policy(source: str, dest: str, port: int, protocol: ProbeProtocol = ProbeProtocol.TCP) -> ProbeTarget:
    return ProbeTarget(source, dest, ProbeKind.POLICY, "127.0.0.1", port, protocol, timeout=1.0)


# ----------------------------------------------------------------------------------- the specs


def test_the_netns_daemonset_is_privileged_hostpid_and_deployed_on_first_use(
    local: LocalKube, local_cluster: KubeCluster
) -> None:
    _seed(local.api)
    prober = KubeProber(
        local_cluster, image="registry.example/python:3.12-slim", poll=0.2, outside=OutsideMode.OFF
    )
    prober.deploy()
    assert local.api.get("DaemonSet", NETNS_NAME, NAMESPACE) is None, "not before a policy probe"
    ns = local.api.get("Namespace", NAMESPACE)
    assert ns is not None and "pod-security.kubernetes.io/enforce" not in ns["metadata"]["labels"]
    cm = local.api.get("ConfigMap", AGENT_CONFIGMAP, NAMESPACE)
    assert cm is not None
    assert cm["data"][NETNS_RUNNER] == (ROOT / "migrator/targets/kube/netns_runner.py").read_text()
    assert prober.deploy_netns() is None
    ns = local.api.get("Namespace", NAMESPACE)
    assert ns is not None and POD_SECURITY.items() <= ns["metadata"]["labels"].items(), "privileged now"
    ds = local.api.get("DaemonSet", NETNS_NAME, NAMESPACE)
    assert ds is not None
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["hostPID"] is True and not pod.get("hostNetwork")
    assert (
        container["securityContext"]["privileged"] is True and container["securityContext"]["runAsUser"] == 0
    )
    assert pod["securityContext"] == {"runAsUser": 0}
    assert container["command"] == ["python", "-u", f"/opt/migrator-probe/{NETNS_RUNNER}"]
    assert container["args"] == ["--poll=0.2", "--port=0", "--node=netns:$(NODE_NAME)"]
    assert "ports" not in container and "readinessProbe" not in container
    assert pod["tolerations"] == [{"operator": "Exists"}] and pod["serviceAccountName"] == NAME
    assert pod["volumes"][0]["configMap"]["name"] == AGENT_CONFIGMAP
    assert sorted(prober.probe_pods(NETNS_NAME)) == ["cp1", "w1", "w2"]


def test_policy_probes_fail_with_the_reason_when_they_cannot_enter_a_pod(
    local: LocalKube, make_local_cluster: object
) -> None:
    _seed(local.api)
    cluster = make_local_cluster()  # type: ignore[operator]
    targets = [_policy("x/a", "x/b", 80), _policy("w1", "x/b", 80)]
    off = KubeProber(cluster, poll=0.1, policy=PolicyMode.OFF, round_margin=1)
    results = off.probe(targets)
    assert [r.error for r in results] == ["unsupported: policy probes are off (KubeProber policy=off)"] * 2
    assert local.api.get("DaemonSet", NETNS_NAME, NAMESPACE) is None
    off.cleanup(wait_timeout=None)
    # an admission policy refuses the privileged DaemonSet: reported, remembered, never a deny
    local.api.faults.append(Fault(path=f"daemonsets/{NETNS_NAME}", status=403, method="PATCH", times=5))
    refused = KubeProber(cluster, poll=0.1, round_margin=1)
    results = refused.probe(targets)
    assert all(not r.ok and (r.error or "").startswith("no-policy-probe-pod: ") for r in results)
    assert "forbidden by an admission policy?" in (results[0].error or "")
    assert refused.probe(targets)[0].error == results[0].error


def test_sources_that_are_not_pods_or_on_the_host_network_are_reported(
    local: LocalKube, local_cluster: KubeCluster
) -> None:
    _seed(local.api)
    prober = KubeProber(local_cluster, poll=0.1, round_margin=1)
    prober.deploy()
    results = prober.probe(
        [_policy("w1", "x/b", 80), _policy("x/hostnet", "x/b", 80), _policy("q/none", "x/b", 80)]
    )
    assert [(r.error or "").split(":")[0] for r in results] == ["no-source", "unsupported", "no-source"]
    assert "host network" in (results[1].error or "")


def test_a_round_without_results_is_a_prober_error_never_a_timeout(
    local: LocalKube, local_cluster: KubeCluster
) -> None:
    """No runner answers (the fake's pods run nothing): "no-result", which is not a deny."""
    _seed(local.api)
    prober = KubeProber(local_cluster, poll=0.1, round_margin=0.5)
    started = time.monotonic()
    (result,) = prober.probe([_policy("x/a", "x/b", 80)])
    assert not result.ok and (result.error or "").startswith(
        "no-result: no result from the probe pod on netns:"
    )
    assert time.monotonic() - started < 15, "bounded by the probe timeout plus round_margin"


# ---------------------------------------------------------------------------- the node side


def test_the_runner_finds_a_pods_process_by_its_cgroup(tmp_path: Path) -> None:
    uid_systemd = "0b7e6a2c-1111-4a2b-8c3d-5e6f7a8b9c0d"
    uid_cgroupfs = "9a8b7c6d-2222-4e5f-8a9b-0c1d2e3f4a5b"
    proc = _proc_tree(
        tmp_path / "proc",
        {
            300: (_systemd_cgroup(uid_systemd), "/proc/self/ns/uts"),  # any file: a namespace of its own
            301: (_systemd_cgroup(uid_systemd), "/proc/self/ns/uts"),
            410: (f"/kubepods/burstable/pod{uid_cgroupfs}/0123abcd", "/proc/self/ns/net"),  # host network
        },
    )
    pids = pod_processes(str(proc))
    assert pids == {uid_systemd: 300, uid_cgroupfs: 410}
    targets = [
        {"source": "x/a", UID_KEY: uid_systemd, "host": "10.0.0.1"},
        {"source": "x/h", UID_KEY: uid_cgroupfs, "host": "10.0.0.1"},
        {"source": "x/gone", UID_KEY: "00000000-0000-0000-0000-000000000000", "host": "10.0.0.1"},
        {"source": "w1", "host": "10.0.0.1"},
    ]
    got = resolve(targets, pids, str(proc))
    assert [t.get("netns") for t in got] == [
        f"{proc}/300/ns/net",
        f"{proc}/migrator:pod-{uid_cgroupfs}-is-on-the-host-network/ns/net",
        f"{proc}/migrator:no-process-of-pod-00000000-0000-0000-0000-000000000000-on-this-node/ns/net",
        None,
    ]
    assert all(UID_KEY not in t for t in got)


def test_policy_probes_leave_from_the_source_pods_namespace(
    tmp_path: Path, pod_netns: tuple[str, int]
) -> None:
    netns, port = pod_netns
    api = FakeKubeApi()
    _seed(api)
    uid_a = _uid(api, "x/a")
    proc = _proc_tree(tmp_path / "proc", {4242: (_systemd_cgroup(uid_a), netns)})
    with FakeApiServer(api) as server:
        config = server.write_kubeconfig(tmp_path / "kubeconfig", context="fake", token="test-token")
        cluster = KubeCluster(kubeconfig=str(config), context="fake", watch_chunk=1.0)
        try:
            with Kubelet(server, tmp_path / "pods", proc):
                (tmp_path / "pods").mkdir()
                prober = KubeProber(cluster, poll=0.1, round_margin=20)
                targets = [
                    _policy("x/a", "x/b", port),  # from x/a's namespace: its server answers
                    _policy("x/b", "x/a", port),  # x/b has no process on its node
                    ProbeTarget("x/a", "x/b", ProbeKind.POD_SAME_NODE, "127.0.0.1", port, ProbeProtocol.TCP),
                    _policy("x/a", "x/b", port, ProbeProtocol.UDP),  # UDP from x/a's namespace: the echo
                    _policy("x/a", "x/b", port + 1 if port < 65535 else port - 1, ProbeProtocol.UDP),
                ]
                results = prober.probe(targets)
                # a continuous policy probe (a monitor during a migration) goes the same way
                run = prober.start_continuous(targets[:2], rate_hz=10, max_duration=20)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and {r.source for r in run.snapshot()} != {"x/a", "x/b"}:
                    time.sleep(0.2)
                streamed = run.stop()
                prober.cleanup(wait_timeout=None)
        finally:
            cluster.close()
    by_source = [(r.source, r.kind, r.ok, (r.error or "").split(":")[0]) for r in results]
    assert by_source[0] == ("x/a", ProbeKind.POLICY, True, "")
    assert by_source[1][:3] == ("x/b", ProbeKind.POLICY, False) and by_source[1][3] == "netns"
    assert "no-process-of-pod" in (results[1].error or "")
    # the same port from the probe pod's own namespace (the old way) finds nothing listening
    assert by_source[2] == ("x/a", ProbeKind.POD_SAME_NODE, False, "refused")
    # UDP policy probes go the same way: the echo answers; a closed UDP port is refused (ICMP), a deny
    assert by_source[3] == ("x/a", ProbeKind.POLICY, True, "")
    assert by_source[4] == ("x/a", ProbeKind.POLICY, False, "refused")
    from_a = [r for r in streamed if r.source == "x/a"]
    from_b = [r for r in streamed if r.source == "x/b"]
    assert from_a and all(r.ok and r.kind is ProbeKind.POLICY for r in from_a)
    assert from_b and all((r.error or "").startswith("netns: ") for r in from_b)
    assert max(r.ts for r in streamed) - min(r.ts for r in streamed) < 15, "stopped long before 20 s"
    rounds = [
        c
        for c in api.find("ConfigMap", NAMESPACE)
        if c["metadata"]["name"].startswith("migrator-probe-round")
    ]
    assert rounds == [], "the round's ConfigMaps are deleted"
