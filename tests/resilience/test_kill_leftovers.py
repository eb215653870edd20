"""The leftover scan of bench/resilience.py ("leftovers found", issue 8) finds what a lab or a run can
leave on the machine: planted for real (a network namespace, a host veth, a host iptables chain, processes
inside the namespace and with the run's MIGRATOR_HOME, a lab folder, a lock, a fault record), then gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.resilience import Scope, scan_leftovers

PREFIX = f"mklz{os.getpid() % 100}"  # nothing else uses it: the scan only looks at this prefix
CAN_PLANT = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("iptables") is not None


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=20)


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Scope, list[str]]]:
    if not CAN_PLANT:
        pytest.skip("needs root, iproute2 and iptables")
    home = tmp_path / "home"
    (home / "labs" / "zz").mkdir(parents=True)
    (home / "locks").mkdir()
    (home / "locks" / "lab_zz.lock").write_text("{}")
    fault_dir = tmp_path / "run-migrator-faults"
    fault_dir.mkdir()
    (fault_dir / "0123abcd.json").write_text("{}")
    ns, veth, chain = f"{PREFIX}-node1", f"{PREFIX}-h", f"{PREFIX.upper()}-PLANT"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{PREFIX}-p")  # down, unaddressed
        sh("iptables", "-N", chain)  # an empty chain nothing jumps to: no packet sees it
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "120"]))
        procs.append(subprocess.Popen(["sleep", "121"], env={**os.environ, "MIGRATOR_HOME": str(home)}))
        time.sleep(0.3)
        scope = Scope(prefixes=[PREFIX], homes=[home], host_fault_dir=fault_dir)
        yield scope, [ns, veth, chain, "sleep 120", "sleep 121", "labs/zz", "lab_zz.lock", "0123abcd.json"]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        subprocess.run(["iptables", "-X", chain], capture_output=True, timeout=20, check=False)
        subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=20, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)


def test_the_scan_finds_every_planted_leftover_and_nothing_once_they_are_gone(
    planted: tuple[Scope, list[str]],
) -> None:
    scope, marks = planted
    found = scan_leftovers(scope)
    text = "\n".join(found)
    for mark in marks:
        assert mark in text, f"{mark} not found in:\n{text}"
    # remove them (the fixture's cleanup, early) and scan again: nothing
    for item in (scope.homes[0] / "labs" / "zz", scope.homes[0] / "locks" / "lab_zz.lock"):
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    (scope.host_fault_dir / "0123abcd.json").unlink()
    chain = f"{PREFIX.upper()}-PLANT"
    for pid in [int(line.split()[1]) for line in found if line.startswith("process ")]:
        os.kill(pid, 9)
    sh("iptables", "-X", chain)
    sh("ip", "link", "del", f"{PREFIX}-h")
    sh("ip", "netns", "del", f"{PREFIX}-node1")
    deadline = time.monotonic() + 10
    while (left := scan_leftovers(scope)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []
