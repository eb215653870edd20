"""``nodes.reachable``: the inventory maps 1:1 onto the cluster's nodes and every node answers Ansible.

The check compares the node executor's inventory hosts with the cluster's node names
(:func:`migrator.targets.ansible.inventory.compare_hosts`: missing and extra hosts are listed), then runs
``playbooks/ping.yml`` on every inventory host that is a cluster node. It fails listing the missing,
extra, unreachable and failed hosts. It changes nothing on the nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrator.actions.context import CheckContext, PreviewLine
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.errors import MigratorError
from migrator.plan.models import NodesReachableCheck
from migrator.ports import PlaybookRequest, PlaybookResult
from migrator.targets.ansible.inventory import compare_hosts

PING_PLAYBOOK = Path("ping.yml")


@register_check("nodes.reachable")
class NodesReachable(Checker[NodesReachableCheck]):
    def run(self, ctx: CheckContext, check: NodesReachableCheck) -> CheckResult:
        executor = ctx.target.executor
        if executor is None:
            return CheckResult(False, f"target {ctx.target.name} has no node executor (no Ansible inventory)")
        try:
            inventory = executor.inventory_hosts()
        except MigratorError as exc:
            return CheckResult(False, f"cannot read the inventory: {exc}")
        nodes = [n.name for n in ctx.cluster.list_nodes()]
        mismatch = compare_hosts(inventory, nodes)
        hosts = tuple(h for h in inventory if h in set(nodes))
        details: dict[str, Any] = {
            "inventory": sorted(inventory),
            "nodes": sorted(nodes),
            "missing": list(mismatch.missing),
            "extra": list(mismatch.extra),
        }
        left = ctx.remaining()
        timeout = check.timeout if math.isinf(left) else max(1.0, left)
        result: PlaybookResult | None = None
        error: str | None = None
        if hosts:
            request = PlaybookRequest(playbook=PING_PLAYBOOK, hosts=hosts, timeout=timeout, forks=len(hosts))

            def forward(event: Mapping[str, Any]) -> None:
                ctx.emit({k: v for k, v in event.items() if k in ("event", "host", "task", "status", "msg")})

            try:
                result = executor.run_playbook(
                    request, data_dir=ctx.artifacts(), cancel=ctx.cancel, on_event=forward
                )
            except MigratorError as exc:
                result = getattr(exc, "result", None)
                error = str(exc)
        unreachable = sorted(h for h, r in (result.hosts if result else {}).items() if r.unreachable)
        failed = sorted(
            h for h, r in (result.hosts if result else {}).items() if r.failed and not r.unreachable
        )
        details["unreachable"] = unreachable
        details["failed"] = failed
        if result is not None:
            details["messages"] = {
                h: r.message for h, r in sorted(result.hosts.items()) if r.unreachable or r.failed
            }
        problems: list[str] = []
        if not mismatch.ok:
            problems.append(mismatch.describe())
        if unreachable:
            problems.append(f"unreachable over SSH: {', '.join(unreachable)}")
        if failed:
            problems.append(f"ping failed on: {', '.join(failed)}")
        if error and not (unreachable or failed):
            problems.append(f"ping playbook failed: {error}")
        if problems:
            return CheckResult(False, "; ".join(problems), details)
        return CheckResult(True, f"{len(hosts)} nodes in the inventory, all reachable", details)

    def preview(self, ctx: CheckContext, check: NodesReachableCheck) -> list[PreviewLine]:
        executor = ctx.target.executor
        if executor is None:
            return [f"check nodes.reachable: target {ctx.target.name} has no node executor: would fail"]
        try:
            inventory = executor.inventory_hosts()
        except MigratorError as exc:
            return [f"check nodes.reachable: cannot read the inventory: {exc}"]
        mismatch = compare_hosts(inventory, [n.name for n in ctx.cluster.list_nodes()])
        lines: list[PreviewLine] = [
            f"check nodes.reachable: ansible ping ({PING_PLAYBOOK}) on {len(inventory)} inventory hosts"
        ]
        if not mismatch.ok:
            lines.append(f"would fail: {mismatch.describe()}")
        return lines
