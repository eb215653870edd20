"""CNI migration actions: a live, node-by-node flannel (or Canal) -> Calico swap and its exact reverse.

They talk to the target through its :class:`~migrator.cni.CniOps` port (``Target.cni``), the
:class:`~migrator.ports.Cluster` port and the :class:`~migrator.ports.NodeExecutor` (node-level work as
Ansible playbooks, through :func:`migrator.playbooks.run_playbook`). What is CNI-specific (the agents'
DaemonSets, what each CNI leaves on a node, the teardown playbook's vars) is the CNI drivers'
(:mod:`migrator.cni`). Every ``do`` and ``undo`` is idempotent: each one looks at the current state and
only does what is missing, so the engine may re-run it after a crash or run the undo of a half-done ``do``.

The source (``source`` in every step's args: ``flannel`` or ``canal``) is one of the wire-compatible
sources (:data:`~migrator.cni.WIRE_COMPATIBLE_SOURCES`): Canal is flannel's VXLAN network with felix for
policy, so it is migrated the same way, its DaemonSet ``canal`` in flannel's place; felix keeps enforcing
NetworkPolicy on every node (Canal's, then Calico's).

- ``cni.preflight``: detect the source CNI and its settings (recorded as the step result in the journal);
  refuse another CNI than the plan's source, a non-VXLAN backend, DirectRouting, a conflicting Calico
  pool, Weave Net/Cilium.
- ``cni.install-calico``: label every node ``MIGRATION_LABEL=flannel``, restrict flannel's DaemonSet to
  those nodes, install calico-node selecting ``MIGRATION_LABEL=calico`` (no node yet).
- ``cni.switch-node`` (per node, after cordon + drain): label ``switching`` (flannel's pod leaves), then
  ONE run of ``cni-switch-teardown.yml``: its first task installs the blocking CNI config and deletes what
  the flannel driver says flannel leaves (``flannel.1``/``cni0``, the ``FLANNEL-*`` chains,
  ``10-flannel.conflist``, ``subnet.env``); then the playbook waits on the controller for a signal file
  while migrator labels the node ``calico`` and waits until calico-node is ready; on ``go`` the same run
  removes the blocking config. Undo: the same steps in the other direction (drain first).
- ``cni.finalize``: delete flannel's DaemonSet, drop the node selector and labels, prove with node facts
  that no flannel device, file or chain is left anywhere.
- ``cni.calico-mode`` (per node) and ``cni.remove-vxlan``: the optional VXLAN -> BGP stage.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from migrator import playbooks
from migrator.actions.base import Action, register_action
from migrator.actions.context import PreviewLine, StepContext
from migrator.cni import (
    BLOCKING_CONFLIST,
    CALICO_MODE_LABEL,
    DUAL_OVERLAY_SOURCES,
    MIGRATION_LABEL,
    WIRE_COMPATIBLE_SOURCES,
    CalicoMode,
    CniInfo,
    CniKind,
    CniOps,
    agent,
    calico,
    driver,
)
from migrator.errors import MigratorError, PermanentError, StepFailed
from migrator.plan.models import (
    CniCalicoModeArgs,
    CniFinalizeArgs,
    CniInstallCalicoArgs,
    CniPreflightArgs,
    CniRemoveVxlanArgs,
    CniSwitchNodeArgs,
)
from migrator.ports import Target

TEARDOWN_PLAYBOOK = "cni-switch-teardown.yml"
CNI_CONFIG_PLAYBOOK = "cni-config.yml"  # one CNI config file present/absent (the dual-overlay steps)
LINK_ABSENT_PLAYBOOK = "link-absent.yml"
POLL = 0.2
SIGNAL_POLL = 0.05
SIGNAL_FILE = "cni-switch.signal"
"""In the step's ``ansible/`` artifacts: ``cni-switch-teardown.yml`` waits for ``go``/``abort`` in it."""
SIGNAL_PREVIEW = f"STEP_ARTIFACTS/ansible/{SIGNAL_FILE}"
UNBLOCK_COMMAND = f"rm -f -- /etc/cni/net.d/{BLOCKING_CONFLIST} (raw task 'Remove the blocking CNI config')"
FLANNEL, CALICO = CniKind.FLANNEL, CniKind.CALICO


# ------------------------------------------------------------------------------------------------ helpers


def source_cni(value: str, allowed: frozenset[CniKind] = WIRE_COMPATIBLE_SOURCES) -> CniKind:
    """The plan's ``source`` as a CNI migrator migrates from live: flannel, Canal (wire-compatible, the
    ``cni.install-calico``/``switch-node``/``finalize`` steps) or, where ``allowed``, Weave Net (dual overlay,
    the ``cni.dual-*`` steps)."""
    try:
        kind = CniKind(value)
    except ValueError:
        kind = CniKind.UNKNOWN
    if kind not in allowed:
        known = ", ".join(sorted(k.value for k in allowed))
        raise PermanentError(f"source {value!r}: this step migrates to Calico from {known}")
    return kind


def cni_ops(target: Target) -> CniOps:
    if target.cni is None:
        raise PermanentError(f"target {target.name} does not implement CNI operations (migrator.cni.CniOps)")
    return target.cni


def run_playbook(
    ctx: StepContext, playbook: str, hosts: list[str], extra_vars: dict[str, Any], *, check: bool = False
) -> playbooks.PlaybookRun:
    """Run a playbook through the node executor; raise :class:`StepFailed` naming the failing host/task."""
    ctx.emit(
        {"event": "cni.playbook", "playbook": playbook, "hosts": hosts, "vars": extra_vars, "check": check}
    )
    return _execute(ctx, playbook, hosts, extra_vars, check=check)


def _execute(
    ctx: StepContext, playbook: str, hosts: list[str], extra_vars: dict[str, Any], *, check: bool = False
) -> playbooks.PlaybookRun:
    """:func:`run_playbook` without the journal event (safe to call from a helper thread)."""
    executor = ctx.target.node_executor("the CNI migration runs playbooks on the nodes")
    try:
        return playbooks.run_playbook(
            executor,
            playbook,
            hosts,
            data_dir=ctx.artifacts() / "ansible",
            extra_vars=extra_vars,
            check=check,
            timeout=max(5.0, min(ctx.remaining(), 300.0)),
            cancel=ctx.cancel,
        )
    except MigratorError as exc:
        raise StepFailed(
            f"{playbook} on {', '.join(hosts)}: {exc}", node=hosts[0] if hosts else None
        ) from exc


def _command(playbook: str, hosts: list[str], vars_json: str) -> str:
    return playbooks.command(f"playbooks/{playbook}", hosts, vars_json=vars_json)


def playbook_command(playbook: str, hosts: list[str], extra_vars: dict[str, Any]) -> str:
    return _command(playbook, hosts, json.dumps(extra_vars))


@functools.lru_cache(maxsize=64)
def _teardown_vars_json(cni: CniKind, fail_at_node: str) -> str:
    """``json.dumps`` of the teardown vars as :func:`switch_node` passes them (the signal file shown as
    ``STEP_ARTIFACTS/...``): the same text for every node of a step (a dry run previews
    ``cni.switch-node`` on every node; dumping it per node was ~7% of a 5,000-node dry run)."""
    return json.dumps(_switch_vars(cni, fail_at_node, SIGNAL_PREVIEW, 60.0))


def _switch_vars(old: CniKind, fail_at_node: str, signal: str, ready_timeout: float) -> dict[str, Any]:
    """The vars of the one ``cni-switch-teardown.yml`` run of a switch away from ``old``."""
    return {
        **driver(old).teardown_vars(fail_at_node),
        "switch_signal": signal,
        "signal_timeout": math.ceil(ready_timeout) + 30,
    }


def _selector(info: CniInfo, kind: CniKind) -> dict[str, str]:
    """The installed agent's node selector (empty when it selects every node or is not installed)."""
    return dict(info.agents.get(agent(kind).name, {}))


def wait_agent_ready(ctx: StepContext, ops: CniOps, kind: CniKind, node: str, timeout: float) -> None:
    """Poll until the agent's pod on ``node`` is ready; resync the agents every 2 s (a pod's restart)."""
    deadline = time.monotonic() + min(timeout, ctx.remaining())
    last_resync = time.monotonic()
    while True:
        ok, why = ops.cni_agent_ready(kind, node)
        if ok:
            return
        if time.monotonic() >= deadline:
            raise StepFailed(f"{agent(kind).name} not ready on {node} after {timeout:g}s: {why}", node=node)
        if time.monotonic() - last_resync > 2.0:
            ops.resync_cni()
            last_resync = time.monotonic()
        ctx.sleep(POLL)


def switch_node(
    ctx: StepContext,
    node: str,
    old: CniKind,
    new: CniKind,
    *,
    fail_at_node: str = "",
    ready_timeout: float = 60.0,
) -> dict[str, Any]:
    """Swap ``node`` from CNI ``old`` to ``new`` (flannel, Calico); idempotent."""
    ops = cni_ops(ctx.target)
    cluster = ctx.cluster
    started = time.monotonic()
    current = cluster.get_node(node)
    ready, _ = ops.cni_agent_ready(new, node)
    if current.labels.get(MIGRATION_LABEL) == new and current.cni == new and ready:
        return {"node": node, "from": old.value, "to": new.value, "already": True}
    logger.info("node {}: switching CNI {} -> {}", node, old, new)
    # the old agent's pod leaves the node (neither DaemonSet selects 'switching')
    cluster.label_node(node, {MIGRATION_LABEL: "switching"})
    teardown = _switch_run(ctx, ops, node, old, new, fail_at_node=fail_at_node, ready_timeout=ready_timeout)
    after = cluster.get_node(node).cni
    if after != new and after not in driver(new).seen_as:
        raise StepFailed(
            f"{node}: the kubelet's network is {after!r} after the switch, not {new.value!r}", node=node
        )
    seconds = round(time.monotonic() - started, 2)
    ctx.emit(
        {"event": "cni.node-switched", "node": node, "from": old.value, "to": new.value, "seconds": seconds}
    )
    return {"node": node, "from": old.value, "to": new.value, "seconds": seconds, "changed": teardown.changed}


class _Background:
    """One playbook run in a helper thread (its result or its error, once :attr:`thread` has ended)."""

    def __init__(self, ctx: StepContext, playbook: str, hosts: list[str], extra: dict[str, Any]) -> None:
        self.run: playbooks.PlaybookRun | None = None
        self.error: BaseException | None = None
        ctx.emit(
            {"event": "cni.playbook", "playbook": playbook, "hosts": hosts, "vars": extra, "check": False}
        )
        self.thread = threading.Thread(
            target=self._main, args=(ctx, playbook, hosts, extra), name=f"playbook-{playbook}", daemon=True
        )
        self.thread.start()

    def _main(self, ctx: StepContext, playbook: str, hosts: list[str], extra: dict[str, Any]) -> None:
        try:
            self.run = _execute(ctx, playbook, hosts, extra)
        except BaseException as exc:  # noqa: BLE001 - handed to the step's thread in result()
            self.error = exc

    def result(self, timeout: float) -> playbooks.PlaybookRun:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise StepFailed(f"{TEARDOWN_PLAYBOOK} still running {timeout:g}s after the signal")
        if self.error is not None:
            raise self.error
        assert self.run is not None
        return self.run


def _switch_run(
    ctx: StepContext,
    ops: CniOps,
    node: str,
    old: CniKind,
    new: CniKind,
    *,
    fail_at_node: str,
    ready_timeout: float,
) -> playbooks.PlaybookRun:
    """The node side of a switch in one ``cni-switch-teardown.yml`` run: blocking config and teardown;
    the playbook waits for the signal file while the node is labelled for ``new`` and its agent gets
    ready; ``go`` makes it remove the blocking config (``abort``, on any error here, leaves it)."""
    signal = ctx.artifacts() / "ansible" / SIGNAL_FILE
    waiting = Path(f"{signal}.waiting")
    signal.parent.mkdir(parents=True, exist_ok=True)
    for stale in (signal, waiting):  # a step run again after a crash
        stale.unlink(missing_ok=True)
    extra = _switch_vars(old, fail_at_node, str(signal), ready_timeout)
    background = _Background(ctx, TEARDOWN_PLAYBOOK, [node], extra)
    word = "abort"
    try:
        while not waiting.exists() and background.thread.is_alive():
            ctx.sleep(SIGNAL_POLL)
        if not waiting.exists():  # the playbook ended before the wait: a failure (fail_at_node...)
            background.result(1.0)
            raise StepFailed(f"{TEARDOWN_PLAYBOOK} on {node} ended before waiting for the signal", node=node)
        ctx.cluster.label_node(node, {MIGRATION_LABEL: new.value})  # the new agent's pod starts
        wait_agent_ready(ctx, ops, new, node, ready_timeout)
        word = "go"
    finally:
        tmp = signal.with_name(signal.name + ".tmp")
        tmp.write_text(word + "\n")
        tmp.replace(signal)
        if word == "abort":
            background.thread.join(30.0)  # the playbook ends at once; its error, if any, is not ours
    return background.result(max(30.0, min(ctx.remaining(), 300.0)))


def leftovers(ctx: StepContext, cni: CniKind, hosts: list[str]) -> dict[str, list[str]]:
    """Per host, what of ``cni`` is still on the node (interfaces, CNI files, chains, other files)."""
    left = driver(cni).leftovers
    if left is None:
        raise StepFailed(f"what {cni} leaves on a node is not known")
    run = run_playbook(ctx, playbooks.NODE_FACTS_PLAYBOOK, hosts, dict(playbooks.NODE_FACTS_VARS))
    return left.on_hosts(run.fact(playbooks.NODE_FACTS), hosts)


def assert_no_leftovers(ctx: StepContext, cni: CniKind, hosts: list[str]) -> None:
    """Raise :class:`StepFailed` naming, per host, what of ``cni`` is still on the nodes."""
    left = leftovers(ctx, cni, hosts)
    if left:
        raise StepFailed(
            f"{cni} leftovers: " + "; ".join(f"{h}: {', '.join(v)}" for h, v in sorted(left.items()))
        )


def _all_hosts(ctx: StepContext) -> list[str]:
    return [n.name for n in ctx.cluster.list_nodes()]


def _check_preview(ctx: StepContext, playbook: str, hosts: list[str], extra: dict[str, Any]) -> PreviewLine:
    """The playbook's check-mode diff (a dry run on the nodes), or why it could not run."""
    try:
        run = run_playbook(ctx, playbook, hosts, extra, check=True)
        return {"check_mode": playbook, "hosts": hosts, "changed": run.changed, "diff": run.diffs()}
    except MigratorError as exc:
        return {"check_mode": playbook, "hosts": hosts, "error": str(exc)}


# ------------------------------------------------------------------------------------------------ actions


def _network(text: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return None


def dual_overlay_problems(
    info: CniInfo, args: CniPreflightArgs, node_ips: Mapping[str, str], nodes: int
) -> list[str]:
    """Why Calico cannot run beside Weave Net with ``args.calico_cidr``: no CIDR, one overlapping Weave's
    range, a node's address or the service range, or too small for a block per node."""
    if not args.calico_cidr:
        return ["the dual-overlay method needs Calico's new pod CIDR (calico_cidr)"]
    new = _network(args.calico_cidr)
    if new is None:
        return [f"calico_cidr {args.calico_cidr!r} is not an IPv4 CIDR"]
    problems: list[str] = []
    weave = _network(info.weave_range or "")
    if weave is not None and new.overlaps(weave):
        problems.append(
            f"calico_cidr {new} overlaps Weave Net's IPALLOC_RANGE {weave}: both overlays run side by side"
            " until the end, and the routing table must tell them apart"
        )
    services = _network(args.service_cidr)
    if services is not None and new.overlaps(services):
        problems.append(f"calico_cidr {new} overlaps the service range {services} (service_cidr)")
    inside = sorted(name for name, ip in node_ips.items() if _network(ip) is not None and ip_in(ip, new))
    if inside:
        problems.append(f"calico_cidr {new} holds the address of node(s) {', '.join(inside[:3])}")
    if args.block_size < new.prefixlen:
        problems.append(f"block_size /{args.block_size} is larger than calico_cidr {new}")
    elif 2 ** (args.block_size - new.prefixlen) < nodes:
        problems.append(
            f"calico_cidr {new} holds {2 ** (args.block_size - new.prefixlen)} blocks of /{args.block_size},"
            f" fewer than the {nodes} nodes"
        )
    return problems


def ip_in(address: str, network: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(address) in network
    except ValueError:
        return False


def preflight_problems(
    info: CniInfo, args: CniPreflightArgs, node_ips: Mapping[str, str] | None = None
) -> list[str]:
    """Why ``cni.preflight`` refuses: the detection's blockers and the plan's expectations (flannel's VNI
    and port; for Weave Net, Calico's new CIDR against Weave's range, the nodes' addresses and the service
    range). The dry run and the run's start check the same (:meth:`Preflight.preflight`)."""
    source = source_cni(args.source, WIRE_COMPATIBLE_SOURCES | DUAL_OVERLAY_SOURCES)
    problems = info.migration_blockers()
    if info.kind in DUAL_OVERLAY_SOURCES and info.kind is source:
        ips = node_ips if node_ips is not None else {n: v.public_ip or "" for n, v in info.nodes.items()}
        return problems + dual_overlay_problems(info, args, ips, len(info.nodes))
    if info.supported_source and info.kind is not source:
        problems.insert(
            0,
            f"the cluster runs {info.kind}, but this plan migrates from {source}: use a plan whose source is"
            f" {info.kind} (plans/{info.kind}-to-calico.yaml)",
        )
    if info.kind is source and info.flannel is not None:
        fl = info.flannel
        if args.expect_vni is not None and fl.vni != args.expect_vni:
            problems.append(f"{source}'s VNI is {fl.vni}, the plan expects {args.expect_vni} (vxlan_vni)")
        if args.expect_port is not None and fl.port != args.expect_port:
            problems.append(
                f"{source}'s VXLAN port is {fl.port}, the plan expects {args.expect_port} (vxlan_port)"
            )
    return problems


def node_ips(ctx: StepContext) -> dict[str, str]:
    return {n.name: n.address for n in ctx.cluster.list_nodes()}


def _refusal(problems: list[str]) -> StepFailed:
    return StepFailed("cannot migrate to Calico live: " + "; ".join(problems))


@register_action("cni.preflight")
class Preflight(Action[CniPreflightArgs]):
    """Detect the source CNI and its config; refuse what a wire-compatible live migration cannot do.

    Its :meth:`preflight` refuses the same before anything changes, in the run and in the dry run."""

    def preflight(self, ctx: StepContext, args: CniPreflightArgs) -> None:
        problems = preflight_problems(cni_ops(ctx.target).detect_cni(), args, node_ips(ctx))
        if problems:
            raise _refusal(problems)

    def do(self, ctx: StepContext, args: CniPreflightArgs) -> Any:
        info = cni_ops(ctx.target).detect_cni()
        problems = preflight_problems(info, args, node_ips(ctx))
        recorded = info.to_json()
        ctx.emit({"event": "cni.detected", "source": info.kind.value, "info": recorded})
        if problems:
            raise _refusal(problems)
        return recorded

    def undo(self, ctx: StepContext, args: CniPreflightArgs, result: Any) -> None:
        return None

    def preview(self, ctx: StepContext, args: CniPreflightArgs) -> list[PreviewLine]:
        info = cni_ops(ctx.target).detect_cni()
        problems = preflight_problems(info, args, node_ips(ctx))
        if info.kind in DUAL_OVERLAY_SOURCES:
            return [
                {
                    "detect": info.kind.value,
                    "present": [k.value for k in info.present],
                    "weave_range": info.weave_range,
                    "calico_cidr": args.calico_cidr,
                    "service_cidr": args.service_cidr,
                    "blockers": problems,
                }
            ]
        if info.kind not in WIRE_COMPATIBLE_SOURCES or info.flannel is None:  # no flannel network found
            return [
                {"detect": info.kind.value, "present": [k.value for k in info.present], "blockers": problems}
            ]
        fl = info.flannel
        return [
            {
                "detect": info.kind.value,
                "network": fl.network,
                "vni": fl.vni,
                "port": fl.port,
                "mtu": fl.mtu,
                "vxlan_mtu": fl.vxlan_mtu,
                "block_size": info.block_size,
                "masquerade": fl.masquerade,
                "backend": fl.backend_type,
                "blockers": problems,
            }
        ]


@register_action("cni.install-calico")
class InstallCalico(Action[CniInstallCalicoArgs]):
    """Install calico-node in migration mode (it selects ``MIGRATION_LABEL=calico``: no node yet); the
    source's DaemonSet selects ``MIGRATION_LABEL=<source>``, which every node gets first."""

    def preflight(self, ctx: StepContext, args: CniInstallCalicoArgs) -> None:
        """Refuse, before anything changes, a source that is not the plan's and a Calico manifest migrator
        cannot install for a live migration (Canal's, the operator's custom resources, no calico-node)."""
        source = source_cni(args.source)
        info = cni_ops(ctx.target).detect_cni()
        if info.kind is not source:
            raise StepFailed(f"the source CNI is {info.kind}, not {source}")
        if args.manifest:
            docs = calico.load_manifest(args.manifest)
            network = info.flannel.network if info.flannel else None
            problems = calico.manifest_problems(docs, network, args.manifest)
            if problems:
                raise StepFailed("; ".join(problems))

    def prepare(self, ctx: StepContext, args: CniInstallCalicoArgs) -> Any:
        source = source_cni(args.source)
        return {
            "source": source.value,
            "source_selector": _selector(cni_ops(ctx.target).detect_cni(), source),
        }

    @staticmethod
    def _config(args: CniInstallCalicoArgs) -> dict[str, str]:
        cfg = {"mode": args.mode, "peering": args.peering, "reflectors": args.reflectors}
        if args.manifest:
            cfg["manifest"] = args.manifest
        return cfg

    def do(self, ctx: StepContext, args: CniInstallCalicoArgs) -> Any:
        source = source_cni(args.source)
        ops = cni_ops(ctx.target)
        info = ops.detect_cni()
        if info.kind is not source:
            raise StepFailed(f"the source CNI is {info.kind}, not {source}")
        labelled = []
        for n in ctx.cluster.list_nodes():  # label first, then restrict the source: none of its pods leaves
            if MIGRATION_LABEL not in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: source.value})
                labelled.append(n.name)
        ops.apply_cni_agent(source, node_selector={MIGRATION_LABEL: source.value}, config=None)
        ops.apply_cni_agent(CALICO, node_selector={MIGRATION_LABEL: "calico"}, config=self._config(args))
        return {"labelled": labelled, "source": source.value, "source_selector": _selector(info, source)}

    def undo(self, ctx: StepContext, args: CniInstallCalicoArgs, result: Any) -> None:
        ops = cni_ops(ctx.target)
        on_calico = [n.name for n in ctx.cluster.list_nodes() if n.labels.get(MIGRATION_LABEL) == "calico"]
        if on_calico:
            raise StepFailed(f"nodes still on Calico, not uninstalling it: {', '.join(on_calico)}")
        source = source_cni(args.source)
        prior: dict[str, str] = {}
        for record in (ctx.prepared, result):  # "flannel_selector": journals of migrator before Canal
            if not isinstance(record, dict):
                continue
            selector = record.get("source_selector", record.get("flannel_selector"))
            if isinstance(selector, dict):
                prior = dict(selector)
                break
        ops.delete_cni_agent(CALICO)
        ops.apply_cni_agent(source, node_selector=prior or None, config=None)  # before the labels
        for n in ctx.cluster.list_nodes():
            if MIGRATION_LABEL in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: None})

    def preview(self, ctx: StepContext, args: CniInstallCalicoArgs) -> list[PreviewLine]:
        source = source_cni(args.source)
        ops = cni_ops(ctx.target)
        info = ops.detect_cni()
        if info.kind is not source:  # as do() refuses: nothing to preview as if it would run
            return [f"would fail: the source CNI is {info.kind}, not {source}"]
        lines: list[PreviewLine] = [
            {"command": f"kubectl label node {n.name} {MIGRATION_LABEL}={source}"}
            for n in ctx.cluster.list_nodes()
            if MIGRATION_LABEL not in n.labels
        ]
        lines += ops.apply_cni_agent(
            source, node_selector={MIGRATION_LABEL: source.value}, config=None, dry_run=True
        )
        lines += ops.apply_cni_agent(
            CALICO,
            node_selector={MIGRATION_LABEL: "calico"},
            config=self._config(args),
            dry_run=True,
        )
        return lines

    def undo_preview(self, ctx: StepContext, args: CniInstallCalicoArgs) -> list[PreviewLine]:
        return [f"delete calico-node, restore {args.source}'s node selector, remove the migration labels"]


@register_action("cni.switch-node")
class SwitchNode(Action[CniSwitchNodeArgs]):
    """The source (flannel, Canal) -> Calico on the current node (cordoned and drained by the steps before
    it).

    Undo (also of a half-done ``do``): drain the node, then Calico -> the source the same way (blocking
    config, remove ``vxlan.calico``/``cali-*``/``10-calico.conflist``, label the source, wait for its agent),
    then restart the node's pods. The cordon/drain steps' own undos uncordon it afterwards.
    """

    needs_node = True

    def do(self, ctx: StepContext, args: CniSwitchNodeArgs) -> Any:
        node = ctx.require_node().name
        source = source_cni(args.source)
        return switch_node(
            ctx, node, source, CALICO, fail_at_node=args.fail_at_node, ready_timeout=args.ready_timeout
        )

    def undo(self, ctx: StepContext, args: CniSwitchNodeArgs, result: Any) -> None:
        node = ctx.require_node().name
        source = source_cni(args.source)
        ops = cni_ops(ctx.target)
        current = ctx.cluster.get_node(node)
        ready, _ = ops.cni_agent_ready(source, node)
        if current.labels.get(MIGRATION_LABEL) == source and current.cni == source and ready:
            return
        schedulable = current.schedulable
        ctx.cluster.set_schedulable(node, False)
        ctx.cluster.drain_node(
            node, timeout=min(args.drain_timeout, max(1.0, ctx.remaining())), cancel=ctx.cancel
        )
        switch_node(ctx, node, CALICO, source, ready_timeout=args.ready_timeout)
        ctx.cluster.restart_pods(node)
        if schedulable:
            ctx.cluster.set_schedulable(node, True)

    def preview(self, ctx: StepContext, args: CniSwitchNodeArgs) -> list[PreviewLine]:
        node = ctx.require_node().name
        source = source_cni(args.source)
        extra = driver(source).teardown_vars(args.fail_at_node)
        extra_json = _teardown_vars_json(source, args.fail_at_node)
        return [
            {"command": f"kubectl label node {node} --overwrite {MIGRATION_LABEL}=switching"},
            {"command": _command(TEARDOWN_PLAYBOOK, [node], extra_json)},
            _check_preview(ctx, TEARDOWN_PLAYBOOK, [node], extra),
            f"when the playbook's teardown task is done on {node} (it waits for {SIGNAL_PREVIEW}):",
            {"command": f"kubectl label node {node} --overwrite {MIGRATION_LABEL}=calico"},
            f"wait until calico-node is ready on {node} (at most {args.ready_timeout:g}s), then write 'go'"
            f" to {SIGNAL_PREVIEW} ('abort' on failure: the node stays blocked)",
            {"command": f"the same playbook run on {node}: {UNBLOCK_COMMAND}"},
        ]

    def undo_preview(self, ctx: StepContext, args: CniSwitchNodeArgs) -> list[PreviewLine]:
        node = ctx.require_node().name
        return [
            f"drain {node}, label {MIGRATION_LABEL}=switching",
            {"command": _command(TEARDOWN_PLAYBOOK, [node], _teardown_vars_json(CALICO, ""))},
            f"label {MIGRATION_LABEL}={args.source}, wait for {agent(source_cni(args.source)).name},"
            f" 'go': the run removes {BLOCKING_CONFLIST}, restart pods",
        ]


@register_action("cni.finalize")
class Finalize(Action[CniFinalizeArgs]):
    """Delete the source's DaemonSet, drop calico-node's migration selector and labels; prove no leftovers."""

    def do(self, ctx: StepContext, args: CniFinalizeArgs) -> Any:
        source = source_cni(args.source)
        ops = cni_ops(ctx.target)
        nodes = ctx.cluster.list_nodes()
        behind = [n.name for n in nodes if n.cni != CALICO and n.labels.get(MIGRATION_LABEL) != CALICO]
        if behind:
            raise StepFailed(f"nodes not on Calico yet: {', '.join(behind)}")
        deleted = ops.delete_cni_agent(source)
        ops.apply_cni_agent(CALICO, node_selector=None, config=None)  # selects every node
        for n in nodes:
            if MIGRATION_LABEL in n.labels:
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: None})
        assert_no_leftovers(ctx, source, [n.name for n in nodes])
        return {"deleted": deleted, "leftovers": {}, "source": source.value}

    def undo(self, ctx: StepContext, args: CniFinalizeArgs, result: Any) -> None:
        source = source_cni(args.source)
        ops = cni_ops(ctx.target)
        for n in ctx.cluster.list_nodes():  # labels first, then the selector: no calico pod leaves
            if MIGRATION_LABEL not in n.labels:
                back = "calico" if n.cni == CALICO else source.value
                ctx.cluster.label_node(n.name, {MIGRATION_LABEL: back})
        ops.apply_cni_agent(CALICO, node_selector={MIGRATION_LABEL: "calico"}, config=None)
        ops.apply_cni_agent(source, node_selector={MIGRATION_LABEL: source.value}, config=None)

    def preview(self, ctx: StepContext, args: CniFinalizeArgs) -> list[PreviewLine]:
        source = source_cni(args.source)
        ops = cni_ops(ctx.target)
        lines: list[PreviewLine] = list(ops.delete_cni_agent(source, dry_run=True))
        lines += ops.apply_cni_agent(CALICO, node_selector=None, config=None, dry_run=True)
        lines.append({"command": f"kubectl label nodes --all {MIGRATION_LABEL}-"})
        hosts = _all_hosts(ctx)
        lines.append(
            {
                "command": playbook_command(playbooks.NODE_FACTS_PLAYBOOK, hosts, {}),
                "expect": f"no {source} left",
            }
        )
        return lines

    def undo_preview(self, ctx: StepContext, args: CniFinalizeArgs) -> list[PreviewLine]:
        return [
            f"label nodes again, restore calico-node's migration selector, recreate {args.source}'s DaemonSet"
        ]


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
        wait_agent_ready(ctx, ops, CALICO, node, args.ready_timeout)
        return {"node": node, "mode": args.mode}

    def undo(self, ctx: StepContext, args: CniCalicoModeArgs, result: Any) -> None:
        node = ctx.require_node().name
        ops = cni_ops(ctx.target)
        prior = ctx.prepared.get("mode") if isinstance(ctx.prepared, dict) else None
        ops.set_calico_mode(node, CalicoMode(prior) if prior else None)
        wait_agent_ready(ctx, ops, CALICO, node, args.ready_timeout)

    def preview(self, ctx: StepContext, args: CniCalicoModeArgs) -> list[PreviewLine]:
        node = ctx.require_node().name
        return [{"command": f"kubectl label node {node} --overwrite {CALICO_MODE_LABEL}={args.mode}"}]


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
        run_playbook(ctx, LINK_ABSENT_PLAYBOOK, hosts, calico.remove_vxlan_vars())
        cni_ops(ctx.target).resync_cni()
        return {"removed_from": hosts}

    def undo(self, ctx: StepContext, args: CniRemoveVxlanArgs, result: Any) -> None:
        cni_ops(ctx.target).resync_cni()

    def preview(self, ctx: StepContext, args: CniRemoveVxlanArgs) -> list[PreviewLine]:
        if args.mode == CalicoMode.VXLAN.value:
            return [f"calico_mode vxlan: {calico.VXLAN_DEVICE} stays"]
        hosts = _all_hosts(ctx)
        return [{"command": playbook_command(LINK_ABSENT_PLAYBOOK, hosts, calico.remove_vxlan_vars())}]


__all__ = ["assert_no_leftovers", "cni_ops", "leftovers", "switch_node"]
