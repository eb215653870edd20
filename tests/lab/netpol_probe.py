"""Probing helpers for the netpol lab tests: one TCP connect (or one UDP datagram) from inside a lab pod.

Run through ``Lab.exec`` (the pod's own network namespace, never the host's). The verdict is ``allow``,
``deny`` (refused, reset or timeout: what a REJECT or DROP gives) or ``error: ...`` (anything else, never
counted as a deny).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from migrator.lab.lab import Lab

_SCRIPT = r"""
import json, socket, sys, time
host, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
t0 = time.monotonic()
try:
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(b"probe")
        body = s.recv(2048).decode()
    else:
        s = socket.create_connection((host, port), timeout=timeout)
        s.settimeout(timeout)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        body = s.recv(4096).decode(errors="replace")
    out = {"verdict": "allow", "body": body}
except (ConnectionRefusedError, ConnectionResetError, TimeoutError, socket.timeout) as exc:
    out = {"verdict": "deny", "error": type(exc).__name__}
except OSError as exc:
    out = {"verdict": "error: " + type(exc).__name__ + " " + str(exc)}
out["ms"] = (time.monotonic() - t0) * 1000
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Cell:
    src: str  # pod key
    host: str  # an IP (pod or ClusterIP)
    port: int
    proto: str = "tcp"


@dataclass(frozen=True)
class Seen:
    verdict: str
    ms: float
    body: str = ""
    error: str = ""


def probe(lab: Lab, cell: Cell, timeout: float = 1.0) -> Seen:
    argv = ["python3", "-I", "-S", "-c", _SCRIPT, cell.host, str(cell.port), cell.proto, str(timeout)]
    res = lab.exec(cell.src, argv, timeout=timeout + 10)
    if not res.ok:
        return Seen(f"error: rc={res.rc} {res.stderr.strip()[-200:]}", 0.0)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return Seen(out["verdict"], float(out["ms"]), out.get("body", ""), out.get("error", ""))


def probe_all(lab: Lab, cells: list[Cell], timeout: float = 1.0) -> dict[Cell, Seen]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(cells, pool.map(lambda c: probe(lab, c, timeout), cells), strict=True))


def pod_ip(lab: Lab, key: str) -> str:
    ip = lab.require().pods[key].ip
    assert ip, key
    return ip


def service_ip(lab: Lab, key: str) -> str:
    return lab.require().services[key].cluster_ip
