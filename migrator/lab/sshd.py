"""Per-node sshd (Debian's openssh-server): key-only root login with an sftp subsystem.

Each node has a *holder* process (``sleep infinity``) that owns the node's mount and UTS namespaces: it
sets the hostname and bind-mounts the node's own ``/etc/cni/net.d``, ``/var/lib/cni`` and
``/run/flannel`` and ``/run/migrator``. sshd and the CNI plugins enter those namespaces with ``nsenter``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from migrator.lab import sh

SSHD = "/usr/sbin/sshd"
# host path inside the node -> folder name under the node's dir
NODE_MOUNTS: dict[str, str] = {
    "/etc/cni/net.d": "etc-cni-net.d",
    "/var/lib/cni": "var-lib-cni",
    "/run/flannel": "run-flannel",
    "/run/migrator": "run-migrator",  # fault records (migrator.faults), one folder per node
    "/root": "root",  # its own root home: SSH sessions do not run the host's shell start-up files
}


def make_keys(ssh_dir: Path) -> tuple[Path, Path]:
    """The lab's client key and host key (ed25519). Returns (client private key, host key)."""
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    client = ssh_dir / "id_ed25519"
    host = ssh_dir / "ssh_host_ed25519_key"
    for path, comment in ((client, "migrator-lab"), (host, "migrator-lab-host")):
        if not path.exists():
            sh.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], timeout=20
            )
    auth = ssh_dir / "authorized_keys"
    auth.write_text(client.with_suffix(".pub").read_text())
    auth.chmod(0o600)
    return client, host


def sshd_config(*, listen: str, host_key: Path, authorized_keys: Path, pid_file: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {listen}",
            "Port 22",
            f"HostKey {host_key}",
            f"PidFile {pid_file}",
            f"AuthorizedKeysFile {authorized_keys}",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def holder_argv(netns: str, hostname: str, node_dir: Path, keep: Path | None = None) -> list[str]:
    """The holder: node netns + its own mount/UTS namespaces with the node's bind mounts.

    ``keep`` (the lab's folder) stays visible at its own path inside the node even when a node mount
    hides it: with the default ``MIGRATOR_HOME`` (``~/.local/state/migrator``) the lab lives under
    ``/root``, which the node replaces with its own home. Its argv[0] is ``<netns>-holder`` so that the
    process list names the lab it belongs to."""
    steps: list[str] = []
    for target, sub in NODE_MOUNTS.items():
        src = node_dir / sub
        if keep is not None and keep.is_relative_to(target):
            inner = src / keep.relative_to(target)  # bound in this namespace only (propagation: slave)
            q_inner = shlex.quote(str(inner))
            steps += [f"mkdir -p {q_inner}", f"mount --bind {shlex.quote(str(keep))} {q_inner}"]
            steps.append(f"mount --rbind {shlex.quote(str(src))} {shlex.quote(target)}")
        else:
            steps.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(target)}")
    marker = shlex.quote(f"{netns}-holder")
    script = f"{' && '.join(steps)} && hostname {shlex.quote(hostname)} && exec -a {marker} sleep infinity"
    return [
        "ip",
        "netns",
        "exec",
        netns,
        "unshare",
        "-m",
        "-u",
        "--propagation",
        "slave",
        "bash",
        "-c",
        script,
    ]


def sshd_argv(holder_pid: int, config: Path) -> list[str]:
    return ["nsenter", "-t", str(holder_pid), "-m", "-u", "-n", SSHD, "-D", "-e", "-f", str(config)]


def node_exec_argv(holder_pid: int, argv: list[str]) -> list[str]:
    return ["nsenter", "-t", str(holder_pid), "-m", "-u", "-n", *argv]
