"""The probe agent: TCP, UDP, HTTP and DNS probes with asyncio, from many network namespaces in one process.

This module is **pure standard library** and imports nothing from migrator, so that the same file can be
shipped as-is (for example in a ConfigMap mounted into a probe DaemonSet) and run with
``python agent.py < targets.json``. Inside the package, ``python -m migrator.probe`` runs :func:`main`.

How one process probes from many sources: a socket belongs to the network namespace its creating thread
was in when it called ``socket()``, and it stays there. The engine switches its thread into the source
namespace with ``setns(CLONE_NEWNET)``, creates a non-blocking socket, switches straight back, and hands the
socket to asyncio (``sock_connect``, streams). No other code runs between the two switches, so the event
loop never runs in a foreign namespace. A thousand probes from thirty namespaces then cost a thousand
sockets, not a thousand processes.

Input: a JSON list of target objects::

    {"source": "default/web-1", "dest": "default/web-2", "kind": "pod-cross-node",
     "host": "10.244.2.5", "port": 8080, "protocol": "http", "path": "/", "expect_status": 200,
     "expect_body": null, "timeout": 1.0, "netns": "/var/run/netns/web-1", "dns_server": null}

``protocol`` is ``tcp`` (connect only), ``http`` (GET ``path``; status and optional body substring),
``dns`` (a UDP A query for the name in ``path`` to the resolver ``host:port``; ``expect_body``, when set,
is an address the answer must contain) or ``udp`` (one datagram to ``host:port`` on a connected socket, any
reply within the timeout is a success; an ICMP port unreachable, ``ECONNREFUSED`` on the connected socket,
is ``refused``; no reply is ``timeout``). For ``http``/``tcp`` to a host name, the name is resolved with
the same DNS client through ``dns_server``, or else the namespace's resolv.conf (``/etc/netns/NAME/
resolv.conf`` for ``/var/run/netns/NAME``, ``/etc/resolv.conf`` without ``netns``). ``netns`` absent means
"the agent's own namespace": the CLI refuses that (except for loopback addresses) unless ``--own-netns`` is
given, as an agent running inside a pod of a probe DaemonSet does.

Output: a JSON list of results, in input order: source, dest, kind, ok, latency_ms, error, ts.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

CLONE_NEWNET = 0x40000000
MAX_HTTP_RESPONSE = 1 << 20
MAX_DNS_RESPONSE = 4096
MAX_UDP_REPLY = 65535
UDP_PAYLOAD = b"migrator-probe\n"


class Protocol(StrEnum):
    TCP = "tcp"
    HTTP = "http"
    DNS = "dns"
    UDP = "udp"


class ErrorCode(StrEnum):
    """The first word of every error string (the rest is detail)."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    RESET = "reset"
    HTTP_STATUS = "http-status"
    HTTP_BODY = "http-body"
    HTTP_PROTOCOL = "http-protocol"
    DNS_NXDOMAIN = "dns-nxdomain"
    DNS_ERROR = "dns-error"
    DNS_MISMATCH = "dns-mismatch"
    NO_RESOLVER = "no-resolver"
    NETNS = "netns"
    FORBIDDEN = "forbidden"
    SATURATED = "saturated"
    OS_ERROR = "os-error"


class ProbeFailure(Exception):
    """A probe failed for a known reason; ``str()`` is the error recorded in the result."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code.value}: {detail}" if detail else code.value)


class NetnsSwitchError(Exception):
    """The thread could not switch back to its own namespace: it must not run anything else."""


@dataclass(frozen=True)
class Spec:
    """One probe, as the agent sees it (a superset of ``migrator.ports.ProbeTarget``)."""

    source: str
    dest: str
    kind: str
    host: str
    port: int
    protocol: Protocol = Protocol.TCP
    path: str = "/"
    expect_status: int | None = 200
    expect_body: str | None = None
    timeout: float = 1.0
    netns: str | None = None
    dns_server: str | None = None  # resolver for host names; overrides the namespace's resolv.conf
    dns_fallback: str | None = None  # resolver when the namespace has no resolv.conf

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Spec:
        proto = Protocol(str(raw.get("protocol", "tcp")))
        path = str(raw.get("path") or raw.get("query") or "/")
        return cls(
            source=str(raw["source"]),
            dest=str(raw["dest"]),
            kind=str(raw.get("kind", "")),
            host=str(raw["host"]),
            port=int(raw.get("port", 53 if proto is Protocol.DNS else 80)),
            protocol=proto,
            path=path,
            expect_status=None
            if raw.get("expect_status", 200) is None
            else int(raw.get("expect_status", 200)),
            expect_body=None if raw.get("expect_body") is None else str(raw["expect_body"]),
            timeout=float(raw.get("timeout", 1.0)),
            netns=None if raw.get("netns") is None else str(raw["netns"]),
            dns_server=None if raw.get("dns_server") is None else str(raw["dns_server"]),
            dns_fallback=None if raw.get("dns_fallback") is None else str(raw["dns_fallback"]),
        )


@dataclass(frozen=True)
class Outcome:
    source: str
    dest: str
    kind: str
    ok: bool
    latency_ms: float | None
    error: str | None
    ts: float
    """When the probe was sent (``time.time()``)."""
    elapsed_ms: float | None = None
    """How long after ``ts`` its outcome was known (success, failure or timeout)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- namespaces


class NetnsSockets:
    """Creates sockets inside network namespaces, from the thread that owns this object.

    Create it, use it and close it on one thread (the one running the event loop). ``allow_own`` set to
    ``False`` refuses targets without a namespace (except to loopback addresses) and namespaces that are
    the thread's own: a probe must then always leave from a namespace someone created for it.
    """

    def __init__(self, *, allow_own: bool = True, reopen_after: float | None = None) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._home_ino = os.fstat(self._home).st_ino
        self._fds: dict[str, int] = {}
        self._opened: dict[str, float] = {}
        self._reopen_after = reopen_after
        self._allow_own = allow_own
        self._thread = threading.get_ident()
        self._broken = False

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def _fd(self, netns: str) -> int:
        fd = self._fds.get(netns)
        if (
            fd is not None
            and self._reopen_after is not None
            and time.monotonic() - self._opened[netns] > self._reopen_after
        ):
            # long runs: the path may now name a new namespace (a pod re-created under the same name)
            os.close(self._fds.pop(netns))
            fd = None
        if fd is None:
            try:
                fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise ProbeFailure(ErrorCode.NETNS, f"cannot open {netns}: {exc.strerror}") from exc
            if os.fstat(fd).st_ino == self._home_ino and not self._allow_own:
                os.close(fd)
                raise ProbeFailure(ErrorCode.FORBIDDEN, f"{netns} is the prober's own namespace")
            self._fds[netns] = fd
            self._opened[netns] = time.monotonic()
        return fd

    def socket(self, netns: str | None, family: int, kind: int, host: str = "") -> socket.socket:
        if threading.get_ident() != self._thread:
            raise RuntimeError("NetnsSockets used from a thread that does not own it")
        if self._broken:
            raise NetnsSwitchError("namespace switching is broken on this thread")
        if netns is None:
            if not self._allow_own and not _is_loopback(host):
                raise ProbeFailure(ErrorCode.FORBIDDEN, f"no source namespace given for {host or 'a probe'}")
            sock = socket.socket(family, kind)
            sock.setblocking(False)
            return sock
        fd = self._fd(netns)
        try:
            self._setns(fd)
        except OSError as exc:
            raise ProbeFailure(ErrorCode.NETNS, f"setns {netns}: {exc.strerror}") from exc
        try:
            sock = socket.socket(family, kind)
        finally:
            try:
                self._setns(self._home)
            except OSError as exc:  # pragma: no cover - would need a kernel refusing a valid fd
                self._broken = True
                raise NetnsSwitchError(f"cannot switch back from {netns}: {exc.strerror}") from exc
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        os.close(self._home)


def resolv_conf_path(netns: str | None) -> str:
    """Where ``ip netns exec`` would find the namespace's resolv.conf."""
    if netns is None:
        return "/etc/resolv.conf"
    name = os.path.basename(netns.rstrip("/"))
    return f"/etc/netns/{name}/resolv.conf"


def nameserver_from_resolv_conf(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        return None
    return None


# ----------------------------------------------------------------------------------------- DNS


def build_dns_query(name: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(
        bytes([len(label)]) + label.encode("idna") for label in name.rstrip(".").split(".") if label
    )
    return header + qname + b"\x00" + struct.pack("!HH", 1, 1)


def _skip_name(data: bytes, offset: int) -> int:
    for _ in range(128):  # bounded: a name has at most 127 labels
        if offset >= len(data):
            raise ProbeFailure(ErrorCode.DNS_ERROR, "truncated name")
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length
    raise ProbeFailure(ErrorCode.DNS_ERROR, "name too long")


def parse_dns_response(data: bytes, qid: int) -> list[str]:
    """The A records of a response; raises :class:`ProbeFailure` for errors and NXDOMAIN."""
    if len(data) < 12:
        raise ProbeFailure(ErrorCode.DNS_ERROR, "short response")
    rid, flags, qdcount, ancount, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if rid != qid:
        raise ProbeFailure(ErrorCode.DNS_ERROR, "id mismatch")
    rcode = flags & 0x000F
    if rcode == 3:
        raise ProbeFailure(ErrorCode.DNS_NXDOMAIN)
    if rcode != 0:
        raise ProbeFailure(ErrorCode.DNS_ERROR, f"rcode {rcode}")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses: list[str] = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        if offset + 10 > len(data):
            raise ProbeFailure(ErrorCode.DNS_ERROR, "truncated answer")
        rtype, rclass, _ttl, rdlength = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        rdata = data[offset : offset + rdlength]
        offset += rdlength
        if rtype == 1 and rclass == 1 and rdlength == 4:
            addresses.append(socket.inet_ntoa(rdata))
    return addresses


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------ probes


class Prober:
    """Runs probes on the current thread's event loop. Create, use and close it on that thread."""

    def __init__(self, *, allow_own_netns: bool = True, reopen_netns_after: float | None = None) -> None:
        self.sockets = NetnsSockets(allow_own=allow_own_netns, reopen_after=reopen_netns_after)
        self._loop = asyncio.get_running_loop()
        self._resolvers: dict[str | None, str | None] = {}

    def _resolver(self, spec: Spec) -> tuple[str, int] | None:
        """The DNS server for host names: explicit, else the namespace's resolv.conf, else the fallback."""
        raw = spec.dns_server
        if raw is None:
            if spec.netns not in self._resolvers:
                self._resolvers[spec.netns] = nameserver_from_resolv_conf(resolv_conf_path(spec.netns))
            raw = self._resolvers[spec.netns] or spec.dns_fallback
        if raw is None:
            return None
        if raw.count(":") == 1:
            host, port = raw.split(":")
            return host, int(port)
        return raw, 53

    def close(self) -> None:
        self.sockets.close()

    async def _connect(self, netns: str | None, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.sockets.socket(netns, family, socket.SOCK_STREAM, host)
        try:
            await self._loop.sock_connect(sock, (host, port))
        except BaseException as exc:
            sock.close()
            if isinstance(exc, ConnectionRefusedError):
                raise ProbeFailure(ErrorCode.REFUSED, f"{host}:{port}") from exc
            if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise ProbeFailure(ErrorCode.UNREACHABLE, f"{host}:{port} {exc.strerror}") from exc
            raise
        return sock

    async def resolve(self, spec: Spec, name: str) -> list[str]:
        resolver = self._resolver(spec)
        if resolver is None:
            raise ProbeFailure(ErrorCode.NO_RESOLVER, f"no resolver for {spec.netns or 'own namespace'}")
        return await self.dns_query(spec.netns, resolver[0], resolver[1], name, spec.timeout)

    async def dns_query(
        self, netns: str | None, server: str, port: int, name: str, timeout: float
    ) -> list[str]:
        qid = random.randrange(1, 0xFFFF)
        query = build_dns_query(name, qid)
        sock = self.sockets.socket(netns, socket.AF_INET, socket.SOCK_DGRAM, server)
        try:
            await self._loop.sock_connect(sock, (server, port))
            # one retransmission at a third of the timeout, as resolvers do; bounded to 2 sends
            for attempt in range(2):
                await self._loop.sock_sendall(sock, query)
                try:
                    async with asyncio.timeout(timeout / 3 if attempt == 0 else timeout):
                        data = await self._loop.sock_recv(sock, MAX_DNS_RESPONSE)
                except TimeoutError:
                    continue
                except ConnectionRefusedError as exc:
                    raise ProbeFailure(ErrorCode.REFUSED, f"dns {server}:{port}") from exc
                return parse_dns_response(data, qid)
            raise ProbeFailure(ErrorCode.TIMEOUT, f"dns {server}:{port}")
        finally:
            sock.close()

    async def _address(self, spec: Spec) -> str:
        if _is_ip(spec.host):
            return spec.host
        addresses = await self.resolve(spec, spec.host)
        if not addresses:
            raise ProbeFailure(ErrorCode.DNS_ERROR, f"no A record for {spec.host}")
        return addresses[0]

    async def tcp(self, spec: Spec) -> None:
        sock = await self._connect(spec.netns, await self._address(spec), spec.port)
        sock.close()

    async def udp(self, spec: Spec) -> None:
        """One datagram to ``host:port`` from the source namespace; any reply is a success.

        The socket is connected, so the kernel hands an ICMP port unreachable for it back as
        ``ECONNREFUSED`` (``refused``: a REJECT rule, or nothing listening) and a host/net unreachable as
        ``unreachable``. No reply at all ends in the caller's timeout (``timeout``: a DROP, or lost).
        """
        address = await self._address(spec)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = self.sockets.socket(spec.netns, family, socket.SOCK_DGRAM, address)
        try:
            await self._loop.sock_connect(sock, (address, spec.port))
            await self._loop.sock_sendall(sock, UDP_PAYLOAD)
            await self._loop.sock_recv(sock, MAX_UDP_REPLY)
        except ConnectionRefusedError as exc:
            raise ProbeFailure(ErrorCode.REFUSED, f"udp {address}:{spec.port}") from exc
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                detail = f"udp {address}:{spec.port} {exc.strerror}"
                raise ProbeFailure(ErrorCode.UNREACHABLE, detail) from exc
            raise
        finally:
            sock.close()

    async def _recv_until(self, sock: socket.socket, buf: bytearray, marker: bytes) -> int:
        """Read into ``buf`` until ``marker`` appears (its index) or EOF (-1); bounded by the size cap."""
        while (at := buf.find(marker)) < 0:
            if len(buf) >= MAX_HTTP_RESPONSE:
                raise ProbeFailure(ErrorCode.HTTP_PROTOCOL, "response headers too large")
            chunk = await self._loop.sock_recv(sock, 65536)
            if not chunk:
                return -1
            buf += chunk
        return at

    async def http(self, spec: Spec) -> None:
        """GET ``spec.path`` with a minimal HTTP/1.1 client on the raw non-blocking socket."""
        address = await self._address(spec)
        sock = await self._connect(spec.netns, address, spec.port)
        try:
            host_header = spec.host if spec.port == 80 else f"{spec.host}:{spec.port}"
            request = (
                f"GET {spec.path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: migrator-probe\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n"
            )
            await self._loop.sock_sendall(sock, request.encode("latin-1"))
            buf = bytearray()
            head_end = await self._recv_until(sock, buf, b"\r\n\r\n")
            if head_end < 0:
                detail = "empty response" if not buf else "connection closed inside the headers"
                raise ProbeFailure(ErrorCode.HTTP_PROTOCOL, detail)
            lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ProbeFailure(ErrorCode.HTTP_PROTOCOL, f"bad status line {lines[0][:60]!r}")
            status = int(parts[1])
            if spec.expect_status is not None and status != spec.expect_status:
                raise ProbeFailure(ErrorCode.HTTP_STATUS, f"{status} (expected {spec.expect_status})")
            if spec.expect_body is None:
                return
            length: int | None = None
            for line in lines[1:101]:  # bounded header count
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length" and value.strip().isdigit():
                    length = min(int(value.strip()), MAX_HTTP_RESPONSE)
            wanted = spec.expect_body.encode()
            body = buf[head_end + 4 :]
            # read to Content-Length, or to EOF without one; stop early once the text is seen
            while (
                wanted not in body
                and (length is None or len(body) < length)
                and len(body) < MAX_HTTP_RESPONSE
            ):
                chunk = await self._loop.sock_recv(sock, 65536)
                if not chunk:
                    break
                body += chunk
            if wanted not in body:
                raise ProbeFailure(ErrorCode.HTTP_BODY, f"{spec.expect_body!r} not in body")
        finally:
            sock.close()

    async def dns(self, spec: Spec) -> None:
        addresses = await self.dns_query(spec.netns, spec.host, spec.port, spec.path, spec.timeout)
        if not addresses:
            raise ProbeFailure(ErrorCode.DNS_ERROR, f"no A record for {spec.path}")
        if spec.expect_body is not None and spec.expect_body not in addresses:
            raise ProbeFailure(ErrorCode.DNS_MISMATCH, f"{spec.path} -> {','.join(addresses)}")

    async def run_one(self, spec: Spec) -> Outcome:
        ts = time.time()
        start = time.perf_counter()
        handler: Callable[[Spec], Awaitable[None]] = {
            Protocol.TCP: self.tcp,
            Protocol.HTTP: self.http,
            Protocol.DNS: self.dns,
            Protocol.UDP: self.udp,
        }[spec.protocol]
        error: str | None = None
        try:
            async with asyncio.timeout(spec.timeout):
                await handler(spec)
        except TimeoutError:
            error = f"{ErrorCode.TIMEOUT.value}: after {spec.timeout:g}s"
        except ProbeFailure as exc:
            error = str(exc)
        except ConnectionResetError as exc:
            error = f"{ErrorCode.RESET.value}: {exc.strerror or exc}"
        except asyncio.IncompleteReadError:
            error = f"{ErrorCode.HTTP_PROTOCOL.value}: connection closed early"
        except OSError as exc:
            error = f"{ErrorCode.OS_ERROR.value}: {exc.strerror or exc}"
        elapsed = (time.perf_counter() - start) * 1000.0
        return Outcome(
            source=spec.source,
            dest=spec.dest,
            kind=spec.kind,
            ok=error is None,
            latency_ms=round(elapsed, 3) if error is None else None,
            error=error,
            ts=ts,
            elapsed_ms=round(elapsed, 3),
        )


async def probe_all(
    specs: Sequence[Spec], *, concurrency: int = 256, allow_own_netns: bool = True
) -> list[Outcome]:
    """Probe every spec once, at most ``concurrency`` at a time; results in input order."""
    prober = Prober(allow_own_netns=allow_own_netns)
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(spec: Spec) -> Outcome:
        async with sem:
            return await prober.run_one(spec)

    try:
        return list(await asyncio.gather(*(one(s) for s in specs)))
    finally:
        prober.close()


async def probe_continuously(
    specs: Sequence[Spec],
    *,
    rate_hz: float,
    max_duration: float,
    stop: threading.Event,
    sink: Callable[[Outcome], None],
    allow_own_netns: bool = True,
    max_in_flight: int | None = None,
    stats: dict[str, int] | None = None,
) -> int:
    """Probe every spec ``rate_hz`` times a second until ``stop`` is set or ``max_duration`` passes.

    Rounds start on a fixed schedule (no drift); a round's probes run concurrently and overlap the next
    rounds when they are slow. When the loop itself falls behind by more than a round (the process did not
    get the CPU: a loaded machine), the missed rounds are skipped, not sent at once: a catch-up burst of
    hundreds of probes made the loop late enough for its own probes to time out, and loaded the probed
    apps, which looked like loss (the early dip of the packet-loss game day). Skipped rounds are counted in
    ``stats["skipped_rounds"]`` (when given), never as sent. Outcomes go to ``sink`` as they finish.
    Returns the number of probes sent.
    The loop is bounded by ``max_duration`` and by ``rate_hz * max_duration`` rounds. If more than
    ``max_in_flight`` probes are outstanding (default: every pair timing out at once, twice over), a probe
    is not sent and is recorded as failed (``saturated``): skipped probes never hide loss. An unexpected
    error in a probe (not a probe failure) ends the run and is raised.
    """
    if rate_hz <= 0 or max_duration <= 0:
        raise ValueError("rate_hz and max_duration must be positive")
    prober = Prober(allow_own_netns=allow_own_netns, reopen_netns_after=1.0)
    schedule = _Schedule(time.monotonic(), 1.0 / rate_hz)
    deadline = schedule.next_at + max_duration
    longest = max((s.timeout for s in specs), default=1.0)
    cap = max_in_flight or max(1024, int(2 * len(specs) * rate_hz * longest) + len(specs))
    flight = _InFlight(prober, sink, cap)
    try:
        for _ in range(int(rate_hz * max_duration) + 1):
            if stop.is_set() or time.monotonic() >= deadline or flight.crashed:
                break
            for spec in specs:
                flight.send(spec)
            delay = schedule.advance()
            if delay > 0:
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        await flight.drain(timeout=longest + 1.0)
        if stats is not None:
            stats["skipped_rounds"] = schedule.skipped
        if flight.crashed:
            raise flight.crashed[0]
        return flight.sent
    finally:
        prober.close()


class _Schedule:
    """The fixed round schedule of :func:`probe_continuously`: rounds start every ``period`` seconds
    from ``start`` (no drift); rounds the loop was too late for are skipped and counted."""

    def __init__(self, start: float, period: float) -> None:
        self.next_at = start
        self.period = period
        self.skipped = 0

    def advance(self) -> float:
        """Move on to the next round; the seconds until it starts (zero or less: start it now)."""
        self.next_at += self.period
        behind = time.monotonic() - self.next_at
        if behind > self.period:  # the loop was late: skip the missed rounds instead of bursting them
            missed = int(behind / self.period)
            self.skipped += missed
            self.next_at += missed * self.period
        return self.next_at - time.monotonic()


class _InFlight:
    """The probes of :func:`probe_continuously` still running: at most ``cap`` at once (a probe beyond
    that is not sent and goes to ``sink`` as a ``saturated`` failure); an outcome goes to ``sink`` when
    its probe finishes, an unexpected error to :attr:`crashed`. :attr:`sent` counts both kinds."""

    def __init__(self, prober: Prober, sink: Callable[[Outcome], None], cap: int) -> None:
        self.prober = prober
        self.sink = sink
        self.cap = cap
        self.pending: set[asyncio.Task[Outcome]] = set()
        self.crashed: list[BaseException] = []
        self.sent = 0

    def send(self, spec: Spec) -> None:
        self.sent += 1
        if len(self.pending) >= self.cap:
            error = f"{ErrorCode.SATURATED.value}: {len(self.pending)} probes in flight"
            self.sink(Outcome(spec.source, spec.dest, spec.kind, False, None, error, time.time(), 0.0))
            return
        task = asyncio.ensure_future(self.prober.run_one(spec))
        task.add_done_callback(self._done)
        self.pending.add(task)

    def _done(self, task: asyncio.Task[Outcome]) -> None:
        self.pending.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crashed.append(exc)
        else:
            self.sink(task.result())

    async def drain(self, *, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the probes in flight, then cancel those still running."""
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=timeout)
        for task in set(self.pending):
            task.cancel()


# -------------------------------------------------------------------------------------------- CLI


def _load(raw: str) -> list[Spec]:
    data = json.loads(raw)
    if isinstance(data, dict):
        data = data.get("targets", [])
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of targets")
    return [Spec.from_dict(item) for item in data]


def _raise_nofile(wanted: int) -> None:
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrator.probe", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="?", default="-", help="JSON file of targets, - for stdin")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--continuous", action="store_true", help="probe repeatedly at --rate-hz")
    parser.add_argument("--rate-hz", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=10.0, help="continuous: seconds (bounded)")
    parser.add_argument(
        "--own-netns",
        action="store_true",
        help="allow targets without a netns to probe from this process's namespace (an agent in a pod)",
    )
    parser.add_argument("--require-netns", action="store_true", help="the default; kept for compatibility")
    parser.add_argument("--pretty", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.targets == "-":
            raw = sys.stdin.read()
        else:
            with open(args.targets, encoding="utf-8") as fh:
                raw = fh.read()
        specs = _load(raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"probe agent: bad input: {exc}\n")
        return 2
    _raise_nofile(max(1024, args.concurrency * 2 + 64))
    allow_own = bool(args.own_netns) and not args.require_netns
    if args.continuous:
        outcomes: list[Outcome] = []
        asyncio.run(
            probe_continuously(
                specs,
                rate_hz=args.rate_hz,
                max_duration=min(args.duration, 3600.0),
                stop=threading.Event(),
                sink=outcomes.append,
                allow_own_netns=allow_own,
            )
        )
        outcomes.sort(key=lambda o: o.ts)
    else:
        outcomes = asyncio.run(probe_all(specs, concurrency=args.concurrency, allow_own_netns=allow_own))
    json.dump([o.to_dict() for o in outcomes], sys.stdout, indent=2 if args.pretty else None)
    sys.stdout.write("\n")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
