"""The lab: ``up``, ``down``, ``status``, ``exec`` and the emulated control plane (labels, drain...)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from migrator import fsutil, paths
from migrator.errors import MigratorError, StepFailed, StepTimeout, UsageError
from migrator.lab import cni, dns, net, services, sh, sshd, workloads
from migrator.lab.agents import NodeAgents, node_cni, parallel
from migrator.lab.spec import (
    POD_NETWORK,
    SERVICE_NETWORK,
    LabSpec,
    host_underlay_ip,
    host_veth,
    lab_prefix,
    netns_name,
    node_name,
    node_pod_cidr,
    node_underlay_ip,
    outside_underlay_ip,
    vtep_ip,
    vtep_mac,
)
from migrator.lab.state import (
    ContainerState,
    LabPhase,
    LabState,
    NodeState,
    PodPhase,
    PodState,
    ResourceKind,
    StateStore,
    Workload,
    lab_dir,
)

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
PYTHON = "/usr/bin/python3"
NETNS_ETC = Path("/etc/netns")
READY_TIMEOUT = 20.0
HOLDER_TIMEOUT = 10.0
SSH_TIMEOUT = 15.0
APISERVER_PORT = 6443
APISERVER_MAX_CONNS = 64
KILL_ROUNDS = 10  # lab down: scan-and-kill rounds until nothing in the lab's namespaces is left
# migrator.faults: the detached expiry timers and link-flap loops on the nodes (argv[-1] of their `sh -c`)
FAULT_PROCESS_RE = re.compile(r"migrator-fault-(timer|flap)-[0-9a-f]+")
HOST_DIRS = [*sshd.NODE_MOUNTS, "/run/sshd", str(NETNS_ETC)]  # mount points and folders the host may lack


def _mount_points_in_use() -> set[str]:
    """Mount points of every process's mount namespace (bind mounts of live lab nodes show up here)."""
    seen: set[str] = set()
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ns = os.readlink(proc / "ns" / "mnt")
            if ns in inodes:
                continue
            inodes.add(ns)
            for line in (proc / "mountinfo").read_text().splitlines():
                seen.add(line.split()[4])
        except OSError:
            continue
    return seen


def _host_dirs_list(update: Callable[[list[str]], list[str]]) -> list[str]:
    """Read-modify-write the shared list of host folders created by labs (under a lock on the labs folder
    itself, so no lock file is left behind once the list is empty)."""
    path = paths.labs_dir() / ".host-dirs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            known: list[str] = json.loads(path.read_text()) if path.exists() else []
        except ValueError:
            known = []
        new = update(list(known))
        if new:
            fsutil.atomic_write_text(path, json.dumps(new))
        else:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock
    path.with_suffix(".lock").unlink(missing_ok=True)  # the lock file of older versions
    return known


def _remember_host_dirs(created: Sequence[str]) -> None:
    _host_dirs_list(lambda known: known + [d for d in created if d not in known])


def _remove_host_dirs(extra: set[str]) -> list[str]:
    """rmdir the (empty) host folders labs created, deepest first, unless a namespace still mounts them
    (another lab, maybe under another MIGRATOR_HOME). Those stay listed for a later ``down``."""
    removed: list[str] = []

    def update(known: list[str]) -> list[str]:
        busy = _mount_points_in_use()
        for d in sorted(set(known) | extra, key=lambda x: -x.count("/")):
            if any(m == d or m.startswith(d + "/") for m in busy):
                continue
            with contextlib.suppress(OSError):
                os.rmdir(d)
                removed.append(d)
        return sorted(d for d in set(known) | extra if Path(d).exists())

    _host_dirs_list(update)
    return removed


@dataclass
class UpResult:
    state: LabState
    already_up: bool
    seconds: float = 0.0
    same_spec: bool = True


@dataclass
class DownResult:
    existed: bool
    removed: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _listening(pid: int, port: int, udp: bool = False) -> bool:
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


class Lab(NodeAgents):
    """One lab, by name. Every mutating operation holds the lab's lock and saves state before acting."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.store = StateStore(name)
        self.prefix = lab_prefix(name)

    # ------------------------------------------------------------------------------------------ reading

    def load(self) -> LabState | None:
        return self.store.load()

    def require(self) -> LabState:
        st = self.store.load()
        if st is None or st.phase != LabPhase.UP:
            raise UsageError(f"lab {self.name!r} is not up; run: migrator lab up")
        return st

    # ---------------------------------------------------------------------------------------------- up

    def up(self, spec: LabSpec) -> UpResult:
        if spec.name != self.name:
            raise UsageError(f"spec name {spec.name!r} does not match lab {self.name!r}")
        if os.geteuid() != 0:
            raise UsageError("the lab needs root (network namespaces, veth, iptables, mounts)")
        t0 = time.monotonic()
        with self.store.lock():
            st = self.store.load()
            if st is not None and st.phase == LabPhase.UP:
                if st.spec != spec:
                    logger.warning(
                        "lab {} is already up with other settings; run lab down to change them", self.name
                    )
                return UpResult(st, already_up=True, same_spec=st.spec == spec)
            if st is not None:
                logger.warning(
                    "lab {} has leftovers from an unfinished operation ({}); cleaning up", self.name, st.phase
                )
            self._down_locked(st)
            self._check_underlay_free(spec)
            st = self._new_state(spec)
            self.store.save(st)
            try:
                self._build(st)
            except BaseException as exc:
                logger.error("lab up failed: {}; tearing down", exc)
                st.phase = LabPhase.FAILED
                st.message = str(exc)
                self.store.save(st)
                try:
                    self._down_locked(st)
                except MigratorError as exc2:
                    logger.error("teardown after failed up also failed: {}", exc2)
                raise
            st.phase = LabPhase.UP
            self.store.save(st)
        return UpResult(st, already_up=False, seconds=time.monotonic() - t0)

    @staticmethod
    def _check_underlay_free(spec: LabSpec) -> None:
        """Refuse an underlay that overlaps a route of the host (another lab, or a real network)."""
        res = sh.run(["ip", "-j", "route", "show", "table", "all"], check=False, timeout=10)
        mine = spec.underlay_net
        for r in json.loads(res.stdout or "[]") if res.ok else []:
            dst = str(r.get("dst", ""))
            if dst in ("", "default") or ":" in dst:
                continue
            try:
                net_ = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
            except ValueError:
                continue
            if net_.overlaps(mine) and r.get("type", "unicast") != "broadcast" and net_.prefixlen > 0:
                raise UsageError(
                    f"underlay {mine} overlaps the host route {dst} dev {r.get('dev', '?')}: "
                    "pick another one with --underlay (a /24 inside 198.18.0.0/15)"
                )

    def _new_state(self, spec: LabSpec) -> LabState:
        d = lab_dir(self.name)
        net_ = spec.underlay_net
        p = self.prefix
        st = LabState(
            spec=spec,
            prefix=p,
            dir=str(d),
            host_veth=host_veth(p),
            host_ip=host_underlay_ip(net_),
            fabric_netns=netns_name(p, "fabric"),
            outside_netns=netns_name(p, "outside"),
            outside_ip=outside_underlay_ip(net_),
            inventory=str(d / "inventory.ini"),
            ssh_key=str(d / "ssh" / "id_ed25519"),
        )
        for i in range(1, spec.nodes + 1):
            name = node_name(i)
            cidr = node_pod_cidr(i)
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            }
            roles: list[str] = []
            if i == 1:
                labels[CONTROL_PLANE_LABEL] = ""
                roles = ["control-plane"]
            st.nodes[name] = NodeState(
                name=name,
                index=i,
                ip=node_underlay_ip(net_, i),
                netns=netns_name(p, name),
                pod_cidr=str(cidr),
                vtep_ip=vtep_ip(cidr),
                vtep_mac=vtep_mac(self.name, name),
                roles=roles,
                labels=labels,
                cni=spec.cni.value,
                dir=str(d / "nodes" / name),
            )
        return st

    def _build(self, st: LabState) -> None:
        spec = st.spec
        d = Path(st.dir)
        st.record(ResourceKind.DIR, str(d))
        created: list[str] = []
        for target in HOST_DIRS:
            missing: list[Path] = []
            p = Path(target)
            while not p.exists():
                missing.append(p)
                p = p.parent
            for m in reversed(missing):
                st.record(ResourceKind.EMPTY_DIR, str(m))
                created.append(str(m))
        _remember_host_dirs(created)
        caps_ns = netns_name(self.prefix, "caps")
        st.record(ResourceKind.NETNS, caps_ns)
        for n in st.nodes.values():
            st.record(ResourceKind.NETNS, n.netns)
        st.record(ResourceKind.NETNS, st.fabric_netns)
        st.record(ResourceKind.NETNS, st.outside_netns)
        st.record(ResourceKind.LINK, st.host_veth)
        self.store.save(st)

        for target in HOST_DIRS:
            Path(target).mkdir(parents=True, exist_ok=True)
        for n in st.nodes.values():
            for sub in sshd.NODE_MOUNTS.values():
                (Path(n.dir) / sub).mkdir(parents=True, exist_ok=True)
        (d / "pods").mkdir(parents=True, exist_ok=True)
        (d / "logs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("podserver.py"), d / "podserver.py")
        sshd.make_keys(d / "ssh")

        st.capabilities = net.detect_capabilities(caps_ns)
        missing_caps = [c.name for c in st.capabilities if not c.available]
        if missing_caps:
            logger.warning("kernel features missing: {}", ", ".join(missing_caps))
        for need in ("veth", "bridge", "vxlan"):
            if not any(c.name == need and c.available for c in st.capabilities):
                raise StepFailed(f"the kernel lacks {need}, which the lab needs")
        self.store.save(st)

        self._build_underlay(st)
        self._build_nodes(st)
        self._start_holders(st)
        self.store.save(st)
        self._start_apiserver(st)
        self.store.save(st)

        wls, svcs = workloads.default_objects(spec)
        st.workloads = {w.key: w for w in wls}
        st.services = {s.key: s for s in svcs}
        fsutil.atomic_write_text(d / "dns" / "hosts", dns.hosts_file(st.services.values()))
        self._write_inventory(st)
        self.store.save(st)

        self._reconcile_daemonsets(st)
        failed = [
            f"{p.key}: {p.message}"
            for p in st.pods.values()
            if p.host_network and p.phase != PodPhase.RUNNING
        ]
        if failed:
            raise StepFailed(f"node agents failed: {'; '.join(failed)}")
        new_pods: list[PodState] = []
        for w in wls:
            if w.kind == "DaemonSet":
                continue
            for _ in range(w.replicas):
                pod = self._new_pod(st, w, None)
                new_pods.append(pod)
        self._launch(st, new_pods)
        self._sync_services(st)
        bad = [p.key for p in new_pods if p.phase != PodPhase.RUNNING]
        if bad:
            raise StepFailed(f"pods did not start: {', '.join(bad)}")
        self._wait_ssh(st)

    def _wait_ssh(self, st: LabState, timeout: float = SSH_TIMEOUT) -> None:
        """Wait until every node's sshd accepts TCP on the underlay (from the host: its one lab route)."""
        deadline = time.monotonic() + timeout
        for n in st.nodes.values():
            while True:
                try:
                    with socket.create_connection((n.ip, 22), timeout=1.0) as conn:
                        if conn.recv(4).startswith(b"SSH-"):
                            break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise StepFailed(
                            f"node {n.name}: sshd on {n.ip}:22 unreachable: {exc}", node=n.name
                        ) from exc
                    time.sleep(0.05)

    def _build_underlay(self, st: LabState) -> None:
        nodes = list(st.nodes.values())
        net.create_netns([st.fabric_netns, st.outside_netns, *[n.netns for n in nodes]])
        fab, hv = st.fabric_netns, st.host_veth
        prefixlen = st.spec.underlay_net.prefixlen
        lines = [
            f"link add {hv} type veth peer name host netns {fab}",
            f"addr add {st.host_ip}/{prefixlen} dev {hv}",
            f"link set {hv} up",
            f"link add eth0 netns {st.outside_netns} type veth peer name outside netns {fab}",
        ]
        lines += [f"link add eth0 netns {n.netns} type veth peer name {n.name} netns {fab}" for n in nodes]
        sh.ip_batch(lines)
        # the host never forwards what it receives from the lab, and speaks only IPv4 to it
        sh.run(
            ["sysctl", "-q", "-w", f"net.ipv4.conf.{hv}.forwarding=0", f"net.ipv6.conf.{hv}.disable_ipv6=1"]
        )
        ports = ["host", "outside", *[n.name for n in nodes]]
        fab_lines = ["link add br0 type bridge mcast_snooping 0", "link set br0 up"]
        fab_lines += [f"link set {p} master br0" for p in ports] + [f"link set {p} up" for p in ports]
        sh.ip_batch(fab_lines, netns=fab)
        # the fabric is a plain switch: no L3 filtering (and no conntrack) of bridged underlay frames
        sh.run(
            net.sysctl_argv(
                fab, {"net.bridge.bridge-nf-call-iptables": "0", "net.bridge.bridge-nf-call-arptables": "0"}
            )
        )
        sh.ip_batch(
            [f"addr add {st.outside_ip}/{prefixlen} dev eth0", "link set eth0 up"], netns=st.outside_netns
        )

    def _build_nodes(self, st: LabState) -> None:
        prefixlen = st.spec.underlay_net.prefixlen

        def one(n: NodeState) -> None:
            lines = [f"addr add {n.ip}/{prefixlen} dev eth0", "link set eth0 up"]
            lines.append(f"route add {SERVICE_NETWORK} dev eth0")  # node -> ClusterIP (DNAT'd in OUTPUT)
            sh.ip_batch(lines, netns=n.netns)
            sh.run(
                net.sysctl_argv(
                    n.netns, {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
                )
            )
            sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=services.BOOTSTRAP)

        parallel(one, st.nodes.values())

    def _start_holders(self, st: LabState) -> None:
        d = Path(st.dir)
        logs = d / "logs"
        for n in st.nodes.values():
            st.record(ResourceKind.PROCESS, f"holder:{n.name}")
        self.store.save(st)
        for n in st.nodes.values():
            pid = sh.spawn(
                sshd.holder_argv(n.netns, n.name, Path(n.dir), keep=Path(st.dir).resolve()),
                log=logs / f"{n.name}-holder.log",
            )
            n.holder_pid = pid
            st.record(ResourceKind.PROCESS, f"holder:{n.name}", pid, sh.start_time(pid))
        self.store.save(st)
        deadline = time.monotonic() + HOLDER_TIMEOUT
        for n in st.nodes.values():
            assert n.holder_pid
            while True:
                try:
                    comm = Path(f"/proc/{n.holder_pid}/comm").read_text().strip()
                except OSError:
                    comm = ""
                if comm == "sleep":
                    break
                if not sh.alive(n.holder_pid) or time.monotonic() > deadline:
                    log = (logs / f"{n.name}-holder.log").read_text()[-500:]
                    raise StepFailed(f"node {n.name}: namespace holder did not start: {log}", node=n.name)
                time.sleep(0.01)
        ssh_dir = d / "ssh"
        for n in st.nodes.values():
            st.record(ResourceKind.PROCESS, f"sshd:{n.name}")
        self.store.save(st)
        for n in st.nodes.values():
            assert n.holder_pid
            cfg = Path(n.dir) / "sshd_config"
            cfg.write_text(
                sshd.sshd_config(
                    listen=n.ip,
                    host_key=ssh_dir / "ssh_host_ed25519_key",
                    authorized_keys=ssh_dir / "authorized_keys",
                    pid_file=Path(n.dir) / "sshd.pid",
                )
            )
            pid = sh.spawn(sshd.sshd_argv(n.holder_pid, cfg), log=logs / f"{n.name}-sshd.log")
            n.sshd_pid = pid
            st.record(ResourceKind.PROCESS, f"sshd:{n.name}", pid, sh.start_time(pid))
        # re-read the start times now that the processes have exec'd
        for n in st.nodes.values():
            assert n.holder_pid and n.sshd_pid
            st.record(ResourceKind.PROCESS, f"holder:{n.name}", n.holder_pid, sh.start_time(n.holder_pid))

    def _start_apiserver(self, st: LabState) -> None:
        """The control-plane endpoint: a bounded TCP listener (the pod server, ``GET /healthz`` = ``ok``) on
        ``<control-plane node ip>:6443`` in that node's namespaces, where a real cluster's API server listens.

        The lab has no API server: this gives ``fault.apiserver`` a real endpoint to cut. Recorded in the
        state (``apiserver``), the inventory (``migrator_apiserver_endpoint``) and the target
        (``Target.apiserver_endpoint``)."""
        cp = next((n for n in st.nodes.values() if CONTROL_PLANE_LABEL in n.labels), None)
        if cp is None or not cp.holder_pid:
            return
        label = f"apiserver:{cp.name}"
        st.record(ResourceKind.PROCESS, label)
        self.store.save(st)
        script = str(Path(st.dir) / "podserver.py")
        argv = [PYTHON, "-I", "-S", script, "--bind", cp.ip, "--port", str(APISERVER_PORT)]
        argv += ["--pod", f"kube-apiserver-{cp.name}", "--namespace", "kube-system", "--node", cp.name]
        argv += ["--app", "kube-apiserver", "--container", "kube-apiserver"]
        argv += ["--max-conns", str(APISERVER_MAX_CONNS)]
        log = Path(st.dir) / "logs" / f"{cp.name}-apiserver.log"
        pid = sh.spawn(sshd.node_exec_argv(cp.holder_pid, argv), log=log)
        st.record(ResourceKind.PROCESS, label, pid, sh.start_time(pid))
        deadline = time.monotonic() + READY_TIMEOUT
        while not _listening(pid, APISERVER_PORT):
            if not sh.alive(pid) or time.monotonic() > deadline:
                raise StepFailed(
                    f"node {cp.name}: the control-plane endpoint did not listen: {log.read_text()[-300:]}",
                    node=cp.name,
                )
            time.sleep(0.02)
        st.record(ResourceKind.PROCESS, label, pid, sh.start_time(pid))  # after exec
        st.apiserver = f"{cp.ip}:{APISERVER_PORT}"

    def _write_inventory(self, st: LabState) -> None:
        common = (
            f"ansible_user=root ansible_ssh_private_key_file={st.ssh_key} "
            "ansible_python_interpreter=/usr/bin/python3 "
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
        )
        cps = [n for n in st.nodes.values() if CONTROL_PLANE_LABEL in n.labels]
        workers = [n for n in st.nodes.values() if CONTROL_PLANE_LABEL not in n.labels]
        lines = [f"# migrator lab {self.name!r}: generated, do not edit", "[control_plane]"]
        lines += [f"{n.name} ansible_host={n.ip} {common}" for n in cps]
        lines += ["", "[workers]"]
        lines += [f"{n.name} ansible_host={n.ip} {common}" for n in workers]
        lines += ["", "[k8s_cluster:children]", "control_plane", "workers", ""]
        if st.apiserver:  # where a real inventory names the API endpoint (kubespray: apiserver_loadbalancer)
            lines += ["[k8s_cluster:vars]", f"migrator_apiserver_endpoint={st.apiserver}", ""]
        fsutil.atomic_write_text(Path(st.inventory), "\n".join(lines))

    # -------------------------------------------------------------------------------------------- pods

    def _container_id(self, st: LabState, pod: str) -> str:
        return hashlib.sha256(f"{self.name}/{pod}/{st.counter}".encode()).hexdigest()

    def _new_pod(self, st: LabState, w: Workload, node: str | None, exclude: Iterable[str] = ()) -> PodState:
        """A Pending pod of ``w`` (scheduled on ``node`` or by the scheduler) added to the state."""
        if node is None:
            node = workloads.schedule(w, st.nodes, st.pods.values(), st.workloads, exclude=exclude)
        st.counter += 1
        name = workloads.pod_name(w, st.spec.seed, st.counter)
        labels = dict(w.template.labels)
        labels["pod-template-hash"] = workloads.rs_hash(w, st.spec.seed)
        ports = [w.template.port] + ([w.template.sidecar_port] if w.template.sidecar_port else [])
        pod = PodState(
            name=name,
            namespace=w.namespace,
            node=node or "",
            labels=labels,
            owner=f"{w.kind}/{w.name}",
            ports=ports,
            netns=netns_name(self.prefix, "p", f"{w.namespace}-{name}") if node else None,
            container_id=self._container_id(st, name),
            message="" if node else "0/N nodes are available: no schedulable node",
        )
        st.pods[pod.key] = pod
        return pod

    def _container_argvs(self, st: LabState, pod: PodState) -> list[ContainerState]:
        w = st.workloads[f"{pod.namespace}/{(pod.owner or '').split('/', 1)[-1]}"]
        t = w.template
        assert pod.netns
        logs = Path(st.dir) / "logs"
        if t.kind == "dns":
            argv = net.exec_argv(pod.netns, dns.dnsmasq_argv(Path(st.dir) / "dns" / "hosts", t.port))
            return [ContainerState(name="coredns", argv=argv, port=t.port, log=str(logs / f"{pod.name}.log"))]
        script = str(Path(st.dir) / "podserver.py")
        base = [
            PYTHON,
            "-I",
            "-S",
            script,
            "--pod",
            pod.name,
            "--namespace",
            pod.namespace,
            "--node",
            pod.node,
        ]
        base += ["--app", t.app, "--version", t.version]
        main = [*base, "--container", t.app, "--port", str(t.port)]
        for c in t.calls:
            main += ["--call", c]
        out = [
            ContainerState(
                name=t.app,
                argv=net.exec_argv(pod.netns, main),
                port=t.port,
                log=str(logs / f"{pod.name}.log"),
            )
        ]
        if t.sidecar_port:
            side = [*base, "--container", "sidecar", "--port", str(t.sidecar_port), "--bind", "127.0.0.1"]
            out.append(
                ContainerState(
                    name="sidecar",
                    argv=net.exec_argv(pod.netns, side),
                    port=t.sidecar_port,
                    log=str(logs / f"{pod.name}-sidecar.log"),
                )
            )
        return out

    def _launch(self, st: LabState, pods: Sequence[PodState]) -> None:
        """Create namespaces, run CNI ADD (the node's own conflist), start containers, wait until ready."""
        pods = [p for p in pods if p.node and p.netns]
        if not pods:
            return
        for p in pods:
            assert p.netns
            st.record(ResourceKind.NETNS, p.netns)
            st.record(ResourceKind.DIR, str(NETNS_ETC / p.netns))
        self.store.save(st)
        net.create_netns([p.netns for p in pods if p.netns])
        for p in pods:
            assert p.netns
            fsutil.atomic_write_text(NETNS_ETC / p.netns / "resolv.conf", dns.resolv_conf(p.namespace))

        by_node: dict[str, list[PodState]] = {}
        for p in pods:
            by_node.setdefault(p.node, []).append(p)

        def cni_add(node: str) -> None:
            n = st.nodes[node]
            if not n.holder_pid or not sh.alive(n.holder_pid):
                for p in by_node[node]:
                    p.phase, p.message = PodPhase.FAILED, f"node {node} is not running"
                return
            inv = cni.CniInvoker(n.holder_pid)
            for p in by_node[node]:
                assert p.netns and p.container_id
                try:
                    path, conf = cni.find_conflist(Path(n.dir) / "etc-cni-net.d")
                    res = inv.add(
                        conf,
                        container_id=p.container_id,
                        netns=net.netns_path(p.netns),
                        pod=p.name,
                        namespace=p.namespace,
                    )
                except MigratorError as exc:
                    p.phase, p.message = PodPhase.PENDING, f"FailedCreatePodSandBox: {exc}"
                    logger.warning("pod {}: {}", p.key, p.message)
                    continue
                p.cni_conflist = json.dumps(conf)
                p.cni_result = res
                p.ip = cni.pod_ip(res)
                p.message = f"network from {path.name}"

        parallel(cni_add, list(by_node))
        self.store.save(st)

        started = [p for p in pods if p.ip]
        for p in started:
            p.containers = self._container_argvs(st, p)
            for c in p.containers:
                st.record(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}")
        self.store.save(st)
        for p in started:
            for c in p.containers:
                c.pid = sh.spawn(c.argv, log=Path(c.log))
                st.record(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}", c.pid)
        self.store.save(st)
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = list(started)
        while waiting and time.monotonic() < deadline:
            still: list[PodState] = []
            for p in waiting:
                ok = True
                for c in p.containers:
                    assert c.pid and c.port
                    if not _listening(c.pid, c.port, udp=c.name == "coredns"):
                        ok = False
                        if not sh.alive(c.pid):
                            p.phase, p.message = PodPhase.FAILED, f"container {c.name} exited"
                if p.phase == PodPhase.FAILED:
                    continue
                if ok:
                    p.phase = PodPhase.RUNNING
                else:
                    still.append(p)
            waiting = still
            if waiting:
                time.sleep(0.02)
        for p in waiting:
            p.phase, p.message = PodPhase.FAILED, "not ready in time"
        for p in started:
            for c in p.containers:
                assert c.pid
                c.start_time = sh.start_time(c.pid)
                st.record(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}", c.pid, c.start_time)
        self.store.save(st)

    def _stop(self, st: LabState, pods: Sequence[PodState]) -> list[str]:
        """Kill containers, CNI DEL on the node, delete the namespace, forget the pod. Returns errors."""
        errors: list[str] = []
        sh.kill([(c.pid, c.start_time) for p in pods for c in p.containers if c.pid])

        def cni_del(p: PodState) -> None:
            n = st.nodes.get(p.node)
            if not (
                n
                and p.netns
                and p.cni_conflist
                and p.container_id
                and n.holder_pid
                and sh.alive(n.holder_pid)
            ):
                return
            try:
                cni.CniInvoker(n.holder_pid).delete(
                    json.loads(p.cni_conflist),
                    container_id=p.container_id,
                    netns=net.netns_path(p.netns),
                    pod=p.name,
                    namespace=p.namespace,
                    prev=p.cni_result,
                )
            except MigratorError as exc:
                errors.append(f"{p.key}: {exc}")

        parallel(cni_del, pods)
        net.delete_netns([p.netns for p in pods if p.netns])
        for p in pods:
            if p.netns:
                shutil.rmtree(NETNS_ETC / p.netns, ignore_errors=True)
                st.forget(ResourceKind.NETNS, p.netns)
                st.forget(ResourceKind.DIR, str(NETNS_ETC / p.netns))
            for c in p.containers:
                st.forget(ResourceKind.PROCESS, f"pod:{p.key}:{c.name}")
            st.pods.pop(p.key, None)
        self.store.save(st)
        return errors

    # ---------------------------------------------------------------------------------------- services

    def endpoints(self, st: LabState, key: str) -> list[str]:
        svc = st.services[key]
        out: list[str] = []
        for p in st.pods.values():
            if (
                p.namespace == svc.namespace
                and p.phase == PodPhase.RUNNING
                and p.ip
                and all(p.labels.get(k) == v for k, v in svc.selector.items())
            ):
                out.append(p.ip)
        return sorted(out, key=ipaddress.IPv4Address)

    def _rules(self, st: LabState) -> list[services.ServicePortRules]:
        out: list[services.ServicePortRules] = []
        for key, svc in st.services.items():
            ips = self.endpoints(st, key)
            for sp in svc.ports:
                out.append(
                    services.ServicePortRules(
                        namespace=svc.namespace,
                        name=svc.name,
                        port_name=sp.name,
                        protocol=sp.protocol,
                        cluster_ip=svc.cluster_ip,
                        port=sp.port,
                        node_port=sp.node_port,
                        endpoints=tuple(services.Endpoint(ip, sp.target_port) for ip in ips),
                    )
                )
        return out

    def _sync_services(self, st: LabState) -> None:
        """kube-proxy's sync loop, once: rewrite the KUBE-* chains on every node."""
        rules = self._rules(st)

        def one(n: NodeState) -> None:
            res = services.render(rules, str(POD_NETWORK), stale=n.kube_chains)
            sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=res.text)
            n.kube_chains = list(res.chains)

        parallel(one, st.nodes.values())
        self.store.save(st)

    # ------------------------------------------------------------------------------------ control plane

    def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        with self.store.lock():
            st = self.require()
            n = self._node(st, name)
            for k, v in labels.items():
                if v is None:
                    n.labels.pop(k, None)
                else:
                    n.labels[k] = v
            if CONTROL_PLANE_LABEL in n.labels and "control-plane" not in n.roles:
                n.roles.append("control-plane")
            if CONTROL_PLANE_LABEL not in n.labels and "control-plane" in n.roles:
                n.roles.remove("control-plane")
            self.store.save(st)
            self._reconcile_daemonsets(st)

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        with self.store.lock():
            st = self.require()
            self._node(st, name).schedulable = schedulable
            self.store.save(st)
        if schedulable:
            self.reconcile()

    def _node(self, st: LabState, name: str) -> NodeState:
        if name not in st.nodes:
            raise UsageError(f"lab {self.name!r} has no node {name!r} (nodes: {', '.join(st.nodes)})")
        return st.nodes[name]

    def drain(
        self, name: str, *, timeout: float = 120.0, cancel: threading.Event | None = None
    ) -> tuple[list[str], list[str]]:
        """Cordon, evict the node's pods (DaemonSet pods are skipped) and reschedule them elsewhere.

        Returns (evicted pod keys, skipped pod keys). Replacements get new names and new IPs.
        """
        deadline = time.monotonic() + timeout
        with self.store.lock(timeout=timeout):
            st = self.require()
            n = self._node(st, name)
            n.schedulable = False
            on_node = [p for p in st.pods.values() if p.node == name]
            skipped = [p.key for p in on_node if p.host_network or (p.owner or "").startswith("DaemonSet/")]
            victims = [p for p in on_node if p.key not in skipped]
            if not victims:
                self.store.save(st)
                return [], skipped
            # eviction: endpoints drop the pods first, then they terminate
            for p in victims:
                p.phase = PodPhase.TERMINATING
            self._sync_services(st)
            if cancel is not None and cancel.is_set():
                raise StepFailed("drain canceled", node=name)
            owners = [st.workloads[f"{p.namespace}/{(p.owner or '').split('/', 1)[-1]}"] for p in victims]
            errors = self._stop(st, victims)
            if errors:
                logger.warning("drain {}: CNI DEL errors: {}", name, "; ".join(errors))
            replacements = [self._new_pod(st, w, None, exclude=[name]) for w in owners]
            self._launch(st, replacements)
            self._sync_services(st)
            if time.monotonic() > deadline:
                raise StepTimeout(f"drain of {name} took longer than {timeout}s", node=name)
            bad = [f"{p.key}: {p.message}" for p in replacements if p.phase != PodPhase.RUNNING]
            if bad:
                logger.warning("drain {}: replacements not running: {}", name, "; ".join(bad))
            return [p.key for p in victims], skipped

    def restart_pods(self, node: str) -> list[str]:
        """Recreate the node's non-hostNetwork pods on the same node through the node's current CNI config.

        Returns the keys of the new pods. Raises :class:`StepFailed` if some could not get a network.
        """
        with self.store.lock():
            st = self.require()
            self._node(st, node)
            old = [p for p in st.pods.values() if p.node == node and not p.host_network]
            for p in old:
                p.phase = PodPhase.TERMINATING
            self._sync_services(st)
            owners = [st.workloads[f"{p.namespace}/{(p.owner or '').split('/', 1)[-1]}"] for p in old]
            self._stop(st, old)
            new = [self._new_pod(st, w, node) for w in owners]
            self._launch(st, new)
            self._sync_services(st)
            bad = [f"{p.key}: {p.message}" for p in new if p.phase != PodPhase.RUNNING]
            if bad:
                raise StepFailed(f"pods on {node} did not come back: {'; '.join(bad)}", node=node)
            return [p.key for p in new]

    def reconcile(self) -> list[str]:
        """Re-run the controllers once: DaemonSet agents, and pods that are Pending, Failed or whose
        processes died are replaced (after an uncordon, a CNI fix, a killed pod). Returns the started keys."""
        with self.store.lock():
            st = self.require()
            self._reconcile_daemonsets(st)
            for p in st.pods.values():
                dead = not all(sh.alive(c.pid, c.start_time) for c in p.containers)
                if p.phase == PodPhase.RUNNING and dead:
                    p.phase, p.message = PodPhase.FAILED, "a container exited"
            stuck = [
                p
                for p in st.pods.values()
                if p.phase in (PodPhase.PENDING, PodPhase.FAILED) and not p.host_network
            ]
            if not stuck:
                return []
            owners = [st.workloads[f"{p.namespace}/{(p.owner or '').split('/', 1)[-1]}"] for p in stuck]
            self._stop(st, stuck)
            new = [self._new_pod(st, w, None) for w in owners]
            self._launch(st, new)
            self._sync_services(st)
            return [p.key for p in new if p.phase == PodPhase.RUNNING]

    # -------------------------------------------------------------------------------------------- exec

    def resolve_target(self, st: LabState, target: str) -> tuple[str, str]:
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
            raise UsageError(f"no node or pod {target!r} in lab {self.name!r}")
        raise UsageError(f"{target!r} matches several pods: {', '.join(sorted(matches))}")

    def exec_argv(self, target: str, argv: Sequence[str]) -> list[str]:
        st = self.require()
        kind, ident = self.resolve_target(st, target)
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
            return self.exec_argv(p.node, argv)
        if not p.netns:
            raise UsageError(f"pod {ident} has no network namespace ({p.phase}: {p.message})")
        return net.exec_argv(p.netns, argv)

    def exec(self, target: str, argv: Sequence[str], *, timeout: float = 30.0) -> sh.Result:
        return sh.run(self.exec_argv(target, argv), timeout=timeout, check=False)

    def netns_map(self, st: LabState | None = None) -> dict[str, str]:
        """Netns path for every exec target: pod keys, node names and ``outside``."""
        st = st or self.require()
        out = {n.name: net.netns_path(n.netns) for n in st.nodes.values()}
        out["outside"] = net.netns_path(st.outside_netns)
        for p in st.pods.values():
            if p.host_network:
                out[p.key] = out[p.node]
            elif p.netns and p.phase == PodPhase.RUNNING:
                out[p.key] = net.netns_path(p.netns)
        return out

    # -------------------------------------------------------------------------------------------- down

    def down(self) -> DownResult:
        t0 = time.monotonic()
        with self.store.lock():
            try:
                st = self.store.load()
            except UsageError as exc:
                logger.warning("{}; removing by prefix {}", exc, self.prefix)
                st = None
            res = self._down_locked(st)
        self.store.lock_path.unlink(missing_ok=True)
        res.seconds = time.monotonic() - t0
        return res

    def _down_locked(self, st: LabState | None) -> DownResult:
        res = DownResult(existed=st is not None)
        if st is not None:
            st.phase = LabPhase.DELETING
            with contextlib.suppress(OSError):
                self.store.save(st)
        prefix = st.prefix if st else self.prefix
        ns_prefix = f"{prefix}-"
        recorded_ns = [r.name for r in st.resources if r.kind == ResourceKind.NETNS] if st else []
        all_ns = net.list_netns()
        lab_ns = sorted(set(recorded_ns) & set(all_ns) | {n for n in all_ns if n.startswith(ns_prefix)})
        # 1. processes: pending fault timers and flap loops (their whole group, before they fire into a
        # half-removed lab), recorded ones, then anything still inside a lab namespace
        lab_ids = lab_fault_ids(st, lab_ns)
        faults = fault_processes(st, lab_ns, lab_ids)
        # their own groups only (they are session leaders: setsid / start_new_session), never ours
        fault_groups = sorted({g for pid, g, _m in faults if g == pid and g != os.getpgrp()})
        for pgid in fault_groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        left_faults = sh.kill([(pid, None) for pid, _pgid, _mark in faults])
        res.removed += [f"fault process {pid} ({mark})" for pid, _pgid, mark in faults]
        res.leftovers += [f"fault process {p} did not exit" for p in left_faults]
        pids: list[tuple[int, int | None]] = []
        if st is not None:
            pids += [(r.pid, r.start_time) for r in st.resources if r.kind == ResourceKind.PROCESS and r.pid]
        for ns in lab_ns:
            pids += [(pid, None) for pid in net.netns_pids(ns)]
        left = sh.kill(pids)
        res.removed += [f"process {p}" for p, _ in pids]
        # then anything else inside a node's mount namespace (e.g. an SSH session whose sshd was killed) or a
        # lab namespace, also when a namespace lost its name (`ip netns pids` cannot see those); scanned
        # again until a scan finds nothing, as a process can fork between the scan and the kill (an SSH
        # session being set up forks its session after authentication; a flap loop its next `ip`)
        seen = {pid for pid, _ in pids}
        for _ in range(KILL_ROUNDS):
            more = [(pid, None) for pid in lab_processes(lab_ids) if pid not in left]
            if not more:
                break
            left += sh.kill(more)
            res.removed += [f"process {p}" for p, _ in more if p not in seen]
            seen |= {p for p, _ in more}
        res.leftovers += [f"process {p} did not exit" for p in sorted(set(left))]
        # 2. namespaces (their interfaces, routes and iptables rules go with them)
        net.delete_netns(lab_ns)
        res.removed += [f"netns {n}" for n in lab_ns]
        # 3. host links (the one veth; gone with the fabric namespace, but make sure)
        for link in net.host_links():
            if link == host_veth(prefix) or link.startswith(ns_prefix):
                sh.run(["ip", "link", "del", link], check=False, timeout=10)
                res.removed.append(f"link {link}")
        # 4. files
        etc_dirs = {str(NETNS_ETC / n) for n in lab_ns}
        if st is not None:
            etc_dirs |= {
                r.name
                for r in st.resources
                if r.kind == ResourceKind.DIR and r.name.startswith(str(NETNS_ETC))
            }
        if NETNS_ETC.is_dir():
            etc_dirs |= {str(p) for p in NETNS_ETC.iterdir() if p.name.startswith(ns_prefix)}
        for d in sorted(etc_dirs):
            shutil.rmtree(d, ignore_errors=True)
        if st is not None:  # the fault records (their timers are gone): removed with the lab folder
            for n in st.nodes.values():
                folder = Path(n.dir) / sshd.NODE_MOUNTS["/run/migrator"] / "faults"
                res.removed += [f"fault record {n.name}/{p.stem}" for p in sorted(folder.glob("*.json"))]
        shutil.rmtree(lab_dir(self.name), ignore_errors=True)
        # host folders the labs created as mount points: removed (if empty) with the last lab
        others = [p for p in lab_dir(self.name).parent.glob("*/state.json") if p.parent.name != self.name]
        if not others:
            mine = {r.name for r in st.resources if r.kind == ResourceKind.EMPTY_DIR} if st else set()
            res.removed += [f"dir {d}" for d in _remove_host_dirs(mine)]
        # 5. what is left (should be nothing)
        now_ns = [n for n in net.list_netns() if n.startswith(ns_prefix)]
        res.leftovers += [f"netns {n}" for n in now_ns]
        still = fault_processes(st, [], lab_ids)
        res.leftovers += [f"fault process {pid} ({mark})" for pid, _g, mark in still]
        res.leftovers += [f"process {pid} still in the lab's namespaces" for pid in lab_processes(lab_ids)]
        return res

    # ------------------------------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        st = self.store.load()
        if st is None:
            return {"name": self.name, "phase": "absent"}
        return status_dict(self, st)


def lab_fault_ids(st: LabState | None, lab_ns: Sequence[str]) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of what marks a process as the lab's: its node namespaces and fault folders."""
    paths_: list[str] = [net.netns_path(ns) for ns in lab_ns]
    if st is not None:
        paths_ += [str(Path(n.dir) / sshd.NODE_MOUNTS["/run/migrator"]) for n in st.nodes.values()]
    ids: set[tuple[int, int]] = set()
    for p in paths_:
        with contextlib.suppress(OSError):
            info = os.stat(p)
            ids.add((info.st_dev, info.st_ino))
    return ids | _node_netns_ids(ids)


def _node_netns_ids(ids: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The network namespaces of the processes that run in a node's mount view (``/run/migrator`` is a
    node's folder of ``ids``): a node's namespace is found this way also after it lost its name, and with it
    the processes in it whose root is elsewhere (sshd's chrooted pre-authentication child, for one). Never
    the host's own namespace."""
    own: set[tuple[int, int]] = set()
    for p in ("/proc/self/ns/net", "/proc/1/ns/net"):
        with contextlib.suppress(OSError):
            info = os.stat(p)
            own.add((info.st_dev, info.st_ino))
    found: set[tuple[int, int]] = set()
    if not ids:
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            root = os.stat(entry / "root" / "run" / "migrator")
            if (root.st_dev, root.st_ino) in ids:
                info = os.stat(entry / "ns" / "net")
                found.add((info.st_dev, info.st_ino))
    return found - own


def _marked(entry: Path, ids: set[tuple[int, int]]) -> bool:
    """Whether process ``entry`` (``/proc/<pid>``) is in a namespace or mount view named by ``ids``."""
    for p in (entry / "ns" / "net", entry / "root" / "run" / "migrator"):
        with contextlib.suppress(OSError):
            info = os.stat(p)
            if (info.st_dev, info.st_ino) in ids:
                return True
    return False


def lab_processes(ids: set[tuple[int, int]]) -> list[int]:
    """Every process (but this one) in one of the lab's network namespaces, or whose ``/run/migrator`` is a
    node's folder of the lab (it runs in a node's mount namespace: sshd and its sessions, Ansible
    modules, fault timers), by namespace and folder identity, so names that are gone do not matter."""
    if not ids:
        return []
    me = os.getpid()
    return [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and int(e.name) != me and _marked(e, ids)
    ]


def fault_processes(
    st: LabState | None, lab_ns: Sequence[str], ids: set[tuple[int, int]] | None = None
) -> list[tuple[int, int, str]]:
    """``(pid, pgid, mark)`` of the fault timers and flap loops (:mod:`migrator.faults`) of this lab.

    A process is the lab's when its network namespace is one of the lab's, or when its ``/run/migrator``
    is a node's fault folder of this lab (seen through ``/proc/<pid>/root``: also after the namespace is
    gone or the holder died)."""
    ids = lab_fault_ids(st, lab_ns) if ids is None else ids
    if not ids:
        return []
    out: list[tuple[int, int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        args = [a for a in cmdline.split("\x00") if a]
        # the detached processes carry their mark as $0 of `sh -c`: their last argument, exactly
        if not args or FAULT_PROCESS_RE.fullmatch(args[-1]) is None:
            continue
        if not _marked(entry, ids):
            continue
        pid = int(entry.name)
        try:
            pgid = os.getpgid(pid)
        except OSError:
            continue
        out.append((pid, pgid, args[-1]))
    return out


def _bgp_summary(n: NodeState) -> str | None:
    """``None`` without bird; else ``established/sessions`` from ``birdc show protocols``."""
    if not (n.bird_pid and sh.alive(n.bird_pid, n.bird_start)):
        return None
    res = sh.run(["birdc", "-s", str(Path(n.dir) / "bird.ctl"), "show", "protocols"], check=False, timeout=5)
    rows = [line for line in res.stdout.splitlines() if " BGP " in line]
    return f"{sum('Established' in r for r in rows)}/{len(rows)} established"


CNI_DEVICES = ("flannel.1", "cni0", "vxlan.calico")
CNI_CHAIN_PREFIXES = ("FLANNEL", "cali-")


def _data_plane(n: NodeState) -> dict[str, list[str]]:
    """The CNI leftovers a migration cares about: devices, config files and iptables chains."""
    res = sh.run(["ip", "-n", n.netns, "-j", "link", "show"], check=False, timeout=10)
    links = [str(e["ifname"]) for e in json.loads(res.stdout or "[]")] if res.ok else []
    ipt = sh.run(net.exec_argv(n.netns, ["iptables-save"]), check=False, timeout=10)
    chains = sorted(
        {line[1:].split()[0] for line in ipt.stdout.splitlines() if line.startswith(":")} if ipt.ok else set()
    )
    conf_dir = Path(n.dir) / "etc-cni-net.d"
    return {
        "devices": [d for d in CNI_DEVICES if d in links],
        "cni_files": sorted(p.name for p in conf_dir.iterdir()) if conf_dir.is_dir() else [],
        "chains": [c for c in chains if c.startswith(CNI_CHAIN_PREFIXES)],
    }


def status_dict(lab: Lab, st: LabState) -> dict[str, Any]:
    planes = dict(zip(st.nodes, parallel(_data_plane, list(st.nodes.values())), strict=True))
    nodes = []
    for n in st.nodes.values():
        nodes.append(
            {
                "name": n.name,
                "ip": n.ip,
                "roles": n.roles,
                "labels": n.labels,
                "schedulable": n.schedulable,
                "cni": node_cni(n),
                "pod_cidr": n.pod_cidr,
                "vtep_ip": n.vtep_ip,
                "vtep_mac": n.vtep_mac,
                "netns": net.netns_path(n.netns),
                "sshd": "running" if sh.alive(n.sshd_pid) else "stopped",
                "bgp": _bgp_summary(n),
                "holder_pid": n.holder_pid,
                **planes[n.name],
            }
        )
    pods = []
    for p in sorted(st.pods.values(), key=lambda p: (p.namespace, p.name)):
        alive = all(sh.alive(c.pid, c.start_time) for c in p.containers)
        phase = p.phase.value if alive or not p.containers else PodPhase.FAILED.value
        pods.append(
            {
                "name": p.name,
                "namespace": p.namespace,
                "node": p.node,
                "ip": p.ip,
                "labels": p.labels,
                "owner": p.owner,
                "host_network": p.host_network,
                "phase": phase,
                "containers": [c.name for c in p.containers],
                "netns": net.netns_path(p.netns) if p.netns else None,
                "message": p.message,
            }
        )
    svcs = []
    for key, s in sorted(st.services.items()):
        svcs.append(
            {
                "name": s.name,
                "namespace": s.namespace,
                "cluster_ip": s.cluster_ip,
                "dns_name": f"{s.name}.{s.namespace}.svc.cluster.local",
                "ports": [p.model_dump() for p in s.ports],
                "selector": s.selector,
                "endpoints": lab.endpoints(st, key),
            }
        )
    return {
        "name": st.spec.name,
        "phase": st.phase.value,
        "message": st.message,
        "spec": st.spec.model_dump(mode="json"),
        "prefix": st.prefix,
        "underlay": st.spec.underlay,
        "host_ip": st.host_ip,
        "host_veth": st.host_veth,
        "outside": {"ip": st.outside_ip, "netns": net.netns_path(st.outside_netns)},
        "fabric_netns": net.netns_path(st.fabric_netns),
        "inventory": st.inventory,
        "ssh_key": st.ssh_key,
        "apiserver": st.apiserver,
        "capabilities": [c.model_dump() for c in st.capabilities],
        "nodes": nodes,
        "pods": pods,
        "services": svcs,
    }
