"""The ``prometheus`` check's plan input: what loads, and every refusal with its place (file, line, column,
field)."""

from __future__ import annotations

import pytest

from migrator.errors import PlanError
from migrator.plan.loader import load_plan_text
from migrator.plan.models import PromComparison, PrometheusCheck, PromNoData

HEAD = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: t}
spec:
  stages:
    - name: s
      steps: [{action: demo.sleep, args: {duration: 1s}}]
      monitor:
        - {type: prometheus, query: up, op: ">", threshold: 0, for: 10m}
  verify:
"""


def load(check: str) -> PrometheusCheck:
    loaded = load_plan_text(HEAD + f"    - {check}\n", "plans/p.yaml")
    found = loaded.plan.spec.verify[0]
    assert isinstance(found, PrometheusCheck)
    return found


def test_a_full_check_loads_with_yaml_names() -> None:
    check = load(
        '{type: prometheus, query: "sum(rate(x[1m]))", op: "<=", threshold: 0.01, for: 30s,'
        ' url: "https://prom.example:9090/prefix/", token_file: /run/secrets/prom, no_data: ok}'
    )
    assert check.op is PromComparison.LE and check.threshold == 0.01 and check.for_ == 30.0
    assert check.no_data is PromNoData.OK and check.url == "https://prom.example:9090/prefix/"
    assert check.model_dump(mode="json", by_alias=True)["for"] == "30s"


def test_a_monitor_may_wait_longer_than_its_timeout() -> None:
    """In a monitor ``timeout`` bounds each round, so ``for: 10m`` (HEAD's monitor) is fine there."""
    load("{type: prometheus, query: up, op: '>', threshold: 0}")


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (
            "{type: prometheus, query: up, op: '=>', threshold: 0}",
            "plans/p.yaml:11:41: verify[0].op: expected one of: <, <=, >, >=, ==, !=; did you mean '>'?",
        ),
        (
            "{type: prometheus, query: up, op: '<', threshold: .nan}",
            "plans/p.yaml:11:57: verify[0].threshold: expected a finite number, got '.nan'",
        ),
        (
            "{type: prometheus, query: up, op: '<', threshold: 1, url: 'http://user:pw@prom:9090'}",
            "plans/p.yaml:11:65: verify[0].url: expected an http:// or https:// URL like http://127.0.0.1:9090",
        ),
        (
            "{type: prometheus, query: up, op: '<', threshold: 1, token_env: A, token_file: /f}",
            "verify[0].token_file: give either token_env or token_file, not both",
        ),
        (
            "{type: prometheus, query: up, op: '<', threshold: 1, token_env: 'not a name'}",
            "plans/p.yaml:11:71: verify[0].token_env: expected the NAME of an environment variable",
        ),
        (
            "{type: prometheus, query: up, op: '<', threshold: 1, for: 2m}",
            "plans/p.yaml:11:65: verify[0].for: for plus request_timeout must be shorter than timeout here",
        ),
        (
            "{type: prometheus, query: '', op: '<', threshold: 1}",
            "plans/p.yaml:11:33: verify[0].query:",
        ),
        (
            "{type: prometheus, query: up, op: '<', threshold: 1, interval: 0s}",
            "verify[0].interval: must be more than 0s",
        ),
    ],
    ids=[
        "op",
        "nan",
        "credentials-in-url",
        "two-tokens",
        "token-env-name",
        "for-too-long",
        "empty-query",
        "interval",
    ],
)
def test_bad_input_is_named_with_its_place(check: str, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        load(check)
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 1 and expected in problems[0], problems
