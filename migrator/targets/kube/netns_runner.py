"""The probe runner of the ``migrator-probe-netns`` DaemonSet: NetworkPolicy probes from INSIDE the source
pod's network namespace (standard library only; shipped in the ``migrator-probe-agent`` ConfigMap next to
``agent.py`` and ``runner.py`` and started as ``python /opt/migrator-probe/netns_runner.py``).

Why: a NetworkPolicy's egress rules apply to the packets of the pods it selects, and a destination's
ingress rules look at the source pod's IP. A probe sent from the probe pod (its own IP and labels) or from
the host network is judged by other rules than the source pod's: the verdict would be wrong. So each probe
of kind ``policy`` must leave from the source pod's own network namespace, with its IP.

How (the standard way of node-level network debuggers): this DaemonSet runs privileged with ``hostPID``,
so the node's processes are visible in ``/proc``. migrator puts the source pod's UID in each target
(``source_pod_uid``); before a round runs, this runner maps pod UIDs to a process of the pod by scanning
``/proc/<pid>/cgroup``: the kubelet puts every container of a pod (the sandbox "pause" process included)
under a cgroup named after the pod UID (``.../pod<uid>/...`` with the cgroupfs driver,
``...-pod<uid_with_underscores>.slice/...`` with the systemd driver; cgroup v1 and v2 alike). Every
container of a pod shares the sandbox's network namespace, so any of its processes gives
``/proc/<pid>/ns/net``; the agent enters it (``setns``) only to create each probe's socket (see
``agent.py``), so the packets leave with the pod's IP, through its veth, under its policies.

The scan needs no container-runtime socket (containerd, CRI-O and cri-dockerd all follow the kubelet's
cgroup naming), which is why it was preferred to asking the runtime for the sandbox PID
(``crictl inspectp``: a runtime-specific socket mounted into the pod).

Targets whose source cannot be entered get a netns path that does not exist and explains why
(``/proc/migrator:<reason>/ns/net``): the agent reports ``netns: cannot open ...``, a prober error,
never a deny. Reasons: no process of that pod on this node (not running, or a cgroup layout that does
not name the pod), or the pod is on the host network (NetworkPolicy does not apply to host-network pods).

The rest is the runner's (``runner.py``, unchanged): rounds through ConfigMaps, results in the log. This
file only wraps its round function to resolve the targets first.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

try:  # inside the package
    from migrator.probe.k8s import runner
except ImportError:  # in the pod: runner.py and agent.py sit next to this file
    import runner  # type: ignore[import-not-found, no-redef]

UID_KEY = "source_pod_uid"
PROC_ENV = "MIGRATOR_PROBE_PROC"  # where the node's /proc is (tests point it at a tree they build)
MAX_PIDS = 200_000  # bound the scan

_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)"
)


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pod_processes(proc: str = "/proc") -> dict[str, int]:
    """Pod UID -> the lowest PID of a process of that pod (usually its sandbox), from the cgroups."""
    found: dict[str, int] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    pids = sorted(int(e) for e in entries if e.isdigit())[:MAX_PIDS]
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
                text = f.read(65536)
        except OSError:
            continue  # gone, or not ours to read
        match = _POD_UID.search(text)
        if match:
            uid = match.group(1).replace("_", "-")
            found.setdefault(uid, pid)
    return found


def resolve(
    targets: Iterable[Mapping[str, Any]], pids: Mapping[str, int], proc: str = "/proc"
) -> list[dict[str, Any]]:
    """The targets, each with ``source_pod_uid`` turned into the ``netns`` the agent enters."""
    host = _netns_inode(f"{proc}/1/ns/net")
    out: list[dict[str, Any]] = []
    for raw in targets:
        target = dict(raw)
        uid = target.pop(UID_KEY, None)
        if uid is not None:
            pid = pids.get(str(uid))
            path = f"{proc}/{pid}/ns/net" if pid is not None else ""
            inode = _netns_inode(path) if path else None
            if pid is None or inode is None:
                path = f"{proc}/migrator:no-process-of-pod-{uid}-on-this-node/ns/net"
            elif host is not None and inode == host:
                path = f"{proc}/migrator:pod-{uid}-is-on-the-host-network/ns/net"
            target["netns"] = path
        out.append(target)
    return out


def resolving(run_round: Callable[..., int], proc: str = "/proc") -> Callable[..., int]:
    """``runner.run_round`` with the round's targets resolved first (one /proc scan per round)."""

    def run(spec: dict[str, Any], *args: Any, **kwargs: Any) -> int:
        targets = spec.get("targets") or []
        if any(UID_KEY in t for t in targets):
            spec = {**spec, "targets": resolve(targets, pod_processes(proc), proc)}
        return run_round(spec, *args, **kwargs)

    return run


def main(argv: Iterable[str] | None = None) -> int:
    proc = os.environ.get(PROC_ENV, "/proc")
    runner.run_round = resolving(runner.run_round, proc)  # the rounds _Rounds starts go through it
    return runner.main(argv)


if __name__ == "__main__":
    sys.exit(main())
