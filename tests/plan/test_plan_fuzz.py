"""Fuzzing the plan loader (issue 8, "Bad input").

Whatever the input, loading a plan either succeeds or raises :class:`PlanError` whose every problem names
a line (problems about ``--set`` values name ``--set`` instead), and never takes a second.
"""

from __future__ import annotations

import copy
import io
import os
import random
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from migrator.errors import PlanError
from migrator.plan.loader import load_plan_text

ROOT = Path(__file__).resolve().parents[2]
HELLO_TEXT = (ROOT / "plans" / "examples" / "hello.yaml").read_text()
HELLO_DATA: dict[str, Any] = YAML(typ="safe").load(HELLO_TEXT)
FLANNEL_DATA: dict[str, Any] = YAML(typ="safe").load((ROOT / "plans" / "flannel-to-calico.yaml").read_text())
LIMIT_S = 1.0

# MIGRATOR_FUZZ_EXAMPLES=5000 runs a longer, random (not derandomized) campaign
_EXAMPLES = os.environ.get("MIGRATOR_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXAMPLES) if _EXAMPLES else 80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not _EXAMPLES,
    database=None,
)

_timings: list[float] = []


def check_load(text: str, overrides: dict[str, str] | None = None) -> None:
    start = time.process_time()  # CPU time: a busy machine does not make the loader slow
    try:
        load_plan_text(text, "fuzz.yaml", overrides)
    except PlanError as exc:
        assert exc.problems, "a PlanError without problems"
        for problem in exc.problems:
            if problem.location.file == "--set":
                continue
            assert problem.location.file == "fuzz.yaml"
            assert problem.location.line is not None and problem.location.line >= 1, str(problem)
            assert problem.location.column is not None and problem.location.column >= 1, str(problem)
            assert problem.message, str(problem)
    finally:
        elapsed = time.process_time() - start
        _timings.append(elapsed)
    assert elapsed < LIMIT_S, f"loading took {elapsed:.2f}s"


def dump(data: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


# -------------------------------------------------------------------------------- random documents

YAML_CHARS = st.sampled_from(
    [*list(":-[]{},#&*!|>'\"%@`?\n\n\n  \t"), "${{", "}}", "<<", "---", "...", "params.", "node.name", "~"]
)
WORDS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "Plan",
        "metadata",
        "name",
        "spec",
        "stages",
        "steps",
        "action",
        "demo.touch",
        "args",
        "marker",
        "timeout",
        "30s",
        "for_each",
        "nodes",
        "max_unavailable",
        "25%",
        "migrator/v1",
        "verify",
        "type",
        "reachability",
        "1",
        "-1",
        "1e309",
        "0x1F",
        "true",
        "null",
        "&a",
        "*a",
        "!!str",
        "!tag",
        "    ",
        "- ",
        ": ",
    ]
)


@FUZZ
@given(st.lists(st.one_of(YAML_CHARS, WORDS, st.text(max_size=5)), max_size=80))
def test_random_yaml_text(parts: list[str]) -> None:
    check_load("".join(parts))


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["30s", "5m", "25%", "10.0.0.0/8", "role=worker", "${{ params.x }}", "${{ node.name }}"]),
)
KEYS = st.one_of(
    st.sampled_from(["apiVersion", "kind", "metadata", "spec", "stages", "steps", "name"]),
    st.text(max_size=8),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=40,
)


@FUZZ
@given(st.dictionaries(KEYS, TREES, max_size=6))
def test_random_documents(data: dict[str, Any]) -> None:
    check_load(dump(data))


@FUZZ
@given(TREES)
def test_random_plan_bodies(spec: Any) -> None:
    doc = {"apiVersion": "migrator/v1", "kind": "Plan", "metadata": {"name": "f"}, "spec": spec}
    check_load(dump(doc))


# ---------------------------------------------------------------------------- mutations of hello.yaml


def paths_of(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(paths_of(value, (*prefix, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(paths_of(value, (*prefix, index)))
    return found


def get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def nested(depth: int) -> Any:
    value: Any = "x"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


MUTATIONS = [
    "replace",
    "huge-int",
    "huge-string",
    "deep",
    "unknown-key",
    "delete",
    "duplicate-stage",
    "duplicate-step",
    "wrong-template",
    "empty-container",
]


def mutate(data: dict[str, Any], rnd: random.Random, kind: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    candidates = paths_of(data)[1:]
    if not candidates:
        return data
    path = rnd.choice(candidates)
    parent = get(data, path[:-1])
    last = path[-1]
    spec = data.get("spec")
    stages = spec.get("stages") if isinstance(spec, dict) else None
    stages = [s for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []
    if kind == "replace":
        parent[last] = value
    elif kind == "huge-int":
        parent[last] = rnd.choice([10**18, -(10**18), 10**100, 2**63])
    elif kind == "huge-string":
        parent[last] = "x" * rnd.choice([201, 5000, 30000])
    elif kind == "deep":
        parent[last] = nested(rnd.choice([5, 20, 31, 40, 100]))
    elif kind == "unknown-key" and isinstance(parent, dict):
        parent[rnd.choice(["tiemout", "nmae", "x", "args", "${{ params.x }}"])] = value
    elif kind == "delete":
        del parent[last]
    elif kind == "duplicate-stage" and stages:
        data["spec"]["stages"].append(copy.deepcopy(rnd.choice(stages)))
    elif kind == "duplicate-step" and stages:
        steps = rnd.choice(stages).get("steps")
        if isinstance(steps, list) and steps:
            steps.append(copy.deepcopy(rnd.choice(steps)))
    elif kind == "wrong-template":
        parent[last] = rnd.choice(
            ["${{ params.nope }}", "${{ node.name }}", "${{ x }}", "${{ params.fail_at", "a ${{ run.id }} b"]
        )
    elif kind == "empty-container":
        parent[last] = rnd.choice([[], {}, None, ""])
    return data


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(MUTATIONS), SCALARS), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=2**32),
    st.sampled_from([HELLO_DATA, FLANNEL_DATA]),
)
def test_mutations_of_shipped_plans(
    mutations: list[tuple[str, Any]], seed: int, base: dict[str, Any]
) -> None:
    rnd = random.Random(seed)
    data = base
    for kind, value in mutations:
        data = mutate(data, rnd, kind, value)
    check_load(dump(data))


@FUZZ
@given(st.integers(min_value=0, max_value=2**32), st.text(max_size=20))
def test_text_edits_of_hello(seed: int, insert: str) -> None:
    rnd = random.Random(seed)
    text = HELLO_TEXT
    for _ in range(rnd.randint(1, 3)):
        action = rnd.choice(["delete", "insert", "duplicate-line", "swap-lines", "indent"])
        pos = rnd.randrange(len(text))
        lines = text.splitlines(keepends=True)
        line = rnd.randrange(len(lines))
        if action == "delete":
            text = text[:pos] + text[pos + rnd.randint(1, 40) :]
        elif action == "insert":
            text = text[:pos] + insert + text[pos:]
        elif action == "duplicate-line":
            lines.insert(line, lines[line])
            text = "".join(lines)
        elif action == "swap-lines":
            other = rnd.randrange(len(lines))
            lines[line], lines[other] = lines[other], lines[line]
            text = "".join(lines)
        else:
            lines[line] = " " * rnd.randint(1, 3) + lines[line]
            text = "".join(lines)
        if not text:
            text = "\n"
    check_load(text)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["fail_at", "pause", "wave_size", "wave_sise", "x", ""]),
        st.text(max_size=30),
        max_size=4,
    )
)
def test_random_overrides(overrides: dict[str, str]) -> None:
    check_load(HELLO_TEXT, overrides)


def test_max_load_time_under_one_second() -> None:
    """Runs after the fuzz tests in this module (pytest keeps file order): the slowest load."""
    if not _timings:
        check_load(HELLO_TEXT)
    assert max(_timings) < LIMIT_S
