"""A throw-away "cluster" of network namespaces for probe tests and the benchmark.

Everything lives in 198.19.10.0/24 behind one bridge inside its own namespace (``PREFIX-br``); the host
namespace gets no interface, no address and no route. Names all start with ``PREFIX-`` (``pbt`` for the
tests, ``pbtb`` for the benchmark).

- nodes ``n0..``: netns ``PREFIX-nI``, address .10+I; NodePort DNAT + masquerade (iptables, as kube-proxy)
- pods ``default/web-I-J``: netns ``PREFIX-pI-J``, address .64+k, HTTP on :8080; pod J == 0 also has a
  "sidecar" on 127.0.0.1:8081 (two ports: container-to-container)
- services ``svc-I`` -> pod ``web-I-0``: ClusterIP .200+I:80 (DNAT in every pod's OUTPUT), NodePort 30000+I
- ``kube-system/kube-dns``: dnsmasq in ``PREFIX-dns`` at .3, answering ``svc-I.default.svc.cluster.local``
- ``outside``: netns ``PREFIX-out`` at .2
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pbt_fakes import FakeCluster

from migrator.ports import Node, Pod, Service, ServicePort

NET = "198.19.10"
HTTPD = Path(__file__).with_name("pbt_httpd.py")
POD_PORT = 8080
SIDECAR_PORT = 8081
SERVICE_PORT = 80
NODEPORT_BASE = 30000


STALE = re.compile(r"^pbtb?(\d+)-")


def session_prefix(base: str = "pbt") -> str:
    """A prefix of our own (``pbt<PID>``): concurrent sessions never share or sweep each other's objects."""
    return f"{base}{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(cmd: list[str], stdin: str | None = None, timeout: float = 30.0) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def netns_names() -> list[str]:
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@dataclass
class Fabric:
    prefix: str = "pbt"
    nodes: int = 2
    pods_per_node: int = 2
    lifetime: float = 300.0
    resolv_conf: bool = True
    created: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    netns: dict[str, str] = field(default_factory=dict)  # probe source -> netns path
    pod_ns: dict[str, str] = field(default_factory=dict)  # pod key -> netns name
    node_ns: dict[str, str] = field(default_factory=dict)  # node name -> netns name
    pod_objs: list[Pod] = field(default_factory=list)
    node_objs: list[Node] = field(default_factory=list)
    service_objs: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.prefix.startswith("pbt"):
            raise ValueError("probe fixtures use the pbt prefix only")
        if self.nodes > 40 or self.nodes * self.pods_per_node > 128:
            raise ValueError("fabric too big for 198.19.10.0/24")

    # ----------------------------------------------------------------------------------- names

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    @property
    def dns_ns(self) -> str:
        return f"{self.prefix}-dns"

    @property
    def outside_ns(self) -> str:
        return f"{self.prefix}-out"

    @property
    def dns_ip(self) -> str:
        return f"{NET}.3"

    @property
    def cluster(self) -> FakeCluster:
        return FakeCluster(self.node_objs, self.pod_objs, self.service_objs, name=self.prefix)

    def pod(self, key: str) -> Pod:
        return next(p for p in self.pod_objs if p.key == key)

    # ----------------------------------------------------------------------------------- build

    def _plan(self) -> list[tuple[str, str]]:
        """(netns, address) of every member of the bridge."""
        members = [(self.outside_ns, f"{NET}.2"), (self.dns_ns, self.dns_ip)]
        k = 0
        for i in range(self.nodes):
            node = f"n{i}"
            ns = f"{self.prefix}-n{i}"
            self.node_ns[node] = ns
            self.node_objs.append(Node(name=node, address=f"{NET}.{10 + i}", pod_cidr=f"{NET}.0/24"))
            members.append((ns, f"{NET}.{10 + i}"))
            for j in range(self.pods_per_node):
                pns = f"{self.prefix}-p{i}-{j}"
                ip = f"{NET}.{64 + k}"
                k += 1
                ports = (POD_PORT, SIDECAR_PORT) if j == 0 else (POD_PORT,)
                pod = Pod(
                    name=f"web-{i}-{j}",
                    namespace="default",
                    node=node,
                    ip=ip,
                    ports=ports,
                    labels={"app": f"web-{i}-{j}"},
                )
                self.pod_objs.append(pod)
                self.pod_ns[pod.key] = pns
                members.append((pns, ip))
            ep = self.pod(f"default/web-{i}-0")
            self.service_objs.append(
                Service(
                    name=f"svc-{i}",
                    namespace="default",
                    cluster_ip=f"{NET}.{200 + i}",
                    ports=(
                        ServicePort(port=SERVICE_PORT, target_port=POD_PORT, node_port=NODEPORT_BASE + i),
                    ),
                    selector=dict(ep.labels),
                    endpoints=(f"{ep.ip}:{POD_PORT}",),
                )
            )
        self.service_objs.append(
            Service(
                name="kube-dns",
                namespace="kube-system",
                cluster_ip=self.dns_ip,
                ports=(ServicePort(port=53, target_port=53, protocol="UDP", name="dns"),),
            )
        )
        for key, ns in {**self.pod_ns, **self.node_ns, "outside": self.outside_ns}.items():
            self.netns[key] = f"/var/run/netns/{ns}"
        return members

    def sweep(self) -> None:
        """Remove leftovers: namespaces with our own prefix, and ``pbt<PID>-*`` / ``pbtb<PID>-*`` ones
        whose process is gone (a crashed earlier session). A live session's fabric is never touched."""
        for name in netns_names():
            m = STALE.match(name)
            stale = m is not None and not _alive(int(m.group(1)))
            if name.startswith(f"{self.prefix}-") or stale:
                subprocess.run(["ip", "netns", "del", name], check=False, timeout=10, capture_output=True)
                shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)

    def up(self) -> Fabric:
        self.sweep()
        members = self._plan()
        names = [self.bridge_ns] + [ns for ns, _ in members]
        for ns in names:
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
        br = ["link add br0 type bridge", "link set br0 up", "link set lo up"]
        macs = [f"02:19:10:00:{idx // 256:02x}:{idx % 256:02x}" for idx in range(len(members))]
        for idx, (ns, _ip) in enumerate(members):
            br.append(f"link add v{idx} type veth peer name eth0 address {macs[idx]} netns {ns}")
            br.append(f"link set v{idx} master br0 up")
        run(["ip", "-n", self.bridge_ns, "-batch", "-"], stdin="\n".join(br) + "\n")
        # a plain L2 switch: bridged frames skip the bridge namespace's netfilter hooks (as the lab's fabric)
        run(
            [
                "ip",
                "netns",
                "exec",
                self.bridge_ns,
                "sysctl",
                "-qw",
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-arptables=0",
                "net.bridge.bridge-nf-call-ip6tables=0",
            ]
        )
        for idx, (ns, ip) in enumerate(members):
            # Permanent neighbours: no ARP at all. The kernel's ARP table is shared by every namespace
            # (gc_thresh3 = 1024 entries in all), and a full mesh of 42 members would overflow it for
            # everyone on the machine; permanent entries do not count against it.
            neigh = [
                f"neigh replace {other_ip} lladdr {macs[j]} dev eth0 nud permanent"
                for j, (_o, other_ip) in enumerate(members)
                if j != idx
            ]
            cmds = ["link set lo up", f"addr add {ip}/24 dev eth0", "link set eth0 up", *neigh]
            run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(cmds) + "\n")
        self._iptables()
        self._dns()
        self._servers()
        return self

    def _iptables(self) -> None:
        svc = [s for s in self.service_objs if s.namespace == "default"]
        pod_rules = (
            ["*nat"]
            + [
                f"-A OUTPUT -d {s.cluster_ip}/32 -p tcp --dport {SERVICE_PORT} "
                f"-j DNAT --to-destination {s.endpoints[0]}"
                for s in svc
            ]
            + ["COMMIT", ""]
        )
        node_rules = (
            ["*nat"]
            + [
                f"-A PREROUTING -p tcp --dport {s.ports[0].node_port} "
                f"-j DNAT --to-destination {s.endpoints[0]}"
                for s in svc
            ]
            + ["-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE", "COMMIT", ""]
        )
        for ns in self.pod_ns.values():
            run(["ip", "netns", "exec", ns, "iptables-restore"], stdin="\n".join(pod_rules))
        for ns in self.node_ns.values():
            run(["ip", "netns", "exec", ns, "iptables-restore"], stdin="\n".join(node_rules))
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.send_redirects=0",
                    "net.ipv4.conf.eth0.send_redirects=0",
                ]
            )
        if self.resolv_conf:
            for ns in self.pod_ns.values():
                d = Path(f"/etc/netns/{ns}")
                d.mkdir(parents=True, exist_ok=True)
                (d / "resolv.conf").write_text(
                    f"nameserver {self.dns_ip}\nsearch default.svc.cluster.local\n"
                )

    def _dns(self) -> None:
        records = [
            f"--host-record={s.dns_name},{s.cluster_ip}"
            for s in self.service_objs
            if s.namespace == "default"
        ]
        cmd = [
            "ip",
            "netns",
            "exec",
            self.dns_ns,
            "timeout",
            str(int(self.lifetime)),
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            f"--listen-address={self.dns_ip}",
            "--except-interface=lo",
            "--pid-file=",
            "--user=root",
            "--local=/cluster.local/",
            "--log-facility=-",
            "--cache-size=0",
            *records,
        ]
        self.procs["dnsmasq"] = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )

    def _servers(self) -> None:
        for key, ns in self.pod_ns.items():
            self.start_server(key, ns)
        deadline = time.monotonic() + 20
        for key in self.pod_ns:
            self._wait_ready(key, deadline)
        # dnsmasq: give it a moment to bind
        for _ in range(50):
            out = run(["ip", "netns", "exec", self.dns_ns, "ss", "-Hlun"])
            if f"{self.dns_ip}:53" in out:
                break
            time.sleep(0.1)

    def start_server(self, key: str, ns: str | None = None) -> None:
        ns = ns or self.pod_ns[key]
        pod = self.pod(key)
        extra = [f"--local-port={p}" for p in pod.ports[1:]]
        cmd = [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            str(HTTPD),
            f"--name={key}",
            f"--port={POD_PORT}",
            f"--lifetime={self.lifetime}",
            *extra,
        ]
        self.procs[key] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def _wait_ready(self, key: str, deadline: float) -> None:
        proc = self.procs[key]
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.1, deadline - time.monotonic()))
        if not ready or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server of {key} did not start")

    def stop_server(self, key: str) -> None:
        proc = self.procs.pop(key)
        proc.terminate()
        proc.wait(5)

    def iptables(self, ns: str, *args: str) -> None:
        if not ns.startswith(f"{self.prefix}-"):
            raise ValueError(f"{ns} is not ours")
        run(["ip", "netns", "exec", ns, "iptables", *args])

    def down(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(OSError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout:
                proc.stdout.close()
        self.procs.clear()
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10, capture_output=True)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        self.created.clear()


def rss_mb(pid: int | None = None, field: str = "VmRSS") -> float:
    """Resident set size (``VmHWM`` for the peak) of a process, in MiB."""
    with open(f"/proc/{pid or os.getpid()}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0
