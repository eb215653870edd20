"""Getting into a lab: the argv that runs a command inside a node, a pod, ``outside`` or the fabric, and the
network namespace of every probe source."""

from __future__ import annotations

from collections.abc import Sequence

from migrator.errors import UsageError
from migrator.lab import net, sh, sshd
from migrator.lab.state import LabState, PodPhase


def resolve_target(st: LabState, target: str) -> tuple[str, str]:
    """``(kind, id)`` for a node, ``outside``, ``fabric``, a pod key, a pod name or a unique prefix."""
    if target in st.nodes:
        return "node", target
    if target in ("outside", "fabric"):
        return target, target
    if target in st.pods:
        return "pod", target
    matches = [k for k, p in st.pods.items() if p.name == target] or [
        k for k, p in st.pods.items() if p.name.startswith(target) or k.startswith(target)
    ]
    if len(matches) == 1:
        return "pod", matches[0]
    if not matches:
        raise UsageError(f"no node or pod {target!r} in lab {st.spec.name!r}")
    raise UsageError(f"{target!r} matches several pods: {', '.join(sorted(matches))}")


def exec_argv(st: LabState, target: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``target`` (see :func:`resolve_target`): a node's mount, UTS and network
    namespaces (through its holder, like sshd), else the target's network namespace."""
    kind, ident = resolve_target(st, target)
    if kind == "node":
        n = st.nodes[ident]
        if n.holder_pid and sh.alive(n.holder_pid):
            return sshd.node_exec_argv(n.holder_pid, list(argv))
        return net.exec_argv(n.netns, argv)
    if kind == "outside":
        return net.exec_argv(st.outside_netns, argv)
    if kind == "fabric":
        return net.exec_argv(st.fabric_netns, argv)
    p = st.pods[ident]
    if p.host_network:
        return exec_argv(st, p.node, argv)
    if not p.netns:
        raise UsageError(f"pod {ident} has no network namespace ({p.phase}: {p.message})")
    return net.exec_argv(p.netns, argv)


def netns_map(st: LabState) -> dict[str, str]:
    """Netns path for every exec target: pod keys, node names and ``outside``."""
    out = {n.name: net.netns_path(n.netns) for n in st.nodes.values()}
    out["outside"] = net.netns_path(st.outside_netns)
    for p in st.pods.values():
        if p.host_network:
            out[p.key] = out[p.node]
        elif p.netns and p.phase == PodPhase.RUNNING:
            out[p.key] = net.netns_path(p.netns)
    return out
