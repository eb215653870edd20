"""A tiny HTTP server, one per lab pod "container". Standard library only; run as a script.

``GET /`` answers JSON about the pod; when ``--call host:port`` is given (bookinfo's productpage and
reviews v2/v3) it first calls each upstream over service DNS names and answers 503 if one fails.
``GET /healthz`` answers ``ok``. HTTP/1.0, one thread per connection, small memory footprint;
``--max-conns N`` bounds the connections served at once (more are closed at once), as the lab's control-plane
endpoint does.
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


def _respond(conn: socket.socket, status: str, body: bytes, ctype: str) -> None:
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
        if path.startswith("/healthz"):
            _respond(conn, "200 OK", b"ok\n", "text/plain")
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
        _respond(conn, "200 OK" if ok else "503 Service Unavailable", body, "application/json")
    except OSError:
        pass
    finally:
        conn.close()
        if slots is not None:
            slots.release()


def main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    calls: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--call":
            calls.append(next(it))
        elif arg.startswith("--"):
            opts[arg[2:]] = next(it)
    port = int(opts.get("port", "9080"))
    bind = opts.get("bind", "0.0.0.0")  # noqa: S104 - inside a lab pod namespace
    for key in ("pod", "namespace", "node", "app", "version", "container"):
        _INFO[key] = opts.get(key, "")
    for c in calls:
        host, _, p = c.rpartition(":")
        _CALLS.append((host, int(p)))
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(128)
    slots = threading.BoundedSemaphore(int(opts["max-conns"])) if "max-conns" in opts else None
    while True:
        conn, _ = srv.accept()
        if slots is not None and not slots.acquire(blocking=False):
            conn.close()  # bounded: over the limit, refuse at once
            continue
        threading.Thread(target=_handle, args=(conn, slots), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
