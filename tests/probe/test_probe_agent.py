"""The agent's HTTP and DNS clients against loopback servers, and its parsers (no root needed)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.probe import agent

RESPONSES = {
    b"/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"/nolen": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello there",
    b"/garbage": b"SSH-2.0-OpenSSH\r\n\r\n",
    b"/empty": b"",
    b"/teapot": b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n",
}


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ")[1]
        if path == b"/slow":
            time.sleep(1.5)
            return
        if path == b"/big":
            body = b"x" * (3 << 20)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return
        self.request.sendall(RESPONSES[path])


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    srv = Server(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def spec(port: int, path: str, **kw: object) -> agent.Spec:
    base: dict[str, object] = {
        "source": "lo",
        "dest": path,
        "kind": "container",
        "host": "127.0.0.1",
        "port": port,
        "protocol": "http",
        "path": path,
        "timeout": 1.0,
    }
    base.update(kw)
    return agent.Spec.from_dict(base)


def run(specs: list[agent.Spec], allow_own: bool = True) -> list[agent.Outcome]:
    return asyncio.run(agent.probe_all(specs, concurrency=16, allow_own_netns=allow_own))


def test_http_variants(http_port: int) -> None:
    out = run(
        [
            spec(http_port, "/ok", expect_body="hello"),
            spec(http_port, "/chunked", expect_body="hello"),
            spec(http_port, "/nolen", expect_body="there"),
            spec(http_port, "/nolen", expect_body="absent"),
            spec(http_port, "/garbage"),
            spec(http_port, "/empty"),
            spec(http_port, "/teapot"),
            spec(http_port, "/teapot", expect_status=418),
            spec(http_port, "/slow", timeout=0.3),
            spec(http_port, "/big", expect_body="y"),
            spec(http_port, "/ok", protocol="tcp"),
            spec(1, "/", protocol="tcp"),
        ]
    )
    errors = [o.error.split(":")[0] if o.error else None for o in out]
    assert errors == [
        None,
        None,
        None,
        "http-body",
        "http-protocol",
        "http-protocol",
        "http-status",
        None,
        "timeout",
        "http-body",
        None,
        "refused",
    ]
    assert all(o.latency_ms is not None for o in out if o.ok)


def test_loopback_allowed_without_netns_but_not_other_addresses(http_port: int) -> None:
    out = run([spec(http_port, "/ok"), spec(80, "/", host="198.19.10.64")], allow_own=False)
    assert out[0].ok
    assert not out[1].ok and (out[1].error or "").startswith("forbidden")


def test_missing_netns_is_a_result_not_a_crash(http_port: int) -> None:
    out = run([spec(http_port, "/ok", netns="/var/run/netns/pbt-does-not-exist")])
    assert not out[0].ok and (out[0].error or "").startswith("netns")


def dns_response(qid: int, name: str, addrs: list[str], rcode: int = 0) -> bytes:
    q = agent.build_dns_query(name, qid)[12:]
    answers = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton(a) for a in addrs)
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 30, 2) + b"\xc0\x0c"
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(addrs) + 1, 0, 0)
    return header + q + cname + answers


def test_dns_parse() -> None:
    data = dns_response(7, "svc-1.default.svc.cluster.local", ["10.96.0.11", "10.96.0.12"])
    assert agent.parse_dns_response(data, 7) == ["10.96.0.11", "10.96.0.12"]
    with pytest.raises(agent.ProbeFailure, match="dns-nxdomain"):
        agent.parse_dns_response(dns_response(7, "x.y", [], rcode=3), 7)
    with pytest.raises(agent.ProbeFailure, match="id mismatch"):
        agent.parse_dns_response(data, 8)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_dns_parse_never_crashes(data: bytes) -> None:
    with contextlib.suppress(agent.ProbeFailure):
        agent.parse_dns_response(data, int.from_bytes(data[:2] or b"\0\0", "big"))


def test_dns_query_against_loopback_responder() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3)
    port = sock.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            try:
                data, addr = sock.recvfrom(512)
            except OSError:
                return
            qid = struct.unpack("!H", data[:2])[0]
            sock.sendto(dns_response(qid, "svc.ns.svc.cluster.local", ["10.96.0.5"]), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        base = {
            "source": "lo",
            "dest": "d",
            "kind": "dns",
            "host": "127.0.0.1",
            "port": port,
            "protocol": "dns",
            "query": "svc.ns.svc.cluster.local",
        }
        out = run(
            [
                agent.Spec.from_dict({**base, "expect_body": "10.96.0.5"}),
                agent.Spec.from_dict({**base, "expect_body": "10.96.0.6"}),
            ]
        )
    finally:
        t.join(5)
        sock.close()
    assert out[0].ok and (out[1].error or "").startswith("dns-mismatch")


def test_resolv_conf(tmp_path: Path) -> None:
    assert agent.resolv_conf_path("/var/run/netns/pbt-p0-0") == "/etc/netns/pbt-p0-0/resolv.conf"
    assert agent.resolv_conf_path(None) == "/etc/resolv.conf"
    f = tmp_path / "resolv.conf"
    f.write_text("# c\nsearch a.b\nnameserver 10.96.0.10\nnameserver 1.1.1.1\n")
    assert agent.nameserver_from_resolv_conf(str(f)) == "10.96.0.10"
    assert agent.nameserver_from_resolv_conf(str(f) + ".missing") is None


def test_continuous_saturation_is_recorded_as_loss() -> None:
    """With a cap of one probe in flight and a black-holed destination, skipped probes count as lost."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused at once
    port = lsock.getsockname()[1]
    out: list[agent.Outcome] = []
    slow = agent.Spec.from_dict(
        {
            "source": "lo",
            "dest": "d",
            "kind": "container",
            "host": "127.0.0.1",
            "port": port,
            "protocol": "tcp",
            "timeout": 0.2,
        }
    )

    # a handler that never finishes within the period: patch run_one to sleep
    async def run() -> int:
        original = agent.Prober.run_one

        async def sleepy(self: agent.Prober, spec: agent.Spec) -> agent.Outcome:
            await asyncio.sleep(0.15)
            return await original(self, spec)

        agent.Prober.run_one = sleepy  # type: ignore[method-assign]
        try:
            return await agent.probe_continuously(
                [slow], rate_hz=50, max_duration=0.5, stop=threading.Event(), sink=out.append, max_in_flight=1
            )
        finally:
            agent.Prober.run_one = original  # type: ignore[method-assign]

    try:
        sent = asyncio.run(run())
    finally:
        lsock.close()
    assert sent == len(out) and 20 <= sent <= 27
    errors = {(o.error or "").split(":")[0] for o in out}
    assert errors == {"saturated", "refused"} and not any(o.ok for o in out)
