"""KubeProber against the fake API server: the objects it deploys, rounds through ConfigMaps, results
from pod logs, continuous probes, cleanup.

The fake API server runs no containers, so the test plays the kubelet: for every probe pod the
DaemonSet gets, it writes the ``migrator-probe-agent`` ConfigMap's files (the code the prober shipped)
to a folder and starts ``python runner.py`` from there, as the pod would, with the API URL and token
in its environment; each line the process prints is appended to that pod's log in the fake server.
Probes go to 127.0.0.1 only (a local HTTP server and a closed port).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.ports import ProbeKind, ProbeProtocol, ProbeTarget
from migrator.probe.k8s import runner
from migrator.probe.matrix import MatrixOptions, build_matrix
from migrator.targets.kube import KubeCluster, open_kube_target
from migrator.targets.kube.netns_runner import PROC_ENV
from migrator.targets.kube.prober import (
    AGENT_CONFIGMAP,
    HOST_NAME,
    NAME,
    NAMESPACE,
    NETNS_RUNNER,
    KubeProber,
    OutsideMode,
    outside_source,
)
from migrator.testing.kube_server import (
    FakeApiServer,
    FakeKubeApi,
    LocalKube,
    add_nodes,
    make_pod,
    seed_flannel_cluster,
)

ROOT = Path(__file__).resolve().parents[2]


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Kubelet:
    """Starts each probe pod's container script (from the shipped ConfigMap); its stdout becomes the pod's
    log. ``proc_root``: the /proc tree the policy pods' netns runner reads (``PROC_ENV``)."""

    def __init__(self, server: FakeApiServer, workdir: Path, proc_root: Path | None = None) -> None:
        self.server = server
        self.workdir = workdir
        self.proc_root = proc_root
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.wait(0.05) and time.monotonic() < deadline:
            cm = self.server.api.get("ConfigMap", AGENT_CONFIGMAP, NAMESPACE)
            for pod in self.server.api.find("Pod", NAMESPACE):
                name = pod["metadata"]["name"]
                if cm is None or name in self.procs:
                    continue
                code = self.workdir / name
                code.mkdir()
                for fname, text in cm["data"].items():
                    (code / fname).write_text(text)
                container = pod["spec"]["containers"][0]
                script = Path(container["command"][-1]).name
                # the container's own args, with $(VAR) expanded as the kubelet does, then the test's
                args = [
                    a.replace("$(NODE_NAME)", pod["spec"]["nodeName"]) for a in container.get("args") or []
                ]
                env = {
                    "PATH": os.environ.get("PATH", ""),
                    "NODE_NAME": pod["spec"]["nodeName"],
                    "POD_NAMESPACE": NAMESPACE,
                    "MIGRATOR_PROBE_API": self.server.url,
                    "MIGRATOR_PROBE_TOKEN": "test-token",
                }
                if script == NETNS_RUNNER and self.proc_root is not None:
                    env[PROC_ENV] = str(self.proc_root)
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-u",
                        str(code / script),
                        *args,
                        "--poll=0.1",
                        "--port=0",
                        "--max-lifetime=90",
                    ],
                    cwd=code,
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                self.procs[name] = proc
                threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()

    def _pump(self, pod: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.server.api.append_log(NAMESPACE, pod, line)

    def __enter__(self) -> Kubelet:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        for proc in self.procs.values():
            proc.kill()
            proc.wait(10)


def _seed(api: FakeKubeApi) -> FakeKubeApi:
    """Three nodes, an app pod on each worker."""
    api.token = "test-token"
    add_nodes(api, workers=2, control_planes=1)
    api.add(make_pod("app-1", "default", node="w1", ip="10.244.0.5", ports=(8080,)))
    api.add(make_pod("app-2", "default", node="w2", ip="10.244.1.5", ports=(8080,)))
    return api


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(_seed(FakeKubeApi())) as srv:
        yield srv


@pytest.fixture
def cluster(server: FakeApiServer, tmp_path: Path) -> Iterator[KubeCluster]:
    config = server.write_kubeconfig(tmp_path / "kubeconfig", context="fake", token="test-token")
    made = KubeCluster(kubeconfig=str(config), context="fake", watch_chunk=1.0)
    yield made
    made.close()


@pytest.fixture
def kubelet(server: FakeApiServer, tmp_path: Path) -> Iterator[Kubelet]:
    with Kubelet(server, tmp_path) as k:
        yield k


def _targets(web: int, closed: int) -> list[ProbeTarget]:
    http_ = ProbeProtocol.HTTP
    return [
        ProbeTarget("default/app-1", "default/app-2", ProbeKind.POD_CROSS_NODE, "127.0.0.1", web, http_),
        ProbeTarget("w2", "default/app-2", ProbeKind.NODE_TO_POD, "127.0.0.1", closed, ProbeProtocol.TCP),
        ProbeTarget("outside", "nodeport@w1", ProbeKind.NODEPORT, "127.0.0.1", web, http_),
        ProbeTarget("default/app-2", "default/app-1", ProbeKind.POD_CROSS_NODE, "127.0.0.1", web, http_),
        ProbeTarget(
            "cp1", "x", ProbeKind.NODE_TO_POD, "127.0.0.1", web, ProbeProtocol.TCP, expect_status=None
        ),
    ]


def _left_in_namespace(server: FakeApiServer | LocalKube) -> list[str]:
    return [
        f"{r.kind}/{name}"
        for r in server.api.resources
        for (ns, name) in server.api.objects[r.key]
        if ns == NAMESPACE or (r.kind == "Namespace" and name == NAMESPACE)
    ]


def test_deploy_objects_have_the_right_spec(local: LocalKube, local_cluster: KubeCluster) -> None:
    _seed(local.api)
    prober = KubeProber(local_cluster, image="registry.example/python:3.12-slim", poll=0.2)
    prober.deploy()
    api = local.api
    assert api.get("Namespace", NAMESPACE) is not None
    assert api.get("ServiceAccount", NAME, NAMESPACE) is not None
    role = api.get("Role", NAME, NAMESPACE)
    assert role is not None
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
    ]
    binding = api.get("RoleBinding", NAME, NAMESPACE)
    assert binding is not None and binding["subjects"][0]["name"] == NAME
    cm = api.get("ConfigMap", AGENT_CONFIGMAP, NAMESPACE)
    assert cm is not None
    assert cm["data"]["agent.py"] == (ROOT / "migrator/probe/agent.py").read_text(), "the SAME agent code"
    assert cm["data"]["runner.py"] == (ROOT / "migrator/probe/k8s/runner.py").read_text()
    ds = api.get("DaemonSet", NAME, NAMESPACE)
    assert ds is not None
    pod_spec = ds["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["image"] == "registry.example/python:3.12-slim"
    assert container["command"] == ["python", "-u", "/opt/migrator-probe/runner.py"]
    assert "--poll=0.2" in container["args"]
    assert {e["name"] for e in container["env"]} == {"NODE_NAME", "POD_NAMESPACE"}
    assert pod_spec["tolerations"] == [{"operator": "Exists"}]
    assert pod_spec["serviceAccountName"] == NAME
    assert pod_spec["volumes"][0]["configMap"]["name"] == AGENT_CONFIGMAP
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    svc = api.get("Service", NAME, NAMESPACE)
    assert svc is not None and svc["spec"]["selector"] == ds["spec"]["selector"]["matchLabels"]
    assert sorted(prober.probe_pods()) == ["cp1", "w1", "w2"], "one Ready probe pod per node"
    prober.cleanup()
    assert _left_in_namespace(local) == []


def test_probe_round_results_come_from_pod_logs(
    cluster: KubeCluster, server: FakeApiServer, kubelet: Kubelet, web: int, closed_port: int
) -> None:
    prober = KubeProber(cluster, poll=0.1, round_margin=20)
    targets = _targets(web, closed_port)
    results = prober.probe(targets)
    assert [(r.source, r.dest) for r in results] == [(t.source, t.dest) for t in targets]
    ok = {r.source: r for r in results}
    assert ok["default/app-1"].ok and ok["default/app-1"].latency_ms is not None
    assert ok["default/app-2"].ok and ok["cp1"].ok
    assert not ok["w2"].ok and (ok["w2"].error or "").startswith("refused")
    # the NodePort probe "from outside" to w1 ran on the host network of another node
    assert ok["outside"].ok and ok["outside"].kind is ProbeKind.NODEPORT, ok["outside"]
    host_pods = prober.probe_pods(HOST_NAME)
    assert sorted(host_pods) == ["cp1", "w1", "w2"]
    sender = outside_source("w1", list(host_pods))
    assert sender in ("cp1", "w2")
    host_log = server.api.pod_logs[(NAMESPACE, host_pods[sender].name)]
    assert any(line.startswith(runner.RESULT_PREFIX + " ") and "nodeport@w1" in line for line in host_log)
    for node, pod in host_pods.items():
        assert pod.host_network and pod.node == node
        if node != sender:
            log = server.api.pod_logs.get((NAMESPACE, pod.name), [])
            assert not [line for line in log if line.startswith(runner.RESULT_PREFIX + " ")], log
    # each source ran on the probe pod of its node: its log holds the round
    pods = prober.probe_pods()
    for node, source in (("w1", "default/app-1"), ("w2", "w2"), ("cp1", "cp1")):
        log = server.api.pod_logs[(NAMESPACE, pods[node].name)]
        assert any(line.startswith(runner.RESULT_PREFIX + " ") and source in line for line in log)
        assert any(line.startswith(runner.END_PREFIX + " ") for line in log)
        assert not [line for line in log if "cannot list or watch" in line], log
        assert "nodeport@w1" not in "".join(log), "the pod-network runner never runs outside probes"
    rounds = [
        cm for cm in server.api.find("ConfigMap", NAMESPACE) if cm["metadata"]["name"] != AGENT_CONFIGMAP
    ]
    assert rounds == [], "a round's ConfigMaps are deleted once read"
    polls = [
        p
        for m, p, q in server.api.requests
        if m == "GET" and p.endswith("/configmaps") and not q.get("watch")
    ]
    assert len(polls) < 30, "runners watch their rounds, they do not poll once a second"
    again = prober.probe(targets[:1])
    assert again[0].ok, "a second round on the same pods"
    prober.cleanup()
    assert _left_in_namespace(server) == []


def test_continuous_probe_streams_and_stops(
    cluster: KubeCluster, server: FakeApiServer, kubelet: Kubelet, web: int, closed_port: int
) -> None:
    prober = KubeProber(cluster, poll=0.1, round_margin=20)
    targets = [t for t in _targets(web, closed_port) if t.source in ("default/app-1", "w2", "outside")]
    run = prober.start_continuous(targets, rate_hz=10, max_duration=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and {r.source for r in run.snapshot()} != {t.source for t in targets}:
        time.sleep(0.2)
    assert len(run.snapshot()) >= 3, "results stream in while the probe runs, from every source"
    early = [r for r in run.snapshot() if r.source == "default/app-1"]
    with server.api.lock:  # the kubelet rotates the log files: what was printed so far is gone
        for key in list(server.api.pod_logs):
            server.api.pod_logs[key], server.api.pod_log_times[key] = [], []
    results = run.stop()
    by_source = {t.source: [r for r in results if r.source == t.source] for t in targets}
    assert by_source["default/app-1"] and all(r.ok for r in by_source["default/app-1"])
    assert by_source["w2"] and not any(r.ok for r in by_source["w2"])
    assert by_source["outside"] and all(r.ok for r in by_source["outside"]), "NodePort from a host network"
    assert set(early) <= set(by_source["default/app-1"]), "results read before the rotation are kept"
    assert len({(r.source, r.dest, r.ts) for r in results}) == len(results), "no line is counted twice"
    reads = [q for ns, _, q in server.api.log_reads if ns == NAMESPACE]
    assert all(q.get("timestamps") == "true" for q in reads)
    assert sum(1 for q in reads if q.get("sinceSeconds")) > len(reads) // 2, "new lines only, not the log"
    duration = max(r.ts for r in results) - min(r.ts for r in results)
    assert duration < 15, "deleting the round's ConfigMaps stopped the runners long before 30 s"
    rounds = [
        cm for cm in server.api.find("ConfigMap", NAMESPACE) if cm["metadata"]["name"] != AGENT_CONFIGMAP
    ]
    assert rounds == []
    prober.cleanup()
    assert _left_in_namespace(server) == []


def test_run_lock_release_cleans_up_the_probe(
    server: FakeApiServer, kubelet: Kubelet, tmp_path: Path, web: int, closed_port: int
) -> None:
    config = server.write_kubeconfig(tmp_path / "kc", context="fake", token="test-token")
    target = open_kube_target("fake", kubeconfig=str(config))
    assert target.run_lock is not None
    lock = target.run_lock("probe-run")
    lock.acquire()
    assert target.prober is not None
    assert target.prober.probe(_targets(web, closed_port)[:1])[0].ok
    assert server.api.get("DaemonSet", NAME, NAMESPACE) is not None
    lock.release()  # the end of a run (or of its rollback)
    assert _left_in_namespace(server) == []
    assert server.api.get("Lease", "migrator-run-lock", "kube-system") is None


def test_outside_probes_manifest_and_modes(cluster: KubeCluster, server: FakeApiServer) -> None:
    target = ProbeTarget("outside", "default/web:80@w2", ProbeKind.NODEPORT, "10.0.0.12", 30080)
    # off: reported unsupported, nothing host-network deployed, the namespace stays at its default level
    off = KubeProber(cluster, poll=0.2, outside=OutsideMode.OFF)
    result = off.probe([target])[0]
    assert not result.ok and (result.error or "").startswith("unsupported")
    assert server.api.get("DaemonSet", HOST_NAME, NAMESPACE) is None
    ns = server.api.get("Namespace", NAMESPACE)
    assert ns is not None and "pod-security.kubernetes.io/enforce" not in ns["metadata"]["labels"]
    off.cleanup()

    # host-network: the DaemonSet is deployed on the first outside probe only
    prober = KubeProber(cluster, poll=0.2, deploy_timeout=1.0, round_margin=1.0)
    prober.deploy()
    assert server.api.get("DaemonSet", HOST_NAME, NAMESPACE) is None, "not before an outside probe"
    ns = server.api.get("Namespace", NAMESPACE)
    assert ns is not None and ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    server.api.daemonset_ready_delay = None  # its pods never become Ready: the rollout times out
    result = prober.probe([target])[0]
    assert not result.ok and (result.error or "").startswith("no-outside-probe-pod: the host-network"), result
    ds = server.api.get("DaemonSet", HOST_NAME, NAMESPACE)
    assert ds is not None
    pod_spec = ds["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert pod_spec["hostNetwork"] is True and pod_spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "--node=host:$(NODE_NAME)" in container["args"] and "--port=0" in container["args"]
    assert "ports" not in container and "readinessProbe" not in container, "takes no port on the node"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    svc = server.api.get("Service", NAME, NAMESPACE)
    assert svc is not None and svc["spec"]["selector"] == {"app.kubernetes.io/name": NAME}, "not host pods"
    again = prober.probe([target])[0]
    assert again.error == result.error, "the failure is remembered, not waited for again"
    server.api.namespace_termination_seconds = 1.0  # Terminating first, as a real namespace is
    server.api.requests.clear()
    prober.cleanup(wait_timeout=10)
    assert _left_in_namespace(server) == []
    assert [
        q for m, p, q in server.api.requests if m == "GET" and p == "/api/v1/namespaces" and q.get("watch")
    ]


def test_outside_source_is_never_the_destination() -> None:
    nodes = [f"n{i}" for i in range(7)]
    picked = {dest: outside_source(dest, nodes) for dest in nodes}
    assert all(src is not None and src != dest for dest, src in picked.items())
    assert len(set(picked.values())) > 2, "spread over the nodes"
    assert picked == {dest: outside_source(dest, list(reversed(nodes))) for dest in nodes}, "deterministic"
    assert outside_source("n0", ["n0"]) is None


def test_outside_targets_from_the_matrix_go_to_another_nodes_host_pod(local: LocalKube) -> None:
    """The NodePort targets the probe matrix builds on a kube cluster, routed and written as rounds."""
    names = seed_flannel_cluster(local.api, workers=3, control_planes=1)
    local.api.daemonset_ready_delay = 0.05
    cluster = local.cluster(watch_chunk=1.0)
    try:
        targets = build_matrix(cluster, MatrixOptions(kinds=frozenset({ProbeKind.NODEPORT}), path="/healthz"))
        nodes = {n.name: n for n in cluster.list_nodes()}
        assert sorted(t.dest.rpartition("@")[2] for t in targets) == sorted(names)
        assert {(t.source, t.port) for t in targets} == {("outside", 30080)}
        prober = KubeProber(cluster, poll=0.2, deploy_timeout=10)
        prober.deploy()
        by_slot, failed, _pods, _specs = prober._route(targets)
        assert failed == {}
        for slot, indexes in by_slot.items():
            assert slot.startswith("host:")
            for i in indexes:
                dest = targets[i].dest.rpartition("@")[2]
                assert targets[i].host == nodes[dest].address and slot != f"host:{dest}"
        rnd, cms = prober._start_round(targets, by_slot, {"concurrency": 8})
        written = [local.api.get("ConfigMap", name, NAMESPACE) for name in cms]
        for slot, cm in zip(sorted(by_slot), written, strict=True):
            assert cm is not None and cm["metadata"]["labels"][runner.NODE_LABEL] == runner.node_hash(slot)
            body = json.loads(cm["data"]["targets.json"])
            assert body["round"] == rnd
            assert [(t["source"], t["kind"], t["host"], t["port"], t["path"]) for t in body["targets"]] == [
                ("outside", "nodeport", targets[i].host, 30080, "/healthz") for i in by_slot[slot]
            ]
        prober._end_round(cms)
        prober.cleanup()
    finally:
        cluster.close()
