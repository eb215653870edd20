"""Hypothesis strategies and checks shared by the plan-loader fuzzing: ``tests/plan/test_plan_fuzz.py``
(pytest) and the fuzz pass of ``bench/bad_inputs.py``. hypothesis is a dev dependency, so this lives
under ``tests/``, not ``migrator/``.

The contract checked: loading a plan either succeeds or raises :class:`PlanError` whose every problem
names a line and column of the file (problems about ``--set`` values name ``--set`` instead), within
:data:`LIMIT_S` of CPU time.
"""

from __future__ import annotations

import copy
import io
import random
import time
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from ruamel.yaml import YAML

from migrator.errors import PlanError
from migrator.plan.loader import load_plan_text

LIMIT_S = 1.0
FUZZ_FILE = "fuzz.yaml"


@dataclass(frozen=True)
class Load:
    """One load through the loader: did it load, its CPU seconds, and what broke the contract ("" if
    nothing did)."""

    valid: bool
    seconds: float
    problem: str


def load_checked(text: str, overrides: dict[str, str] | None = None) -> Load:
    """Load ``text`` as ``fuzz.yaml`` and check the contract. Exceptions other than PlanError propagate
    (they are findings: the caller reports them)."""
    start = time.process_time()  # CPU time: a busy machine does not make the loader slow
    valid, problem = False, ""
    try:
        load_plan_text(text, FUZZ_FILE, overrides)
        valid = True
    except PlanError as exc:
        if not exc.problems:
            problem = f"a PlanError without problems: {exc}"
        for p in exc.problems:
            if p.location.file == "--set":
                continue
            if p.location.file != FUZZ_FILE:
                problem = f"names file {p.location.file!r}, not {FUZZ_FILE}: {p}"
            elif p.location.line is None or p.location.line < 1:
                problem = f"no line in {p}"
            elif p.location.column is None or p.location.column < 1:
                problem = f"no column in {p}"
            elif not p.message:
                problem = f"no message in {p}"
    elapsed = time.process_time() - start
    if not problem and elapsed >= LIMIT_S:
        problem = f"loading took {elapsed:.2f}s of CPU"
    return Load(valid, elapsed, problem)


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
# a token soup: join the list into a text
SOUPS = st.lists(st.one_of(YAML_CHARS, WORDS, st.text(max_size=5)), max_size=80)

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
DOCUMENTS = st.dictionaries(KEYS, TREES, max_size=6)


# ---------------------------------------------------------------------------- mutations of a plan


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
    """A copy of ``data`` with one mutation ``kind`` (of :data:`MUTATIONS`) at a random place."""
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
