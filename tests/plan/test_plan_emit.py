"""The emitter of rendered plans writes YAML that loads back to the same data."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.plan.emit import emit_yaml
from migrator.plan.source import read_yaml

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=20),
    st.sampled_from(
        ["yes", "No", "null", "~", "1.5", "0x10", "30s", "25%", "a: b", "- x", "#c", "${{ node.name }}"]
    ),
)
KEYS = st.one_of(
    st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10),
    st.sampled_from(["true", "1", "a b"]),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(KEYS, TREES, min_size=1, max_size=5))
def test_round_trip(data: dict[str, Any]) -> None:
    text = emit_yaml(data)
    loaded, _ = read_yaml(text, "e.yaml")
    assert loaded == data, text


def test_layout() -> None:
    data = {"a": {"b": [1, {"c": "x", "d": []}, [2, 3]], "e": {}}, "f": "needs: quoting", "g": 1.0e20}
    assert emit_yaml(data) == (
        "a:\n  b:\n    - 1\n    - c: x\n      d: []\n    - - 2\n      - 3\n  e: {}\n"
        'f: "needs: quoting"\ng: 1.0e+20\n'
    )
