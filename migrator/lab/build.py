"""``lab up``'s build: the lab's state from its spec, then the underlay (a fabric bridge, the host's veth, the
``outside`` namespace), the nodes (namespaces, a holder process each, sshd), the control-plane endpoint,
the Ansible inventory, and the first pass of the emulated control plane (agents, pods, services).

Everything the build makes is recorded in the state and saved *before* it is made, so that ``lab down``
(:mod:`migrator.lab.teardown`) removes it even after the build was killed midway. The caller holds the
lab's lock.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from migrator import fsutil
from migrator.errors import StepFailed, UsageError
from migrator.lab import control, dns, hostdirs, kubelet, net, services, sh, sshd, weave, workloads
from migrator.lab.spec import (
    CONTROL_PLANE_LABEL,
    SERVICE_NETWORK,
    CniKind,
    LabSpec,
    host_underlay_ip,
    host_veth,
    netns_name,
    node_name,
    node_pod_cidr,
    node_underlay_ip,
    outside_underlay_ip,
    vtep_ip,
    vtep_mac,
)
from migrator.lab.state import LabState, NodeState, ResourceKind, StateStore, lab_dir

HOLDER_TIMEOUT = 10.0
SSH_TIMEOUT = 15.0
APISERVER_PORT = 6443
APISERVER_MAX_CONNS = 64
KERNEL_NEEDS = ("veth", "bridge", "vxlan")


@dataclass
class UpResult:
    state: LabState
    already_up: bool
    seconds: float = 0.0
    same_spec: bool = True


def check_underlay_free(spec: LabSpec) -> None:
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


def new_state(spec: LabSpec) -> LabState:
    """The state of a lab about to be built: names, addresses and folders, all derived from ``spec``."""
    d = lab_dir(spec.name)
    net_ = spec.underlay_net
    p = spec.prefix
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
        cidr, vtep, mac = _node_network(spec, i)
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
            vtep_ip=vtep,
            vtep_mac=mac,
            roles=roles,
            labels=labels,
            cni=spec.cni.value,
            dir=str(d / "nodes" / name),
        )
    return st


def _node_network(spec: LabSpec, index: int) -> tuple[ipaddress.IPv4Network, str, str]:
    """(pod CIDR, VTEP IP, VTEP MAC) of node ``index``: flannel's /24 lease and VTEP (Calico keeps them), or
    for Weave Net the node's slice of the default ``IPALLOC_RANGE``, its bridge address and peer MAC."""
    name = node_name(index)
    if spec.cni == CniKind.WEAVE:
        rng = weave.ipalloc_range({})
        return weave.node_slice(rng, index), weave.bridge_ip(rng, index), weave.peer_mac(spec.name, name)
    cidr = node_pod_cidr(index)
    return cidr, vtep_ip(cidr), vtep_mac(spec.name, name)


def build(store: StateStore, st: LabState) -> None:
    """Build the lab of ``st`` (a :func:`new_state`, saved). Raises if any part does not come up; what was
    made by then is recorded, for the caller's teardown."""
    _claim(store, st)
    _make_files(st)
    _check_kernel(store, st)
    _build_underlay(st)
    _build_nodes(st)
    _start_holders(store, st)
    _start_sshd(store, st)
    store.save(st)
    _start_apiserver(store, st)
    store.save(st)

    wls, svcs = workloads.default_objects(st.spec)
    st.workloads = {w.key: w for w in wls}
    st.services = {s.key: s for s in svcs}
    st.namespaces = {n.name: n for n in workloads.default_namespaces(st.spec)}
    fsutil.atomic_write_text(Path(st.dir) / "dns" / "hosts", dns.hosts_file(st.services.values()))
    _write_inventory(st)
    store.save(st)

    control.start_workloads(store, st)
    _wait_ssh(st)


def _claim(store: StateStore, st: LabState) -> None:
    """Record the lab folder, the host folders it creates, its namespaces and the host's veth."""
    st.record(ResourceKind.DIR, st.dir)
    hostdirs.claim(st)
    st.record(ResourceKind.NETNS, netns_name(st.prefix, "caps"))
    for n in st.nodes.values():
        st.record(ResourceKind.NETNS, n.netns)
    st.record(ResourceKind.NETNS, st.fabric_netns)
    st.record(ResourceKind.NETNS, st.outside_netns)
    st.record(ResourceKind.LINK, st.host_veth)
    store.save(st)


def _make_files(st: LabState) -> None:
    d = Path(st.dir)
    hostdirs.create()
    for n in st.nodes.values():
        for sub in sshd.NODE_MOUNTS.values():
            (Path(n.dir) / sub).mkdir(parents=True, exist_ok=True)
    (d / "pods").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("podserver.py"), d / "podserver.py")
    sshd.make_keys(d / "ssh")


def _check_kernel(store: StateStore, st: LabState) -> None:
    """The kernel's features (in a scratch namespace); refuses a kernel without the ones the lab needs."""
    st.capabilities = net.detect_capabilities(netns_name(st.prefix, "caps"))
    missing_caps = [c.name for c in st.capabilities if not c.available]
    if missing_caps:
        logger.warning("kernel features missing: {}", ", ".join(missing_caps))
    for need in KERNEL_NEEDS:
        if not any(c.name == need and c.available for c in st.capabilities):
            raise StepFailed(f"the kernel lacks {need}, which the lab needs")
    store.save(st)


def _wait_ssh(st: LabState, timeout: float = SSH_TIMEOUT) -> None:
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


def _build_underlay(st: LabState) -> None:
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
    sh.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{hv}.forwarding=0", f"net.ipv6.conf.{hv}.disable_ipv6=1"])
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


def _build_nodes(st: LabState) -> None:
    prefixlen = st.spec.underlay_net.prefixlen

    def one(n: NodeState) -> None:
        lines = [f"addr add {n.ip}/{prefixlen} dev eth0", "link set eth0 up"]
        lines.append(f"route add {SERVICE_NETWORK} dev eth0")  # node -> ClusterIP (DNAT'd in OUTPUT)
        sh.ip_batch(lines, netns=n.netns)
        sh.run(
            net.sysctl_argv(n.netns, {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"})
        )
        sh.run(net.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=services.BOOTSTRAP)

    sh.parallel(one, st.nodes.values())


def _start_holders(store: StateStore, st: LabState) -> None:
    """Each node's holder (``sleep infinity`` owning its mount and UTS namespaces), until it runs."""
    logs = Path(st.dir) / "logs"
    for n in st.nodes.values():
        st.record(ResourceKind.PROCESS, f"holder:{n.name}")
    store.save(st)
    for n in st.nodes.values():
        pid = sh.spawn(
            sshd.holder_argv(n.netns, n.name, Path(n.dir), keep=Path(st.dir).resolve()),
            log=logs / f"{n.name}-holder.log",
        )
        n.holder_pid = pid
        st.record(ResourceKind.PROCESS, f"holder:{n.name}", pid, sh.start_time(pid))
    store.save(st)
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


def _start_sshd(store: StateStore, st: LabState) -> None:
    """Each node's sshd, inside its holder's namespaces."""
    ssh_dir = Path(st.dir) / "ssh"
    logs = Path(st.dir) / "logs"
    for n in st.nodes.values():
        st.record(ResourceKind.PROCESS, f"sshd:{n.name}")
    store.save(st)
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
    # re-read the holders' start times now that they have exec'd
    for n in st.nodes.values():
        assert n.holder_pid and n.sshd_pid
        st.record(ResourceKind.PROCESS, f"holder:{n.name}", n.holder_pid, sh.start_time(n.holder_pid))


def _start_apiserver(store: StateStore, st: LabState) -> None:
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
    store.save(st)
    argv = kubelet.podserver_argv(st, "--bind", cp.ip, "--port", str(APISERVER_PORT))
    argv += ["--pod", f"kube-apiserver-{cp.name}", "--namespace", "kube-system", "--node", cp.name]
    argv += ["--app", "kube-apiserver", "--container", "kube-apiserver"]
    argv += ["--max-conns", str(APISERVER_MAX_CONNS)]
    log = Path(st.dir) / "logs" / f"{cp.name}-apiserver.log"
    pid = sh.spawn(sshd.node_exec_argv(cp.holder_pid, argv), log=log)
    st.record(ResourceKind.PROCESS, label, pid, sh.start_time(pid))
    deadline = time.monotonic() + kubelet.READY_TIMEOUT
    while not net.listening(pid, APISERVER_PORT):
        if not sh.alive(pid) or time.monotonic() > deadline:
            raise StepFailed(
                f"node {cp.name}: the control-plane endpoint did not listen: {log.read_text()[-300:]}",
                node=cp.name,
            )
        time.sleep(0.02)
    st.record(ResourceKind.PROCESS, label, pid, sh.start_time(pid))  # after exec
    st.apiserver = f"{cp.ip}:{APISERVER_PORT}"


def _write_inventory(st: LabState) -> None:
    common = (
        f"ansible_user=root ansible_ssh_private_key_file={st.ssh_key} "
        "ansible_python_interpreter=/usr/bin/python3 "
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
    )
    cps = [n for n in st.nodes.values() if CONTROL_PLANE_LABEL in n.labels]
    workers = [n for n in st.nodes.values() if CONTROL_PLANE_LABEL not in n.labels]
    lines = [f"# migrator lab {st.spec.name!r}: generated, do not edit", "[control_plane]"]
    lines += [f"{n.name} ansible_host={n.ip} {common}" for n in cps]
    lines += ["", "[workers]"]
    lines += [f"{n.name} ansible_host={n.ip} {common}" for n in workers]
    lines += ["", "[k8s_cluster:children]", "control_plane", "workers", ""]
    if st.apiserver:  # where a real inventory names the API endpoint (kubespray: apiserver_loadbalancer)
        lines += ["[k8s_cluster:vars]", f"migrator_apiserver_endpoint={st.apiserver}", ""]
    fsutil.atomic_write_text(Path(st.inventory), "\n".join(lines))
