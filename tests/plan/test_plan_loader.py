# ruff: noqa: E501
"""Good plans: params, templates, secrets, the rendered text and the shipped plans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migrator.errors import PlanError
from migrator.plan.loader import LoadedPlan, load_plan, load_plan_text, parse_set_options
from migrator.plan.models import (
    AnsiblePlaybookStep,
    DemoSleepStep,
    DemoTouchStep,
    ParamSpec,
    ParamType,
    Plan,
)
from migrator.plan.templates import coerce_param

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "plans" / "examples" / "hello.yaml"
FLANNEL = ROOT / "plans" / "flannel-to-calico.yaml"


def plan_text(params: str, stages: str) -> str:
    params = "\n" + params.rstrip("\n") if params else ""
    return (
        "apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: p}\nspec:\n"
        f"  params:{params or ' {}'}\n  stages:\n{stages}"
    )


ONE_STAGE = "    - name: s\n      steps:\n        - {action: demo.touch, args: {marker: m}}\n"


# ------------------------------------------------------------------------------------ shipped plans


def test_hello_loads_with_defaults() -> None:
    loaded = load_plan(HELLO)
    assert isinstance(loaded, LoadedPlan)
    assert loaded.path == HELLO
    assert loaded.params == {"fail_at": "", "pause": "100ms", "wave_size": 2}
    assert loaded.secrets == frozenset()
    plan = loaded.plan
    assert plan.metadata.name == "hello"
    assert [s.name for s in plan.spec.stages] == ["greet", "prepare", "per-node", "bye"]
    per_node = plan.spec.stages[2]
    assert per_node.for_each is not None
    assert per_node.for_each.max_unavailable == 2
    step = per_node.steps[0]
    assert isinstance(step, DemoTouchStep)
    assert step.args.marker == "node-${{ node.name }}"
    sleep = plan.spec.stages[0].steps[1]
    assert isinstance(sleep, DemoSleepStep)
    assert sleep.args.duration == pytest.approx(0.1)
    assert plan.spec.preflight and plan.spec.stages[0].verify


def test_hello_fail_at() -> None:
    loaded = load_plan(HELLO, {"fail_at": "node-worker-1", "wave_size": "3"})
    fail_when = [
        s.args.fail_when for st in loaded.plan.spec.stages for s in st.steps if isinstance(s, DemoTouchStep)
    ]
    assert fail_when == ["node-worker-1"] * 4
    assert loaded.plan.spec.stages[2].for_each is not None
    assert loaded.plan.spec.stages[2].for_each.max_unavailable == 3


def test_flannel_plan_loads() -> None:
    loaded = load_plan(FLANNEL)
    stages = loaded.plan.spec.stages
    assert [s.name for s in stages] == ["detect-source", "install-calico", "migrate-nodes", "finalize"]
    migrate = stages[2]
    assert migrate.for_each is not None and migrate.for_each.max_unavailable == 1
    assert migrate.for_each.order.value == "workers-first"
    assert [s.display_name for s in migrate.steps] == [
        "cordon",
        "drain",
        "switch-to-calico",
        "restart-pods",
        "uncordon",
    ]
    switch = migrate.steps[2]
    assert getattr(switch, "action", None) == "cni.switch-node"
    assert migrate.monitor and migrate.verify


def test_flannel_optional_bgp_stages() -> None:
    loaded = load_plan(FLANNEL, {"bgp": "true", "calico_mode": "bgp", "max_unavailable": "2"})
    names = [s.name for s in loaded.plan.spec.stages]
    assert names[-2:] == ["switch-to-bgp", "remove-vxlan"]
    assert "switch-to-bgp" in loaded.rendered
    assert loaded.plan.spec.stages[2].for_each is not None
    assert loaded.plan.spec.stages[2].for_each.max_unavailable == 2


def test_flannel_bad_enum_override() -> None:
    with pytest.raises(PlanError) as info:
        load_plan(FLANNEL, {"calico_mode": "bpg"})
    assert str(info.value) == (
        "--set: calico_mode=bpg: expected one of: vxlan, bgp; did you mean 'bgp'? (param 'calico_mode' has type string)"
    )


# ----------------------------------------------------------------------------------------- rendering


def test_rendered_text_reloads_to_the_same_plan() -> None:
    loaded = load_plan(HELLO, {"fail_at": "bye"})
    again = load_plan_text(loaded.rendered, "rendered.yaml")
    # the rendered params carry the resolved values as their defaults; the rest is the same plan
    assert again.plan.spec.stages == loaded.plan.spec.stages
    assert again.plan.spec.preflight == loaded.plan.spec.preflight
    assert again.plan.spec.verify == loaded.plan.spec.verify
    assert again.plan.metadata == loaded.plan.metadata
    assert again.plan.spec.params["fail_at"].default == "bye"
    assert again.params == loaded.params
    assert "${{ params." not in loaded.rendered
    assert "node-${{ node.name }}" in loaded.rendered


def test_disabled_stages_are_left_out_everywhere() -> None:
    stages = (
        ONE_STAGE + "    - name: off\n      enabled: false\n      steps:\n        - {action: demo.fail}\n"
    )
    loaded = load_plan_text(plan_text("", stages), "p.yaml")
    assert [s.name for s in loaded.plan.spec.stages] == ["s"]
    assert "name: off" not in loaded.rendered


def test_disabled_stages_are_still_validated() -> None:
    stages = (
        ONE_STAGE + "    - name: off\n      enabled: false\n      steps:\n        - {action: demo.flail}\n"
    )
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text("", stages), "p.yaml")
    assert str(info.value) == (
        "p.yaml:13:20: stages[1].steps[0].action: unknown action 'demo.flail'; did you mean 'demo.fail'?"
    )


def test_all_stages_disabled() -> None:
    stages = "    - name: s\n      enabled: false\n      steps: [{action: demo.fail}]\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text("", stages), "p.yaml")
    assert (
        str(info.value) == "p.yaml:6:3: stages: every stage is disabled (enabled: false); nothing would run"
    )


# ------------------------------------------------------------------------------------------- templates


def test_typed_and_text_substitution() -> None:
    params = (
        "    n: {type: integer, default: 3}\n"
        "    t: {type: duration, default: 90s}\n"
        "    on: {type: boolean, default: true}\n"
        "    names: {type: list, default: [w1, w2]}\n"
        "    ratio: {type: number, default: 0.5}\n"
    )
    stages = (
        "    - name: s\n"
        "      for_each:\n"
        "        nodes: {names: '${{ params.names }}'}\n"
        "        max_unavailable: ${{ params.n }}\n"
        "        order: as-listed\n"
        "      steps:\n"
        "        - action: demo.touch\n"
        "          timeout: ${{ params.t }}\n"
        "          args:\n"
        "            marker: 'm-${{ params.n }}-${{ params.on }}-${{ params.ratio }}'\n"
        "            fail_undo: ${{params.on}}\n"
    )
    loaded = load_plan_text(plan_text(params, stages), "p.yaml")
    stage = loaded.plan.spec.stages[0]
    assert stage.for_each is not None
    assert stage.for_each.max_unavailable == 3
    assert stage.for_each.nodes.names == ["w1", "w2"]
    step = stage.steps[0]
    assert isinstance(step, DemoTouchStep)
    assert step.timeout == 90.0
    assert step.args.marker == "m-3-true-0.5"
    assert step.args.fail_undo is True


def test_override_list_and_boolean() -> None:
    params = "    names: {type: list, default: [a]}\n    on: {type: boolean, default: false}\n"
    text = plan_text(params, ONE_STAGE)
    loaded = load_plan_text(text, "p.yaml", {"names": "w1, w2,,w3", "on": "yes"})
    assert loaded.params == {"names": ["w1", "w2", "w3"], "on": True}


def test_runtime_templates_are_kept() -> None:
    stages = (
        "    - name: s\n      for_each: {nodes: {}}\n      steps:\n"
        "        - action: ansible.playbook\n"
        "          args: {playbook: x.yml, vars: {a: '${{ node.address }}', b: '${{ run.id }}'}}\n"
    )
    loaded = load_plan_text(plan_text("", stages), "p.yaml")
    step = loaded.plan.spec.stages[0].steps[0]
    assert isinstance(step, AnsiblePlaybookStep)
    assert step.args.vars == {"a": "${{ node.address }}", "b": "${{ run.id }}"}


def test_run_id_is_allowed_outside_for_each() -> None:
    stages = (
        "    - name: s\n      steps:\n        - {action: demo.touch, args: {marker: 'r-${{ run.id }}'}}\n"
    )
    loaded = load_plan_text(plan_text("", stages), "p.yaml")
    assert loaded.plan.spec.stages[0].steps[0].args.marker == "r-${{ run.id }}"  # type: ignore[union-attr]


def test_node_template_in_undo_of_for_each_step() -> None:
    stages = (
        "    - name: s\n      for_each: {nodes: {}}\n      steps:\n"
        "        - action: demo.fail\n"
        "          undo: {action: demo.touch, args: {marker: 'u-${{ node.name }}'}}\n"
    )
    loaded = load_plan_text(plan_text("", stages), "p.yaml")
    assert loaded.plan.spec.stages[0].steps[0].undo is not None


def test_templates_in_param_declarations_are_refused() -> None:
    params = "    a: {type: string, default: x}\n    b: {type: string, default: '${{ params.a }}'}\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text(params, ONE_STAGE), "p.yaml")
    assert str(info.value) == (
        "p.yaml:7:32: params.b.default: templates (${{ ... }}) are not allowed in param values"
        " (param 'b' has type string)"
    )
    params = "    a: {type: string, default: x, description: '${{ params.a }}'}\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text(params, ONE_STAGE), "p.yaml")
    assert (
        str(info.value)
        == "p.yaml:6:48: params.a.description: templates are not allowed in param declarations"
    )


# --------------------------------------------------------------------------------------------- secrets


def test_secrets_are_masked_in_rendered_text_and_messages() -> None:
    params = "    token: {type: string, secret: true, default: s3cr3t-default}\n"
    stages = (
        "    - name: s\n      steps:\n"
        "        - action: ansible.playbook\n"
        "          args: {playbook: x.yml, vars: {auth: 'Bearer ${{ params.token }}', t: '${{ params.token }}'}}\n"
    )
    loaded = load_plan_text(plan_text(params, stages), "p.yaml", {"token": "hunter2-xyz"})
    step = loaded.plan.spec.stages[0].steps[0]
    assert isinstance(step, AnsiblePlaybookStep)
    assert step.args.vars == {"auth": "Bearer hunter2-xyz", "t": "hunter2-xyz"}
    assert loaded.params == {"token": "hunter2-xyz"}
    assert loaded.public_params == {"token": "***"}
    assert "hunter2-xyz" in loaded.secrets
    assert "hunter2-xyz" not in loaded.rendered
    assert "s3cr3t-default" not in loaded.rendered
    assert "Bearer ***" in loaded.rendered
    assert loaded.scrub("login with hunter2-xyz") == "login with ***"
    assert loaded.plan.spec.params["token"].default == "***"
    assert "s3cr3t" not in loaded.plan.model_dump_json()


def test_secret_in_an_error_message_is_masked() -> None:
    params = "    cidr: {type: string, secret: true, default: topsecret}\n"
    text = plan_text(params, ONE_STAGE).replace("  stages:", "  pod_cidr: ${{ params.cidr }}\n  stages:")
    with pytest.raises(PlanError) as info:
        load_plan_text(text, "p.yaml")
    assert "topsecret" not in str(info.value)
    assert str(info.value) == (
        "p.yaml:7:13: pod_cidr: expected a CIDR like 10.244.0.0/16 ('***' does not appear to be an IPv4 or IPv6 network)"
    )


def test_bad_secret_override_is_not_echoed() -> None:
    params = "    pin: {type: integer, secret: true, default: 1}\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text(params, ONE_STAGE), "p.yaml", {"pin": "abc-secret"})
    assert str(info.value) == "--set: pin=***: expected an integer (param 'pin' has type integer)"


# ---------------------------------------------------------------------------------------------- params


def spec(kind: ParamType, **kw: Any) -> ParamSpec:
    return ParamSpec(type=kind, **kw)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (ParamType.STRING, "hello", "hello"),
        (ParamType.STRING, "", ""),
        (ParamType.INTEGER, "42", 42),
        (ParamType.INTEGER, "-3", -3),
        (ParamType.NUMBER, "2.5", 2.5),
        (ParamType.NUMBER, "7", 7.0),
        (ParamType.BOOLEAN, "true", True),
        (ParamType.BOOLEAN, "YES", True),
        (ParamType.BOOLEAN, "no", False),
        (ParamType.BOOLEAN, "False", False),
        (ParamType.DURATION, "1h30m", "1h30m"),
        (ParamType.DURATION, " 250ms ", "250ms"),
        (ParamType.LIST, "a,b , c", ["a", "b", "c"]),
        (ParamType.LIST, "", []),
    ],
)
def test_coerce_cli_values(kind: ParamType, text: str, expected: Any) -> None:
    assert coerce_param(spec(kind), text, from_cli=True) == expected


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (ParamType.INTEGER, "4.5", "expected an integer"),
        (ParamType.INTEGER, "x", "expected an integer"),
        (ParamType.INTEGER, "9" * 40, "expected an integer"),
        (ParamType.NUMBER, "nan", "expected a number"),
        (ParamType.NUMBER, "1e999", "expected a number"),
        (ParamType.BOOLEAN, "maybe", "expected true or false (or yes/no)"),
        (ParamType.DURATION, "5 minutes", "expected a duration like 30s or 5m"),
        (ParamType.DURATION, "30d", "expected a duration between 0s and 7d"),
    ],
)
def test_coerce_cli_errors(kind: ParamType, text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        coerce_param(spec(kind), text, from_cli=True)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (ParamType.STRING, True, "expected a string"),
        (ParamType.STRING, [1], "expected a string"),
        (ParamType.INTEGER, True, "expected an integer"),
        (ParamType.NUMBER, "x", "expected a number"),
        (ParamType.BOOLEAN, 1, "expected true or false (or yes/no)"),
        (ParamType.LIST, "a,b", "expected a list of strings or numbers"),
        (ParamType.LIST, [{"a": 1}], "expected a list of strings or numbers"),
    ],
)
def test_coerce_default_errors(kind: ParamType, value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        coerce_param(spec(kind), value, from_cli=False)
    assert str(info.value) == message


def test_enum_check() -> None:
    s = spec(ParamType.STRING, enum=["vxlan", "bgp"])
    assert coerce_param(s, "bgp", from_cli=True) == "bgp"
    with pytest.raises(ValueError) as info:
        coerce_param(s, "vxlam", from_cli=True)
    assert str(info.value) == "expected one of: vxlan, bgp; did you mean 'vxlan'?"
    listed = spec(ParamType.LIST, enum=["a", "b"])
    assert coerce_param(listed, "a,b", from_cli=True) == ["a", "b"]
    with pytest.raises(ValueError):
        coerce_param(listed, "a,c", from_cli=True)
    numbers = spec(ParamType.INTEGER, enum=[1, 2])
    assert coerce_param(numbers, "2", from_cli=True) == 2
    with pytest.raises(ValueError, match="expected one of: 1, 2"):
        coerce_param(numbers, "3", from_cli=True)


def test_default_outside_enum_is_located() -> None:
    params = "    m: {type: string, default: c, enum: [a, b]}\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text(params, ONE_STAGE), "p.yaml")
    assert (
        str(info.value) == "p.yaml:6:32: params.m.default: expected one of: a, b (param 'm' has type string)"
    )


def test_parse_set_options() -> None:
    assert parse_set_options(["a=1", "b=x=y", "a=2", "c="]) == {"a": "2", "b": "x=y", "c": ""}
    with pytest.raises(PlanError) as info:
        parse_set_options(["novalue"])
    assert str(info.value) == "--set: 'novalue': expected NAME=VALUE"


def test_several_param_problems_are_reported_together() -> None:
    params = "    a: {type: integer}\n    b: {type: boolean, default: 3}\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text(params, ONE_STAGE), "p.yaml", {"c": "1"})
    assert [str(p) for p in info.value.problems] == [
        "--set: c: unknown param 'c' (the plan declares: a, b)",
        "p.yaml:6:5: params.a: param 'a' has no default; give one or use --set a=VALUE",
        "p.yaml:7:33: params.b.default: expected true or false (or yes/no) (param 'b' has type boolean)",
    ]


def test_plan_model_is_frozen() -> None:
    loaded = load_plan(HELLO)
    assert isinstance(loaded.plan, Plan)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        loaded.plan.metadata.name = "x"  # type: ignore[misc]


def test_keys_that_are_not_names_are_quoted_in_paths() -> None:
    stages = (
        "    - name: s\n      for_each: {nodes: {}}\n      steps:\n"
        "        - action: node.label\n          args: {labels: {example.com/role: [x]}}\n"
    )
    with pytest.raises(PlanError) as info:
        load_plan_text(plan_text("", stages), "p.yaml")
    assert (
        str(info.value)
        == 'p.yaml:11:45: stages[0].steps[0].args.labels["example.com/role"]: expected a string'
    )


def test_templates_cannot_be_injected_through_set() -> None:
    with pytest.raises(PlanError) as info:
        load_plan(HELLO, {"fail_at": "node-${{ node.name }}"})
    assert str(info.value) == (
        "--set: fail_at=node-${{ node.name }}: templates (${{ ... }}) are not allowed in param values"
        " (param 'fail_at' has type string)"
    )
