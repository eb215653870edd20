"""Helpers of the fault lab tests: the CLI in a subprocess, plans, node state read back, bounded probes.

Every read of a node goes through ``Lab.exec`` (nsenter into the node's namespaces); every probe is bounded
(count and timeout) and runs from a lab namespace.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from migrator.engine.lock import TargetLock, read_lock
from migrator.lab.lab import Lab
from migrator.ports import Pod, ProbeKind, ProbeProtocol, ProbeTarget, Target
from tests.clihelp import run_migrator, start_migrator

ROOT = Path(__file__).resolve().parents[2]
DNS_IP = "10.96.0.10"


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_migrator(*args, timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen[str]:
    """Stdout and stderr merged, in a session of its own (the tests signal its group)."""
    return start_migrator(*args, merge_stderr=True, new_session=True)


def write_plan(path: Path, name: str, steps: list[dict[str, Any]]) -> Path:
    plan = {
        "apiVersion": "migrator/v1",
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {"stages": [{"name": "fault", "steps": steps}]},
    }
    path.write_text(json.dumps(plan))  # JSON is YAML
    return path


def run_folder(output: str) -> Path:
    """The run folder a ``migrator apply`` printed."""
    match = re.search(r"run folder: (\S+)", output)
    assert match, output
    return Path(match.group(1))


def journal(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line]


def step_results(run_dir: Path) -> dict[str, Any]:
    """``{action: result}`` of the run's finished steps, from its journal."""
    return {e["action"]: e.get("result") for e in journal(run_dir) if e.get("type") == "step.end"}


def report_faults(run_dir: Path) -> list[dict[str, Any]]:
    """The faults of the run's report (``report.json``: ``steady_state.faults``)."""
    report = json.loads((run_dir / "report.json").read_text())
    return list((report.get("steady_state") or {}).get("faults") or [])


def fault_events(run_dir: Path) -> list[dict[str, Any]]:
    return [
        e["event"]["fault"]
        for e in journal(run_dir)
        if e.get("type") == "step.event" and isinstance(e.get("event", {}).get("fault"), dict)
    ]


def node_fault_state(lab: Lab, node: str) -> list[str]:
    """Every fault object on the node: iptables lines of migrator faults (filter, raw), non-default qdiscs."""
    left: list[str] = []
    for table in ("filter", "raw"):
        out = lab.exec(node, ["iptables-save", "-t", table], timeout=20).stdout
        left += [
            f"{table}: {line}" for line in out.splitlines() if "migrator-fault" in line or "MGR-F-" in line
        ]
    out = lab.exec(node, ["tc", "qdisc", "show"], timeout=20).stdout
    left += [f"tc: {line}" for line in out.splitlines() if any(k in line for k in ("tbf", "netem", "htb"))]
    return left


SNAPSHOT = (
    "for t in filter raw nat mangle; do iptables-save -t $t; done; echo '== tc'; tc qdisc show;"
    " echo '== links'; ip -o link show; echo '== routes'; ip -4 route show table all;"
    " echo '== records'; ls /run/migrator/faults 2>/dev/null; true"
)
_COUNTERS = re.compile(r"\[\d+:\d+\]")


def node_snapshot(lab: Lab, node: str) -> list[str]:
    """The node's network state, for "equal before and after" (no drift): every iptables table (without
    counters), qdiscs, links, IPv4 routes (faults are IPv4; the kernel adds IPv6 link-local routes on its
    own) and the fault folder's files."""
    out = lab.exec(node, ["sh", "-c", SNAPSHOT], timeout=30).stdout
    lines = []
    for line in out.splitlines():
        if line.startswith("#"):
            continue  # iptables-save's time stamps
        lines.append(_COUNTERS.sub("[]", line))
    return lines


def snapshot_diff(before: list[str], after: list[str]) -> list[str]:
    gone = [f"- {line}" for line in before if line not in after]
    new = [f"+ {line}" for line in after if line not in before]
    return gone + new


def records_on(lab: Lab, node: str) -> list[dict[str, Any]]:
    out = lab.exec(
        node, ["sh", "-c", "cat /run/migrator/faults/*.json 2>/dev/null || true"], timeout=20
    ).stdout
    decoder = json.JSONDecoder()
    recs, pos = [], 0
    out = out.strip()
    while pos < len(out):
        rec, end = decoder.raw_decode(out, pos)
        recs.append(rec)
        pos = end
        while pos < len(out) and out[pos].isspace():
            pos += 1
    return recs


def fully_installed(lab: Lab, node: str, last_jump: str) -> bool:
    """The fault's last install command (the jump from ``last_jump``) is in and its record has a timer.

    The first fault object (an empty chain) shows up before the rules are live: probing then is a race.
    """
    jump = any(f"-A {last_jump} " in line for line in node_fault_state(lab, node))
    return jump and any(r.get("timer_pid") for r in records_on(lab, node))


def take_over_stale_lock(lab: Lab) -> None:
    """A killed run leaves its target lock behind (stale: its pid is gone); take it over and release it."""
    info = read_lock(f"lab:{lab.name}")
    if info is not None and info.stale:
        lock = TargetLock(f"lab:{lab.name}", "faults-test-cleanup")
        lock.acquire(force_unlock=info.run_id)
        lock.release()


def wait_for(predicate: Any, timeout: float, interval: float = 0.25) -> bool:
    end = time.monotonic() + timeout
    while True:  # at least one look, whatever the timeout
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def echo_pods(target: Target) -> dict[str, Pod]:
    pods = [
        p for p in target.cluster.list_pods(namespace="default") if (p.owner or "").endswith("echo") and p.ip
    ]
    return {p.node: p for p in pods}


def tcp(src: Pod, dst: Pod, timeout: float = 0.8) -> ProbeTarget:
    return ProbeTarget(
        source=src.key,
        dest=dst.key,
        kind=ProbeKind.POD_CROSS_NODE,
        host=str(dst.ip),
        port=9080,
        protocol=ProbeProtocol.TCP,
        timeout=timeout,
    )


def to_address(source: str, dest: str, host: str, port: int, timeout: float = 1.0) -> ProbeTarget:
    """A TCP probe from ``source`` (a pod key or a node name) to ``host:port``."""
    return ProbeTarget(
        source=source,
        dest=dest,
        kind=ProbeKind.SERVICE_IP,
        host=host,
        port=port,
        protocol=ProbeProtocol.TCP,
        timeout=timeout,
    )


def healthz(source: str, endpoint: str, timeout: float = 1.0) -> ProbeTarget:
    """``GET /healthz`` from ``source`` to ``endpoint`` ("ip:port"), expecting 200."""
    host, port = endpoint.rsplit(":", 1)
    return ProbeTarget(
        source=source,
        dest=endpoint,
        kind=ProbeKind.NODE_TO_POD,
        host=host,
        port=int(port),
        protocol=ProbeProtocol.HTTP,
        path="/healthz",
        expect_status=200,
        timeout=timeout,
    )


def dns_query(source: str, name: str, expect: str, timeout: float = 1.0) -> ProbeTarget:
    """A DNS query for ``name`` from ``source`` to the cluster DNS, expecting ``expect`` in the answer."""
    return ProbeTarget(
        source=source,
        dest=f"dns:{name}",
        kind=ProbeKind.DNS,
        host=DNS_IP,
        port=53,
        protocol=ProbeProtocol.DNS,
        path=name,
        expect_status=None,
        expect_body=expect,
        timeout=timeout,
    )


def timer_alive(lab: Lab, node: str, rec: dict[str, Any]) -> bool:
    pid = rec.get("timer_pid")
    res = lab.exec(node, ["sh", "-c", f"cat /proc/{pid}/cmdline 2>/dev/null | tr '\\0' ' '"], timeout=10)
    return f"migrator-fault-timer-{rec['id']}" in res.stdout
