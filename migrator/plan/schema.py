"""JSON Schema (draft 2020-12) of plan files, for editors (``migrator schema > plan.schema.json``).

The schema describes the YAML as written: aliases (``apiVersion``), durations and percentages as text,
the step and check catalogues as discriminated unions (``oneOf`` plus ``discriminator``), so an editor
offers the right ``args`` once ``action`` is typed.
"""

from __future__ import annotations

from typing import Any

from migrator.plan.models import API_VERSION, Plan

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://migrator.invalid/schemas/plan-v1.json"


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan file, as a new dict each call."""
    body = Plan.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": "migrator plan",
        "description": (
            f"A migrator plan ({API_VERSION}): staged workflows with verification and rollback. "
            "Templates: ${{ params.NAME }} (at load time), ${{ node.name }}, ${{ node.address }} "
            "and ${{ run.id }} (at run time, node ones only in for_each stages)."
        ),
    }
    for key, value in body.items():
        if key not in ("title", "description"):
            schema[key] = _allow_templates(value)
    return schema


#: a scalar that is only a template, e.g. ``${{ params.wave_size }}``: valid wherever a typed value is
TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\s*\$\{\{[^}]*\}\}\s*$",
    "description": "A template like ${{ params.NAME }}",
}
_KEEP_OUTSIDE = ("title", "description", "default")


def _allow_templates(node: Any) -> Any:
    """Let a template stand in for a number, a boolean, a list (a ``list`` param) or a patterned string."""
    if isinstance(node, list):
        return [_allow_templates(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _allow_templates(value) for key, value in node.items()}
    kind = result.get("type")
    items = result.get("items")
    scalars = kind == "array" and isinstance(items, dict) and items.get("type") in ("string", "integer")
    if kind in ("integer", "number", "boolean") or scalars or (kind == "string" and "pattern" in result):
        inner = {k: v for k, v in result.items() if k not in _KEEP_OUTSIDE}
        outer = {k: v for k, v in result.items() if k in _KEEP_OUTSIDE}
        return {**outer, "anyOf": [inner, TEMPLATE_SCHEMA]}
    return result
