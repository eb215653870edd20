"""The target lock: ``$MIGRATOR_HOME/locks/<target>.lock``, created with ``O_EXCL``.

It holds JSON ``{run_id, pid, host, started}``. A second run against the same target is refused with
:class:`~migrator.errors.LockHeld` naming the holder. A lock whose holder is dead (same host, pid gone)
is *stale*: it is reported and taken over only with ``force_unlock=<holder run id>``; the run that owns
the lock (``resume``/``rollback`` of that run) takes its own stale lock back without forcing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from migrator import paths
from migrator.errors import LockHeld
from migrator.runs.journal import now_iso


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path(target: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", target) or "target"
    return paths.locks_dir() / f"{safe}.lock"


@dataclass
class LockInfo:
    run_id: str
    pid: int
    host: str
    started: str

    @property
    def stale(self) -> bool:
        return self.host == socket.gethostname() and not pid_alive(self.pid)


def read_lock(target: str) -> LockInfo | None:
    path = lock_path(target)
    try:
        data: Any = json.loads(path.read_text())
        return LockInfo(
            str(data["run_id"]), int(data["pid"]), str(data["host"]), str(data.get("started", ""))
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return LockInfo("<unreadable>", -1, socket.gethostname(), "")


class TargetLock:
    def __init__(self, target: str, run_id: str) -> None:
        self.target = target
        self.run_id = run_id
        self.path = lock_path(target)
        self.held = False

    def acquire(self, *, force_unlock: str | None = None) -> None:
        for _ in range(3):
            if self._create():
                return
            holder = read_lock(self.target)
            if holder is None:
                continue  # released in between
            takeover = False
            if holder.run_id == self.run_id and (holder.stale or holder.pid == os.getpid()):
                takeover = True  # our own run's lock, left by a crash
            elif holder.stale:
                if force_unlock is not None and force_unlock == holder.run_id:
                    takeover = True
                else:
                    raise LockHeld(
                        f"target {self.target!r} has a stale lock of run {holder.run_id} (pid {holder.pid} on"
                        f" {holder.host} is gone); take it over with --force-unlock {holder.run_id}",
                        holder.run_id,
                    )
            if not takeover:
                if (
                    force_unlock is not None
                    and force_unlock == holder.run_id
                    and holder.host != socket.gethostname()
                ):
                    takeover = True
                else:
                    raise LockHeld(
                        f"target {self.target!r} is locked by run {holder.run_id} (pid {holder.pid} on"
                        f" {holder.host}, since {holder.started})",
                        holder.run_id,
                    )
            logger.warning("taking over the lock of run {} on target {}", holder.run_id, self.target)
            self.path.unlink(missing_ok=True)
        raise LockHeld(f"could not take the lock of target {self.target!r}", "<unknown>")

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(), "started": now_iso()}
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        self.held = True
        return True

    def release(self) -> None:
        if not self.held:
            return
        holder = read_lock(self.target)
        if holder is not None and holder.run_id == self.run_id:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False

    def __enter__(self) -> TargetLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
