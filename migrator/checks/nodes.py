"""``nodes.reachable``: the inventory maps 1:1 onto the cluster's nodes and every node answers Ansible.

The check compares the node executor's inventory hosts with the cluster's node names
(:func:`migrator.playbooks.compare_hosts`: missing and extra hosts are listed), then runs
``playbooks/ping.yml`` on every inventory host that is a cluster node. It fails listing the missing,
extra, unreachable and failed hosts. It changes nothing on the nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from migrator.actions.context import CheckContext, PreviewLine
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.errors import MigratorError
from migrator.plan.models import NodesReachableCheck
from migrator.playbooks import PlaybookRun, compare_hosts, run_playbook

PING_PLAYBOOK = "ping.yml"
WHY = "nodes.reachable pings the nodes over SSH"


def _problems(
    unreachable: list[str], failed: list[str], error: str | None, mismatch: str | None
) -> list[str]:
    problems = [mismatch] if mismatch else []
    if unreachable:
        problems.append(f"unreachable over SSH: {', '.join(unreachable)}")
    if failed:
        problems.append(f"ping failed on: {', '.join(failed)}")
    if error and not (unreachable or failed):
        problems.append(f"ping playbook failed: {error}")
    return problems


@register_check("nodes.reachable")
class NodesReachable(Checker[NodesReachableCheck]):
    def run(self, ctx: CheckContext, check: NodesReachableCheck) -> CheckResult:
        try:
            executor = ctx.target.node_executor(WHY)
        except MigratorError as exc:
            return CheckResult(False, str(exc))
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
        run: PlaybookRun | None = None
        error: str | None = None
        if hosts:

            def forward(event: Mapping[str, Any]) -> None:
                ctx.emit({k: v for k, v in event.items() if k in ("event", "host", "task", "status", "msg")})

            try:
                run = run_playbook(
                    executor,
                    PING_PLAYBOOK,
                    hosts,
                    data_dir=ctx.artifacts(),
                    timeout=check.timeout if math.isinf(left) else max(1.0, left),
                    cancel=ctx.cancel,
                    on_event=forward,
                    raise_on_failure=False,
                )
            except MigratorError as exc:
                error = str(exc)
            else:
                error = str(run.error) if run.error is not None else None
        results = run.result.hosts if run is not None else {}
        unreachable = sorted(h for h, r in results.items() if r.unreachable)
        failed = sorted(h for h, r in results.items() if r.failed and not r.unreachable)
        details["unreachable"] = unreachable
        details["failed"] = failed
        if run is not None:
            bad = set(unreachable) | set(failed)
            details["messages"] = {h: r.message for h, r in sorted(results.items()) if h in bad}
        problems = _problems(unreachable, failed, error, None if mismatch.ok else mismatch.describe())
        if problems:
            return CheckResult(False, "; ".join(problems), details)
        return CheckResult(True, f"{len(hosts)} nodes in the inventory, all reachable", details)

    def preview(self, ctx: CheckContext, check: NodesReachableCheck) -> list[PreviewLine]:
        try:
            executor = ctx.target.node_executor(WHY)
        except MigratorError as exc:
            return [f"check nodes.reachable: {exc}: would fail"]
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
