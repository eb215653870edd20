"""A tiny HTTP server, one per lab pod "container". Standard library only; run as a script.

``GET /`` answers JSON about the pod; when ``--call host:port`` is given (bookinfo's productpage and
reviews v2/v3) it first calls each upstream over service DNS names and answers 503 if one fails.
``GET /healthz`` answers ``ok``. ``GET /metrics`` answers the pod's request counters in the Prometheus text
exposition format (0.0.4): ``migrator_podserver_requests_total{code="200",path="/"}`` counts every answered
request but the scrapes themselves (``path`` is one of ``/``, ``/healthz``, ``/local``, ``other``: bounded
cardinality); ``migrator_podserver_info{pod,namespace,node,app,version}`` is 1. HTTP/1.0, one thread per
connection, small memory footprint; ``--max-conns N`` bounds the connections served at once (more are
closed at once), as the lab's control-plane endpoint does.

``--listen PORT/tcp`` and ``--listen PORT/udp`` (repeatable) serve several ports from one process (the netpol
pods' four "containers"): TCP answers HTTP as above, UDP answers every datagram with one short JSON line
naming the pod, the port and the protocol. Without ``--listen``, ``--port`` is the one TCP port.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

_INFO: dict[str, object] = {}
_CALLS: list[tuple[str, int]] = []
CALL_TIMEOUT = 1.5
_COUNTS: dict[tuple[str, str], int] = {}  # (code, path) -> requests answered
_COUNTS_LOCK = threading.Lock()
_PATHS = ("/healthz", "/local", "/")


def _count(code: str, path: str) -> None:
    route = next(
        (p for p in _PATHS if path == p or path.startswith(p + "/") or path.startswith(p + "?")), "other"
    )
    with _COUNTS_LOCK:
        _COUNTS[(code, route)] = _COUNTS.get((code, route), 0) + 1


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text() -> str:
    """The counters in the Prometheus text exposition format, version 0.0.4."""
    with _COUNTS_LOCK:
        counts = sorted(_COUNTS.items())
    info = ",".join(
        f'{k}="{_label(_INFO.get(k, ""))}"' for k in ("pod", "namespace", "node", "app", "version")
    )
    lines = [
        "# HELP migrator_podserver_requests_total HTTP requests answered, by status code and path.",
        "# TYPE migrator_podserver_requests_total counter",
        *(f'migrator_podserver_requests_total{{code="{c}",path="{p}"}} {n}' for (c, p), n in counts),
        "# HELP migrator_podserver_info The pod this server runs in.",
        "# TYPE migrator_podserver_info gauge",
        f"migrator_podserver_info{{{info}}} 1",
    ]
    return "\n".join(lines) + "\n"


def _call(host: str, port: int) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=CALL_TIMEOUT) as conn:
            conn.settimeout(CALL_TIMEOUT)
            conn.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        status = data.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = status.split()
        return (len(parts) > 1 and parts[1] == "200"), status
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _respond(conn: socket.socket, status: str, body: bytes, ctype: str, path: str | None = None) -> None:
    if path is not None:
        _count(status.split(" ", 1)[0], path)
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    conn.sendall(head.encode() + body)


def _handle(conn: socket.socket, slots: threading.BoundedSemaphore | None = None) -> None:
    try:
        conn.settimeout(5.0)
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 16384:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode(errors="replace").split()
        path = line[1] if len(line) > 1 else "/"
        if path == "/metrics" or path.startswith("/metrics?"):
            _respond(conn, "200 OK", metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")
            return
        if path.startswith("/healthz"):
            _respond(conn, "200 OK", b"ok\n", "text/plain", path)
            return
        info = dict(_INFO)
        ok = True
        if _CALLS and not path.startswith("/local"):
            upstream = {}
            for host, port in _CALLS:
                good, detail = _call(host, port)
                upstream[f"{host}:{port}"] = detail
                ok = ok and good
            info["upstream"] = upstream
        info["ts"] = time.time()
        body = (json.dumps(info) + "\n").encode()
        _respond(conn, "200 OK" if ok else "503 Service Unavailable", body, "application/json", path)
    except OSError:
        pass
    finally:
        conn.close()
        if slots is not None:
            slots.release()


def _serve_tcp(srv: socket.socket, slots: threading.BoundedSemaphore | None) -> None:
    while True:
        conn, _ = srv.accept()
        if slots is not None and not slots.acquire(blocking=False):
            conn.close()  # bounded: over the limit, refuse at once
            continue
        threading.Thread(target=_handle, args=(conn, slots), daemon=True).start()


def _serve_udp(srv: socket.socket, port: int) -> None:
    """One reply datagram per datagram received (no state, so no bound needed)."""
    info = {k: _INFO[k] for k in ("pod", "namespace", "node")}
    reply = (json.dumps({**info, "port": port, "protocol": "UDP"}) + "\n").encode()
    while True:
        try:
            _data, peer = srv.recvfrom(2048)
            srv.sendto(reply, peer)
        except OSError:
            continue


def _listeners(opts: dict[str, str], listens: list[str]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for spec in listens or [f"{opts.get('port', '9080')}/tcp"]:
        port, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp"):
            raise ValueError(f"podserver: unsupported protocol in --listen {spec!r} (tcp or udp)")
        out.append((int(port), proto))
    return out


def main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    calls: list[str] = []
    listens: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--call":
            calls.append(next(it))
        elif arg == "--listen":
            listens.append(next(it))
        elif arg.startswith("--"):
            opts[arg[2:]] = next(it)
    bind = opts.get("bind", "0.0.0.0")  # noqa: S104 - inside a lab pod namespace
    for key in ("pod", "namespace", "node", "app", "version", "container"):
        _INFO[key] = opts.get(key, "")
    for c in calls:
        host, _, p = c.rpartition(":")
        _CALLS.append((host, int(p)))
    slots = threading.BoundedSemaphore(int(opts["max-conns"])) if "max-conns" in opts else None
    threads: list[threading.Thread] = []
    for port, proto in _listeners(opts, listens):
        if proto == "udp":
            srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            srv.bind((bind, port))
            threads.append(threading.Thread(target=_serve_udp, args=(srv, port), daemon=True))
        else:
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((bind, port))
            srv.listen(128)
            threads.append(threading.Thread(target=_serve_tcp, args=(srv, slots), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
