"""Host folders the labs create as mount points (the nodes' bind mounts, ``/run/sshd``, ``/etc/netns``).

They are shared by every lab on the host (each maybe under its own MIGRATOR_HOME): a list in the labs
folder remembers which ones a lab created, and the last ``lab down`` removes them, if empty and unmounted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from migrator import fsutil, paths
from migrator.lab import sshd
from migrator.lab.net import NETNS_ETC
from migrator.lab.state import LabState, ResourceKind

SSHD_DIR = "/run/sshd"
HOST_DIRS = [*sshd.NODE_MOUNTS, SSHD_DIR, str(NETNS_ETC)]  # mount points and folders the host may lack


def claim(st: LabState) -> None:
    """Record (as ``EMPTY_DIR``) and remember the folders of :data:`HOST_DIRS` that do not exist yet, and
    their missing parents, before :func:`create` makes them."""
    created: list[str] = []
    for target in HOST_DIRS:
        missing: list[Path] = []
        p = Path(target)
        while not p.exists():
            missing.append(p)
            p = p.parent
        for m in reversed(missing):
            st.record(ResourceKind.EMPTY_DIR, str(m))
            created.append(str(m))
    remember(created)


def create() -> None:
    for target in HOST_DIRS:
        Path(target).mkdir(parents=True, exist_ok=True)


def _mount_points_in_use() -> set[str]:
    """Mount points of every process's mount namespace (bind mounts of live lab nodes show up here)."""
    seen: set[str] = set()
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ns = os.readlink(proc / "ns" / "mnt")
            if ns in inodes:
                continue
            inodes.add(ns)
            for line in (proc / "mountinfo").read_text().splitlines():
                seen.add(line.split()[4])
        except OSError:
            continue
    return seen


def _sshd_running() -> bool:
    """Whether any sshd runs on the host: each one needs ``/run/sshd`` (its privilege separation folder) for
    every new connection, and a lab of another MIGRATOR_HOME may have one (its own list cannot say)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() == "sshd":
                return True
        except OSError:
            continue
    return False


def host_dirs_list(update: Callable[[list[str]], list[str]]) -> list[str]:
    """Read-modify-write the shared list of host folders created by labs (under a lock on the labs folder
    itself, so no lock file is left behind once the list is empty). Returns the list as it was."""
    path = paths.labs_dir() / ".host-dirs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            known: list[str] = json.loads(path.read_text()) if path.exists() else []
        except ValueError:
            known = []
        new = update(list(known))
        if new:
            fsutil.atomic_write_text(path, json.dumps(new))
        else:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock
    path.with_suffix(".lock").unlink(missing_ok=True)  # the lock file of older versions
    return known


def remember(created: Sequence[str]) -> None:
    host_dirs_list(lambda known: known + [d for d in created if d not in known])


def remove(extra: set[str]) -> list[str]:
    """rmdir the (empty) host folders labs created, deepest first, unless a namespace still mounts them
    (another lab, maybe under another MIGRATOR_HOME), nor ``/run/sshd`` while any sshd runs. Those stay
    listed for a later ``down``."""
    removed: list[str] = []

    def update(known: list[str]) -> list[str]:
        busy = _mount_points_in_use()
        sshd_alive = _sshd_running()
        for d in sorted(set(known) | extra, key=lambda x: -x.count("/")):
            if any(m == d or m.startswith(d + "/") for m in busy) or (d == SSHD_DIR and sshd_alive):
                continue
            with contextlib.suppress(OSError):
                os.rmdir(d)
                removed.append(d)
        return sorted(d for d in set(known) | extra if Path(d).exists())

    host_dirs_list(update)
    return removed
