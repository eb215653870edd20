"""The plan language: models, the YAML loader with located errors, templates and the JSON Schema.

Public API::

    load_plan(path, overrides) -> LoadedPlan        # raises PlanError with located problems
    load_plan_text(text, filename, overrides) -> LoadedPlan
    parse_set_options(["k=v", ...]) -> {"k": "v"}
    render_runtime(text, {"node": {...}, "run": {...}}) -> str
    render_step(step, context) -> step               # any plan model: steps, checks
    plan_json_schema() -> dict
"""

from migrator.plan.loader import MASK, LoadedPlan, load_plan, load_plan_text, parse_set_options
from migrator.plan.schema import plan_json_schema
from migrator.plan.templates import RUNTIME_FIELDS, render_runtime, render_step

__all__ = [
    "MASK",
    "RUNTIME_FIELDS",
    "LoadedPlan",
    "load_plan",
    "load_plan_text",
    "parse_set_options",
    "plan_json_schema",
    "render_runtime",
    "render_step",
]
