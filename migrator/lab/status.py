"""``lab status``: the dict behind ``status -o json`` (nodes with their live data plane, pods, services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from migrator.lab import calico, control, flannel, net, netpol, sh, weave
from migrator.lab.agents import node_cni
from migrator.lab.state import LabState, NodeState, PodPhase, PodState

CNI_DEVICES = (flannel.VXLAN_DEV, flannel.BRIDGE_DEV, calico.VXLAN_DEV, weave.BRIDGE_DEV, weave.VXLAN_DEV)
CNI_CHAIN_PREFIXES = ("FLANNEL", "cali-", "MNP-", weave.CHAIN_PREFIX)


def status_dict(st: LabState) -> dict[str, Any]:
    planes = dict(zip(st.nodes, sh.parallel(_data_plane, list(st.nodes.values())), strict=True))
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
        "nodes": [{**_node(n), **planes[n.name]} for n in st.nodes.values()],
        "namespaces": [
            {"name": ns.name, "labels": ns.labels}
            for ns in sorted(st.namespaces.values(), key=lambda n: n.name)
        ],
        "network_policies": [
            {"namespace": ps.namespace, "name": ps.name, "spec": ps.raw.get("spec", {})}
            for _k, ps in sorted(st.policies.items())
        ],
        "pods": [_pod(p) for p in sorted(st.pods.values(), key=lambda p: (p.namespace, p.name))],
        "services": [
            {
                "name": s.name,
                "namespace": s.namespace,
                "cluster_ip": s.cluster_ip,
                "dns_name": f"{s.name}.{s.namespace}.svc.cluster.local",
                "ports": [p.model_dump() for p in s.ports],
                "selector": s.selector,
                "endpoints": control.endpoints(st, key),
            }
            for key, s in sorted(st.services.items())
        ],
    }


def _node(n: NodeState) -> dict[str, Any]:
    return {
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
        "policy": netpol.node_summary(n),
    }


def _pod(p: PodState) -> dict[str, Any]:
    alive = all(sh.alive(c.pid, c.start_time) for c in p.containers)
    return {
        "name": p.name,
        "namespace": p.namespace,
        "node": p.node,
        "ip": p.ip,
        "labels": p.labels,
        "owner": p.owner,
        "host_network": p.host_network,
        "phase": p.phase.value if alive or not p.containers else PodPhase.FAILED.value,
        "containers": sorted({c.container for c in p.container_ports if c.container})
        or [c.name for c in p.containers],
        "container_ports": [c.model_dump() for c in p.container_ports],
        "netns": net.netns_path(p.netns) if p.netns else None,
        "message": p.message,
    }


def _bgp_summary(n: NodeState) -> str | None:
    """``None`` without bird; else ``established/sessions`` from ``birdc show protocols``."""
    if not (n.bird_pid and sh.alive(n.bird_pid, n.bird_start)):
        return None
    res = sh.run(["birdc", "-s", str(Path(n.dir) / "bird.ctl"), "show", "protocols"], check=False, timeout=5)
    rows = [line for line in res.stdout.splitlines() if " BGP " in line]
    return f"{sum('Established' in r for r in rows)}/{len(rows)} established"


def _weave(n: NodeState, links: list[str]) -> dict[str, Any] | None:
    """The node on the weave network: its exposed address and the peers of its ``vxlan-6784`` mesh."""
    if weave.BRIDGE_DEV not in links:
        return None
    fdb = sh.run(
        ["bridge", "-n", n.netns, "-j", "fdb", "show", "dev", weave.VXLAN_DEV], check=False, timeout=10
    )
    return {
        "addresses": net.link_addrs(n.netns, weave.BRIDGE_DEV) or [],
        "peers": weave.mesh_peers(json.loads(fdb.stdout or "[]") if fdb.ok else []),
    }


def _data_plane(n: NodeState) -> dict[str, Any]:
    """The CNI leftovers a migration cares about: devices, config files and iptables chains; the node's
    weave network when it has the bridge."""
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
        "weave": _weave(n, links),
    }
