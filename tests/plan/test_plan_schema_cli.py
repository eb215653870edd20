"""JSON Schema of plans, and the validate / schema commands."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from ruamel.yaml import YAML

from migrator.cli.plan_cmds import parse_sets, schema, validate
from migrator.errors import PlanError
from migrator.plan.models import action_names, check_type_names
from migrator.plan.schema import SCHEMA_DIALECT, plan_json_schema

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    p for p in (ROOT / "plans").rglob("*.yaml") if "policies" not in p.parts
)  # policies/: manifests


def test_schema_is_valid_draft_2020_12() -> None:
    doc = plan_json_schema()
    assert doc["$schema"] == SCHEMA_DIALECT
    assert doc["title"] == "migrator plan"
    jsonschema.Draft202012Validator.check_schema(doc)


def test_schema_lists_every_action_and_check() -> None:
    text = json.dumps(plan_json_schema())
    doc = plan_json_schema()
    stage = doc["$defs"]["Stage"]["properties"]
    mapping = stage["steps"]["items"]["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(action_names())
    checks = stage["verify"]["items"]["discriminator"]["mapping"]
    assert sorted(checks) == sorted(check_type_names())
    for name in [*action_names(), *check_type_names()]:
        assert f'"{name}"' in text


def test_schema_is_closed_and_uses_yaml_names() -> None:
    doc = plan_json_schema()
    assert doc["additionalProperties"] is False
    assert set(doc["required"]) == {"apiVersion", "kind", "metadata", "spec"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_plans_match_the_schema(path: Path) -> None:
    data = YAML(typ="safe").load(path.read_text())
    validator = jsonschema.Draft202012Validator(plan_json_schema())
    assert [e.message for e in validator.iter_errors(data)] == []


def test_schema_rejects_what_the_loader_rejects() -> None:
    validator = jsonschema.Draft202012Validator(plan_json_schema())
    bad: dict[str, Any] = {
        "apiVersion": "migrator/v1",
        "kind": "Plan",
        "metadata": {"name": "x"},
        "spec": {"stages": [{"name": "s", "steps": [{"action": "demo.touch", "args": {}, "tiemout": 1}]}]},
    }
    assert list(validator.iter_errors(bad))


def test_schema_command_prints_json() -> None:
    assert json.loads(schema()) == plan_json_schema()


# ------------------------------------------------------------------------------------------ validate


def run_validate(paths: list[Path], overrides: dict[str, str] | None = None) -> tuple[int, str]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, color_system=None, soft_wrap=True)
    code = validate(paths, overrides, console=console)
    return code, buffer.getvalue()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_plans_validate(path: Path) -> None:
    assert run_validate([path]) == (0, f"OK {path}\n")


def test_validate_reports_every_problem_unwrapped(tmp_path: Path) -> None:
    good = ROOT / "plans" / "examples" / "hello.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        good.read_text()
        .replace("action: demo.sleep", "action: demo.slep")
        .replace("timeout: 30s\n        - name: wait", "timeout: 30 seconds\n        - name: wait")
    )
    code, out = run_validate([good, bad, tmp_path / "missing.yaml"])
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == f"OK {good}"
    assert lines[1] == f"{bad}:50:20: stages[0].steps[0].timeout: expected a duration like 30s or 5m"
    assert lines[2] == (
        f"{bad}:52:19: stages[0].steps[1].action: unknown action 'demo.slep'; did you mean 'demo.sleep'?"
    )
    assert lines[3] == f"{tmp_path / 'missing.yaml'}: cannot read the plan: No such file or directory"
    assert len(lines) == 4


def test_validate_with_overrides() -> None:
    hello = ROOT / "plans" / "examples" / "hello.yaml"
    assert run_validate([hello], {"wave_size": "3"}) == (0, f"OK {hello}\n")
    code, out = run_validate([hello], {"wave_sise": "3"})
    assert code == 2
    assert out == "--set: wave_sise: unknown param 'wave_sise'; did you mean 'wave_size'?\n"


def test_validate_without_paths() -> None:
    assert run_validate([]) == (2, "validate: give at least one plan file\n")


def test_parse_sets() -> None:
    assert parse_sets(["a=1"]) == {"a": "1"}
    with pytest.raises(PlanError):
        parse_sets(["a"])
