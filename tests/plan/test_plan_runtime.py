"""Runtime templates: render_runtime and render_step, used by the engine for each node."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.errors import PlanError
from migrator.plan.loader import load_plan, load_plan_text
from migrator.plan.models import AnsiblePlaybookStep, DemoMarkersCheck, DemoTouchStep
from migrator.plan.templates import render_runtime, render_step

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


def test_render_step_nested_args_undo_and_name() -> None:
    text = """\
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
              list: [a, "${{ node.name }}", 3]
              deep: {run: "${{ run.id }}"}
          undo:
            action: demo.touch
            args: {marker: "undo-${{ node.name }}"}
"""
    step = load_plan_text(text, "p.yaml").plan.spec.stages[0].steps[0]
    rendered = render_step(step, CTX)
    assert isinstance(rendered, AnsiblePlaybookStep)
    assert rendered.name == "play-worker-1"
    assert rendered.args.vars == {
        "host": "198.18.0.11",
        "list": ["a", "worker-1", 3],
        "deep": {"run": "20260101-abc"},
    }
    assert isinstance(rendered.undo, DemoTouchStep)
    assert rendered.undo.args.marker == "undo-worker-1"


def test_render_step_without_templates_returns_the_same_object() -> None:
    check = DemoMarkersCheck(type="demo.markers", present=["a"])
    assert render_step(check, CTX) is check
