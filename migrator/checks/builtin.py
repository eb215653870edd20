"""Built-in checks: ``demo.markers`` and ``nodes.schedulable``."""

from __future__ import annotations

from migrator.actions.context import CheckContext, PreviewLine, markers_dir
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.plan.models import DemoMarkersCheck, NodesSchedulableCheck


@register_check("demo.markers")
class Markers(Checker[DemoMarkersCheck]):
    def run(self, ctx: CheckContext, check: DemoMarkersCheck) -> CheckResult:
        folder = markers_dir(ctx.run_dir, ctx.target)
        missing = [m for m in check.present if not (folder / m).exists()]
        unexpected = [m for m in check.absent if (folder / m).exists()]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing markers {missing}")
            if unexpected:
                parts.append(f"unexpected markers {unexpected}")
            return CheckResult(False, "; ".join(parts), {"missing": missing, "unexpected": unexpected})
        return CheckResult(True, f"{len(check.present)} present, {len(check.absent)} absent as expected")

    def preview(self, ctx: CheckContext, check: DemoMarkersCheck) -> list[PreviewLine]:
        return [f"markers present: {check.present}, absent: {check.absent}"]


@register_check("nodes.schedulable")
class Schedulable(Checker[NodesSchedulableCheck]):
    def run(self, ctx: CheckContext, check: NodesSchedulableCheck) -> CheckResult:
        nodes = ctx.cluster.list_nodes()
        cordoned = sorted(n.name for n in nodes if not n.schedulable)
        if cordoned:
            return CheckResult(False, f"nodes not schedulable: {', '.join(cordoned)}", {"cordoned": cordoned})
        return CheckResult(True, f"all {len(nodes)} nodes schedulable")

    def preview(self, ctx: CheckContext, check: NodesSchedulableCheck) -> list[PreviewLine]:
        return ["every node is schedulable (no cordon left behind)"]
