"""Probing helpers for the netpol lab tests: one TCP connect (or one UDP datagram) from inside a lab pod,
and :func:`run_case`, one upstream e2e case run on a netpol lab (any CNI whose agent enforces policy).

Run through ``Lab.exec`` (the pod's own network namespace, never the host's). The verdict is ``allow``,
``deny`` (refused, reset or timeout: what a REJECT or DROP gives) or ``error: ...`` (anything else, never
counted as a deny).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.lab.lab import Lab
from migrator.policy.model import Protocol
from migrator.probe.policy import Observed, PolicyOptions, PolicyReport, run_policy_verify
from migrator.targets.lab.cluster import open_lab_target
from tests.policy.e2e_cases import Apply, Case, Delete, LabelNamespace, LabelPod, Probe, resolve

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


_MANY = r"""
import json, socket, sys, threading, time
timeout = float(sys.argv[1])
cells = [c.split(",") for c in sys.argv[2:]]
out = [None] * len(cells)
def one(i, host, port, proto):
    t0 = time.monotonic()
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.connect((host, int(port)))
            s.send(b"probe")
            s.recv(2048)
        else:
            s = socket.create_connection((host, int(port)), timeout=timeout)
        s.close()
        r = {"verdict": "allow"}
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError, socket.timeout) as exc:
        r = {"verdict": "deny", "error": type(exc).__name__}
    except OSError as exc:
        r = {"verdict": "error: " + type(exc).__name__ + " " + str(exc)}
    r["ms"] = (time.monotonic() - t0) * 1000
    out[i] = r
threads = [threading.Thread(target=one, args=(i, *c)) for i, c in enumerate(cells)]
for t in threads:
    t.start()
for t in threads:
    t.join()
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


def probe_grouped(lab: Lab, cells: list[Cell], timeout: float = 1.0) -> dict[Cell, Seen]:
    """Like :func:`probe_all`, with one process per source pod probing all its cells at once."""
    by_src: dict[str, list[Cell]] = {}
    for c in cells:
        by_src.setdefault(c.src, []).append(c)

    def run(src: str) -> list[tuple[Cell, Seen]]:
        mine = by_src[src]
        argv = [
            "python3",
            "-I",
            "-S",
            "-c",
            _MANY,
            str(timeout),
            *[f"{c.host},{c.port},{c.proto}" for c in mine],
        ]
        res = lab.exec(src, argv, timeout=timeout + 20)
        if not res.ok:
            return [(c, Seen(f"error: rc={res.rc} {res.stderr.strip()[-200:]}", 0.0)) for c in mine]
        rows = json.loads(res.stdout.strip().splitlines()[-1])
        return [
            (c, Seen(r["verdict"], float(r["ms"]), "", r.get("error", "")))
            for c, r in zip(mine, rows, strict=True)
        ]

    with ThreadPoolExecutor(max_workers=9) as pool:
        return {c: s for group in pool.map(run, list(by_src)) for c, s in group}


def policy_doc(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def write_docs(tmp_path: Path, docs: list[dict[str, Any]], name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return path


# ------------------------------------------------------------------------------------- the e2e cases


def _mismatches(lab: Lab, step: Probe, ips: dict[str, str]) -> list[str]:
    proto = step.protocol.lower()
    cells = {Cell(src, ips[dst], step.port, proto): (src, dst, want) for src, dst, want in step.cells()}
    seen = probe_grouped(lab, list(cells))
    bad: list[str] = []
    for cell, (src, dst, want) in cells.items():
        got = seen[cell].verdict
        expected = "allow" if want else "deny"
        if got != expected:
            bad.append(f"{src} -> {dst} {step.port}/{step.protocol}: expected {expected}, observed {got}")
    return bad


def run_case(lab: Lab, tmp_path: Path, case: Case) -> None:
    """One upstream e2e case on a netpol lab (pods a, b, c in x, y, z): every step through the lab's own
    commands, every probe step's matrix observed cell by cell and by ``verify --scope policy``."""
    if case.feature == "SCTP":
        cap = next(c for c in lab.require().capabilities if c.name == "sctp")
        if not cap.available:
            pytest.skip(f"{case.title}: the kernel lacks SCTP ({cap.detail})")
    ips = {key: pod_ip(lab, key) for key in lab.require().pods if key.split("/")[0] in ("x", "y", "z")}
    for n, step in enumerate(case.steps):
        match step:
            case Apply():
                lab.apply([write_docs(tmp_path, [resolve(step.policy, ips)], f"step{n}.yaml")])
            case Delete():
                doc = {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": step.name, "namespace": step.namespace},
                }
                lab.delete([write_docs(tmp_path, [doc], f"step{n}.yaml")])
            case LabelNamespace():
                lab.label("namespace", step.namespace, dict(step.labels))
            case LabelPod():
                lab.label("pod", f"{step.namespace}/{step.pod}", dict(step.labels))
            case Probe():
                bad = _mismatches(lab, step, ips)
                assert not bad, (
                    f"{case.title}, step {n + 1}:\n" + "\n".join(bad) + "\nexpected:\n" + step.render()
                )
                _verify_agrees(lab, case, n, step)


def _verify_agrees(lab: Lab, case: Case, n: int, step: Probe) -> None:
    """The product's own policy verification (``verify --scope policy``: the model's expectation, the lab
    prober's probes) on the same lab state: its observed matrix on the step's port and protocol is upstream's
    expected matrix, and it finds no hole, break or prober error on any port or protocol."""
    report: PolicyReport = run_policy_verify(
        open_lab_target(lab.name), PolicyOptions(namespaces=frozenset({"x", "y", "z"}))
    )
    want = {(src, dst): allowed for src, dst, allowed in step.cells()}
    proto = Protocol(step.protocol)
    got = {
        (r.case.source, r.case.dest): r.observed
        for r in report.results
        if r.case.port == step.port and r.case.protocol is proto
    }
    assert set(got) == set(want), f"{case.title}: verify probed other pairs: {sorted(set(got) ^ set(want))}"
    wrong = [
        f"{src} -> {dst}: upstream expects {'allow' if allowed else 'deny'}, "
        f"verify observed {got[src, dst].value}"
        for (src, dst), allowed in want.items()
        if got[src, dst] is not (Observed.ALLOW if allowed else Observed.DENY)
    ]
    assert not wrong, f"{case.title}, step {n + 1} (verify):\n" + "\n".join(wrong)
    s = report.summary
    assert report.passed and (s.holes, s.breaks, s.errors) == (0, 0, 0), (
        f"{case.title}, step {n + 1}: verify --scope policy reports mismatches:\n{report.describe(limit=20)}"
    )
