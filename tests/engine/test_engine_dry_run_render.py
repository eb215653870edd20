"""The dry run renders each step once per stage, and per node only the steps whose templates use
``node.*``; every node's view is still complete and the same as a per-node rendering gives."""

from __future__ import annotations

import gc
import json
from collections import Counter
from typing import Any

import pytest
from engine_helpers import make_plan, touch

from migrator.actions.node import Drain
from migrator.engine import dry_run, source_from_plan
from migrator.engine.planio import render_step, runtime_context
from migrator.errors import PlanError
from migrator.plan.models import Plan
from migrator.plan.templates import RuntimeTemplate
from migrator.ports import Target


def _plan() -> Plan:
    return make_plan(
        [
            {"name": "once", "steps": [touch("run-${{ run.id }}", name="stage-mark")]},
            {
                "name": "nodes",
                "for_each": {"nodes": {}, "max_unavailable": 2},
                "steps": [
                    touch(
                        "node-${{ node.name }}",
                        name="mark",
                        undo={"action": "demo.touch", "args": {"marker": "undo-${{ node.address }}"}},
                    ),
                    {"name": "drain", "action": "node.drain", "args": {"delete_emptydir_data": True}},
                    touch("run-${{ run.id }}", name="run-mark"),
                ],
            },
        ]
    )


def test_node_templates_are_rendered_per_node_the_rest_once_per_stage(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: Counter[str] = Counter()
    previews: list[str] = []
    render, preview = RuntimeTemplate.render, Drain.preview

    def counting_render(self: RuntimeTemplate[Any], context: Any) -> Any:
        renders[str(getattr(self.value, "display_name", ""))] += 1
        return render(self, context)

    def counting_preview(self: Drain, ctx: Any, args: Any) -> Any:
        previews.append(ctx.node.name)
        return preview(self, ctx, args)

    monkeypatch.setattr(RuntimeTemplate, "render", counting_render)
    monkeypatch.setattr(Drain, "preview", counting_preview)
    plan = _plan()
    report = dry_run(source_from_plan(plan), target)
    nodes = target.cluster.list_nodes()
    assert len(nodes) == 4
    # node.* templates: once per node; run.* only or none: once for the stage
    assert renders == {"stage-mark": 1, "mark": 4, "drain": 1, "run-mark": 1}
    # ... but every node still gets its own preview
    assert sorted(previews) == sorted(n.name for n in nodes)

    stage = report["stages"][1]
    views = {n["node"]: n for w in stage["waves"] for n in w["nodes"]}
    assert sorted(views) == sorted(n.name for n in nodes)
    steps = plan.spec.stages[1].steps
    for node in nodes:
        mark, drain, run_mark = views[node.name]["steps"]
        assert mark["args"]["marker"] == f"node-{node.name}"
        assert mark["preview"] == [f"create marker 'node-{node.name}'"]
        assert mark["undo"]["action"] == "demo.touch"
        assert mark["undo"]["args"]["marker"] == f"undo-{node.address}"
        assert drain["preview"][0]["command"] == (
            f"kubectl drain {node.name} --ignore-daemonsets --delete-emptydir-data"
        )
        assert drain["undo"] == [f"uncordon {node.name} if it was schedulable"]
        assert run_mark["args"]["marker"] == "run-dry-run"
        for view, step in zip(views[node.name]["steps"], steps, strict=True):
            rendered = render_step(step, runtime_context("dry-run", node))  # the per-node way
            assert view["args"] == rendered.args.model_dump(mode="json")  # type: ignore[attr-defined]
    assert report["stages"][0]["steps"][0]["args"]["marker"] == "run-dry-run"


def test_the_report_is_the_same_as_rendering_every_step_for_every_node(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan()
    shared = json.dumps(dry_run(source_from_plan(plan), target), sort_keys=True)
    monkeypatch.setattr(RuntimeTemplate, "uses_node", lambda self: True)  # every step per node
    per_node = json.dumps(dry_run(source_from_plan(plan), target), sort_keys=True)
    assert shared == per_node
    assert "node-worker-1" in shared and "undo-" in shared


def test_the_garbage_collector_is_paused_during_the_dry_run_and_restored(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    preview = Drain.preview

    def recording_preview(self: Drain, ctx: Any, args: Any) -> Any:
        seen.append(gc.isenabled())
        return preview(self, ctx, args)

    monkeypatch.setattr(Drain, "preview", recording_preview)
    plan = _plan()
    assert gc.isenabled()
    dry_run(source_from_plan(plan), target)
    assert seen and not any(seen) and gc.isenabled()
    gc.disable()
    try:
        dry_run(source_from_plan(plan), target)
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()
    with pytest.raises(PlanError):  # also after a failure
        dry_run(source_from_plan(make_plan([{"name": "s", "steps": [{"action": "node.cordon"}]}])), target)
    assert gc.isenabled()
