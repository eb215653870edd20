"""Runtime templates: render_runtime and render_step, used by the engine for each node."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.errors import PlanError
from migrator.plan.loader import load_plan, load_plan_text
from migrator.plan.models import AnsiblePlaybookStep, DemoMarkersCheck, DemoTouchStep, Step
from migrator.plan.templates import RuntimeTemplate, render_runtime, render_step

ROOT = Path(__file__).resolve().parents[2]
CTX = {"node": {"name": "worker-1", "address": "198.18.0.11"}, "run": {"id": "20260101-abc"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ("node-${{ node.name }}", "node-worker-1"),
        ("${{node.address}}", "198.18.0.11"),
        ("${{ node.name }}/${{ run.id }}/${{ node.name }}", "worker-1/20260101-abc/worker-1"),
        ("a ${{  run.id  }} b", "a 20260101-abc b"),
        ("$ {{ not a template }}", "$ {{ not a template }}"),
    ],
)
def test_render_runtime(text: str, expected: str) -> None:
    assert render_runtime(text, CTX) == expected


def test_render_runtime_without_node_context() -> None:
    with pytest.raises(PlanError) as info:
        render_runtime("node-${{ node.name }}", {"run": {"id": "r"}})
    assert (
        str(info.value) == "<runtime>: template ${{ node.name }} cannot be rendered outside a for_each stage"
    )


def test_render_runtime_unknown_field() -> None:
    with pytest.raises(PlanError, match=r"template \$\{\{ run\.nope \}\} cannot be rendered here"):
        render_runtime("${{ run.nope }}", CTX)


def test_render_runtime_malformed() -> None:
    with pytest.raises(PlanError, match="unterminated template"):
        render_runtime("${{ node.name", CTX)


def test_render_step_of_hello() -> None:
    loaded = load_plan(ROOT / "plans" / "examples" / "hello.yaml", {"fail_at": "node-worker-1"})
    step = loaded.plan.spec.stages[2].steps[0]
    rendered = render_step(step, CTX)
    assert isinstance(rendered, DemoTouchStep)
    assert rendered.args.marker == "node-worker-1"
    assert rendered.args.fail_when == "node-worker-1"
    assert rendered.timeout == step.timeout
    assert rendered.retry is step.retry  # unchanged parts are shared
    assert isinstance(step, DemoTouchStep)
    assert step.args.marker == "node-${{ node.name }}"  # the original is untouched


# a playbook step whose name, nested args and undo hold templates (and one part, ``same``, none)
PLAYBOOK_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: p}
spec:
  stages:
    - name: s
      for_each: {nodes: {}}
      steps:
        - name: play-${{ node.name }}
          action: ansible.playbook
          args:
            playbook: x.yml
            vars:
              host: ${{ node.address }}
              list: [a, "${{ node.name }}", 3, {run: "${{ run.id }}"}]
              deep: {run: "${{ run.id }}"}
              same: {k: v}
          undo:
            action: demo.touch
            args: {marker: "undo-${{ node.name }}"}
"""


def playbook_step() -> Step:
    return load_plan_text(PLAYBOOK_PLAN, "p.yaml").plan.spec.stages[0].steps[0]


def test_render_step_nested_args_undo_and_name() -> None:
    step = playbook_step()
    rendered = render_step(step, CTX)
    assert isinstance(rendered, AnsiblePlaybookStep)
    assert rendered.name == "play-worker-1"
    assert rendered.args.vars == {
        "host": "198.18.0.11",
        "list": ["a", "worker-1", 3, {"run": "20260101-abc"}],
        "deep": {"run": "20260101-abc"},
        "same": {"k": "v"},
    }
    assert isinstance(rendered.undo, DemoTouchStep)
    assert rendered.undo.args.marker == "undo-worker-1"


def test_render_step_without_templates_returns_the_same_object() -> None:
    check = DemoMarkersCheck(type="demo.markers", present=["a"])
    assert render_step(check, CTX) is check


# ------------------------------------------------------------------------ compiled once, rendered per node


NODES = [{"name": f"worker-{i}", "address": f"198.18.0.{10 + i}"} for i in range(1, 6)]


def _ctx(node: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    return {"run": {"id": "r-1"}, **({"node": node} if node is not None else {})}


def test_runtime_template_renders_each_nodes_value() -> None:
    loaded = load_plan(ROOT / "plans" / "examples" / "hello.yaml", {"fail_at": "node-worker-1"})
    step = loaded.plan.spec.stages[2].steps[0]
    template = RuntimeTemplate(step)
    assert template.uses_node() and template.namespaces == {"node"} and not template.static
    for node in NODES:
        rendered = template.render(_ctx(node))
        assert isinstance(rendered, DemoTouchStep)
        assert rendered.args.marker == f"node-{node['name']}"
        assert rendered == render_step(step, _ctx(node))  # the same as a fresh tree walk
        assert rendered.retry is step.retry  # unchanged parts are shared
    assert isinstance(step, DemoTouchStep) and step.args.marker == "node-${{ node.name }}"


def test_runtime_template_nested_args_undo_and_name_per_node() -> None:
    step = playbook_step()
    template = RuntimeTemplate(step)
    assert template.namespaces == {"node", "run"}
    for node in NODES:
        rendered = template.render(_ctx(node))
        assert isinstance(rendered, AnsiblePlaybookStep) and isinstance(step, AnsiblePlaybookStep)
        assert rendered.name == f"play-{node['name']}"
        assert rendered.args.vars == {
            "host": node["address"],
            "list": ["a", node["name"], 3, {"run": "r-1"}],
            "deep": {"run": "r-1"},
            "same": {"k": "v"},
        }
        assert rendered.args.vars["same"] is step.args.vars["same"]  # no template: shared
        assert isinstance(rendered.undo, DemoTouchStep)
        assert rendered.undo.args.marker == f"undo-{node['name']}"
        assert rendered == render_step(step, _ctx(node))


def test_runtime_template_without_node_templates_is_the_same_for_every_node() -> None:
    check = DemoMarkersCheck(type="demo.markers", present=["a"])
    static = RuntimeTemplate(check)
    assert static.static and not static.uses_node() and static.namespaces == frozenset()
    assert static.render(_ctx(NODES[0])) is check
    run_only = RuntimeTemplate(DemoMarkersCheck(type="demo.markers", present=["run-${{ run.id }}"]))
    assert not run_only.uses_node() and run_only.namespaces == {"run"}
    once = run_only.render(_ctx())  # rendered once, without any node: valid for every node
    assert once.present == ["run-r-1"]
    assert all(run_only.render(_ctx(node)) == once for node in NODES)


def test_runtime_template_errors_come_when_rendering() -> None:
    template = RuntimeTemplate(DemoMarkersCheck(type="demo.markers", present=["node-${{ node.name }}"]))
    with pytest.raises(PlanError, match=r"cannot be rendered outside a for_each stage"):
        template.render(_ctx())
    malformed = RuntimeTemplate(DemoMarkersCheck(type="demo.markers", present=["${{ node.name"]))
    assert malformed.uses_node()  # rendered per node, so that the error comes where it used to
    with pytest.raises(PlanError, match="unterminated template"):
        malformed.render(_ctx(NODES[0]))
