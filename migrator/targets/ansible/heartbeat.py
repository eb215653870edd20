"""Fault leases: migrator touches a heartbeat file on each node once a second, over one plain ``ssh``
process per node that lives as long as migrator does.

The node side is ``touch HB; echo ok; while read -r _; do touch HB; done; rm -f HB``: the file is touched
only when migrator writes a line. When migrator dies (``kill -9``: its pipe closes, ssh sends EOF), is
stopped (``SIGSTOP``: no line comes) or loses its SSH path (a partition that cuts it), the file ages; a
fault's detached timer (``playbooks/library/migrator_fault.py``, :func:`timer_command`) reverts the fault as
soon as the file is older than the fault's lease, or is missing. Fail-safe: whatever stops the heartbeat
ends the fault early; nothing keeps it going.

The ssh command is built from the inventory's variables (``ansible_host``, ``ansible_port``,
``ansible_user``, the private key, ``ansible_ssh_common_args``/``ansible_ssh_extra_args``) with no
connection sharing, batch mode and keepalives, so it does not depend on Ansible's control master.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from loguru import logger

from migrator.errors import StepFailed

HEARTBEAT_DIR = "/run/migrator/heartbeat"
INTERVAL_S = 1.0
START_TIMEOUT_S = 20.0


def heartbeat_path() -> str:
    """This process's heartbeat file on every node (one per migrator process)."""
    return f"{HEARTBEAT_DIR}/{socket.gethostname()}-{os.getpid()}"


def ssh_argv(host: str, hostvars: Mapping[str, Any], remote: str, *, connect_timeout: int = 10) -> list[str]:
    """``ssh`` to ``host`` as Ansible would reach it, running ``remote`` (one string for the shell)."""
    argv = [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "ServerAliveInterval=2",
        "-o",
        "ServerAliveCountMax=2",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
    ]
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if hostvars.get(key):
            argv += shlex.split(str(hostvars[key]))
    keyfile = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
    if keyfile:
        argv += ["-i", os.path.expanduser(str(keyfile))]
    port = hostvars.get("ansible_port") or hostvars.get("ansible_ssh_port")
    if port:
        argv += ["-p", str(port)]
    user = hostvars.get("ansible_user") or hostvars.get("ansible_ssh_user")
    address = str(hostvars.get("ansible_host") or host)
    argv.append(f"{user}@{address}" if user else address)
    argv.append(remote)
    return argv


def remote_loop(path: str, *, become: bool = False) -> str:
    """The node side: touch on every line read, remove the file when migrator's side closes."""
    hb = shlex.quote(path)
    folder = shlex.quote(os.path.dirname(path))
    loop = (
        f"umask 077; mkdir -p {folder} && touch {hb} && echo ok && "
        f"while read -r _; do touch {hb}; done; rm -f {hb}"
    )
    if become:
        return f"sudo -n sh -c {shlex.quote(loop)}"
    return f"sh -c {shlex.quote(loop)}"


class SshHeartbeat:
    """One ssh process per node, a line a second to each from one thread; :meth:`close` ends them."""

    def __init__(self, hostvars: Mapping[str, Mapping[str, Any]], *, interval: float = INTERVAL_S) -> None:
        self.hostvars = hostvars
        self.interval = interval
        self.path = heartbeat_path()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, hosts: Sequence[str], *, become: bool = False, timeout: float = START_TIMEOUT_S) -> str:
        """Heartbeats to every host in ``hosts`` (those already beating are kept); the path on the nodes.
        Raises :class:`StepFailed` naming the node when one cannot be started within ``timeout``."""
        with self._lock:
            new = [h for h in hosts if h not in self._procs or self._procs[h].poll() is not None]
            for host in new:
                self._procs[host] = subprocess.Popen(
                    ssh_argv(host, self.hostvars.get(host, {}), remote_loop(self.path, become=become)),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                self._lost.discard(host)
        deadline = time.monotonic() + timeout
        for host in new:
            self._await_ok(host, deadline)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="fault-heartbeat", daemon=True)
                self._thread.start()
        return self.path

    def _await_ok(self, host: str, deadline: float) -> None:
        proc = self._procs[host]
        assert proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            if proc.poll() is not None or left <= 0:
                dead = proc.poll() is not None and proc.stderr is not None
                err = proc.stderr.read().decode(errors="replace").strip() if dead and proc.stderr else ""
                self._kill(host)
                why = err.splitlines()[-1] if err else f"no answer within {START_TIMEOUT_S:g}s"
                raise StepFailed(f"fault heartbeat to node {host} could not start: {why}", node=host)
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            if ready:
                line = proc.stdout.readline()
                if line.strip() == b"ok":
                    return

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                procs = list(self._procs.items())
            for host, proc in procs:
                if proc.poll() is not None or proc.stdin is None:
                    self._note_lost(host)
                    continue
                try:
                    proc.stdin.write(b".\n")
                    proc.stdin.flush()
                except OSError:
                    self._note_lost(host)

    def _note_lost(self, host: str) -> None:
        if host not in self._lost:
            self._lost.add(host)
            logger.warning(
                "fault heartbeat to node {} lost: its leased faults end within their lease (fail-safe)", host
            )

    def _kill(self, host: str) -> None:
        proc = self._procs.pop(host, None)
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        """End every heartbeat (the nodes remove the file; leased faults still on then end too)."""
        self._stop.set()
        with self._lock:
            for host in list(self._procs):
                self._kill(host)
