"""Loading plans for the engine and rendering runtime templates.

Plans are read by the plan loader (:func:`migrator.plan.loader.load_plan`). Runtime templates
``${{ node.name }}``, ``${{ node.address }}`` and ``${{ run.id }}`` are rendered by :func:`render_step`
for each node.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from migrator.errors import UsageError
from migrator.plan.loader import load_plan, parse_set_options
from migrator.plan.models import Plan, StepBase
from migrator.plan.templates import render_step as _render
from migrator.ports import Node


@dataclass
class PlanSource:
    """A plan ready to run: the model, where it came from, its rendered text and its parameters."""

    plan: Plan
    path: Path | None
    rendered_text: str
    params: dict[str, Any] = field(default_factory=dict)
    secret_values: list[str] = field(default_factory=list)
    source_hash: str | None = None
    overrides: list[str] = field(default_factory=list)  # names of the params given with --set

    @property
    def secret_params(self) -> list[str]:
        return sorted(k for k, spec in self.plan.spec.params.items() if spec.secret)

    def masked_params(self) -> dict[str, Any]:
        secret = set(self.secret_params)
        return {k: ("***" if k in secret else v) for k, v in self.params.items()}


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    return parse_set_options(items)


def load_plan_file(path: Path, overrides: Mapping[str, str] | None = None) -> PlanSource:
    """Load and validate a plan file with ``--set`` overrides (:func:`migrator.plan.loader.load_plan`)."""
    if not path.exists():
        raise UsageError(f"{path}: no such plan file")
    loaded = load_plan(path, dict(overrides or {}))
    return PlanSource(
        plan=loaded.plan,
        path=Path(loaded.path),
        rendered_text=loaded.rendered,
        params=dict(loaded.params),
        secret_values=sorted(str(s) for s in loaded.secrets),
        source_hash=file_hash(path),
        overrides=sorted(dict(overrides or {})),
    )


def source_from_plan(
    plan: Plan, params: Mapping[str, Any] | None = None, secrets: Sequence[str] = (), path: Path | None = None
) -> PlanSource:
    """A :class:`PlanSource` for a plan model built in code (tests, plans stored in a run folder)."""
    return PlanSource(
        plan=plan,
        path=path,
        rendered_text=dump_plan_yaml(plan),
        params=dict(params or {}),
        secret_values=[str(s) for s in secrets],
        source_hash=file_hash(path) if path is not None and path.exists() else None,
    )


def plan_to_data(plan: Plan) -> dict[str, Any]:
    data: dict[str, Any] = plan.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def dump_plan_yaml(plan: Plan) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(json.loads(json.dumps(plan_to_data(plan))), out)
    return out.getvalue()


# ------------------------------------------------------------------------------------ runtime rendering


def runtime_context(run_id: str, node: Node | None) -> dict[str, dict[str, str]]:
    ctx: dict[str, dict[str, str]] = {"run": {"id": run_id}}
    if node is not None:
        ctx["node"] = {"name": node.name, "address": node.address}
    return ctx


def render_step(step: StepBase, context: Mapping[str, Mapping[str, str]]) -> StepBase:
    """The step with ``${{ node.* }}`` and ``${{ run.id }}`` rendered everywhere (args and undo)."""
    return _render(step, context)
