"""UDP probes of the agent: on loopback, and through a pair of namespaces this test creates and removes
(``np-probe-<pid>-a``/``-b``, a veth inside 198.18.41.0/24; root only, skipped otherwise)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from migrator.policy.model import Verdict
from migrator.ports import ProbeKind, ProbeProtocol, ProbeTarget
from migrator.probe import agent
from migrator.probe.engine import EngineOptions, ProbeEngine, to_result
from migrator.probe.policy import Observed, classify, observed_of

UDP = agent.Protocol.UDP


def spec(host: str, port: int, *, netns: str | None = None, timeout: float = 0.5) -> agent.Spec:
    return agent.Spec("src", "dst", "policy", host, port, UDP, timeout=timeout, netns=netns)


def run(specs: list[agent.Spec], *, allow_own: bool = True) -> list[agent.Outcome]:
    return asyncio.run(agent.probe_all(specs, allow_own_netns=allow_own))


class Loopback:
    """A UDP echo server, a server that never answers and a closed port, on 127.0.0.1."""

    def __init__(self) -> None:
        self.echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.echo.bind(("127.0.0.1", 0))
        self.echo.settimeout(0.2)
        self.mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.mute.bind(("127.0.0.1", 0))
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        self.closed_port = closed.getsockname()[1]
        closed.close()
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 30  # bounded
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, peer = self.echo.recvfrom(2048)
            except TimeoutError:
                continue
            self.received.append(data)
            self.echo.sendto(data, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.echo.close()
        self.mute.close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    lo = Loopback()
    try:
        yield lo
    finally:
        lo.close()


def test_udp_on_loopback_reply_refused_and_timeout(loopback: Loopback) -> None:
    echo, mute = loopback.echo.getsockname()[1], loopback.mute.getsockname()[1]
    started = time.monotonic()
    ok, refused, silent = run(
        [
            spec("127.0.0.1", echo),
            spec("127.0.0.1", loopback.closed_port),
            spec("127.0.0.1", mute, timeout=0.3),
        ]
    )
    assert ok.ok and ok.error is None and ok.latency_ms is not None
    assert loopback.received == [agent.UDP_PAYLOAD]
    assert not refused.ok and (refused.error or "").startswith("refused: udp 127.0.0.1:")
    assert not silent.ok and silent.error == "timeout: after 0.3s"
    assert time.monotonic() - started < 2  # concurrent, each bounded by its timeout
    # and what the policy verification makes of them
    for outcome, observed in ((ok, Observed.ALLOW), (refused, Observed.DENY), (silent, Observed.DENY)):
        assert observed_of(to_result(outcome)) is observed
    assert classify(Verdict.DENY, observed_of(to_result(ok))).value == "hole"


def test_udp_target_through_the_engine_keeps_its_protocol(loopback: Loopback) -> None:
    port = loopback.echo.getsockname()[1]
    target = ProbeTarget(
        "src", "dst:1/udp", ProbeKind.POLICY, "127.0.0.1", port, ProbeProtocol.UDP, timeout=0.5
    )
    engine = ProbeEngine({}, EngineOptions(allow_own_netns=True, retries=0))
    assert engine.specs([target])[0].protocol is UDP
    (result,) = engine.probe([target])
    assert result.ok and result.kind is ProbeKind.POLICY and result.dest == "dst:1/udp"


def test_udp_spec_from_json_and_cli_refuses_no_namespace() -> None:
    s = agent.Spec.from_dict(
        {"source": "a", "dest": "b", "kind": "policy", "host": "198.18.41.2", "port": 80, "protocol": "udp"}
    )
    assert s.protocol is UDP and s.port == 80
    (outcome,) = run([s], allow_own=False)
    assert not outcome.ok and (outcome.error or "").startswith("forbidden:")
    assert observed_of(to_result(outcome)) is Observed.ERROR  # never a deny


# ------------------------------------------------------------------------------------------ netns pair

PREFIX = f"np-probe-{os.getpid()}"
NS_A, NS_B = f"{PREFIX}-a", f"{PREFIX}-b"
ADDR_A, ADDR_B = "198.18.41.1", "198.18.41.2"
ECHO_PORTS = (9000, 9003, 9004)  # 9003: REJECTed, 9004: DROPped by iptables in b
MUTE_PORT, CLOSED_PORT = 9001, 9002
SERVER = """
import select, socket, sys, time
socks = []
for port in map(int, sys.argv[2].split(",")):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], port)); socks.append(s)
mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); mute.bind((sys.argv[1], int(sys.argv[3])))
print("ready", flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    for s in select.select(socks, [], [], 0.5)[0]:
        data, peer = s.recvfrom(2048); s.sendto(data, peer)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


def _in_b(*cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", NS_B, *cmd], check=True, timeout=10, capture_output=True)


def _cleanup() -> None:
    for ns in (NS_A, NS_B):
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10, capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[None]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None:
        pytest.skip("needs root, iproute2 and iptables")
    server: subprocess.Popen[str] | None = None
    try:
        _ip("netns", "add", NS_A)
        _ip("netns", "add", NS_B)
        _ip("link", "add", "npp-a", "netns", NS_A, "type", "veth", "peer", "name", "npp-b", "netns", NS_B)
        _ip("-n", NS_A, "addr", "add", f"{ADDR_A}/24", "dev", "npp-a")
        _ip("-n", NS_B, "addr", "add", f"{ADDR_B}/24", "dev", "npp-b")
        for ns, dev in ((NS_A, "npp-a"), (NS_B, "npp-b")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        _in_b("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9003", "-j", "REJECT", "--reject-with",
              "icmp-port-unreachable")  # fmt: skip
        _in_b("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9004", "-j", "DROP")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                NS_B,
                sys.executable,
                "-c",
                SERVER,
                ADDR_B,
                ",".join(map(str, ECHO_PORTS)),
                str(MUTE_PORT),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        _cleanup()


@pytest.mark.lab
def test_udp_between_namespaces_allow_reject_drop_closed(netns_pair: None) -> None:
    netns = f"/run/netns/{NS_A}"
    specs = [
        spec(ADDR_B, 9000, netns=netns),
        spec(ADDR_B, 9003, netns=netns),
        spec(ADDR_B, 9004, netns=netns, timeout=0.3),
        spec(ADDR_B, CLOSED_PORT, netns=netns),
        spec(ADDR_B, MUTE_PORT, netns=netns, timeout=0.3),
        spec("198.18.41.9", 9000, netns=netns, timeout=0.3),  # no such host on the link
    ]
    answered, rejected, dropped, closed, mute, nobody = run(specs, allow_own=False)
    assert answered.ok, answered.error
    assert (rejected.error or "").startswith("refused: udp 198.18.41.2:9003")
    assert dropped.error == "timeout: after 0.3s"
    assert (closed.error or "").startswith("refused: udp 198.18.41.2:9002")
    assert mute.error == "timeout: after 0.3s"
    assert not nobody.ok and (nobody.error or "").split(":")[0] in ("timeout", "unreachable")
    assert [observed_of(to_result(o)) for o in (answered, rejected, dropped, closed)] == [
        Observed.ALLOW,
        Observed.DENY,
        Observed.DENY,
        Observed.DENY,
    ]


def test_the_pair_is_removed_after_the_test() -> None:
    names = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=10
    ).stdout
    assert NS_A not in names and NS_B not in names
