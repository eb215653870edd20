"""``migrator lab down`` kills the lab's pending fault timers and link-flap loops and removes the records.

A real 2-node lab (one echo pod per node, no app) with two faults with a 10-minute TTL: a loss on node1 and a
link-flap loop on node2; then ``lab down`` with node2's named namespace already gone (as after a crashed
``down``), so that ``ip netns pids`` cannot find node2's: every fault process must still go, and so must
every other process in node2's namespaces (an SSH session outlives the sshd that accepted it; sshd's chrooted
pre-authentication child of a half-open connection is in node2's network namespace but not in its mount view).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.faults import nodes as fnodes
from migrator.faults.spec import ClusterView, FaultKind, build
from migrator.lab import net, sh
from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, LabSpec
from migrator.lab.state import LabState, lab_dir
from migrator.lab.teardown import lab_fault_ids, lab_processes
from migrator.plan.models import FaultLinkFlapArgs, FaultLossArgs
from migrator.targets.lab.cluster import open_lab_target
from tests.faults.conftest import CAN_BUILD_LAB, LAB_PREFIX, UNDERLAY
from tests.faults.lab_helpers import records_on, wait_for

pytestmark = pytest.mark.lab
MARK = re.compile(r"migrator-fault-(timer|flap)-[0-9a-f]+")


def fault_pids(ids: list[str]) -> dict[int, str]:
    """Every process on the machine whose command line names one of the faults (a /proc scan)."""
    marks = [f"migrator-fault-{kind}-{i}" for i in ids for kind in ("timer", "flap")]
    return {pid: cmd for pid, cmd in sh.cmdlines().items() if any(m in cmd for m in marks)}


def chrooted_in(netns_ino: int, node_dir: Path) -> list[int]:
    """Processes in the network namespace ``netns_ino`` whose ``/run/migrator`` is not the node's folder."""
    mine = os.stat(node_dir / "run-migrator")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino != netns_ino:
                continue
        except OSError:
            continue
        try:
            seen = os.stat(entry / "root" / "run" / "migrator")
            if (seen.st_dev, seen.st_ino) == (mine.st_dev, mine.st_ino):
                continue
        except OSError:
            pass
        if sh.alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture()
def small_lab(migrator_home: Path) -> Iterator[Lab]:
    if not CAN_BUILD_LAB:
        pytest.skip("needs root, iproute2 and containernetworking-plugins")
    name = f"{LAB_PREFIX}d{os.getpid() % 1000}"
    lab = Lab(name)
    try:
        lab.up(LabSpec(name=name, nodes=2, pods_per_node=1, app=AppKind.NONE, underlay=UNDERLAY))
        yield lab
    finally:
        res = lab.down()
        assert not res.leftovers, res.leftovers


def test_lab_down_kills_pending_fault_timers_and_removes_the_records(small_lab: Lab, tmp_path: Path) -> None:
    st = small_lab.require()
    target = open_lab_target(small_lab.name)
    nodes = target.cluster.list_nodes()
    facts = fnodes.gather_facts(target.executor, nodes, data_dir=tmp_path / "facts")
    view = ClusterView(nodes)
    loss = FaultLossArgs.model_validate({"percent": "10%", "duration": "600s"})
    flap = FaultLinkFlapArgs.model_validate(
        {"interface": "cni0", "period": "300s", "down": "1s", "duration": "600s"}
    )
    plans = [
        build(FaultKind.LOSS, "d0d0d0d0d001", loss, facts["node1"], view),
        build(FaultKind.LINK_FLAP, "d0d0d0d0d002", flap, facts["node2"], view),
    ]
    got = fnodes.inject(target.executor, plans, 610, data_dir=tmp_path / "inject")
    assert sorted(n for n, o in got.items() if o.record.get("timer_pid")) == ["node1", "node2"]
    recs = records_on(small_lab, "node1") + records_on(small_lab, "node2")
    ids = sorted(r["id"] for r in recs)
    assert sorted(r["kind"] for r in recs) == ["link-flap", "loss"] and all(r["ttl"] == 610 for r in recs)
    before = fault_pids(ids)
    marks = {m.group(0) for c in before.values() if (m := MARK.search(c))}
    assert marks == {f"migrator-fault-timer-{i}" for i in ids} | {
        f"migrator-fault-flap-{r['id']}" for r in recs if r["kind"] == "link-flap"
    }
    records_dirs = [Path(st.nodes[n].dir) / "run-migrator" / "faults" for n in ("node1", "node2")]
    assert sorted(p.stem for d in records_dirs for p in d.glob("*.json")) == ids

    # an SSH session into node2 that stays open (as an Ansible ControlPersist master's does)
    session = subprocess.Popen(
        ["ssh", "-i", st.ssh_key, "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
         f"root@{st.nodes['node2'].ip}", "sleep 600"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # and one stopped half-way through the handshake: sshd's unprivileged pre-authentication child is
    # chrooted (its root is not the node's), so only its network namespace says it is the lab's
    half = socket.create_connection((st.nodes["node2"].ip, 22), timeout=10)
    try:
        assert half.recv(256).startswith(b"SSH-2.0-")
        half.sendall(b"SSH-2.0-migrator-test\r\n")
        node2_ids = lab_fault_ids(st, [st.nodes["node2"].netns])
        sshd_pid = st.nodes["node2"].sshd_pid
        assert wait_for(lambda: any(p != sshd_pid for p in lab_processes(node2_ids) if sh.alive(p)), 15)
        netns = os.stat(net.netns_path(st.nodes["node2"].netns))
        assert wait_for(lambda: chrooted_in(netns.st_ino, Path(st.nodes["node2"].dir)), 15), (
            "no chrooted sshd child in node2"
        )
        _test_down(small_lab, st, ids, marks, before, records_dirs, node2_ids)
    finally:
        half.close()
        session.kill()
        session.wait(timeout=10)


def _test_down(
    small_lab: Lab,
    st: LabState,
    ids: list[str],
    marks: set[str],
    before: dict[int, str],
    records_dirs: list[Path],
    node2_ids: set[tuple[int, int]],
) -> None:
    # as after a crashed down: the node's namespace has lost its name (its processes keep it alive)
    subprocess.run(["ip", "netns", "del", st.nodes["node2"].netns], check=True, timeout=10)
    assert st.nodes["node2"].netns not in net.list_netns()

    down = small_lab.down()
    assert down.leftovers == []
    killed = [r for r in down.removed if r.startswith("fault process")]
    assert {m for m in marks if any(m in r for r in killed)} == marks, down.removed
    assert {f"fault record node1/{ids[0]}", f"fault record node2/{ids[1]}"} <= set(down.removed)

    assert fault_pids(ids) == {}, "a fault process of the lab survived lab down"
    assert [p for p in before if sh.alive(p)] == []
    assert [p for p in lab_processes(node2_ids) if sh.alive(p)] == [], (
        "a process survived in node2's namespaces"
    )
    assert not lab_dir(small_lab.name).exists() and not any(d.exists() for d in records_dirs)
    assert [n for n in net.list_netns() if n.startswith(f"{st.prefix}-")] == []
    assert [link for link in net.host_links() if link.startswith(st.prefix)] == []
