"""Fuzzing the plan loader (issue 8, "Bad input").

Whatever the input, loading a plan either succeeds or raises :class:`PlanError` whose every problem names
a line (problems about ``--set`` values name ``--set`` instead), and never takes a second.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from tests.fuzzplans import (
    DOCUMENTS,
    LIMIT_S,
    MUTATIONS,
    SCALARS,
    SOUPS,
    TREES,
    dump,
    load_checked,
    mutate,
)

ROOT = Path(__file__).resolve().parents[2]
HELLO_TEXT = (ROOT / "plans" / "examples" / "hello.yaml").read_text()
HELLO_DATA: dict[str, Any] = YAML(typ="safe").load(HELLO_TEXT)
FLANNEL_DATA: dict[str, Any] = YAML(typ="safe").load((ROOT / "plans" / "flannel-to-calico.yaml").read_text())

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
    result = load_checked(text, overrides)
    _timings.append(result.seconds)
    assert not result.problem, result.problem


# -------------------------------------------------------------------------------- random documents


@FUZZ
@given(SOUPS)
def test_random_yaml_text(parts: list[str]) -> None:
    check_load("".join(parts))


@FUZZ
@given(DOCUMENTS)
def test_random_documents(data: dict[str, Any]) -> None:
    check_load(dump(data))


@FUZZ
@given(TREES)
def test_random_plan_bodies(spec: Any) -> None:
    doc = {"apiVersion": "migrator/v1", "kind": "Plan", "metadata": {"name": "f"}, "spec": spec}
    check_load(dump(doc))


# ---------------------------------------------------------------------------- mutations of hello.yaml


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
