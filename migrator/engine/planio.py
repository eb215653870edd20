"""Loading plans for the engine, refusing those this build cannot run, rendering runtime templates.

Plans are read by the plan loader (:func:`migrator.plan.loader.load_plan`); :func:`validate_for_engine`
refuses a valid plan this build cannot run (located in the file through the loader's source map). Runtime
templates ``${{ node.name }}``, ``${{ node.address }}`` and ``${{ run.id }}`` are rendered by
:func:`render_step` for each node.
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

from migrator.actions import get_action
from migrator.checks import get_check
from migrator.errors import Location, PlanError, Problem, UsageError
from migrator.plan.loader import load_plan, parse_set_options
from migrator.plan.models import CheckBase, Plan, StepBase
from migrator.plan.source import PathKey, SourceMap
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
    source_map: SourceMap | None = None  # where the file has each key and value (a plan loaded from a file)
    stage_indexes: tuple[int, ...] = ()  # the file's index of each stage (disabled stages are not loaded)

    @property
    def secret_params(self) -> list[str]:
        return sorted(k for k, spec in self.plan.spec.params.items() if spec.secret)

    def masked_params(self) -> dict[str, Any]:
        secret = set(self.secret_params)
        return {k: ("***" if k in secret else v) for k, v in self.params.items()}

    def locate(self, at: PathKey) -> tuple[PathKey, Location]:
        """A path into the loaded plan as a path into its file (``spec.stages[i]`` counts the disabled
        stages too), and where that is in the file (just the file without a source map)."""
        index = at[2] if len(at) > 2 and at[:2] == ("spec", "stages") else None
        if isinstance(index, int) and index < len(self.stage_indexes):
            at = (*at[:2], self.stage_indexes[index], *at[3:])
        if self.source_map is None:
            return at, Location(str(self.path) if self.path else "<plan>")
        return at, self.source_map.value(at)


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
        source_map=loaded.source_map,
        stage_indexes=loaded.stage_indexes,
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


# ------------------------------------------------------------------------------------------ validation


def validate_for_engine(source: PlanSource) -> None:
    """Refuse a plan this build cannot run: unavailable actions/checks, node actions outside for_each.

    Problems point at the file, line and column when the plan was loaded from a file (the loader's source
    map, :meth:`PlanSource.locate`).
    """
    plan = source.plan
    found: list[tuple[PathKey, str]] = []  # (path in the loaded plan, message)

    def check_step(step: StepBase, at: PathKey, in_for_each: bool) -> None:
        name = str(getattr(step, "action", ""))
        try:
            action = get_action(name)
        except PlanError as exc:
            found.append(((*at, "action"), str(exc)))
            return
        if action.needs_node and not in_for_each:
            found.append(((*at, "action"), f"action {name!r} needs a node: use it in a for_each stage"))
        if step.undo is not None:
            check_step(step.undo, (*at, "undo"), in_for_each)

    def check_checks(checks: Sequence[CheckBase], at: PathKey) -> None:
        for i, check in enumerate(checks):
            try:
                get_check(str(getattr(check, "type", "")))
            except PlanError as exc:
                found.append(((*at, i, "type"), str(exc)))

    check_checks(plan.spec.preflight, ("spec", "preflight"))
    check_checks(plan.spec.verify, ("spec", "verify"))
    for s, stage in enumerate(plan.spec.stages):
        for i, step in enumerate(stage.steps):
            check_step(step, ("spec", "stages", s, "steps", i), stage.for_each is not None)
        check_checks(stage.verify, ("spec", "stages", s, "verify"))
        check_checks(stage.monitor, ("spec", "stages", s, "monitor"))
    if not found:
        return
    problems: list[Problem] = []
    for at, message in found:
        where, location = source.locate(at)
        problems.append(Problem(location, _show(where), message))
    raise PlanError("", problems)


def _show(path: PathKey) -> str:
    text = ""
    for part in path[1:] if path and path[0] == "spec" else path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
