# ruff: noqa: E501
"""YAML reading: syntax, structure, tags, duplicate keys and the limits that keep loading fast."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from migrator.errors import PlanError
from migrator.plan.loader import load_plan, load_plan_text
from migrator.plan.source import MAX_DEPTH, MAX_PLAN_BYTES, MAX_TOKENS, MAX_VALUES, read_yaml


def problems(text: str) -> list[str]:
    with pytest.raises(PlanError) as info:
        load_plan_text(text, "p.yaml")
    return [str(p) for p in info.value.problems]


EMPTY = "p.yaml:1:1: the plan is empty; expected a mapping with apiVersion, kind, metadata and spec"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "\ufeff"])
def test_empty_file(text: str) -> None:
    assert problems(text) == [EMPTY]


def test_list_at_top_level() -> None:
    assert problems("- a\n- b\n") == [
        "p.yaml:1:1: expected a mapping with apiVersion, kind, metadata and spec at the top level, found a list"
    ]


def test_scalar_at_top_level() -> None:
    assert problems("\n  hello\n") == [
        "p.yaml:2:3: expected a mapping with apiVersion, kind, metadata and spec at the top level,"
        " found a single value"
    ]


def test_duplicate_key_points_at_second_key() -> None:
    assert problems("kind: Plan\nmetadata:\n  name: a\n  description: x\n  name: b\n") == [
        "p.yaml:5:3: metadata.name: duplicate key 'name' (first given on line 3)"
    ]


def test_syntax_error() -> None:
    assert problems("kind: Plan\nmetadata: {name: a\n") == [
        "p.yaml:3:1: invalid YAML: expected ',' or '}', but got '<stream end>' (while parsing a flow mapping)"
    ]


def test_mapping_values_not_allowed() -> None:
    assert problems("kind: Plan: x\n") == ["p.yaml:1:11: invalid YAML: mapping values are not allowed here"]


def test_multiple_documents() -> None:
    assert problems("kind: Plan\n---\nkind: Plan\n") == [
        "p.yaml:2:1: expected a single YAML document, found another one"
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [("!!python/object/apply:os.system ['true']", "!!python/object/apply:os.system"), ("!env X", "!env")],
)
def test_tags_are_refused(value: str, shown: str) -> None:
    assert problems(f"kind: Plan\nmetadata: {value}\n") == [
        f"p.yaml:2:11: metadata: YAML tag {shown!r} is not allowed in a plan"
    ]


def test_tagged_mapping_is_refused() -> None:
    assert problems("kind: Plan\nmetadata: !!omap {a: 1}\n") == [
        "p.yaml:2:11: metadata: YAML tag '!!omap' is not allowed in a plan"
    ]


def test_undefined_alias() -> None:
    assert problems("kind: Plan\nmetadata: *nope\n") == ["p.yaml:2:11: undefined alias 'nope'"]


def test_alias_cycle() -> None:
    assert problems("kind: &a [*a]\n") == [
        "p.yaml:1:7: kind[0]: an alias refers to a value that contains it (a cycle)"
    ]


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    start = time.process_time()
    found = problems("\n".join(lines) + "\n")
    assert time.process_time() - start < 1.0
    assert len(found) == 1
    assert found[0].endswith(f"the document has more than {MAX_VALUES} values (after expanding aliases)")


def test_aliases_and_merge_keys_work() -> None:
    data, smap = read_yaml(
        "base: &b {timeout: 30s, retry: {attempts: 2}}\nstep:\n  <<: *b\n  timeout: 1m\n", "p.yaml"
    )
    assert data["step"] == {"timeout": "1m", "retry": {"attempts": 2}}
    assert str(smap.key(("step", "timeout"))) == "p.yaml:4:3"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 20_000])
def test_deep_flow_nesting_is_refused_quickly(depth: int) -> None:
    start = time.process_time()
    found = problems("kind: " + "[" * depth + "]" * depth + "\n")
    assert time.process_time() - start < 1.0
    assert found == [f"p.yaml:1:{7 + MAX_DEPTH}: the document is nested deeper than {MAX_DEPTH} levels"]


def test_deep_block_nesting_is_refused_quickly() -> None:
    text = "kind:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200))
    start = time.process_time()
    found = problems(text)
    assert time.process_time() - start < 1.0
    assert len(found) == 1
    assert found[0].startswith("p.yaml:")
    assert found[0].endswith(f"the document is nested deeper than {MAX_DEPTH} levels")


def test_brackets_in_strings_and_comments_do_not_count() -> None:
    deep = "[" * (MAX_DEPTH + 5)
    data, _ = read_yaml(f"a: \"{deep}\"\nb: '{deep}'\n# {deep}\nc: x # {deep}\n", "p.yaml")
    assert data == {"a": deep, "b": deep, "c": "x"}


def test_size_limit() -> None:
    text = "kind: Plan\n" + "# padding\n" * (MAX_PLAN_BYTES // 10)
    assert problems(text) == [
        f"p.yaml:1:1: the plan is too large ({len(text)} bytes, at most {MAX_PLAN_BYTES})"
    ]


def test_non_finite_numbers_are_refused() -> None:
    assert problems("kind: .nan\n") == ["p.yaml:1:7: kind: expected a finite number, got '.nan'"]


def test_scalars_keep_their_yaml_1_2_types() -> None:
    data, _ = read_yaml(
        "a: yes\nb: 0x10\nc: 1.5\nd: ~\ne: 2024-01-01\nf: 'true'\ng: true\nh: 007\n", "p.yaml"
    )
    assert data == {
        "a": "yes",
        "b": 16,
        "c": 1.5,
        "d": None,
        "e": "2024-01-01",
        "f": "true",
        "g": True,
        "h": 7,
    }


def test_complex_keys_are_refused() -> None:
    assert problems("? [a, b]\n: 1\n") == [
        "p.yaml:1:3: mapping keys must be plain scalars, not lists or mappings"
    ]


# ----------------------------------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path / "nope.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'nope.yaml'}: cannot read the plan: No such file or directory"
    ]


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read the plan: it is a directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"kind: Plan\nmetadata: \xff\xfe\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == f"{path}:2:11: the plan is not UTF-8 text"


def test_too_large_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_PLAN_BYTES + 1))
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert (
        str(info.value)
        == f"{path}:1:1: the plan is too large ({MAX_PLAN_BYTES + 1} bytes, at most {MAX_PLAN_BYTES})"
    )


def test_token_limit() -> None:
    text = "kind: [" + ",".join(["a"] * 4000) + "]\n"
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith("p.yaml:1:")
    assert found[0].endswith(f"the plan is too large (more than {MAX_TOKENS} YAML tokens)")


def test_comments_and_quoted_strings_are_cheap_tokens() -> None:
    text = "# " + "word " * 4000 + "\nkind: '" + "w " * 4000 + "'\n"
    data, _ = read_yaml(text, "p.yaml")
    assert data["kind"].startswith("w w")


HEAD = "apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: big}\nspec:\n  stages:\n"


def _timed_load(text: str) -> float:
    """CPU seconds of one load (not wall time: other processes on a busy CI machine do not count)."""
    start = time.process_time()
    with contextlib.suppress(PlanError):
        load_plan_text(text, "big.yaml")
    return time.process_time() - start


def test_worst_case_dense_plan_loads_in_under_a_second() -> None:
    markers = ",".join(["a"] * 20)
    checks = ",".join(f"{{type: demo.markers, present: [{markers}]}}" for _ in range(125))
    text = HEAD + "    - {name: s, steps: [{action: demo.fail}]}\n  verify: [" + checks + "]\n"
    assert len(text) < MAX_PLAN_BYTES
    assert _timed_load(text) < 1.0


def test_worst_case_block_plan_loads_in_under_a_second() -> None:
    stage = (
        "    - name: s{i}\n      steps:\n        - action: demo.touch\n          args: {{marker: m{i}}}\n"
        "          timeout: 30s\n      verify:\n        - type: demo.markers\n          present: [m{i}]\n"
    )
    text = HEAD + "".join(stage.format(i=i) for i in range(200))
    text = text[: MAX_PLAN_BYTES - 200].rsplit("    - name:", 1)[0]
    assert _timed_load(text) < 1.0
