"""``cni.nodes``: every node runs the expected CNI, with no other CNI's leftovers (issue 6).

What a CNI leaves on a node is its driver's (:func:`migrator.cni.leftovers`); the node facts come from
``node-facts.yml`` (:func:`migrator.playbooks.node_facts`)."""

from __future__ import annotations

from typing import Any

from migrator import playbooks
from migrator.actions.context import CheckContext, PreviewLine
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.cni import calico, leftovers
from migrator.cni.drivers import seen_as
from migrator.errors import MigratorError
from migrator.plan.models import CniNodesCheck


def node_facts(ctx: CheckContext, hosts: list[str]) -> dict[str, dict[str, Any]]:
    """``{host: migrator_node_facts}``."""
    return playbooks.node_facts(
        ctx.target.node_executor("cni.nodes reads the node facts"),
        hosts,
        data_dir=ctx.artifacts() / "ansible",
        timeout=max(10.0, min(ctx.remaining(), 120.0)),
        cancel=ctx.cancel,
    )


def bgp_gaps(facts: dict[str, dict[str, Any]], pod_cidrs: dict[str, str]) -> list[str]:
    """Nodes lacking a BGP-learned route (``proto bird``) to another node's pod CIDR."""
    gaps = []
    for host in pod_cidrs:
        learned = {
            str(r.get("dst")) for r in facts.get(host, {}).get("routes", []) if r.get("protocol") == "bird"
        }
        gaps += [
            f"{host} lacks {cidr}"
            for other, cidr in pod_cidrs.items()
            if other != host and cidr not in learned
        ]
    return gaps


def _bgp_problems(facts: dict[str, dict[str, Any]], pod_cidrs: dict[str, str]) -> tuple[list[str], list[str]]:
    """(gaps, problems): the missing BGP routes, and those plus the nodes where Calico's VXLAN device is."""
    gaps = bgp_gaps(facts, pod_cidrs)
    links = [
        f"{h}: {calico.VXLAN_DEVICE} still there"
        for h in pod_cidrs
        if any(i.get("name") == calico.VXLAN_DEVICE for i in facts.get(h, {}).get("interfaces", []))
    ]
    return gaps, gaps + links


@register_check("cni.nodes")
class CniNodes(Checker[CniNodesCheck]):
    def run(self, ctx: CheckContext, check: CniNodesCheck) -> CheckResult:
        nodes = ctx.cluster.list_nodes()
        accepted = {check.expect, *seen_as(check.expect)}
        wrong = {n.name: n.cni for n in nodes if n.cni not in accepted}
        problems = [f"{name} runs {cni}" for name, cni in sorted(wrong.items())]
        hosts = [n.name for n in nodes]
        details: dict[str, Any] = {"cni": {n.name: n.cni for n in nodes}}
        if check.no_leftovers_of or check.bgp_established:
            try:
                facts = node_facts(ctx, hosts)
            except MigratorError as exc:
                return CheckResult(False, f"node facts: {exc}", details)
            for cni in check.no_leftovers_of:
                known = leftovers(cni)
                if known is None:
                    problems.append(f"unknown CNI {cni!r}")
                    continue
                left = known.on_hosts(facts, hosts)
                details[f"{cni}_leftovers"] = left
                problems += [f"{h}: {cni} {', '.join(v)}" for h, v in sorted(left.items())]
            if check.bgp_established:
                gaps, not_bgp = _bgp_problems(facts, {n.name: n.pod_cidr or "" for n in nodes})
                details["bgp_gaps"] = gaps
                problems += not_bgp
        if problems:
            return CheckResult(False, "; ".join(problems), details)
        extra = f", no {' / '.join(check.no_leftovers_of)} leftovers" if check.no_leftovers_of else ""
        bgp = ", BGP routes between all nodes, no VXLAN device" if check.bgp_established else ""
        return CheckResult(True, f"all {len(nodes)} nodes on {check.expect}{extra}{bgp}", details)

    def preview(self, ctx: CheckContext, check: CniNodesCheck) -> list[PreviewLine]:
        line = f"every node on {check.expect}"
        if check.no_leftovers_of:
            line += f"; no leftovers of {' / '.join(check.no_leftovers_of)}"
        if check.bgp_established:
            line += "; BGP routes between all nodes, no VXLAN device"
        return [line]
