"""``lab down``: remove every process, namespace, interface, rule and file a lab made, also after a crash.

What to remove is found twice over: from the resources recorded in the state (when it is readable) and
from the host itself, by name prefix and by identity (the ``/proc`` forensics below: a process belongs to
the lab when its network namespace is one of the lab's, or when its ``/run/migrator`` is a node's folder
of the lab), so a lab whose state is gone, or whose namespaces lost their names, is still removed. The
caller holds the lab's lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from migrator.lab import hostdirs, net, sh, sshd
from migrator.lab.spec import host_veth, lab_prefix
from migrator.lab.state import LabPhase, LabState, ResourceKind, StateStore, lab_dir

KILL_ROUNDS = 10  # lab down: scan-and-kill rounds until nothing in the lab's namespaces is left
# migrator.faults: the detached expiry timers and link-flap loops on the nodes (argv[-1] of their `sh -c`)
FAULT_PROCESS_RE = re.compile(r"migrator-fault-(timer|flap)-[0-9a-f]+")


@dataclass
class DownResult:
    existed: bool
    removed: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def down_locked(store: StateStore, st: LabState | None) -> DownResult:
    """Remove lab ``store.name`` (its state ``st``, ``None`` when absent or unreadable)."""
    res = DownResult(existed=st is not None)
    if st is not None:
        st.phase = LabPhase.DELETING
        with contextlib.suppress(OSError):
            store.save(st)
    prefix = st.prefix if st else lab_prefix(store.name)
    ns_prefix = f"{prefix}-"
    recorded_ns = [r.name for r in st.resources if r.kind == ResourceKind.NETNS] if st else []
    all_ns = net.list_netns()
    lab_ns = sorted(set(recorded_ns) & set(all_ns) | {n for n in all_ns if n.startswith(ns_prefix)})
    # 1. processes (a namespace's processes keep it, and its interfaces, alive)
    lab_ids = lab_fault_ids(st, lab_ns)
    _kill_processes(st, lab_ns, lab_ids, res)
    # 2. namespaces (their interfaces, routes and iptables rules go with them)
    net.delete_netns(lab_ns)
    res.removed += [f"netns {n}" for n in lab_ns]
    # 3. host links (the one veth; gone with the fabric namespace, but make sure)
    for link in net.host_links():
        if link == host_veth(prefix) or link.startswith(ns_prefix):
            sh.run(["ip", "link", "del", link], check=False, timeout=10)
            res.removed.append(f"link {link}")
    # 4. files
    _remove_files(store.name, st, lab_ns, ns_prefix, res)
    # 5. what is left (should be nothing)
    now_ns = [n for n in net.list_netns() if n.startswith(ns_prefix)]
    res.leftovers += [f"netns {n}" for n in now_ns]
    still = fault_processes(lab_ids)
    res.leftovers += [f"fault process {pid} ({mark})" for pid, _g, mark in still]
    res.leftovers += [f"process {pid} still in the lab's namespaces" for pid in lab_processes(lab_ids)]
    return res


def _kill_processes(
    st: LabState | None, lab_ns: Sequence[str], lab_ids: set[tuple[int, int]], res: DownResult
) -> None:
    """Pending fault timers and flap loops (their whole group, before they fire into a half-removed lab),
    recorded processes, then anything still inside a lab namespace."""
    faults = fault_processes(lab_ids)
    # their own groups only (they are session leaders: setsid / start_new_session), never ours
    fault_groups = sorted({g for pid, g, _m in faults if g == pid and g != os.getpgrp()})
    for pgid in fault_groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    left_faults = sh.kill([(pid, None) for pid, _pgid, _mark in faults])
    res.removed += [f"fault process {pid} ({mark})" for pid, _pgid, mark in faults]
    res.leftovers += [f"fault process {p} did not exit" for p in left_faults]
    pids: list[tuple[int, int | None]] = []
    if st is not None:
        pids += [(r.pid, r.start_time) for r in st.resources if r.kind == ResourceKind.PROCESS and r.pid]
    for ns in lab_ns:
        pids += [(pid, None) for pid in net.netns_pids(ns)]
    left = sh.kill(pids)
    res.removed += [f"process {p}" for p, _ in pids]
    # then anything else inside a node's mount namespace (e.g. an SSH session whose sshd was killed) or a
    # lab namespace, also when a namespace lost its name (`ip netns pids` cannot see those); scanned
    # again until a scan finds nothing, as a process can fork between the scan and the kill (an SSH
    # session being set up forks its session after authentication; a flap loop its next `ip`)
    seen = {pid for pid, _ in pids}
    for _ in range(KILL_ROUNDS):
        more = [(pid, None) for pid in lab_processes(lab_ids) if pid not in left]
        if not more:
            break
        left += sh.kill(more)
        res.removed += [f"process {p}" for p, _ in more if p not in seen]
        seen |= {p for p, _ in more}
    res.leftovers += [f"process {p} did not exit" for p in sorted(set(left))]


def _remove_files(
    name: str, st: LabState | None, lab_ns: Sequence[str], ns_prefix: str, res: DownResult
) -> None:
    """The namespaces' ``/etc/netns`` folders, the lab folder, and (with the last lab) the host folders the
    labs created as mount points."""
    etc_dirs = {str(net.NETNS_ETC / n) for n in lab_ns}
    if st is not None:
        etc_dirs |= {
            r.name
            for r in st.resources
            if r.kind == ResourceKind.DIR and r.name.startswith(str(net.NETNS_ETC))
        }
    if net.NETNS_ETC.is_dir():
        etc_dirs |= {str(p) for p in net.NETNS_ETC.iterdir() if p.name.startswith(ns_prefix)}
    for d in sorted(etc_dirs):
        shutil.rmtree(d, ignore_errors=True)
    if st is not None:  # the fault records (their timers are gone): removed with the lab folder
        for n in st.nodes.values():
            folder = Path(n.dir) / sshd.NODE_MOUNTS["/run/migrator"] / "faults"
            res.removed += [f"fault record {n.name}/{p.stem}" for p in sorted(folder.glob("*.json"))]
    shutil.rmtree(lab_dir(name), ignore_errors=True)
    others = [p for p in lab_dir(name).parent.glob("*/state.json") if p.parent.name != name]
    if not others:
        mine = {r.name for r in st.resources if r.kind == ResourceKind.EMPTY_DIR} if st else set()
        res.removed += [f"dir {d}" for d in hostdirs.remove(mine)]


# --------------------------------------------------------------------------------- /proc forensics


def lab_fault_ids(st: LabState | None, lab_ns: Sequence[str]) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of what marks a process as the lab's: its node namespaces and fault folders."""
    paths_: list[str] = [net.netns_path(ns) for ns in lab_ns]
    if st is not None:
        paths_ += [str(Path(n.dir) / sshd.NODE_MOUNTS["/run/migrator"]) for n in st.nodes.values()]
    ids: set[tuple[int, int]] = set()
    for p in paths_:
        with contextlib.suppress(OSError):
            info = os.stat(p)
            ids.add((info.st_dev, info.st_ino))
    return ids | _node_netns_ids(ids)


def _node_netns_ids(ids: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The network namespaces of the processes that run in a node's mount view (``/run/migrator`` is a
    node's folder of ``ids``): a node's namespace is found this way also after it lost its name, and with it
    the processes in it whose root is elsewhere (sshd's chrooted pre-authentication child, for one). Never
    the host's own namespace."""
    own: set[tuple[int, int]] = set()
    for p in ("/proc/self/ns/net", "/proc/1/ns/net"):
        with contextlib.suppress(OSError):
            info = os.stat(p)
            own.add((info.st_dev, info.st_ino))
    found: set[tuple[int, int]] = set()
    if not ids:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            root = os.stat(entry / "root" / "run" / "migrator")
            if (root.st_dev, root.st_ino) in ids:
                info = os.stat(entry / "ns" / "net")
                found.add((info.st_dev, info.st_ino))
    return found - own


def _marked(entry: Path, ids: set[tuple[int, int]]) -> bool:
    """Whether process ``entry`` (``/proc/<pid>``) is in a namespace or mount view named by ``ids``."""
    for p in (entry / "ns" / "net", entry / "root" / "run" / "migrator"):
        with contextlib.suppress(OSError):
            info = os.stat(p)
            if (info.st_dev, info.st_ino) in ids:
                return True
    return False


def lab_processes(ids: set[tuple[int, int]]) -> list[int]:
    """Every process (but this one) in one of the lab's network namespaces, or whose ``/run/migrator`` is a
    node's folder of the lab (it runs in a node's mount namespace: sshd and its sessions, Ansible
    modules, fault timers), by namespace and folder identity, so names that are gone do not matter."""
    if not ids:
        return []
    me = os.getpid()
    return [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and int(e.name) != me and _marked(e, ids)
    ]


def fault_processes(ids: set[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """``(pid, pgid, mark)`` of the fault timers and flap loops (:mod:`migrator.faults`) of a lab, its
    :func:`lab_fault_ids`.

    A process is the lab's when its network namespace is one of the lab's, or when its ``/run/migrator``
    is a node's fault folder of this lab (seen through ``/proc/<pid>/root``: also after the namespace is
    gone or the holder died)."""
    if not ids:
        return []
    out: list[tuple[int, int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        args = [a for a in cmdline.split("\x00") if a]
        # the detached processes carry their mark as $0 of `sh -c`: their last argument, exactly
        if not args or FAULT_PROCESS_RE.fullmatch(args[-1]) is None:
            continue
        if not _marked(entry, ids):
            continue
        pid = int(entry.name)
        try:
            pgid = os.getpgid(pid)
        except OSError:
            continue
        out.append((pid, pgid, args[-1]))
    return out
