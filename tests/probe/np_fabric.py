"""A throw-away netpol model made of network namespaces, for policy-verification tests and the benchmark.

Namespaces ``np-probe-<PID>-br`` (a bridge) and ``np-probe-<PID>-<ns>-<pod>`` for the 9 pods x/a ... z/c,
each on a veth to the bridge, at 198.18.41.10+i/24 (the host namespace gets no interface, address or
route). Every pod runs one server process: TCP 80 and 81 accept (and close), UDP 80 and 81 echo.
"Enforcement" is iptables in each pod's namespace, INPUT chain: REJECT (``tcp-reset`` /
``icmp-port-unreachable``) or DROP per denied (source, port, protocol), written with ``iptables-restore``.
ICMP rate limiting is off in the pod namespaces (``net.ipv4.icmp_ratelimit=0``) unless asked otherwise:
with the kernel default a pod answers a burst of UDP probes from one source with a few ICMP errors only,
and the rest time out.

The cluster is :meth:`migrator.testing.fake.FakeCluster.netpol` with the pods' IPs set to the fabric's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from migrator.testing.fake import FakeCluster

NET = "198.18.41"
PORTS = (80, 81)
SERVER = """
import select, socket, sys, time
host = sys.argv[1]
tcp, udp = [], []
for port in (80, 81):
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind((host, port))
    t.listen(512); t.setblocking(False); tcp.append(t)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((host, port)); u.setblocking(False)
    udp.append(u)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for s in select.select(tcp + udp, [], [], 0.5)[0]:
        try:
            if s in tcp:
                c, _ = s.accept(); c.close()
            else:
                data, peer = s.recvfrom(2048); s.sendto(data, peer)
        except OSError:
            pass
"""

Key = tuple[str, str, int, str]
"""(source pod key, destination pod key, port, ``tcp``/``udp``)."""


def run(cmd: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")


@dataclass
class NetpolFabric:
    prefix: str = field(default_factory=lambda: f"np-probe-{os.getpid()}")
    lifetime: float = 600.0
    icmp_ratelimit: bool = False
    cluster: FakeCluster = field(default_factory=FakeCluster.netpol)
    netns: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns_of(self, pod: str) -> str:
        return f"{self.prefix}-{pod.replace('/', '-')}"

    def ip_of(self, pod: str) -> str:
        ip = self.cluster.pods[pod].ip
        assert ip is not None
        return ip

    def up(self) -> NetpolFabric:
        bridge = f"{self.prefix}-br"
        self._add_ns(bridge)
        run(["ip", "-n", bridge, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", bridge, "link", "set", "br0", "up"])
        for i, key in enumerate(sorted(self.cluster.pods)):
            ns = self.ns_of(key)
            self._add_ns(ns)
            ip = f"{NET}.{10 + i}"
            run(
                [
                    "ip",
                    "-n",
                    bridge,
                    "link",
                    "add",
                    f"v{i}",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                ]
            )
            run(["ip", "-n", bridge, "link", "set", f"v{i}", "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            if not self.icmp_ratelimit:
                run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])
            self.cluster.set_pod(replace(self.cluster.pods[key], ip=ip))
            self.netns[key] = f"/run/netns/{ns}"
        for key in sorted(self.cluster.pods):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns_of(key), sys.executable, "-c", SERVER, self.ip_of(key),
                 str(self.lifetime)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            self.servers.append(proc)
        deadline = time.monotonic() + 20
        for proc in self.servers:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready" or time.monotonic() > deadline:
                raise RuntimeError(f"a pod server did not start ({line!r})")
        return self

    def _add_ns(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self.created.append(ns)

    def enforce(self, denied: Callable[[Key], bool], *, drop: Iterable[Key] = ()) -> int:
        """Program every pod's INPUT chain: REJECT each denied key (DROP those in ``drop``).

        Returns the number of rules."""
        drops = set(drop)
        rules = 0
        for dst in sorted(self.cluster.pods):
            lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
            for src in sorted(self.cluster.pods):
                if src == dst:
                    continue
                for port in PORTS:
                    for proto in ("tcp", "udp"):
                        key = (src, dst, port, proto)
                        if key in drops:
                            action = "DROP"
                        elif denied(key):
                            reject = "tcp-reset" if proto == "tcp" else "icmp-port-unreachable"
                            action = f"REJECT --reject-with {reject}"
                        else:
                            continue
                        lines.append(
                            f"-A INPUT -s {self.ip_of(src)}/32 -p {proto} --dport {port} -j {action}"
                        )
                        rules += 1
            lines.append("COMMIT")
            run(["ip", "netns", "exec", self.ns_of(dst), "iptables-restore"], stdin="\n".join(lines) + "\n")
        return rules

    def down(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait(5)
        self.servers.clear()
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        self.created.clear()
