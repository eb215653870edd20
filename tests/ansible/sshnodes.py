"""A throw-away farm of SSH "nodes" for the Ansible executor tests and bench.

Each node is a network namespace ``<prefix>-n<i>`` with ``eth0`` on a bridge in the fabric namespace
``<prefix>-fab``, running Debian's ``/usr/sbin/sshd`` (key-only, root) inside its own mount and UTS
namespaces: ``/etc`` is an overlay (the node's writes, e.g. ``/etc/cni/net.d``, stay in the node's folder),
``/run`` is a tmpfs and ``/root`` is the node's own empty home (so the host's shell start-up files do not
run in every SSH session); the hostname is the node name. The host reaches the fabric through the veth
``<prefix>h0`` with ``<net>.1/24``; that connected /24 is the only route this module adds to the host.

Swap this module for the lab (``migrator lab up``) once it is merged: tests only use ``inventory``,
``nodes``, ``stop_sshd``/``start_sshd`` and ``node_exec`` (the ``NodeSet`` protocol).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from migrator.lab import sh

TIMEOUT = 20.0


def _run(
    argv: list[str], *, check: bool = True, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class NodeSet(Protocol):
    """What the executor tests need from a set of SSH nodes: this farm today, the lab later."""

    inventory: Path  # host names == node names

    def stop_sshd(self, name: str) -> None: ...

    def start_sshd(self, name: str) -> None: ...

    def node_exec(self, name: str, argv: list[str], *, timeout: float = ...) -> str: ...


@dataclass
class SshNode:
    name: str
    address: str
    netns: str
    folder: Path
    anchor_pid: int = 0


class SshNodeFarm:
    """``count`` SSH nodes on ``<net>.0/24`` (default 198.19.20.0/24), names ``<prefix>-n1`` ..."""

    def __init__(self, count: int = 3, *, prefix: str = "ans", net: str = "198.19.20") -> None:
        if not 1 <= count <= 200:
            raise ValueError("count must be in 1..200")
        self.count = count
        self.prefix = prefix
        self.net = net
        self.fabric = f"{prefix}-fab"
        self.host_if = f"{prefix}h0"
        self.folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-farm-"))
        self.key = self.folder / "id_ed25519"
        self.inventory = self.folder / "inventory.ini"
        self.nodes: dict[str, SshNode] = {}
        self._anchors: list[subprocess.Popen[bytes]] = []
        self._lock_fd: int | None = None
        for i in range(1, count + 1):
            name = f"{prefix}-n{i}"
            self.nodes[name] = SshNode(name, f"{net}.{10 + i}", name, self.folder / name)

    # ------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SshNodeFarm:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        self._lock()
        self._cleanup_leftovers()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.folder / "host_key")])
        _run(["ip", "netns", "add", self.fabric])
        _run(["ip", "-n", self.fabric, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.fabric, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.fabric, "link", "set", "br0", "up"])
        # host side
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "hp", "netns", self.fabric])
        _run(["ip", "-n", self.fabric, "link", "set", "hp", "master", "br0", "up"])
        _run(["ip", "addr", "add", f"{self.net}.1/24", "dev", self.host_if])
        _run(["ip", "link", "set", self.host_if, "up"])
        for i, node in enumerate(self.nodes.values(), start=1):
            self._node_up(i, node)
        self._write_inventory()
        self._wait_ssh(list(self.nodes))

    def _node_up(self, i: int, node: SshNode) -> None:
        node.folder.mkdir()
        for sub in ("etc-upper", "etc-work", "root", "cni-net.d"):
            (node.folder / sub).mkdir()
        _run(["ip", "netns", "add", node.netns])
        _run(["ip", "-n", node.netns, "link", "set", "lo", "up"])
        _run(
            [
                "ip",
                "link",
                "add",
                f"p{i}",
                "netns",
                self.fabric,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                node.netns,
            ]
        )
        _run(["ip", "-n", self.fabric, "link", "set", f"p{i}", "master", "br0", "up"])
        _run(["ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0"])
        _run(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
        (node.folder / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (node.folder / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {node.address}",
                    "Port 22",
                    f"HostKey {self.folder / 'host_key'}",
                    f"PidFile {node.folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {node.folder / 'authorized_keys'}",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UseDNS no",
                    "MaxStartups 200",
                    "MaxSessions 200",
                    "LogLevel ERROR",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        # An anchor process holds the node's mount namespace (overlay /etc, tmpfs /run), so that sshd can be
        # stopped and started again while the node's files survive. /etc/cni/net.d is also bind-mounted from
        # the node's folder: others may create or delete the host's /etc/cni (the overlay's lower layer) while
        # the farm is up, and overlayfs does not define what the merged view shows then.
        script = (
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={node.folder}/etc-upper,"
            f"workdir={node.folder}/etc-work /etc && mount -t tmpfs -o mode=755 tmpfs /run && "
            f"mount --bind {node.folder}/root /root && hostname {node.name} && "
            f"mkdir -p /run/sshd /etc/cni/net.d && mount --bind {node.folder}/cni-net.d /etc/cni/net.d && "
            "exec sleep infinity"
        )
        anchor = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                node.netns,
                "unshare",
                "-m",
                "-u",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._anchors.append(anchor)
        node.anchor_pid = anchor.pid
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                cmdline = Path(f"/proc/{anchor.pid}/cmdline").read_bytes()
            except FileNotFoundError:
                cmdline = b""
            if cmdline.startswith(b"sleep"):
                break
            if anchor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"anchor of {node.name} did not start (rc={anchor.poll()})")
            time.sleep(0.02)
        self.start_sshd(node.name, wait=False)

    def _write_inventory(self) -> None:
        names = list(self.nodes)
        lines = [
            "[control_plane]",
            names[0],
            "",
            "[workers]",
            *names[1:],
            "",
            "[nodes:children]",
            "control_plane",
            "workers",
            "",
            "[all:vars]",
            "ansible_user=root",
            f"ansible_ssh_private_key_file={self.key}",
            "ansible_python_interpreter=/usr/bin/python3",
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
            "",
            "[all]",
        ]
        lines += [f"{n.name} ansible_host={n.address}" for n in self.nodes.values()]
        self.inventory.write_text("\n".join(lines) + "\n")

    def down(self) -> None:
        if self._lock_fd is None:  # never brought up (or another farm holds the prefix): touch nothing
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        self._kill_netns_processes(*(n.netns for n in self.nodes.values()), include_anchor=True)
        for anchor in self._anchors:
            try:
                anchor.wait(timeout=5)
            except subprocess.TimeoutExpired:
                anchor.kill()
                anchor.wait(timeout=5)
        for node in self.nodes.values():
            _run(["ip", "netns", "del", node.netns], check=False)
        _run(["ip", "link", "del", self.host_if], check=False)
        _run(["ip", "netns", "del", self.fabric], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock(self, wait: float = 900.0) -> None:
        """One farm per prefix at a time on this host (tests and bench wait for each other)."""
        fd = os.open(f"/tmp/{self.prefix}-farm.lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(f"another {self.prefix} farm is still up after {wait:g}s") from None
                time.sleep(0.5)
        self._lock_fd = fd

    def _cleanup_leftovers(self) -> None:
        """Remove this prefix's objects left by a crashed earlier run (never anything else)."""
        listed = _run(["ip", "netns", "list"], check=False).stdout.split("\n")
        stale = [line.split()[0] for line in listed if line.startswith(f"{self.prefix}-")]
        for ns in stale:
            self._kill_netns_processes(ns, include_anchor=True)
            _run(["ip", "netns", "del", ns], check=False)
        if Path(f"/sys/class/net/{self.host_if}").exists():
            _run(["ip", "link", "del", self.host_if], check=False)

    # ------------------------------------------------------------------------------------------- sshd

    def start_sshd(self, name: str, *, wait: bool = True) -> None:
        node = self.nodes[name]
        _run(
            [
                "nsenter",
                "-t",
                str(node.anchor_pid),
                "-m",
                "-n",
                "-u",
                "/usr/sbin/sshd",
                "-f",
                str(node.folder / "sshd_config"),
            ]
        )
        if wait:
            self._wait_ssh([name])

    def stop_sshd(self, name: str) -> None:
        """Stop sshd and every SSH session on the node, as if the node's sshd were down."""
        self._kill_netns_processes(self.nodes[name].netns, include_anchor=False)

    def _kill_netns_processes(self, *netns: str, include_anchor: bool) -> None:
        anchors = set() if include_anchor else {n.anchor_pid for n in self.nodes.values()}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [
                int(p) for ns in netns for p in _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            ]
            pids = [p for p in pids if p not in anchors]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and any(sh.alive(p) for p in pids):
                time.sleep(0.02)
                for anchor in self._anchors:  # reap our own children (the anchors)
                    anchor.poll()

    def _wait_ssh(self, names: list[str]) -> None:
        for name in names:
            node = self.nodes[name]
            deadline = time.monotonic() + TIMEOUT
            while True:
                proc = _run(
                    [
                        "ssh",
                        "-i",
                        str(self.key),
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "ConnectTimeout=2",
                        "-o",
                        "LogLevel=ERROR",
                        f"root@{node.address}",
                        "true",
                    ],
                    check=False,
                )
                if proc.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ssh to {name} ({node.address}) not ready: {proc.stderr.strip()}")
                time.sleep(0.1)

    # ----------------------------------------------------------------------------------------- node state

    def node_exec(self, name: str, argv: list[str], *, timeout: float = TIMEOUT) -> str:
        """Run ``argv`` in the node's network and mount namespaces (not over SSH); return stdout."""
        node = self.nodes[name]
        proc = _run(["nsenter", "-t", str(node.anchor_pid), "-m", "-n", "-u", *argv], timeout=timeout)
        return proc.stdout
