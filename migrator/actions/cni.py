"""CNI migration actions: a live, node-by-node flannel -> Calico swap and its exact reverse (issue 6).

They talk to the target through :class:`~migrator.ports.CniOps` (implemented by the cluster), the
:class:`~migrator.ports.Cluster` port and the :class:`~migrator.ports.NodeExecutor` (node-level work as
Ansible playbooks). Every ``do`` and ``undo`` is idempotent: each one looks at the current state and only
does what is missing, so the engine may re-run it after a crash or run the undo of a half-done ``do``.

- ``cni.preflight``: detect the source CNI and its settings (recorded as the step result in the journal);
  refuse a non-VXLAN flannel backend, DirectRouting, a conflicting Calico pool, Canal/Weave Net/Cilium.
- ``cni.install-calico``: label every node ``MIGRATION_LABEL=flannel``, restrict flannel's DaemonSet to
  those nodes, install calico-node selecting ``MIGRATION_LABEL=calico`` (no node yet).
- ``cni.switch-node`` (per node, after cordon + drain): label ``switching`` (flannel's pod leaves),
  playbook ``cni-switch-teardown.yml`` (blocking CNI config, then delete ``flannel.1``/``cni0``, the
  ``FLANNEL-*`` chains, ``10-flannel.conflist``, ``subnet.env``), label ``calico``, wait until calico-node is
  ready, remove the blocking config. Undo: the same steps in the other direction (drain first).
- ``cni.finalize``: delete flannel's DaemonSet, drop the node selector and labels, prove with node facts
  that no flannel device, file or chain is left anywhere.
- ``cni.calico-mode`` (per node) and ``cni.remove-vxlan``: the optional VXLAN -> BGP stage.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.actions.base import Action, register_action
from migrator.actions.context import PreviewLine, StepContext
from migrator.errors import MigratorError, PermanentError, StepFailed
from migrator.plan.models import (
    CniCalicoModeArgs,
    CniInstallCalicoArgs,
    CniPreflightArgs,
    CniRemoveVxlanArgs,
    CniSwitchNodeArgs,
    EmptyArgs,
)
from migrator.ports import (
    MIGRATION_LABEL,
    CalicoMode,
    CniAgent,
    CniInfo,
    CniOps,
    CniSource,
    NodeExecutor,
    PlaybookRequest,
    RunnerStatus,
    Target,
)

BLOCKING_CONFLIST = "00-migrator-blocking.conflist"
TEARDOWN_PLAYBOOK = "cni-switch-teardown.yml"
CNI_CONFIG_PLAYBOOK = "cni-config.yml"
LINK_ABSENT_PLAYBOOK = "link-absent.yml"
NODE_FACTS_PLAYBOOK = "node-facts.yml"

# what each CNI leaves on a node (interfaces, iptables chain prefixes, CNI files, other files)
LEFTOVERS: dict[str, dict[str, list[str]]] = {
    "flannel": {
        "links": ["flannel.1", "cni0"],
        "chain_prefixes": ["FLANNEL"],
        "cni_files": ["10-flannel.conflist"],
        "extra_files": ["/run/flannel/subnet.env"],
    },
    "calico": {
        "links": ["vxlan.calico"],
        "chain_prefixes": ["cali-"],
        "cni_files": ["10-calico.conflist"],
        "extra_files": [],
    },
}
AGENT_OF = {"flannel": CniAgent.FLANNEL, "calico": CniAgent.CALICO}
POLL = 0.2
CALICO_MODE_LABEL = "lab.migrator.io/calico-mode"  # per-node mode (the lab's calico-node honours it)


# ------------------------------------------------------------------------------------------------ helpers


def cni_ops(target: Target) -> CniOps:
    cluster = target.cluster
    if not isinstance(cluster, CniOps):
        raise PermanentError(
            f"target {target.name} does not implement CNI operations (migrator.ports.CniOps)"
        )
    return cluster


def _executor(target: Target) -> NodeExecutor:
    return target.node_executor("the CNI migration runs playbooks on the nodes")


def run_playbook(
    ctx: StepContext, playbook: str, hosts: list[str], extra_vars: dict[str, Any], *, check: bool = False
) -> dict[str, Any]:
    """Run a playbook through the node executor; raise :class:`StepFailed` naming the failing host/task."""
    executor = _executor(ctx.target)
    timeout = max(5.0, min(ctx.remaining(), 300.0))
    request = PlaybookRequest(
        playbook=Path(playbook),
        hosts=tuple(hosts),
        extra_vars=extra_vars,
        check=check,
        diff=check,
        timeout=timeout,
        forks=max(1, len(hosts)),
    )
    facts: dict[str, Any] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, dict) and isinstance(event.get("facts"), dict):
            facts.setdefault(str(event.get("host")), {}).update(event["facts"])

    ctx.emit(
        {"event": "cni.playbook", "playbook": playbook, "hosts": hosts, "vars": extra_vars, "check": check}
    )
    try:
        result = executor.run_playbook(
            request, data_dir=ctx.artifacts() / "ansible", cancel=ctx.cancel, on_event=on_event
        )
    except MigratorError as exc:
        raise StepFailed(
            f"{playbook} on {', '.join(hosts)}: {exc}", node=hosts[0] if hosts else None
        ) from exc
    if result.status is not RunnerStatus.SUCCESSFUL:
        bad = [h for h in result.hosts.values() if h.failed or h.unreachable]
        why = "; ".join(f"{h.host}: {h.failed_task}: {h.message}" for h in bad) or str(result.status)
        raise StepFailed(f"{playbook} failed: {why}", node=bad[0].host if bad else None)
    diffs = {h: [dict(d) for d in r.diffs] for h, r in result.hosts.items() if r.diffs}
    return {"facts": facts, "changed": result.changed, "diffs": diffs}


def playbook_command(playbook: str, hosts: list[str], extra_vars: dict[str, Any]) -> str:
    return _command(playbook, hosts, json.dumps(extra_vars))


def _command(playbook: str, hosts: list[str], vars_json: str) -> str:
    return f"ansible-playbook playbooks/{playbook} --limit {','.join(hosts)} -e '{vars_json}'"


@functools.lru_cache(maxsize=64)
def _teardown_vars_json(cni: str, fail_at_node: str) -> str:
    """``json.dumps(teardown_vars(...))``: the same text for every node of a step (a dry run previews
    ``cni.switch-node`` on every node; dumping it per node was ~7% of a 5,000-node dry run)."""
    return json.dumps(teardown_vars(cni, fail_at_node))


@functools.lru_cache(maxsize=1)
def _unblock_vars_json() -> str:
    return json.dumps(unblock_vars())


def wait_agent_ready(ctx: StepContext, ops: CniOps, agent: CniAgent, node: str, timeout: float) -> None:
    """Poll until the agent's pod on ``node`` is ready; resync the agents every 2 s (a pod's restart)."""
    deadline = time.monotonic() + min(timeout, ctx.remaining())
    last_resync = time.monotonic()
    while True:
        ok, why = ops.cni_agent_ready(agent, node)
        if ok:
            return
        if time.monotonic() >= deadline:
            raise StepFailed(f"{agent} not ready on {node} after {timeout:g}s: {why}", node=node)
        if time.monotonic() - last_resync > 2.0:
            ops.resync_cni()
            last_resync = time.monotonic()
        ctx.sleep(POLL)


def teardown_vars(cni: str, fail_at_node: str = "") -> dict[str, Any]:
    return {**LEFTOVERS[cni], "fail_at_node": fail_at_node}


def unblock_vars() -> dict[str, Any]:
    return {"cni_file": BLOCKING_CONFLIST, "cni_state": "absent"}


def switch_node(
    ctx: StepContext, node: str, old: str, new: str, *, fail_at_node: str = "", ready_timeout: float = 60.0
) -> dict[str, Any]:
    """Swap ``node`` from CNI ``old`` to ``new`` (``flannel``/``calico``); idempotent."""
    ops = cni_ops(ctx.target)
    cluster = ctx.cluster
    started = time.monotonic()
    current = cluster.get_node(node)
    ready, _ = ops.cni_agent_ready(AGENT_OF[new], node)
    if current.labels.get(MIGRATION_LABEL) == new and current.cni == new and ready:
        return {"node": node, "from": old, "to": new, "already": True}
    logger.info("node {}: switching CNI {} -> {}", node, old, new)
    # the old agent's pod leaves the node (neither DaemonSet selects 'switching')
    cluster.label_node(node, {MIGRATION_LABEL: "switching"})
    teardown = run_playbook(ctx, TEARDOWN_PLAYBOOK, [node], teardown_vars(old, fail_at_node))
    cluster.label_node(node, {MIGRATION_LABEL: new})  # the new agent's pod starts on the node
    wait_agent_ready(ctx, ops, AGENT_OF[new], node, ready_timeout)
    run_playbook(ctx, CNI_CONFIG_PLAYBOOK, [node], unblock_vars())
    after = cluster.get_node(node).cni
    if after != new:
        raise StepFailed(
            f"{node}: the kubelet's network is {after!r} after the switch, not {new!r}", node=node
        )
    seconds = round(time.monotonic() - started, 2)
    ctx.emit({"event": "cni.node-switched", "node": node, "from": old, "to": new, "seconds": seconds})
    return {"node": node, "from": old, "to": new, "seconds": seconds, "changed": teardown["changed"]}


def leftovers(ctx: StepContext, cni: str, hosts: list[str]) -> dict[str, list[str]]:
    """Per host, what of ``cni`` is still on the node (interfaces, CNI files, chains, other files)."""
    facts = run_playbook(ctx, NODE_FACTS_PLAYBOOK, hosts, {"include_cni_content": False})["facts"]
    return leftovers_from_facts(facts, cni, hosts)


def leftovers_from_facts(facts: dict[str, Any], cni: str, hosts: list[str]) -> dict[str, list[str]]:
    want = LEFTOVERS[cni]
    owner = {"flannel": "FLANNEL", "calico": "cali"}[cni]
    out: dict[str, list[str]] = {}
    for host in hosts:
        f = facts.get(host, {}).get("migrator_node_facts")
        if not isinstance(f, dict):
            out[host] = ["no node facts"]
            continue
        found = [f"device {i['name']}" for i in f.get("interfaces", []) if i.get("name") in want["links"]]
        found += [
            f"file {x['name']}"
            for x in f.get("cni", {}).get("files", [])
            if x.get("name") in [*want["cni_files"], BLOCKING_CONFLIST]
        ]
        for table, chains in f.get("iptables", {}).get("chains", {}).get(owner, {}).items():
            found += [f"chain {table}/{c}" for c in chains]
        if cni == "flannel" and f.get("flannel_subnet_env"):
            found.append("file /run/flannel/subnet.env")
        if found:
            out[host] = found
    return out


def _all_hosts(ctx: StepContext) -> list[str]:
    return [n.name for n in ctx.cluster.list_nodes()]


def _check_preview(ctx: StepContext, playbook: str, hosts: list[str], extra: dict[str, Any]) -> PreviewLine:
    """The playbook's check-mode diff (a dry run on the nodes), or why it could not run."""
    try:
        res = run_playbook(ctx, playbook, hosts, extra, check=True)
        return {"check_mode": playbook, "hosts": hosts, "changed": res["changed"], "diff": res["diffs"]}
    except MigratorError as exc:
        return {"check_mode": playbook, "hosts": hosts, "error": str(exc)}


# ------------------------------------------------------------------------------------------------ actions


@register_action("cni.preflight")
class Preflight(Action[CniPreflightArgs]):
    """Detect the source CNI and its config; refuse what a wire-compatible live migration cannot do."""

    def do(self, ctx: StepContext, args: CniPreflightArgs) -> Any:
        info = cni_ops(ctx.target).detect_cni()
        problems = info.migration_blockers()
        if args.expect_vni is not None and info.vni != args.expect_vni:
            problems.append(f"flannel's VNI is {info.vni}, the plan expects {args.expect_vni}")
        if args.expect_port is not None and info.port != args.expect_port:
            problems.append(f"flannel's VXLAN port is {info.port}, the plan expects {args.expect_port}")
        ctx.emit({"event": "cni.detected", "source": str(info.source), "info": info.to_json()})
        if problems:
            raise StepFailed("cannot migrate to Calico live: " + "; ".join(problems))
        return info.to_json()

    def undo(self, ctx: StepContext, args: CniPreflightArgs, result: Any) -> None:
        return None

    def preview(self, ctx: StepContext, args: CniPreflightArgs) -> list[PreviewLine]:
        info = cni_ops(ctx.target).detect_cni()
        problems = info.migration_blockers()
        return [
            {
                "detect": str(info.source),
                "network": info.network,
                "vni": info.vni,
                "port": info.port,
                "mtu": info.mtu,
                "backend": info.backend,
                "blockers": problems,
            }
        ]


@register_action("cni.install-calico")
class InstallCalico(Action[CniInstallCalicoArgs]):
    """Install calico-node in migration mode (it selects ``MIGRATION_LABEL=calico``: no node yet)."""

    def prepare(self, ctx: StepContext, args: CniInstallCalicoArgs) -> Any:
        info = cni_ops(ctx.target).detect_cni()
        return {"flannel_selector": dict(info.agents.get(CniAgent.FLANNEL.value, {}))}

    @staticmethod
    def _config(args: CniInstallCalicoArgs) -> dict[str, str]:
        cfg = {"mode": args.mode, "peering": args.peering, "reflectors": args.reflectors}
        if args.manifest:
            cfg["manifest"] = args.manifest
        return cfg

    def do(self, ctx: StepContext, args: CniInstallCalicoArgs) -> Any:
        ops = cni_ops(ctx.target)
        info = ops.detect_cni()
        if info.source is not CniSource.FLANNEL:
            raise StepFailed(f"the source CNI is {info.source}, not flannel")
        labelled = []
        for n in ctx.cluster.list_nodes():  # label first, then restrict flannel: no flannel pod leaves
            if MIGRATION_LABEL not in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: "flannel"})
                labelled.append(n.name)
        ops.apply_cni_agent(CniAgent.FLANNEL, node_selector={MIGRATION_LABEL: "flannel"}, config=None)
        ops.apply_cni_agent(
            CniAgent.CALICO, node_selector={MIGRATION_LABEL: "calico"}, config=self._config(args)
        )
        return {"labelled": labelled, "flannel_selector": dict(info.agents.get(CniAgent.FLANNEL.value, {}))}

    def undo(self, ctx: StepContext, args: CniInstallCalicoArgs, result: Any) -> None:
        ops = cni_ops(ctx.target)
        on_calico = [n.name for n in ctx.cluster.list_nodes() if n.labels.get(MIGRATION_LABEL) == "calico"]
        if on_calico:
            raise StepFailed(f"nodes still on Calico, not uninstalling it: {', '.join(on_calico)}")
        prior: dict[str, str] = {}
        for source in (ctx.prepared, result):
            if isinstance(source, dict) and isinstance(source.get("flannel_selector"), dict):
                prior = dict(source["flannel_selector"])
                break
        ops.delete_cni_agent(CniAgent.CALICO)
        ops.apply_cni_agent(CniAgent.FLANNEL, node_selector=prior or None, config=None)  # before the labels
        for n in ctx.cluster.list_nodes():
            if MIGRATION_LABEL in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: None})

    def preview(self, ctx: StepContext, args: CniInstallCalicoArgs) -> list[PreviewLine]:
        ops = cni_ops(ctx.target)
        lines: list[PreviewLine] = [
            {"command": f"kubectl label node {n.name} {MIGRATION_LABEL}=flannel"}
            for n in ctx.cluster.list_nodes()
            if MIGRATION_LABEL not in n.labels
        ]
        lines += ops.apply_cni_agent(
            CniAgent.FLANNEL, node_selector={MIGRATION_LABEL: "flannel"}, config=None, dry_run=True
        )
        lines += ops.apply_cni_agent(
            CniAgent.CALICO,
            node_selector={MIGRATION_LABEL: "calico"},
            config=self._config(args),
            dry_run=True,
        )
        return lines

    def undo_preview(self, ctx: StepContext, args: CniInstallCalicoArgs) -> list[PreviewLine]:
        return ["delete calico-node, restore flannel's node selector, remove the migration labels"]


@register_action("cni.switch-node")
class SwitchNode(Action[CniSwitchNodeArgs]):
    """flannel -> Calico on the current node (cordoned and drained by the steps before it).

    Undo (also of a half-done ``do``): drain the node, then Calico -> flannel the same way (blocking config,
    remove ``vxlan.calico``/``cali-*``/``10-calico.conflist``, label ``flannel``, wait for flannel), then
    restart the node's pods. The cordon/drain steps' own undos uncordon it afterwards.
    """

    needs_node = True

    def do(self, ctx: StepContext, args: CniSwitchNodeArgs) -> Any:
        node = ctx.require_node().name
        return switch_node(
            ctx, node, "flannel", "calico", fail_at_node=args.fail_at_node, ready_timeout=args.ready_timeout
        )

    def undo(self, ctx: StepContext, args: CniSwitchNodeArgs, result: Any) -> None:
        node = ctx.require_node().name
        ops = cni_ops(ctx.target)
        current = ctx.cluster.get_node(node)
        ready, _ = ops.cni_agent_ready(CniAgent.FLANNEL, node)
        if current.labels.get(MIGRATION_LABEL) == "flannel" and current.cni == "flannel" and ready:
            return
        schedulable = current.schedulable
        ctx.cluster.set_schedulable(node, False)
        ctx.cluster.drain_node(
            node, timeout=min(args.drain_timeout, max(1.0, ctx.remaining())), cancel=ctx.cancel
        )
        switch_node(ctx, node, "calico", "flannel", ready_timeout=args.ready_timeout)
        ctx.cluster.restart_pods(node)
        if schedulable:
            ctx.cluster.set_schedulable(node, True)

    def preview(self, ctx: StepContext, args: CniSwitchNodeArgs) -> list[PreviewLine]:
        node = ctx.require_node().name
        extra = teardown_vars("flannel", args.fail_at_node)
        extra_json = _teardown_vars_json("flannel", args.fail_at_node)
        return [
            {"command": f"kubectl label node {node} --overwrite {MIGRATION_LABEL}=switching"},
            {"command": _command(TEARDOWN_PLAYBOOK, [node], extra_json)},
            _check_preview(ctx, TEARDOWN_PLAYBOOK, [node], extra),
            {"command": f"kubectl label node {node} --overwrite {MIGRATION_LABEL}=calico"},
            f"wait until calico-node is ready on {node} (at most {args.ready_timeout:g}s)",
            {"command": _command(CNI_CONFIG_PLAYBOOK, [node], _unblock_vars_json())},
        ]

    def undo_preview(self, ctx: StepContext, args: CniSwitchNodeArgs) -> list[PreviewLine]:
        node = ctx.require_node().name
        return [
            f"drain {node}, label {MIGRATION_LABEL}=switching",
            {"command": _command(TEARDOWN_PLAYBOOK, [node], _teardown_vars_json("calico", ""))},
            f"label {MIGRATION_LABEL}=flannel, wait for flannel, remove {BLOCKING_CONFLIST}, restart pods",
        ]


@register_action("cni.finalize")
class Finalize(Action[EmptyArgs]):
    """Delete flannel's DaemonSet, drop calico-node's migration selector and labels; prove no leftovers."""

    def do(self, ctx: StepContext, args: EmptyArgs) -> Any:
        ops = cni_ops(ctx.target)
        nodes = ctx.cluster.list_nodes()
        behind = [n.name for n in nodes if n.cni != "calico" and n.labels.get(MIGRATION_LABEL) != "calico"]
        if behind:
            raise StepFailed(f"nodes not on Calico yet: {', '.join(behind)}")
        deleted = ops.delete_cni_agent(CniAgent.FLANNEL)
        ops.apply_cni_agent(CniAgent.CALICO, node_selector=None, config=None)  # selects every node
        for n in nodes:
            if MIGRATION_LABEL in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: None})
        left = leftovers(ctx, "flannel", [n.name for n in nodes])
        if left:
            raise StepFailed(
                "flannel leftovers: " + "; ".join(f"{h}: {', '.join(v)}" for h, v in sorted(left.items()))
            )
        return {"deleted": deleted, "leftovers": {}}

    def undo(self, ctx: StepContext, args: EmptyArgs, result: Any) -> None:
        ops = cni_ops(ctx.target)
        for n in ctx.cluster.list_nodes():  # labels first, then the selector: no calico pod leaves
            if MIGRATION_LABEL not in n.labels:
                ctx.cluster.label_node(
                    n.name, {MIGRATION_LABEL: "calico" if n.cni == "calico" else "flannel"}
                )
        ops.apply_cni_agent(CniAgent.CALICO, node_selector={MIGRATION_LABEL: "calico"}, config=None)
        ops.apply_cni_agent(CniAgent.FLANNEL, node_selector={MIGRATION_LABEL: "flannel"}, config=None)

    def preview(self, ctx: StepContext, args: EmptyArgs) -> list[PreviewLine]:
        ops = cni_ops(ctx.target)
        lines: list[PreviewLine] = list(ops.delete_cni_agent(CniAgent.FLANNEL, dry_run=True))
        lines += ops.apply_cni_agent(CniAgent.CALICO, node_selector=None, config=None, dry_run=True)
        lines.append({"command": f"kubectl label nodes --all {MIGRATION_LABEL}-"})
        hosts = _all_hosts(ctx)
        lines.append(
            {"command": playbook_command(NODE_FACTS_PLAYBOOK, hosts, {}), "expect": "no flannel left"}
        )
        return lines

    def undo_preview(self, ctx: StepContext, args: EmptyArgs) -> list[PreviewLine]:
        return ["label nodes again, restore calico-node's migration selector, recreate flannel's DaemonSet"]


@register_action("cni.calico-mode")
class CalicoModeAction(Action[CniCalicoModeArgs]):
    """Route the current node's pod traffic over BGP (bird2) or VXLAN; undo restores the prior mode."""

    needs_node = True

    def prepare(self, ctx: StepContext, args: CniCalicoModeArgs) -> Any:
        return {"mode": ctx.cluster.get_node(ctx.require_node().name).labels.get(CALICO_MODE_LABEL)}

    def do(self, ctx: StepContext, args: CniCalicoModeArgs) -> Any:
        node = ctx.require_node().name
        ops = cni_ops(ctx.target)
        ops.set_calico_mode(node, CalicoMode(args.mode))
        wait_agent_ready(ctx, ops, CniAgent.CALICO, node, args.ready_timeout)
        return {"node": node, "mode": args.mode}

    def undo(self, ctx: StepContext, args: CniCalicoModeArgs, result: Any) -> None:
        node = ctx.require_node().name
        ops = cni_ops(ctx.target)
        prior = ctx.prepared.get("mode") if isinstance(ctx.prepared, dict) else None
        ops.set_calico_mode(node, CalicoMode(prior) if prior else None)
        wait_agent_ready(ctx, ops, CniAgent.CALICO, node, args.ready_timeout)

    def preview(self, ctx: StepContext, args: CniCalicoModeArgs) -> list[PreviewLine]:
        node = ctx.require_node().name
        return [{"command": f"kubectl label node {node} --overwrite lab.migrator.io/calico-mode={args.mode}"}]


@register_action("cni.remove-vxlan")
class RemoveVxlan(Action[CniRemoveVxlanArgs]):
    """Once every node routes over BGP: delete ``vxlan.calico`` everywhere (``mode: vxlan``: nothing to do).
    Undo: nothing here, the ``cni.calico-mode`` undos (back to VXLAN) recreate the device node by node."""

    def do(self, ctx: StepContext, args: CniRemoveVxlanArgs) -> Any:
        if args.mode == CalicoMode.VXLAN.value:
            return {"removed_from": []}
        nodes = ctx.cluster.list_nodes()
        not_bgp = [n.name for n in nodes if n.labels.get(CALICO_MODE_LABEL) != CalicoMode.BGP.value]
        if not_bgp:
            raise StepFailed(f"nodes not in BGP mode yet: {', '.join(not_bgp)}")
        hosts = [n.name for n in nodes]
        run_playbook(ctx, LINK_ABSENT_PLAYBOOK, hosts, {"links": ["vxlan.calico"]})
        cni_ops(ctx.target).resync_cni()
        return {"removed_from": hosts}

    def undo(self, ctx: StepContext, args: CniRemoveVxlanArgs, result: Any) -> None:
        cni_ops(ctx.target).resync_cni()

    def preview(self, ctx: StepContext, args: CniRemoveVxlanArgs) -> list[PreviewLine]:
        if args.mode == CalicoMode.VXLAN.value:
            return ["calico_mode vxlan: vxlan.calico stays"]
        hosts = _all_hosts(ctx)
        return [{"command": playbook_command(LINK_ABSENT_PLAYBOOK, hosts, {"links": ["vxlan.calico"]})}]


__all__ = ["LEFTOVERS", "CniInfo", "cni_ops", "leftovers_from_facts", "switch_node"]
