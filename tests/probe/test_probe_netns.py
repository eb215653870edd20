"""Real packets through the pbt namespace fabric (root only; skipped otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pbt_fabric import POD_PORT, Fabric

from migrator.errors import UsageError
from migrator.ports import ProbeKind, ProbeProtocol, ProbeResult, ProbeTarget
from migrator.probe import agent
from migrator.probe.analysis import check_continuous, continuous_stats, summarize
from migrator.probe.engine import EngineOptions, ProbeEngine
from migrator.probe.matrix import MatrixOptions, build_matrix
from migrator.targets.lab.prober import LabProber

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


def failing(results: list[ProbeResult]) -> set[tuple[str, str, ProbeKind]]:
    return {(r.source, r.dest, r.kind) for r in results if not r.ok}


@pytest.fixture
def prober(fabric: Fabric) -> LabProber:
    return LabProber(fabric.netns)


def test_healthy_all_kinds_pass(fabric: Fabric, prober: LabProber) -> None:
    targets = build_matrix(fabric.cluster)
    assert {t.kind for t in targets} == set(ProbeKind) - {ProbeKind.POLICY}
    started = time.perf_counter()
    results = prober.probe(targets)
    elapsed = time.perf_counter() - started
    assert [(r.source, r.dest, r.kind) for r in results] == [(t.source, t.dest, t.kind) for t in targets]
    assert failing(results) == set(), [r for r in results if not r.ok][:5]
    summary = summarize(results)
    assert summary.passed and {k.kind for k in summary.kinds} == set(ProbeKind) - {ProbeKind.POLICY}
    assert all(r.latency_ms is not None and r.latency_ms < 1000 for r in results)
    assert elapsed < 5


def test_body_match_and_status(fabric: Fabric, prober: LabProber) -> None:
    pod = fabric.pod("default/web-1-1")
    src = "default/web-0-0"

    def mk(**kw: object) -> ProbeTarget:
        return ProbeTarget(
            src,
            pod.key,
            ProbeKind.POD_CROSS_NODE,
            pod.ip or "",
            POD_PORT,
            ProbeProtocol.HTTP,
            **kw,  # type: ignore[arg-type]
        )

    res = prober.probe(
        [
            mk(expect_body="pbt-ok default/web-1-1"),
            mk(expect_body="something else"),
            mk(path="/fail"),
            mk(path="/fail", expect_status=500),
            mk(expect_status=None),
        ]
    )
    assert [r.ok for r in res] == [True, False, False, True, True]
    assert res[1].error is not None and res[1].error.startswith("http-body")
    assert res[2].error is not None and res[2].error.startswith("http-status: 500")


def test_dns_explicit_server_and_mismatch(fabric: Fabric) -> None:
    prober = LabProber(fabric.netns, dns_server=fabric.dns_ip)
    src = "default/web-2-1"
    name = "svc-1.default.svc.cluster.local"
    res = prober.probe(
        [
            ProbeTarget(
                src,
                name,
                ProbeKind.DNS,
                fabric.dns_ip,
                53,
                ProbeProtocol.DNS,
                path=name,
                expect_body="198.19.10.201",
            ),
            ProbeTarget(
                src,
                name,
                ProbeKind.DNS,
                fabric.dns_ip,
                53,
                ProbeProtocol.DNS,
                path=name,
                expect_body="198.19.10.99",
            ),
            ProbeTarget(
                src,
                "nx",
                ProbeKind.DNS,
                fabric.dns_ip,
                53,
                ProbeProtocol.DNS,
                path="nx.default.svc.cluster.local",
            ),
            ProbeTarget("n0", name, ProbeKind.SERVICE_DNS, name, 80, ProbeProtocol.TCP, timeout=0.5),
        ]
    )
    assert [r.ok for r in res[:3]] == [True, False, False]
    assert res[1].error is not None and res[1].error.startswith("dns-mismatch")
    assert res[2].error == "dns-nxdomain"
    # n0 has no resolv.conf, so it uses the explicit server; the ClusterIP has no DNAT on nodes
    assert not res[3].ok and res[3].error is not None and not res[3].error.startswith("no-resolver")


def test_partition_exact_pairs(fabric: Fabric, prober: LabProber) -> None:
    """Pods on n1 and web-0-0 are cut off from each other by a DROP in web-0-0's namespace."""
    victim = "default/web-0-0"
    ns = fabric.pod_ns[victim]
    cut = [p for p in fabric.pod_objs if p.node == "n1"]
    targets = build_matrix(fabric.cluster, MatrixOptions(timeout=0.5))
    rules = [("INPUT", "-s", f"{p.ip}/32", "-j", "DROP") for p in cut]
    for rule in rules:
        fabric.iptables(ns, "-I", *rule)
    try:
        started = time.perf_counter()
        results = prober.probe(targets)
        elapsed = time.perf_counter() - started
    finally:
        for rule in rules:
            fabric.iptables(ns, "-D", *rule)
    expected = set()
    for p in cut:
        expected.add((p.key, victim, ProbeKind.POD_CROSS_NODE))
        expected.add((p.key, "default/svc-0", ProbeKind.SERVICE_IP))  # svc-0's only endpoint is web-0-0
        expected.add((p.key, "default/svc-0", ProbeKind.SERVICE_DNS))
        # the DROP also eats the replies to web-0-0's own connections: the partition is bidirectional
        expected.add((victim, p.key, ProbeKind.POD_CROSS_NODE))
    expected.add((victim, "default/svc-1", ProbeKind.SERVICE_IP))  # svc-1's endpoint web-1-0 is on n1
    expected.add((victim, "default/svc-1", ProbeKind.SERVICE_DNS))
    assert failing(results) == expected
    assert all((r.error or "").startswith("timeout") for r in results if not r.ok)
    assert elapsed < 4
    assert failing(prober.probe(targets)) == set()  # healed


def test_stopped_server_one_failing_destination(fabric: Fabric, prober: LabProber) -> None:
    victim = "default/web-1-1"
    targets = build_matrix(fabric.cluster, MatrixOptions(timeout=1.0))
    fabric.stop_server(victim)
    try:
        started = time.perf_counter()
        results = prober.probe(targets)
        elapsed = time.perf_counter() - started
    finally:
        fabric.start_server(victim)
        fabric._wait_ready(victim, time.monotonic() + 10)
    bad = [r for r in results if not r.ok]
    assert bad and {r.dest for r in bad} == {victim}
    assert {r.kind for r in bad} == {ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE, ProbeKind.NODE_TO_POD}
    assert all((r.error or "").startswith("refused") for r in bad)
    assert elapsed < 3  # not hung: refused at once (generous for a loaded CI machine)


def test_blackholed_destination_is_bounded(fabric: Fabric, prober: LabProber) -> None:
    victim = "default/web-2-1"
    ns = fabric.pod_ns[victim]
    targets = build_matrix(fabric.cluster, MatrixOptions(timeout=0.4))
    rule = ("INPUT", "-p", "tcp", "--dport", str(POD_PORT), "-j", "DROP")
    fabric.iptables(ns, "-I", *rule)
    try:
        started = time.perf_counter()
        results = prober.probe(targets)
        elapsed = time.perf_counter() - started
    finally:
        fabric.iptables(ns, "-D", *rule)
    assert {r.dest for r in results if not r.ok} == {victim}
    assert 0.4 <= elapsed < 4  # bounded by the 0.4 s timeout, not hung


@pytest.mark.slow
def test_continuous_measures_injected_loss(fabric: Fabric, prober: LabProber) -> None:
    victim = fabric.pod("default/web-1-0")
    healthy = fabric.pod("default/web-2-1")
    ns = fabric.pod_ns[victim.key]
    sources = ["default/web-0-0", "default/web-0-1", "default/web-2-0", "n0"]
    lossy = [
        ProbeTarget(s, victim.key, ProbeKind.POD_CROSS_NODE, victim.ip or "", POD_PORT, timeout=0.3)
        for s in sources
    ]
    control = [
        ProbeTarget(
            "default/web-0-0", healthy.key, ProbeKind.POD_CROSS_NODE, healthy.ip or "", POD_PORT, timeout=0.3
        )
    ]
    rule = (
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        str(POD_PORT),
        "--syn",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.3",
        "-j",
        "DROP",
    )
    fabric.iptables(ns, "-I", *rule)
    try:
        run = prober.start_continuous_run(lossy + control, rate_hz=40, max_duration=20)
        time.sleep(4.0)
        mid = run.snapshot()
        results = run.stop()
    finally:
        fabric.iptables(ns, "-D", *rule)
    assert 0 < len(mid) <= len(results)
    stats = continuous_stats(results, period_s=1 / 40)
    lossy_stats = [p for p in stats if p.dest == victim.key]
    sent = sum(p.sent for p in lossy_stats)
    lost = sum(p.lost for p in lossy_stats)
    assert sent >= 500
    assert lost / sent == pytest.approx(0.30, abs=0.07)
    (ctrl,) = [p for p in stats if p.dest == healthy.key]
    assert ctrl.lost == 0 and ctrl.sent >= 140
    assert all(p.longest_outage_ms >= 25 for p in lossy_stats)
    verdict = check_continuous([ctrl], max_loss_pct=0)
    assert verdict.passed


def test_continuous_bounded_by_max_duration(fabric: Fabric, prober: LabProber) -> None:
    pod = fabric.pod("default/web-0-1")
    t = ProbeTarget("default/web-1-1", pod.key, ProbeKind.POD_CROSS_NODE, pod.ip or "", POD_PORT, timeout=0.3)
    run = prober.start_continuous_run([t], rate_hz=20, max_duration=1.0)
    assert run.wait(5)
    results = run.stop()
    assert 18 <= len(results) <= 22 and all(r.ok for r in results)


def test_unknown_source_and_own_namespace_refused(fabric: Fabric) -> None:
    t = ProbeTarget("default/nope", "x", ProbeKind.POD_CROSS_NODE, "198.19.10.64", POD_PORT)
    pod = fabric.pod("default/web-1-0")
    good = ProbeTarget("default/web-0-0", pod.key, ProbeKind.POD_CROSS_NODE, pod.ip or "", POD_PORT)
    res = LabProber(fabric.netns).probe([t, good, t])
    assert [r.ok for r in res] == [False, True, False]
    assert res[0].error == "netns: no network namespace known for source default/nope"
    with pytest.raises(UsageError):  # a monitor with an unknown source is a configuration error
        LabProber(fabric.netns).start_continuous([t], rate_hz=1, max_duration=1)
    own = LabProber({"default/nope": f"/proc/{os.getpid()}/ns/net"}).probe([t])
    assert not own[0].ok and (own[0].error or "").startswith("forbidden")


def test_agent_cli_json(fabric: Fabric, tmp_path: Path) -> None:
    web = fabric.pod("default/web-1-0")
    specs = [
        {
            "source": "default/web-0-0",
            "dest": web.key,
            "kind": "pod-cross-node",
            "host": web.ip,
            "port": POD_PORT,
            "protocol": "http",
            "expect_body": "pbt-ok",
            "netns": fabric.netns["default/web-0-0"],
        },
        {
            "source": "default/web-0-0",
            "dest": "svc",
            "kind": "dns",
            "host": fabric.dns_ip,
            "protocol": "dns",
            "query": "svc-1.default.svc.cluster.local",
            "netns": fabric.netns["default/web-0-0"],
        },
        {
            "source": "outside",
            "dest": web.key,
            "kind": "nodeport",
            "host": "198.19.10.11",
            "port": 30001,
            "protocol": "tcp",
            "netns": fabric.netns["outside"],
            "timeout": 0.5,
        },
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "migrator.probe", "--require-netns"],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [o["ok"] for o in out] == [True, True, True]
    assert set(out[0]) == {"source", "dest", "kind", "ok", "latency_ms", "error", "ts", "elapsed_ms"}
    assert all(o["elapsed_ms"] >= o["latency_ms"] >= 0 for o in out)
    # from a file; the single-file agent runs without the package; a failure gives exit code 1
    specs[2]["port"] = 30999
    f = tmp_path / "t.json"
    f.write_text(json.dumps(specs))
    agent = REPO / "migrator" / "probe" / "agent.py"
    proc = subprocess.run(
        [sys.executable, str(agent), str(f)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert [o["ok"] for o in out] == [True, True, False] and out[2]["error"].startswith("refused")
    # a target without a namespace is refused (no packet from the host namespace) unless --own-netns
    bare = [{"source": "host", "dest": "x", "kind": "tcp", "host": "198.19.10.64", "port": 9}]
    proc = subprocess.run(
        [sys.executable, str(agent)],
        input=json.dumps(bare),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert json.loads(proc.stdout)[0]["error"].startswith("forbidden")


@pytest.fixture(autouse=True)
def _no_leak() -> Iterator[None]:
    yield
    # no probe thread may outlive its test
    assert not [t for t in threading.enumerate() if t.name.startswith("probe-")]


def test_monitor_and_matrix_at_the_same_time(fabric: Fabric, prober: LabProber) -> None:
    """A continuous probe keeps running while a full matrix runs (separate threads and loops)."""
    pod = fabric.pod("default/web-2-0")
    pair = ProbeTarget(
        "default/web-0-1", pod.key, ProbeKind.POD_CROSS_NODE, pod.ip or "", POD_PORT, timeout=0.5
    )
    run = prober.start_continuous_run([pair], rate_hz=50, max_duration=10)
    try:
        for _ in range(3):
            assert failing(prober.probe(build_matrix(fabric.cluster))) == set()
    finally:
        results = run.stop()
    assert results and all(r.ok for r in results)


def test_netns_fd_reopened_in_long_runs() -> None:
    own = f"/proc/{os.getpid()}/ns/net"
    for reopen_after, reopened in ((0.0, True), (None, False)):
        socks = agent.NetnsSockets(allow_own=True, reopen_after=reopen_after)
        try:
            socks.socket(own, 2, 1).close()
            first = socks._opened[own]
            time.sleep(0.01)
            socks.socket(own, 2, 1).close()
            assert (socks._opened[own] > first) is reopened and len(socks._fds) == 1
        finally:
            socks.close()


def test_retry_marks_flaky_pairs(fabric: Fabric) -> None:
    """A pair whose first SYN is dropped answers on the confirmation pass: ok, marked flaky."""
    victim = fabric.pod("default/web-2-0")
    ns = fabric.pod_ns[victim.key]
    src = fabric.pod("default/web-1-0")
    t = ProbeTarget(src.key, victim.key, ProbeKind.POD_CROSS_NODE, victim.ip or "", POD_PORT, timeout=0.3)
    # drop exactly the first SYN from src (a one-packet quota), then let everything through
    rule = ("INPUT", "-p", "tcp", "--syn", "-s", f"{src.ip}/32", "-m", "quota", "--quota", "60", "-j", "DROP")
    fabric.iptables(ns, "-I", *rule)
    try:
        (res,) = LabProber(fabric.netns).probe([t])
        fabric.iptables(ns, "-D", *rule)
        fabric.iptables(ns, "-I", *rule)
        (strict,) = LabProber(fabric.netns, retries=0).probe([t])
    finally:
        fabric.iptables(ns, "-D", *rule)
    assert res.ok and res.error == "flaky: timeout: after 0.3s"
    assert not strict.ok and strict.error == "timeout: after 0.3s"


def test_multi_worker_run_keeps_order(fabric: Fabric) -> None:
    targets = build_matrix(fabric.cluster, MatrixOptions(include_self=True))
    for workers in (1, 3):
        results = ProbeEngine(fabric.netns, EngineOptions(workers=workers)).probe(targets * 2)
        assert [(r.source, r.dest, r.kind) for r in results] == [
            (t.source, t.dest, t.kind) for t in targets * 2
        ]
        assert all(r.ok for r in results)
