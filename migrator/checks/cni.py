"""``cni.nodes``: every node runs the expected CNI, with no other CNI's leftovers (issue 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from migrator.actions.cni import LEFTOVERS, NODE_FACTS_PLAYBOOK, leftovers_from_facts
from migrator.actions.context import CheckContext, PreviewLine
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.errors import MigratorError
from migrator.plan.models import CniNodesCheck
from migrator.ports import PlaybookRequest


def node_facts(ctx: CheckContext, hosts: list[str]) -> dict[str, Any]:
    if ctx.target.executor is None:
        raise MigratorError(f"target {ctx.target.name} has no node executor")
    facts: dict[str, Any] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, dict) and isinstance(event.get("facts"), dict):
            facts.setdefault(str(event.get("host")), {}).update(event["facts"])

    ctx.target.executor.run_playbook(
        PlaybookRequest(
            playbook=Path(NODE_FACTS_PLAYBOOK),
            hosts=tuple(hosts),
            extra_vars={"include_cni_content": False},
            timeout=max(10.0, min(ctx.remaining(), 120.0)),
            forks=max(1, len(hosts)),
        ),
        data_dir=ctx.artifacts() / "ansible",
        cancel=ctx.cancel,
        on_event=on_event,
    )
    return facts


def bgp_gaps(facts: dict[str, Any], pod_cidrs: dict[str, str]) -> list[str]:
    """Nodes lacking a BGP-learned route (``proto bird``) to another node's pod CIDR."""
    gaps = []
    for host in pod_cidrs:
        f = facts.get(host, {}).get("migrator_node_facts") or {}
        learned = {str(r.get("dst")) for r in f.get("routes", []) if r.get("protocol") == "bird"}
        gaps += [
            f"{host} lacks {cidr}"
            for other, cidr in pod_cidrs.items()
            if other != host and cidr not in learned
        ]
    return gaps


@register_check("cni.nodes")
class CniNodes(Checker[CniNodesCheck]):
    def run(self, ctx: CheckContext, check: CniNodesCheck) -> CheckResult:
        nodes = ctx.cluster.list_nodes()
        wrong = {n.name: n.cni for n in nodes if n.cni != check.expect}
        problems = [f"{name} runs {cni}" for name, cni in sorted(wrong.items())]
        hosts = [n.name for n in nodes]
        details: dict[str, Any] = {"cni": {n.name: n.cni for n in nodes}}
        if check.no_leftovers_of or check.bgp_established:
            try:
                facts = node_facts(ctx, hosts)
            except MigratorError as exc:
                return CheckResult(False, f"node facts: {exc}", details)
            for cni in check.no_leftovers_of:
                if cni not in LEFTOVERS:
                    problems.append(f"unknown CNI {cni!r}")
                    continue
                left = leftovers_from_facts(facts, cni, hosts)
                details[f"{cni}_leftovers"] = left
                problems += [f"{h}: {cni} {', '.join(v)}" for h, v in sorted(left.items())]
            if check.bgp_established:
                gaps = bgp_gaps(facts, {n.name: n.pod_cidr or "" for n in nodes})
                details["bgp_gaps"] = gaps
                problems += gaps
                links = [
                    f"{h}: vxlan.calico still there"
                    for h in hosts
                    if any(
                        i.get("name") == "vxlan.calico"
                        for i in (facts.get(h, {}).get("migrator_node_facts") or {}).get("interfaces", [])
                    )
                ]
                problems += links
        if problems:
            return CheckResult(False, "; ".join(problems), details)
        extra = f", no {' / '.join(check.no_leftovers_of)} leftovers" if check.no_leftovers_of else ""
        bgp = ", BGP routes between all nodes, no VXLAN device" if check.bgp_established else ""
        return CheckResult(True, f"all {len(nodes)} nodes on {check.expect}{extra}{bgp}", details)

    def preview(self, ctx: CheckContext, check: CniNodesCheck) -> list[PreviewLine]:
        return [f"every node on {check.expect}; no leftovers of {check.no_leftovers_of or 'nothing'}"]
