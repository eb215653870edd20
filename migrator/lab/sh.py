"""Subprocess helpers for the lab: always a timeout, never ``check=True``, our errors on failure; and
:func:`parallel`, for the per-node work (subprocesses, so threads suffice)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from loguru import logger

from migrator.errors import PermanentError, StepFailed, StepTimeout

DEFAULT_TIMEOUT = 30.0
POOL = 8  # threads of :func:`parallel`

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> Result:
    """Run ``argv``; raise :class:`StepFailed` on a non-zero exit when ``check``."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StepTimeout(f"command timed out after {timeout}s: {' '.join(argv)}") from exc
    except OSError as exc:
        raise PermanentError(f"cannot run {argv[0]}: {exc}") from exc
    res = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and not res.ok:
        detail = (res.stderr or res.stdout).strip()
        raise StepFailed(f"command failed (rc={res.rc}): {' '.join(argv)}: {detail[:2000]}", detail=detail)
    return res


def ip_batch(
    lines: Sequence[str], *, netns: str | None = None, force: bool = False, timeout: float = 30.0
) -> Result:
    """Run many ``ip`` commands in one process (``ip [-n NS] -batch -``)."""
    if not lines:
        return Result((), 0, "", "")
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    return run(argv, input="\n".join(lines) + "\n", timeout=timeout, check=not force)


def spawn(argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a long-running process detached from us (own session), output to ``log``; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=dict(env) if env is not None else None,
            )
        except OSError as exc:
            raise PermanentError(f"cannot start {argv[0]}: {exc}") from exc
    # Keep a reference so Python reaps it if it dies while we still run.
    _CHILDREN[proc.pid] = proc
    logger.debug("spawned pid {} : {}", proc.pid, " ".join(argv))
    return proc.pid


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_time(pid: int) -> int | None:
    """The process start time (clock ticks since boot), or ``None`` if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None = None) -> bool:
    if not pid:
        return False
    st = start_time(pid)
    if st is None:
        return False
    return start is None or st == start


def cmdlines() -> dict[int, str]:
    """pid -> command line (NULs as spaces) of every process but this one, from one ``/proc`` scan
    (zombies and kernel threads have an empty one)."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            found[int(entry.name)] = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
    return found


def reap(pid: int) -> None:
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            _CHILDREN[pid] = proc
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def kill(pids: Sequence[tuple[int, int | None]], *, timeout: float = 3.0) -> list[int]:
    """SIGKILL each (pid, start_time) still alive and wait until gone; return pids that survived."""
    targets = [(p, s) for p, s in pids if alive(p, s)]
    for pid, _ in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    left = [p for p, _ in targets]
    while left and time.monotonic() < deadline:
        for p in left:
            reap(p)
        left = [p for p in left if alive(p)]
        if left:
            time.sleep(0.02)
    return left


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(i) for i in items]``, on up to :data:`POOL` threads (the lab's per-node work is subprocesses)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(POOL, len(items))) as pool:
        return list(pool.map(fn, items))
