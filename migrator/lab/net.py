"""Network namespaces and links, mostly through batched ``ip`` so that one process does many changes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from migrator.lab import sh
from migrator.lab.state import Capability

NETNS_DIR = Path("/run/netns")
NETNS_ETC = Path("/etc/netns")  # per-namespace files bind-mounted by `ip netns exec` (a pod's resolv.conf)


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` in ``netns`` (``ip netns exec`` also bind-mounts ``/etc/netns/<ns>/*``)."""
    return ["ip", "netns", "exec", netns, *argv]


def create_netns(names: Sequence[str]) -> None:
    """Create namespaces in one ``ip -batch`` and bring their loopback up."""
    existing = set(list_netns())
    todo = [n for n in names if n not in existing]
    sh.ip_batch([f"netns add {n}" for n in todo])
    for n in todo:
        sh.ip_batch(["link set lo up"], netns=n)


def delete_netns(names: Sequence[str]) -> None:
    existing = set(list_netns())
    todo = [n for n in names if n in existing]
    if todo:
        sh.ip_batch([f"netns del {n}" for n in todo], force=True)


def list_netns() -> list[str]:
    res = sh.run(["ip", "-j", "netns", "list"], check=False, timeout=10)
    if not res.ok or not res.stdout.strip():
        return []
    return [str(entry["name"]) for entry in json.loads(res.stdout)]


def netns_pids(name: str) -> list[int]:
    res = sh.run(["ip", "netns", "pids", name], check=False, timeout=10)
    return [int(x) for x in res.stdout.split() if x.isdigit()]


def host_links() -> list[str]:
    res = sh.run(["ip", "-j", "link", "show"], check=False, timeout=10)
    if not res.ok:
        return []
    return [str(entry["ifname"]) for entry in json.loads(res.stdout)]


def link_addrs(netns: str, dev: str) -> list[str] | None:
    """The IPv4 addresses (``ip/len``) of ``dev`` in ``netns``; ``None`` when there is no such link."""
    res = sh.run(["ip", "-n", netns, "-j", "-4", "addr", "show", "dev", dev], check=False, timeout=10)
    if not res.ok:
        return None
    entries = json.loads(res.stdout or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for e in entries for a in e.get("addr_info", []) if "local" in a]


def listening(pid: int, port: int, udp: bool = False) -> bool:
    """Whether the netns of ``pid`` has a socket listening on ``port`` (from /proc/<pid>/net)."""
    hexport = f"{port:04X}"
    for name in ("udp",) if udp else ("tcp",):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            return False
        for line in lines:
            parts = line.split()
            if parts[1].endswith(":" + hexport) and (udp or parts[3] == "0A"):
                return True
    return False


def sysctl_argv(netns: str, settings: dict[str, str]) -> list[str]:
    return exec_argv(netns, ["sysctl", "-q", "-w", *[f"{k}={v}" for k, v in settings.items()]])


# ------------------------------------------------------------------------------------- capabilities

_PROBES: list[tuple[str, list[str], str]] = [
    ("veth", ["ip", "link", "add", "cv0", "type", "veth", "peer", "name", "cv1"], ""),
    ("bridge", ["ip", "link", "add", "cb0", "type", "bridge"], ""),
    (
        "vxlan",
        ["ip", "link", "add", "cx0", "type", "vxlan", "id", "7", "dstport", "8472", "local", "127.0.0.1"],
        "",
    ),
    (
        "dummy",
        ["ip", "link", "add", "cd0", "type", "dummy"],
        "no dummy links: the lab uses veth/bridge instead",
    ),
    (
        "ipip",
        ["ip", "link", "add", "ci0", "type", "ipip", "local", "127.0.0.1", "remote", "127.0.0.2"],
        "no IPIP tunnels: Calico IPIP mode cannot be emulated (use VXLAN or BGP)",
    ),
    (
        "netem",
        ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        "no netem: latency/loss/reorder injection is unavailable (tbf/htb rate limits are)",
    ),
    (
        "tbf",
        [
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "tbf",
            "rate",
            "1mbit",
            "burst",
            "32kbit",
            "latency",
            "50ms",
        ],
        "",
    ),
    (
        "ipvs",
        ["cat", "/proc/net/ip_vs"],
        "no IPVS: kube-proxy runs in iptables mode only",
    ),
    (
        "iptables-statistic",
        [
            "sh",
            "-c",
            "iptables -t nat -N CAPS && iptables -t nat -A CAPS -m statistic --mode random "
            "--probability 0.5 -m comment --comment caps -j RETURN",
        ],
        "iptables statistic/comment matches are needed for kube-proxy's endpoint selection",
    ),
    (
        "sctp",
        [
            "python3",
            "-I",
            "-S",
            "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)",
        ],
        "no SCTP sockets in this kernel: NetworkPolicy SCTP ports are not programmed (reported unsupported)",
    ),
    (
        "ipset",
        ["ipset", "create", "capsset", "hash:net", "family", "inet"],
        "no ipset: the lab's NetworkPolicy agent cannot program selected pods and ipBlocks",
    ),
    (
        "br-netfilter",
        ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"],
        "bridged traffic bypasses iptables",
    ),
]


def detect_capabilities(netns: str) -> list[Capability]:
    """Try each kernel feature in the throwaway namespace ``netns`` (created and deleted here)."""
    create_netns([netns])
    try:

        def probe(item: tuple[str, list[str], str]) -> Capability:
            name, argv, hint = item
            res = sh.run(exec_argv(netns, argv), check=False, timeout=10)
            detail = "" if res.ok else (hint or (res.stderr.strip().splitlines() or ["failed"])[-1])
            return Capability(name=name, available=res.ok, detail=detail)

        # tc probes share "lo": run netem and tbf in order; the rest in parallel.
        ordered = [p for p in _PROBES if p[0] not in ("netem", "tbf")]
        with ThreadPoolExecutor(max_workers=4) as pool:
            caps = list(pool.map(probe, ordered))
        for item in _PROBES:
            if item[0] in ("netem", "tbf"):
                caps.append(probe(item))
                sh.run(exec_argv(netns, ["tc", "qdisc", "del", "dev", "lo", "root"]), check=False, timeout=5)
        order = [p[0] for p in _PROBES]
        return sorted(caps, key=lambda c: order.index(c.name))
    finally:
        delete_netns([netns])
