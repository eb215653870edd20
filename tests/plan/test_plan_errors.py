# ruff: noqa: E501  (a table of exact messages reads best one per line)
"""Bad plans and their exact messages, with file, line and column.

Each case edits a valid base plan (one textual replacement) and states every problem line expected.
"""

from __future__ import annotations

import pytest

from migrator.errors import PlanError
from migrator.plan.loader import load_plan_text
from migrator.plan.models import action_names, check_type_names

BASE = """\
apiVersion: migrator/v1
kind: Plan
metadata:
  name: t
spec:
  params:
    fail_at: {type: string, default: ""}
    n: {type: integer, default: 2}
  stages:
    - name: a
      steps:
        - action: demo.touch
          args: {marker: a}
          timeout: 30s
    - name: b
      for_each:
        nodes: {labels: "role=worker"}
        max_unavailable: 25%
      steps:
        - action: demo.touch
          args:
            marker: node-${{ node.name }}
          timeout: 30s
      verify:
        - type: reachability
          threshold: 99%
"""


def test_base_plan_is_valid() -> None:
    loaded = load_plan_text(BASE, "plans/x.yaml")
    assert [s.name for s in loaded.plan.spec.stages] == ["a", "b"]


CASES: list[tuple[str, str, str, dict[str, str] | None, list[str]]] = [
    (
        "wrong duration",
        "          timeout: 30s\n      verify",
        "          timeout: 30 parsecs\n      verify",
        None,
        ["plans/x.yaml:23:20: stages[1].steps[0].timeout: expected a duration like 30s or 5m"],
    ),
    (
        "duration too long",
        "          timeout: 30s\n      verify",
        "          timeout: 8d\n      verify",
        None,
        ["plans/x.yaml:23:20: stages[1].steps[0].timeout: expected a duration between 0s and 7d"],
    ),
    (
        "bad cidr",
        "  stages:",
        "  pod_cidr: 10.0.0.1/8\n  stages:",
        None,
        ["plans/x.yaml:9:13: pod_cidr: expected a CIDR like 10.244.0.0/16 (10.0.0.1/8 has host bits set)"],
    ),
    (
        "not a cidr",
        "  stages:",
        "  pod_cidr: ten\n  stages:",
        None,
        [
            "plans/x.yaml:9:13: pod_cidr: expected a CIDR like 10.244.0.0/16 ('ten' does not appear to be an IPv4 or IPv6 network)"
        ],
    ),
    (
        "bad percentage",
        "threshold: 99%",
        "threshold: 120%",
        None,
        ["plans/x.yaml:26:22: stages[1].verify[0].threshold: expected a percentage between 0% and 100%"],
    ),
    (
        "percentage text",
        "threshold: 99%",
        "threshold: most",
        None,
        ["plans/x.yaml:26:22: stages[1].verify[0].threshold: expected a percentage like 25%"],
    ),
    (
        "bad wave size",
        "max_unavailable: 25%",
        "max_unavailable: lots",
        None,
        [
            "plans/x.yaml:18:26: stages[1].for_each.max_unavailable: expected a node count like 2 or a percentage like 25%"
        ],
    ),
    (
        "zero wave size",
        "max_unavailable: 25%",
        "max_unavailable: 0",
        None,
        ["plans/x.yaml:18:26: stages[1].for_each.max_unavailable: must be at least 1"],
    ),
    (
        "bad label selector",
        'labels: "role=worker"',
        'labels: "role in ()"',
        None,
        ["plans/x.yaml:17:25: stages[1].for_each.nodes.labels: in needs at least one value in 'role in ()'"],
    ),
    (
        "bad label key",
        'labels: "role=worker"',
        'labels: "-role=worker"',
        None,
        [
            "plans/x.yaml:17:25: stages[1].for_each.nodes.labels: invalid label key '-role' in selector '-role=worker'"
        ],
    ),
    (
        "unknown field",
        "          timeout: 30s\n    - name: b",
        "          tiemout: 30s\n    - name: b",
        None,
        ["plans/x.yaml:14:11: stages[0].steps[0].tiemout: unknown field 'tiemout'; did you mean 'timeout'?"],
    ),
    (
        "unknown top field",
        "kind: Plan",
        "kind: Plan\nfoo: 1",
        None,
        ["plans/x.yaml:3:1: foo: unknown field 'foo' (expected one of: apiVersion, kind, metadata, spec)"],
    ),
    (
        "unknown action",
        "action: demo.touch",
        "action: demo.tuch",
        None,
        [
            "plans/x.yaml:12:19: stages[0].steps[0].action: unknown action 'demo.tuch'; did you mean 'demo.touch'?"
        ],
    ),
    (
        "unknown action far",
        "action: demo.touch",
        "action: zzz",
        None,
        [
            "plans/x.yaml:12:19: stages[0].steps[0].action: unknown action 'zzz' (known: "
            + ", ".join(action_names())
            + ")"
        ],
    ),
    (
        "unknown check",
        "type: reachability",
        "type: reachabilty",
        None,
        [
            "plans/x.yaml:25:17: stages[1].verify[0].type: unknown check type 'reachabilty'; did you mean 'reachability'?"
        ],
    ),
    (
        "missing marker",
        "args: {marker: a}",
        "args: {}",
        None,
        ["plans/x.yaml:13:17: stages[0].steps[0].args.marker: field required"],
    ),
    (
        "missing args",
        "          args: {marker: a}\n",
        "",
        None,
        ["plans/x.yaml:12:11: stages[0].steps[0].args: field required"],
    ),
    (
        "missing action",
        "        - action: demo.touch\n          args: {marker: a}",
        "        - args: {marker: a}",
        None,
        ["plans/x.yaml:12:11: stages[0].steps[0].action: field required"],
    ),
    (
        "missing steps",
        "      steps:\n        - action: demo.touch\n          args: {marker: a}\n          timeout: 30s\n",
        "",
        None,
        ["plans/x.yaml:10:7: stages[0].steps: field required"],
    ),
    (
        "missing kind",
        "kind: Plan\n",
        "",
        None,
        ["plans/x.yaml:1:1: kind: field required"],
    ),
    (
        "wrong type int",
        "          timeout: 30s\n      verify:",
        "          timeout: 30s\n          retry: {attempts: x}\n      verify:",
        None,
        ["plans/x.yaml:24:29: stages[1].steps[0].retry.attempts: expected an integer"],
    ),
    (
        "wrong type bool",
        "threshold: 99%",
        "threshold: 99%\n          compare_baseline: maybe",
        None,
        ["plans/x.yaml:27:29: stages[1].verify[0].compare_baseline: expected true or false"],
    ),
    (
        "wrong type list",
        "threshold: 99%",
        "threshold: 99%\n          kinds: tcp",
        None,
        ["plans/x.yaml:27:18: stages[1].verify[0].kinds: expected a list"],
    ),
    (
        "wrong type mapping",
        "metadata:\n  name: t\n",
        "metadata: 5\n",
        None,
        ["plans/x.yaml:3:11: metadata: expected a mapping"],
    ),
    (
        "step not a mapping",
        "        - action: demo.touch\n          args: {marker: a}\n          timeout: 30s\n    - name: b",
        "        - hello\n    - name: b",
        None,
        ["plans/x.yaml:12:11: stages[0].steps[0]: expected a mapping"],
    ),
    (
        "too small",
        "          timeout: 30s\n      verify:",
        "          timeout: 30s\n          retry: {attempts: 0}\n      verify:",
        None,
        ["plans/x.yaml:24:29: stages[1].steps[0].retry.attempts: must be at least 1"],
    ),
    (
        "wrong api",
        "migrator/v1",
        "migrator/v2",
        None,
        ["plans/x.yaml:1:13: apiVersion: expected 'migrator/v1'"],
    ),
    (
        "bad enum",
        "  stages:",
        "  rollback: allways\n  stages:",
        None,
        ["plans/x.yaml:9:13: rollback: expected one of: on-failure, always, never; did you mean 'always'?"],
    ),
    (
        "bad metadata name",
        "  name: t\n",
        "  name: T_x\n",
        None,
        ["plans/x.yaml:4:9: metadata.name: expected lowercase letters, digits, '.' and '-', like 'my-plan'"],
    ),
    (
        "empty stages",
        '  stages:\n    - name: a\n      steps:\n        - action: demo.touch\n          args: {marker: a}\n          timeout: 30s\n    - name: b\n      for_each:\n        nodes: {labels: "role=worker"}\n        max_unavailable: 25%\n      steps:\n        - action: demo.touch\n          args:\n            marker: node-${{ node.name }}\n          timeout: 30s\n      verify:\n        - type: reachability\n          threshold: 99%\n',
        "  stages: []\n",
        None,
        ["plans/x.yaml:9:11: stages: must not be empty"],
    ),
    (
        "duplicate key",
        "  name: t\n",
        "  name: t\n  name: u\n",
        None,
        ["plans/x.yaml:5:3: metadata.name: duplicate key 'name' (first given on line 4)"],
    ),
    (
        "duplicate stage name",
        "    - name: b\n",
        "    - name: a\n",
        None,
        ["plans/x.yaml:15:13: stages[1].name: duplicate stage name 'a' (also stages[0])"],
    ),
    (
        "duplicate step name",
        "          timeout: 30s\n    - name: b",
        "          timeout: 30s\n        - action: demo.touch\n          args: {marker: b}\n    - name: b",
        None,
        [
            "plans/x.yaml:15:19: stages[0].steps[1].action: duplicate step name 'demo.touch' in stage 'a' (also steps[0]); give the steps distinct names"
        ],
    ),
    (
        "count and percent",
        'nodes: {labels: "role=worker"}',
        "nodes: {count: 1, percent: 50%}",
        None,
        ["plans/x.yaml:17:36: stages[1].for_each.nodes.percent: give either count or percent, not both"],
    ),
    (
        "undo of undo",
        "          timeout: 30s\n    - name: b",
        "          timeout: 30s\n          undo: {action: demo.touch, args: {marker: b}, undo: {action: demo.fail}}\n    - name: b",
        None,
        ["plans/x.yaml:15:63: stages[0].steps[0].undo.undo: an undo step cannot have an undo of its own"],
    ),
    (
        "unknown field in undo args",
        "          timeout: 30s\n    - name: b",
        "          timeout: 30s\n          undo: {action: demo.touch, args: {marker: b, x: 1}}\n    - name: b",
        None,
        [
            "plans/x.yaml:15:56: stages[0].steps[0].undo.args.x: unknown field 'x' (expected one of: marker, fail_when, fail_undo)"
        ],
    ),
    (
        "bad set value",
        "",
        "",
        {"n": "x"},
        ["--set: n=x: expected an integer (param 'n' has type integer)"],
    ),
    (
        "bad set key",
        "",
        "",
        {"nn": "3"},
        ["--set: nn: unknown param 'nn'; did you mean 'n'?"],
    ),
    (
        "bad set key far",
        "",
        "",
        {"zzzz": "3"},
        ["--set: zzzz: unknown param 'zzzz' (the plan declares: fail_at, n)"],
    ),
    (
        "bad default",
        "n: {type: integer, default: 2}",
        "n: {type: integer, default: two}",
        None,
        ["plans/x.yaml:8:33: params.n.default: expected an integer (param 'n' has type integer)"],
    ),
    (
        "param without value",
        "n: {type: integer, default: 2}",
        "n: {type: integer}",
        None,
        ["plans/x.yaml:8:5: params.n: param 'n' has no default; give one or use --set n=VALUE"],
    ),
    (
        "bad param type",
        "n: {type: integer, default: 2}",
        "n: {type: int, default: 2}",
        None,
        [
            "plans/x.yaml:8:15: params.n.type: expected one of: string, integer, number, boolean, duration, list; did you mean 'integer'?"
        ],
    ),
    (
        "bad param name",
        "    n: {type: integer, default: 2}",
        "    n-1: {type: integer, default: 2}",
        None,
        ["plans/x.yaml:8:5: params.n-1: invalid param name 'n-1': use letters, digits and '_'"],
    ),
    (
        "undefined param",
        "marker: a}",
        "marker: '${{ params.fail }}'}",
        None,
        [
            "plans/x.yaml:13:26: stages[0].steps[0].args.marker: undefined param 'fail' in ${{ params.fail }}; did you mean 'fail_at'?"
        ],
    ),
    (
        "unknown namespace",
        "marker: a}",
        "marker: '${{ foo.bar }}'}",
        None,
        [
            "plans/x.yaml:13:26: stages[0].steps[0].args.marker: unknown template namespace 'foo' in ${{ foo.bar }} (known: params, node, run)"
        ],
    ),
    (
        "unknown node field",
        "marker: node-${{ node.name }}",
        "marker: node-${{ node.nmae }}",
        None,
        [
            "plans/x.yaml:22:21: stages[1].steps[0].args.marker: unknown field 'nmae' in ${{ node.nmae }}; did you mean 'name'?"
        ],
    ),
    (
        "bad template",
        "marker: a}",
        "marker: '${{ params }}'}",
        None,
        [
            "plans/x.yaml:13:26: stages[0].steps[0].args.marker: invalid template '${{ params }}': expected ${{ params.NAME }}, ${{ node.name }}, ${{ node.address }} or ${{ run.id }}"
        ],
    ),
    (
        "unterminated template",
        "marker: a}",
        "marker: '${{ params.n'}",
        None,
        ["plans/x.yaml:13:26: stages[0].steps[0].args.marker: unterminated template: '${{' without '}}'"],
    ),
    (
        "node template outside for_each",
        "marker: a}",
        "marker: '${{ node.name }}'}",
        None,
        [
            "plans/x.yaml:13:26: stages[0].steps[0].args.marker: ${{ node.name }} is only available in the steps of a stage with for_each: nodes"
        ],
    ),
    (
        "node template in verify",
        "threshold: 99%",
        "threshold: 99%\n          name: ${{ node.name }}",
        None,
        [
            "plans/x.yaml:27:17: stages[1].verify[0].name: ${{ node.name }} is only available in the steps of a stage with for_each: nodes"
        ],
    ),
    (
        "node action outside for_each",
        "action: demo.touch\n          args: {marker: a}",
        "action: node.cordon",
        None,
        [
            "plans/x.yaml:12:19: stages[0].steps[0].action: action 'node.cordon' acts on one node: use it in a stage with for_each: nodes"
        ],
    ),
    (
        "as-listed without names",
        "max_unavailable: 25%",
        "max_unavailable: 25%\n        order: as-listed",
        None,
        ["plans/x.yaml:19:16: stages[1].for_each.order: order: as-listed needs nodes.names"],
    ),
    (
        "names and count",
        'nodes: {labels: "role=worker"}',
        "nodes: {names: [w1, w1], count: 1}",
        None,
        [
            "plans/x.yaml:17:29: stages[1].for_each.nodes.names[1]: node 'w1' is listed twice",
            "plans/x.yaml:17:34: stages[1].for_each.nodes.count: count samples nodes; it cannot be combined with names",
        ],
    ),
    (
        "yaml syntax error",
        "  name: t\n",
        "  name: [t\n",
        None,
        ["plans/x.yaml:5:5: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence)"],
    ),
    (
        "yaml tab",
        "kind: Plan\n",
        "kind: Plan\n\tx: 1\n",
        None,
        [
            "plans/x.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next token)"
        ],
    ),
    (
        "yaml tag",
        "  name: t\n",
        "  name: !!python/object:os.system t\n",
        None,
        ["plans/x.yaml:4:9: metadata.name: YAML tag '!!python/object:os.system' is not allowed in a plan"],
    ),
    (
        "two documents",
        "kind: Plan\n",
        "kind: Plan\n---\nkind: Plan\n",
        None,
        ["plans/x.yaml:3:1: expected a single YAML document, found another one"],
    ),
    (
        "typed template wrong",
        "max_unavailable: 25%",
        "max_unavailable: ${{ params.fail_at }}",
        None,
        [
            "plans/x.yaml:18:26: stages[1].for_each.max_unavailable: expected a node count like 2 or a percentage like 25%"
        ],
    ),
    (
        "several problems sorted",
        "threshold: 99%",
        "threshold: 101%\n          scope: everywhere",
        None,
        [
            "plans/x.yaml:26:22: stages[1].verify[0].threshold: expected a percentage between 0% and 100%",
            "plans/x.yaml:27:18: stages[1].verify[0].scope: expected one of: all, cross-node, services, policy",
        ],
    ),
    (
        "undo and no_undo",
        "          timeout: 30s\n    - name: b",
        "          timeout: 30s\n          no_undo: true\n          undo: {action: demo.fail}\n    - name: b",
        None,
        ["plans/x.yaml:15:20: stages[0].steps[0].no_undo: give either undo or no_undo, not both"],
    ),
    (
        "action is not a string",
        "action: demo.touch\n          args: {marker: a}",
        "action: 5",
        None,
        [
            "plans/x.yaml:12:19: stages[0].steps[0].action: expected an action name (known: "
            + ", ".join(action_names())
            + ")"
        ],
    ),
    (
        "check type is empty",
        "type: reachability",
        "type:",
        None,
        [
            "plans/x.yaml:25:11: stages[1].verify[0].type: expected a check type (known: "
            + ", ".join(check_type_names())
            + ")"
        ],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_plan_messages(old: str, new: str, overrides: dict[str, str] | None, expected: list[str]) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE or not old, "the case does not change the base plan"
    with pytest.raises(PlanError) as info:
        load_plan_text(text, "plans/x.yaml", overrides)
    assert [str(p) for p in info.value.problems] == expected
    assert str(info.value) == "\n".join(expected)
    assert info.value.exit_code == 2
