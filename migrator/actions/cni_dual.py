"""The dual-overlay migration to Calico (Weave Net -> Calico): Calico beside the source on every node, with
another pod CIDR and another VXLAN port, then node by node the kubelet's CNI config switches (issue 15).

Weave's IPAM is one flat range across nodes, so per-node blocks cannot be kept (the wire-compatible swap
of :mod:`migrator.actions.cni` is not possible). Instead both overlays run side by side and the routing
table separates them: every node has Weave's bridge route to the flat range and Calico's VXLAN routes to the
other nodes' blocks, so pods of migrated and not-yet-migrated nodes reach each other throughout.

- ``cni.dual-install``: every node labelled ``MIGRATION_LABEL=<source>``; calico-node on every node with
  its own pool (``calico_cidr``, a block per node), VXLAN port and VNI, its CNI config under a name sorted
  after the source's (``cni_conf_name``, Calico's CNI_CONF_NAME: the kubelet keeps the source's) and no
  masquerade to the source's range (a disabled IPPool on a real cluster); ``MIGRATOR-NONAT`` on every node
  (``playbooks/dual-overlay-nonat.yml``) so that Weave does not masquerade either; kube-proxy's cluster
  CIDR widened to hold both ranges (else a pod of the new range reaching a Service is masqueraded to its
  node's address). Waits for calico-node on every node. Undo: calico-node deleted, what it left on the
  nodes removed, kube-proxy's cluster CIDR restored, the labels removed.
- ``cni.dual-switch-node`` (after cordon + drain): the source's CNI config disabled on the node
  (``cni-config.yml``, renamed aside), so Calico's is the kubelet's; label ``calico``. The source's agent
  keeps running: its overlay still carries the traffic of the nodes not migrated yet. Undo: the config
  enabled again and, when a pod of the node has an address outside the source's range, drain and restart.
- ``cni.dual-finalize``: every node on Calico; the source's DaemonSet deleted, its leftovers removed from
  every node and proven gone, ``MIGRATOR-NONAT`` removed, kube-proxy's cluster CIDR = Calico's, the labels
  removed. Undo: the source's DaemonSet
  and ``MIGRATOR-NONAT`` back (the switch undos then move each node back).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from loguru import logger

from migrator import playbooks
from migrator.actions.base import Action, register_action
from migrator.actions.cni import (
    CNI_CONFIG_PLAYBOOK,
    assert_no_leftovers,
    cni_ops,
    playbook_command,
    run_playbook,
    source_cni,
    wait_agent_ready,
)
from migrator.actions.context import PreviewLine, StepContext
from migrator.cni import DUAL_OVERLAY_SOURCES, MIGRATION_LABEL, CniInfo, CniKind, agent, calico, driver
from migrator.errors import StepFailed
from migrator.plan.models import CniDualFinalizeArgs, CniDualInstallArgs, CniDualSwitchNodeArgs

CALICO = CniKind.CALICO
NONAT_PLAYBOOK = "dual-overlay-nonat.yml"
NONAT_CHAIN = "MIGRATOR-NONAT"
TEARDOWN_PLAYBOOK = "cni-teardown.yml"
DISABLED_SUFFIX = ".migrator-disabled"


def _source(value: str) -> CniKind:
    return source_cni(value, DUAL_OVERLAY_SOURCES)


def _source_range(info: CniInfo, source: CniKind) -> str:
    value = info.weave_range if source is CniKind.WEAVE else None
    if not value:
        raise StepFailed(f"{source}'s pod range is not known (detected: {info.kind})")
    return value


def _hosts(ctx: StepContext) -> list[str]:
    return [n.name for n in ctx.cluster.list_nodes()]


def calico_config(args: CniDualInstallArgs, source_range: str) -> dict[str, str]:
    """calico-node's config beside the source (the lab's DaemonSet config; the kube target's objects)."""
    cfg = {
        "mode": "vxlan",
        "pool": args.calico_cidr,
        "block_size": str(args.block_size),
        "vxlan_port": str(args.vxlan_port),
        "vxlan_vni": str(args.vxlan_vni),
        "cni_conf_name": args.cni_conf_name,
        "nat_exclude": source_range,
    }
    if args.manifest:
        cfg["manifest"] = args.manifest
    return cfg


def nonat_vars(source_range: str, calico_cidr: str, state: str = "present") -> dict[str, Any]:
    return {"nonat_ranges": [source_range, calico_cidr], "nonat_state": state}


def covering(*cidrs: str) -> str:
    """The smallest IPv4 network holding every one of ``cidrs`` (kube-proxy's cluster CIDR while two pod
    ranges are in use: it takes one IPv4 CIDR)."""
    nets = [ipaddress.IPv4Network(c, strict=False) for c in cidrs]
    wide = nets[0]
    while not all(n.subnet_of(wide) for n in nets):
        wide = wide.supernet()
    return str(wide)


def source_conflist(source: CniKind) -> str:
    left = driver(source).leftovers
    if left is None or not left.cni_files:
        raise StepFailed(f"{source}'s CNI config file is not known")
    return left.cni_files[0]


def calico_teardown_vars(cni_conf_name: str) -> dict[str, Any]:
    """What calico-node leaves on a node (its device, chains and CNI config under its name)."""
    left = calico.DRIVER.leftovers
    assert left is not None
    return {**left.teardown_vars(), "cni_files": [*left.cni_files, cni_conf_name]}


def source_teardown_vars(source: CniKind) -> dict[str, Any]:
    """What the source leaves on a node, its CNI config disabled by a switch included."""
    base = driver(source).teardown_vars()
    files = list(base.get("cni_files") or [])
    return {**base, "cni_files": [*files, *(f + DISABLED_SUFFIX for f in files)]}


def finalize_teardown_vars(source: CniKind) -> dict[str, Any]:
    """The source's leftovers and ``MIGRATOR-NONAT`` (with its jump), in one teardown run on every node."""
    base = source_teardown_vars(source)
    return {**base, "chain_prefixes": [*base.get("chain_prefixes", []), NONAT_CHAIN]}


# ------------------------------------------------------------------------------------------------ install


@register_action("cni.dual-install")
class DualInstall(Action[CniDualInstallArgs]):
    """Calico on every node beside the source, with its own CIDR, VXLAN port and VNI (no node switched)."""

    def preflight(self, ctx: StepContext, args: CniDualInstallArgs) -> None:
        """Refuse, before anything changes, another source, a Calico manifest migrator cannot install and
        a kube-proxy whose cluster CIDR migrator cannot set (its dry run)."""
        source = _source(args.source)
        ops = cni_ops(ctx.target)
        info = ops.detect_cni()
        if info.kind is not source:
            raise StepFailed(f"the source CNI is {info.kind}, not {source}")
        source_range = _source_range(info, source)
        ops.set_cluster_cidr(covering(source_range, args.calico_cidr), dry_run=True)
        if args.manifest:
            problems = calico.manifest_problems(calico.load_manifest(args.manifest), None, args.manifest)
            if problems:
                raise StepFailed("; ".join(problems))

    def do(self, ctx: StepContext, args: CniDualInstallArgs) -> Any:
        source = _source(args.source)
        ops = cni_ops(ctx.target)
        info = ops.detect_cni()
        if info.kind is not source:
            raise StepFailed(f"the source CNI is {info.kind}, not {source}")
        source_range = _source_range(info, source)
        labelled = []
        for n in ctx.cluster.list_nodes():
            if MIGRATION_LABEL not in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: source.value})
                labelled.append(n.name)
        hosts = _hosts(ctx)
        prior_cidr = ops.cluster_cidr()
        run_playbook(ctx, NONAT_PLAYBOOK, hosts, nonat_vars(source_range, args.calico_cidr))
        ops.set_cluster_cidr(covering(source_range, args.calico_cidr))
        ops.apply_cni_agent(CALICO, node_selector=None, config=calico_config(args, source_range))
        for host in hosts:
            wait_agent_ready(ctx, ops, CALICO, host, args.ready_timeout)
        ops.resync_cni()
        return {
            "source": source.value,
            "source_range": source_range,
            "labelled": labelled,
            "hosts": hosts,
            "kube_proxy_cluster_cidr": prior_cidr,
        }

    def undo(self, ctx: StepContext, args: CniDualInstallArgs, result: Any) -> None:
        source = _source(args.source)
        ops = cni_ops(ctx.target)
        nodes = ctx.cluster.list_nodes()
        on_calico = [n.name for n in nodes if n.labels.get(MIGRATION_LABEL) == CALICO]
        if on_calico:
            raise StepFailed(f"nodes still on Calico, not uninstalling it: {', '.join(on_calico)}")
        hosts = [n.name for n in nodes]
        ops.delete_cni_agent(CALICO)
        run_playbook(ctx, TEARDOWN_PLAYBOOK, hosts, calico_teardown_vars(args.cni_conf_name))
        run_playbook(ctx, NONAT_PLAYBOOK, hosts, {"nonat_state": "absent"})
        if isinstance(result, dict) and "kube_proxy_cluster_cidr" in result:
            ops.set_cluster_cidr(result["kube_proxy_cluster_cidr"])
        ops.resync_cni()
        for n in nodes:
            if n.labels.get(MIGRATION_LABEL) == source.value:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: None})

    def preview(self, ctx: StepContext, args: CniDualInstallArgs) -> list[PreviewLine]:
        source = _source(args.source)
        ops = cni_ops(ctx.target)
        info = ops.detect_cni()
        if info.kind is not source:
            return [f"would fail: the source CNI is {info.kind}, not {source}"]
        source_range = _source_range(info, source)
        hosts = _hosts(ctx)
        lines: list[PreviewLine] = [
            {"command": f"kubectl label node {n.name} {MIGRATION_LABEL}={source}"}
            for n in ctx.cluster.list_nodes()
            if MIGRATION_LABEL not in n.labels
        ]
        lines.append(
            {"command": playbook_command(NONAT_PLAYBOOK, hosts, nonat_vars(source_range, args.calico_cidr))}
        )
        lines += ops.set_cluster_cidr(covering(source_range, args.calico_cidr), dry_run=True)
        lines += ops.apply_cni_agent(
            CALICO, node_selector=None, config=calico_config(args, source_range), dry_run=True
        )
        lines.append(
            f"wait until calico-node is ready on every node (at most {args.ready_timeout:g}s each); the"
            f" kubelet keeps {source_conflist(source)} (Calico's {args.cni_conf_name} sorts after it)"
        )
        return lines

    def undo_preview(self, ctx: StepContext, args: CniDualInstallArgs) -> list[PreviewLine]:
        return [
            "delete calico-node, remove what it left on every node"
            f" ({playbook_command(TEARDOWN_PLAYBOOK, ['all'], calico_teardown_vars(args.cni_conf_name))}),"
            " remove MIGRATOR-NONAT, restore kube-proxy's cluster CIDR, remove the migration labels"
        ]


# ------------------------------------------------------------------------------------------------ switch


def _config_vars(source: CniKind, state: str, fail_at_node: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"cni_file": source_conflist(source), "cni_state": state}
    if fail_at_node:
        out["fail_at_node"] = fail_at_node
    return out


CNI_SUFFIXES = (".conf", ".conflist", ".json")


def kubelet_config(ctx: StepContext, node: str) -> str | None:
    """The CNI config the node's kubelet uses: the first ``.conf``/``.conflist``/``.json`` file of its CNI
    folder, read on the node (node facts). ``Node.cni`` cannot tell here: on a real cluster it comes from
    the node's annotations, and with calico-node on every node all of them carry Calico's."""
    run = run_playbook(ctx, playbooks.NODE_FACTS_PLAYBOOK, [node], dict(playbooks.NODE_FACTS_VARS))
    facts = run.fact(playbooks.NODE_FACTS).get(node)
    if not isinstance(facts, dict):
        raise StepFailed(f"{node}: no node facts (its CNI config cannot be read)", node=node)
    names = sorted(str(f.get("name", "")) for f in facts.get("cni", {}).get("files", []))
    return next((n for n in names if n.endswith(CNI_SUFFIXES)), None)


def _outside(pod_ip: str | None, network: ipaddress.IPv4Network) -> bool:
    try:
        return pod_ip is not None and ipaddress.IPv4Address(pod_ip) not in network
    except ValueError:
        return False


@register_action("cni.dual-switch-node")
class DualSwitchNode(Action[CniDualSwitchNodeArgs]):
    """The current node's kubelet from the source's CNI config to Calico's (the node cordoned and drained by
    the steps before; ``node.restart-pods`` after gives its pods Calico addresses)."""

    needs_node = True

    def do(self, ctx: StepContext, args: CniDualSwitchNodeArgs) -> Any:
        source = _source(args.source)
        node = ctx.require_node().name
        ops = cni_ops(ctx.target)
        started = time.monotonic()
        theirs = source_conflist(source)
        current = ctx.cluster.get_node(node)
        if current.labels.get(MIGRATION_LABEL) == CALICO and kubelet_config(ctx, node) not in (theirs, None):
            return {"node": node, "from": source.value, "to": CALICO.value, "already": True}
        logger.info("node {}: kubelet CNI {} -> {} (dual overlay)", node, source, CALICO)
        wait_agent_ready(ctx, ops, CALICO, node, args.ready_timeout)
        run_playbook(ctx, CNI_CONFIG_PLAYBOOK, [node], _config_vars(source, "disabled", args.fail_at_node))
        ops.resync_cni()
        after = kubelet_config(ctx, node)
        if after in (theirs, None):
            raise StepFailed(
                f"{node}: the kubelet's first CNI config is {after!r} after the switch, not Calico's",
                node=node,
            )
        ctx.cluster.label_node(node, {MIGRATION_LABEL: CALICO.value})
        seconds = round(time.monotonic() - started, 2)
        ctx.emit(
            {
                "event": "cni.node-switched",
                "node": node,
                "from": source.value,
                "to": "calico",
                "seconds": seconds,
            }
        )
        return {"node": node, "from": source.value, "to": CALICO.value, "seconds": seconds}

    def undo(self, ctx: StepContext, args: CniDualSwitchNodeArgs, result: Any) -> None:
        source = _source(args.source)
        node = ctx.require_node().name
        ops = cni_ops(ctx.target)
        run_playbook(ctx, CNI_CONFIG_PLAYBOOK, [node], _config_vars(source, "enabled"))
        ops.resync_cni()
        after = kubelet_config(ctx, node)
        if after != source_conflist(source):
            raise StepFailed(
                f"{node}: the kubelet's first CNI config is {after!r} after switching back, not"
                f" {source_conflist(source)}",
                node=node,
            )
        network = ipaddress.IPv4Network(_source_range(ops.detect_cni(), source), strict=False)
        moved = [
            p.key for p in ctx.cluster.list_pods(node=node) if not p.host_network and _outside(p.ip, network)
        ]
        if moved:  # pods wired by Calico: they get the source's addresses again
            current = ctx.cluster.get_node(node)
            ctx.cluster.set_schedulable(node, False)
            ctx.cluster.drain_node(
                node, timeout=min(args.drain_timeout, max(1.0, ctx.remaining())), cancel=ctx.cancel
            )
            ctx.cluster.restart_pods(node)
            if current.schedulable:
                ctx.cluster.set_schedulable(node, True)
        ctx.cluster.label_node(node, {MIGRATION_LABEL: source.value})

    def preview(self, ctx: StepContext, args: CniDualSwitchNodeArgs) -> list[PreviewLine]:
        source = _source(args.source)
        node = ctx.require_node().name
        extra = _config_vars(source, "disabled", args.fail_at_node)
        return [
            f"wait until calico-node is ready on {node} (at most {args.ready_timeout:g}s)",
            {"command": playbook_command(CNI_CONFIG_PLAYBOOK, [node], extra)},
            f"the kubelet of {node} then uses Calico's CNI config; {agent(source).name} keeps running there",
            {"command": f"kubectl label node {node} --overwrite {MIGRATION_LABEL}=calico"},
        ]

    def undo_preview(self, ctx: StepContext, args: CniDualSwitchNodeArgs) -> list[PreviewLine]:
        source = _source(args.source)
        node = ctx.require_node().name
        return [
            {"command": playbook_command(CNI_CONFIG_PLAYBOOK, [node], _config_vars(source, "enabled"))},
            f"drain {node} and restart its pods when any has a Calico address;"
            f" label {MIGRATION_LABEL}={source}",
        ]


# ------------------------------------------------------------------------------------------------ finalize


@register_action("cni.dual-finalize")
class DualFinalize(Action[CniDualFinalizeArgs]):
    """Every node on Calico: remove the source (DaemonSet, node leftovers, proven gone) and MIGRATOR-NONAT."""

    def prepare(self, ctx: StepContext, args: CniDualFinalizeArgs) -> Any:
        source = _source(args.source)
        info = cni_ops(ctx.target).detect_cni()
        return {"source_range": info.weave_range if source is CniKind.WEAVE else None}

    def do(self, ctx: StepContext, args: CniDualFinalizeArgs) -> Any:
        source = _source(args.source)
        ops = cni_ops(ctx.target)
        nodes = ctx.cluster.list_nodes()
        behind = [n.name for n in nodes if n.labels.get(MIGRATION_LABEL) != CALICO]
        if behind:
            raise StepFailed(f"nodes not on Calico yet: {', '.join(behind)}")
        hosts = [n.name for n in nodes]
        deleted = ops.delete_cni_agent(source)
        run_playbook(ctx, TEARDOWN_PLAYBOOK, hosts, finalize_teardown_vars(source))
        ops.set_cluster_cidr(args.calico_cidr)
        ops.resync_cni()
        for n in nodes:
            if MIGRATION_LABEL in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: None})
        assert_no_leftovers(ctx, source, hosts)
        return {"deleted": deleted, "source": source.value, "leftovers": {}}

    def undo(self, ctx: StepContext, args: CniDualFinalizeArgs, result: Any) -> None:
        source = _source(args.source)
        ops = cni_ops(ctx.target)
        for n in ctx.cluster.list_nodes():  # the finalize ran with every node switched
            if MIGRATION_LABEL not in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: CALICO.value})
        ops.apply_cni_agent(source, node_selector=None, config=None)
        prepared = ctx.prepared if isinstance(ctx.prepared, dict) else {}
        source_range = prepared.get("source_range") or _source_range(ops.detect_cni(), source)
        run_playbook(ctx, NONAT_PLAYBOOK, _hosts(ctx), nonat_vars(source_range, args.calico_cidr))
        ops.set_cluster_cidr(covering(source_range, args.calico_cidr))
        ops.resync_cni()

    def preview(self, ctx: StepContext, args: CniDualFinalizeArgs) -> list[PreviewLine]:
        source = _source(args.source)
        ops = cni_ops(ctx.target)
        hosts = _hosts(ctx)
        lines: list[PreviewLine] = list(ops.delete_cni_agent(source, dry_run=True))
        lines.append({"command": playbook_command(TEARDOWN_PLAYBOOK, hosts, finalize_teardown_vars(source))})
        lines += ops.set_cluster_cidr(args.calico_cidr, dry_run=True)
        lines.append({"command": f"kubectl label nodes --all {MIGRATION_LABEL}-"})
        lines.append(
            {"command": playbook_command("node-facts.yml", hosts, {}), "expect": f"no {source} left"}
        )
        return lines

    def undo_preview(self, ctx: StepContext, args: CniDualFinalizeArgs) -> list[PreviewLine]:
        return [f"recreate {args.source}'s DaemonSet and MIGRATOR-NONAT, label the nodes again"]
