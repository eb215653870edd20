"""Load a plan: YAML with locations -> params and templates -> pydantic models -> semantic checks.

Every problem becomes a :class:`~migrator.errors.Problem` with the file, line, column and field path,
e.g. ``plans/x.yaml:14:9: stages[1].steps[0].timeout: expected a duration like 30s or 5m``. Paths drop
the ``spec.`` prefix. All problems found in one phase are reported together, sorted by position.

Phases (each stops the load when it found problems):

1. :func:`migrator.plan.source.read_yaml`: syntax, duplicate keys, tags, size, depth, aliases.
2. Params: ``spec.params`` declarations, their defaults and the ``--set`` overrides, typed and checked.
3. Templates: ``${{ params.X }}`` substituted; runtime templates (``node.*``, ``run.*``) checked and kept.
4. Pydantic validation of :class:`~migrator.plan.models.Plan`, errors mapped to locations.
5. Semantic checks that need the whole plan (node actions outside ``for_each``, selector rules, ...).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from migrator.errors import Location, PlanError, Problem
from migrator.plan.emit import emit_yaml
from migrator.plan.models import (
    NodeOrder,
    ParamSpec,
    Plan,
    Stage,
    action_names,
    check_type_names,
)
from migrator.plan.source import (
    MAX_PLAN_BYTES,
    PathKey,
    SourceMap,
    format_path,
    iter_strings,
    read_yaml,
)
from migrator.plan.templates import (
    NODE_NAMESPACE,
    PARAM_NAME_RE,
    check_ref,
    coerce_param,
    find_templates,
    known_list,
    param_text,
    substitute_params,
    suggest,
)

MASK = "***"
MAX_PROBLEMS = 50

__all__ = ["MASK", "LoadedPlan", "load_plan", "load_plan_text", "parse_set_options"]


@dataclass(frozen=True)
class LoadedPlan:
    """A validated plan and what the engine needs around it.

    - ``plan``: the validated model, params substituted, runtime templates (``${{ node.name }}`` ...) kept;
    - ``path``: the plan file (``Path(filename)`` for :func:`load_plan_text`);
    - ``rendered``: the plan as YAML after substitution, with secret values masked as ``***``; this is
      what the engine stores as ``runs/<id>/plan.yaml``;
    - ``params``: the resolved, typed value of every declared param (secret ones included: never log it);
    - ``secrets``: the text of every secret param value, for :meth:`scrub`;
    - ``source_map``: where each key and value of the file is (to locate a problem found later, without
      parsing the file again); ``stage_indexes``: the index in the file of each stage of ``plan`` (stages
      with ``enabled: false`` are left out of it).
    """

    plan: Plan
    path: Path
    rendered: str
    params: Mapping[str, Any]
    secrets: frozenset[str] = field(default_factory=frozenset)
    source_map: SourceMap | None = None
    stage_indexes: tuple[int, ...] = ()

    def scrub(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***`` (longest first)."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, MASK)
        return text

    @property
    def public_params(self) -> dict[str, Any]:
        """``params`` with secret values masked, safe for journals and reports."""
        secret_names = {name for name, spec in self.plan.spec.params.items() if spec.secret}
        return {k: (MASK if k in secret_names else v) for k, v in self.params.items()}


def parse_set_options(items: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; a later ``--set`` of the same key wins."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            message = f"--set {item!r}: expected NAME=VALUE"
            raise PlanError(message, [Problem(Location("--set"), "", f"{item!r}: expected NAME=VALUE")])
        result[key.strip()] = value
    return result


def load_plan(path: Path, overrides: Mapping[str, str] | None = None) -> LoadedPlan:
    """Read and validate the plan at ``path``; raise :class:`PlanError` with located problems."""
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise _error(
                Location(file, 1, 1), "", f"the plan is too large ({size} bytes, at most {MAX_PLAN_BYTES})"
            )
        raw = path.read_bytes()
    except PlanError:
        raise
    except IsADirectoryError:
        raise _error(Location(file), "", "cannot read the plan: it is a directory") from None
    except OSError as exc:
        raise _error(Location(file), "", f"cannot read the plan: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _error(Location(file, line, column), "", "the plan is not UTF-8 text") from None
    return load_plan_text(text, path, overrides)


def load_plan_text(
    text: str, filename: str | Path = "<plan>", overrides: Mapping[str, str] | None = None
) -> LoadedPlan:
    """Validate plan ``text``; ``filename`` is used in locations. See :func:`load_plan`."""
    file = str(filename)
    data, smap = read_yaml(text.lstrip("\ufeff"), file)
    loader = _Loader(file, data, smap, dict(overrides or {}))
    return loader.load(Path(filename))


def _error(location: Location, path: str, message: str) -> PlanError:
    return PlanError(message, [Problem(location, path, message)])


# --------------------------------------------------------------------------------------------- loader


class _Loader:
    def __init__(self, file: str, data: dict[str, Any], smap: SourceMap, overrides: dict[str, str]) -> None:
        self.file = file
        self.data = data
        self.smap = smap
        self.overrides = overrides
        self.problems: list[Problem] = []
        self.secrets: set[str] = set()
        self._values: Mapping[str, Any] = {}
        self.disabled: list[int] = []
        self.kept: list[int] = []  # file indexes of the stages left in the plan

    # -- helpers

    def at_value(self, path: PathKey, message: str) -> None:
        self.problems.append(Problem(self.smap.value(path), format_path(path), message))

    def at_key(self, path: PathKey, message: str) -> None:
        self.problems.append(Problem(self.smap.key(path), format_path(path), message))

    def raise_problems(self) -> None:
        if not self.problems:
            return
        unique: dict[tuple[str, str, str], Problem] = {}
        for problem in self.problems:
            message = self.scrub(problem.message)
            unique.setdefault(
                (str(problem.location), problem.path, message),
                Problem(problem.location, problem.path, message),
            )
        problems = sorted(
            unique.values(), key=lambda p: (p.location.line or 0, p.location.column or 0, p.path)
        )
        if len(problems) > MAX_PROBLEMS:
            extra = len(problems) - MAX_PROBLEMS
            problems = [
                *problems[:MAX_PROBLEMS],
                Problem(problems[MAX_PROBLEMS].location, "", f"... and {extra} more problems"),
            ]
        raise PlanError("invalid plan", problems)

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, MASK)
        return text

    # -- phases

    def load(self, path: Path) -> LoadedPlan:
        values, masked = self.resolve_params()
        self.raise_problems()
        data = self.substitute(values)
        self.raise_problems()
        plan = self.validate(data)
        self.raise_problems()
        self.semantic_checks(plan)
        self.raise_problems()
        plan = self.drop_disabled_stages(plan)
        plan = self.mask_secret_defaults(plan)
        rendered = self.render_text(masked)
        return LoadedPlan(
            plan=plan,
            path=path,
            rendered=rendered,
            params=dict(values),
            secrets=frozenset(self.secrets),
            source_map=self.smap,
            stage_indexes=tuple(self.kept),
        )

    def resolve_params(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Typed values of the declared params, and the same with secret values masked."""
        spec = self.data.get("spec")
        raw_params = spec.get("params") if isinstance(spec, dict) else None
        declared = self.declared_params(raw_params)
        values: dict[str, Any] = {}
        masked: dict[str, Any] = {}
        for name, pspec in declared.items():
            found, value = self.param_value(name, pspec)
            if not found:
                continue
            values[name] = value
            masked[name] = MASK if pspec.secret else value
            if pspec.secret:
                self.secrets.add(param_text(value))
        for name in self.overrides:
            if name not in declared and not (isinstance(raw_params, dict) and name in raw_params):
                self.unknown_override(name, sorted(declared))
        self.secrets.discard("")
        return values, masked

    def declared_params(self, raw_params: Any) -> dict[str, ParamSpec]:
        """The params ``spec.params`` declares, validated (a bad one is a problem, left out)."""
        declared: dict[str, ParamSpec] = {}
        if not isinstance(raw_params, dict):
            return declared
        for name, raw in raw_params.items():
            ppath = ("spec", "params", name)
            if not PARAM_NAME_RE.match(name):
                self.at_key(ppath, f"invalid param name {name!r}: use letters, digits and '_'")
                continue
            try:
                declared[name] = ParamSpec.model_validate(raw)
            except ValidationError as exc:
                self.map_validation_errors(exc, raw, ppath, ParamSpec)
        return declared

    def param_value(self, name: str, pspec: ParamSpec) -> tuple[bool, Any]:
        """``(True, value)`` from ``--set`` or the default; ``(False, None)`` after recording a problem."""
        ppath = ("spec", "params", name)
        if name in self.overrides:
            cli_value = self.overrides[name]
            if pspec.secret:
                self.secrets.add(cli_value)
            try:
                return True, coerce_param(pspec, cli_value, from_cli=True)
            except ValueError as exc:
                shown = MASK if pspec.secret else cli_value
                message = f"{exc} (param {name!r} has type {pspec.type})"
                self.problems.append(Problem(Location("--set"), f"{name}={shown}", message))
                return False, None
        if pspec.default is not None:
            if pspec.secret:
                self.secrets.add(param_text(pspec.default))
            try:
                return True, coerce_param(pspec, pspec.default, from_cli=False)
            except ValueError as exc:
                self.at_value((*ppath, "default"), f"{exc} (param {name!r} has type {pspec.type})")
                return False, None
        self.at_key(ppath, f"param {name!r} has no default; give one or use --set {name}=VALUE")
        return False, None

    def unknown_override(self, name: str, declared: list[str]) -> None:
        hint = suggest(name, declared)
        message = f"unknown param {name!r}{hint}"
        if not hint:
            message += f" (the plan declares: {known_list(declared)})"
        self.problems.append(Problem(Location("--set"), name, message))

    def substitute(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check every template and substitute the params ones; node templates only in for_each steps."""
        declared = list(values)
        raw_params = (
            self.data.get("spec", {}).get("params") if isinstance(self.data.get("spec"), dict) else None
        )
        declared_all = list(raw_params) if isinstance(raw_params, dict) else declared
        for spath, text in iter_strings(self.data):
            if "${{" not in text:
                continue
            try:
                refs = find_templates(text)
                for ref in refs:
                    check_ref(ref, declared_all)
            except ValueError as exc:
                self.at_value(spath, str(exc))
                continue
            if spath[:2] == ("spec", "params"):
                self.at_value(spath, "templates are not allowed in param declarations")
                continue
            if any(ref.namespace == NODE_NAMESPACE for ref in refs) and not self.node_context(spath):
                shown = next(r.text for r in refs if r.namespace == NODE_NAMESPACE)
                self.at_value(
                    spath, f"{shown} is only available in the steps of a stage with for_each: nodes"
                )
        if self.problems:
            return self.data
        self._values = values
        result = self._subst(self.data, ())
        assert isinstance(result, dict)
        return result

    def _subst(self, value: Any, path: PathKey) -> Any:
        if isinstance(value, str):
            if "${{" not in value or path[:2] == ("spec", "params"):
                return value
            return substitute_params(value, self._values)
        if isinstance(value, dict):
            return {k: self._subst(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._subst(v, (*path, i)) for i, v in enumerate(value)]
        return value

    def node_context(self, path: PathKey) -> bool:
        """Is ``path`` inside the steps of a stage with ``for_each``?"""
        if len(path) < 5 or path[:2] != ("spec", "stages") or path[3] != "steps":
            return False
        stages = self.data["spec"].get("stages")
        stage = stages[path[2]] if isinstance(stages, list) and isinstance(path[2], int) else None
        return isinstance(stage, dict) and stage.get("for_each") is not None

    def validate(self, data: dict[str, Any]) -> Plan:
        try:
            return Plan.model_validate(data)
        except ValidationError as exc:
            self.map_validation_errors(exc, data, (), Plan)
            self.raise_problems()
            raise  # pragma: no cover - raise_problems always raises here

    def semantic_checks(self, plan: Plan) -> None:
        for index, stage in enumerate(plan.spec.stages):
            spath: PathKey = ("spec", "stages", index)
            self.check_stage(stage, spath)

    def check_stage(self, stage: Stage, spath: PathKey) -> None:
        if stage.for_each is None:
            for sindex, step in enumerate(stage.steps):
                for label, candidate in (("", step), (".undo", step.undo)):
                    action = str(getattr(candidate, "action", ""))
                    if candidate is not None and action.startswith("node."):
                        where: PathKey = (*spath, "steps", sindex)
                        if label:
                            where = (*where, "undo")
                        self.at_value(
                            (*where, "action"),
                            f"action {action!r} acts on one node: use it in a stage with for_each: nodes",
                        )
            return
        selector = stage.for_each.nodes
        fpath: PathKey = (*spath, "for_each")
        if stage.for_each.order is NodeOrder.AS_LISTED and not selector.names:
            self.at_value((*fpath, "order"), "order: as-listed needs nodes.names")
        if selector.names is not None:
            seen: set[str] = set()
            for nindex, name in enumerate(selector.names):
                if name in seen:
                    self.at_value((*fpath, "nodes", "names", nindex), f"node {name!r} is listed twice")
                seen.add(name)
            both = [n for n in selector.names if n in selector.exclude]
            if both:
                self.at_value(
                    (*fpath, "nodes", "exclude"), f"node {both[0]!r} is both in names and in exclude"
                )
            if selector.count is not None or selector.percent is not None:
                key = "count" if selector.count is not None else "percent"
                self.at_key((*fpath, "nodes", key), f"{key} samples nodes; it cannot be combined with names")
            if not selector.names:
                self.at_value(
                    (*fpath, "nodes", "names"), "names must not be empty (leave it out for all nodes)"
                )

    def mask_secret_defaults(self, plan: Plan) -> Plan:
        """The model keeps no secret default (the values are in ``LoadedPlan.params``)."""
        params = plan.spec.params
        if not any(p.secret and p.default is not None for p in params.values()):
            return plan
        masked = {
            name: p.model_copy(update={"default": MASK}) if p.secret and p.default is not None else p
            for name, p in params.items()
        }
        return plan.model_copy(update={"spec": plan.spec.model_copy(update={"params": masked})})

    def drop_disabled_stages(self, plan: Plan) -> Plan:
        """Leave out the stages with ``enabled: false`` (they were validated like the others)."""
        self.disabled = [i for i, stage in enumerate(plan.spec.stages) if not stage.enabled]
        self.kept = [i for i, stage in enumerate(plan.spec.stages) if stage.enabled]
        if not self.disabled:
            return plan
        if len(self.disabled) == len(plan.spec.stages):
            self.at_key(("spec", "stages"), "every stage is disabled (enabled: false); nothing would run")
            self.raise_problems()
        stages = [stage for stage in plan.spec.stages if stage.enabled]
        return plan.model_copy(update={"spec": plan.spec.model_copy(update={"stages": stages})})

    def render_text(self, masked: Mapping[str, Any]) -> str:
        self._values = masked
        data = self._subst(self.data, ())
        disabled = self.disabled
        if disabled and isinstance(data.get("spec"), dict) and isinstance(data["spec"].get("stages"), list):
            data["spec"]["stages"] = [s for i, s in enumerate(data["spec"]["stages"]) if i not in disabled]
        spec = data.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("params"), dict):
            params = spec["params"]
            for name, raw in params.items():
                if isinstance(raw, dict) and name in masked:
                    # the resolved value, so that the rendered plan loads to the same plan
                    params[name] = {**raw, "default": masked[name]}
        header = f"# {self.file} rendered by migrator: params substituted, secret values masked\n"
        return self.scrub(header + emit_yaml(data))

    # -- pydantic errors

    def map_validation_errors(
        self, exc: ValidationError, data: Any, base: PathKey, model: type[BaseModel]
    ) -> None:
        for error in exc.errors(include_url=False):
            self.problems.append(self.map_error(error, data, base, model))

    def map_error(self, error: ErrorDetails, data: Any, base: PathKey, model: type[BaseModel]) -> Problem:
        loc = error["loc"]
        kind = error["type"]
        node, path, missing_key = _walk(loc, kind, data, base, model)
        if kind == "missing" and missing_key is not None:
            return Problem(self.smap.value(path), format_path((*path, missing_key)), "field required")
        if kind == "extra_forbidden":
            return self.extra_field(path, _field_names(_parent_type(model, loc)))
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            return self.union_tag(error, node, path)
        message = _clean_message(error)
        if kind in ("value_error", "assertion_error") and isinstance(node, dict):
            # a model validator may name a field relative to the model: "stages[2].name: ..."
            relative = _RELATIVE_RE.match(message)
            if relative:
                sub = _parse_relative(relative.group(1))
                if sub is not None:
                    path = (*path, *sub)
                    message = relative.group(2)
        return Problem(self.smap.value(path), format_path(path), message)

    def extra_field(self, path: PathKey, allowed: list[str]) -> Problem:
        key = str(path[-1]) if path else ""
        hint = suggest(key, allowed)
        message = f"unknown field {key!r}{hint}"
        if not hint and allowed:
            message += f" (expected one of: {', '.join(allowed)})"
        return Problem(self.smap.key(path), format_path(path), message)

    def union_tag(self, error: ErrorDetails, node: Any, path: PathKey) -> Problem:
        """A step's ``action`` or a check's ``type`` that is missing or names nothing known."""
        ctx = error.get("ctx") or {}
        disc = str(ctx.get("discriminator", "'action'")).strip("'")
        tpath = (*path, disc)
        if error["type"] == "union_tag_not_found":
            if not isinstance(node, dict):
                return Problem(self.smap.value(path), format_path(path), "expected a mapping")
            return Problem(self.smap.value(path), format_path(tpath), "field required")
        tag = str(ctx.get("tag", ""))
        names = action_names() if disc == "action" else check_type_names()
        what = "action" if disc == "action" else "check type"
        raw_tag = node.get(disc) if isinstance(node, dict) else None
        if not isinstance(raw_tag, str) or not raw_tag:
            expected = "an action name" if disc == "action" else "a check type"
            message = f"expected {expected} (known: {', '.join(names)})"
            return Problem(self.smap.value(tpath), format_path(tpath), message)
        hint = suggest(tag, names)
        message = f"unknown {what} {tag!r}{hint}"
        if not hint:
            message += f" (known: {', '.join(names)})"
        return Problem(self.smap.value(tpath), format_path(tpath), message)


def _walk(
    loc: tuple[str | int, ...], kind: str, data: Any, base: PathKey, model: type[BaseModel]
) -> tuple[Any, PathKey, str | None]:
    """Follow an error's ``loc`` through the data: the node it names, its path in the file, and the key a
    ``missing`` error is about (union branch tags in the loc are skipped)."""
    node: Any = data
    path: PathKey = base
    tp: Any = model
    missing_key: str | None = None
    for position, elem in enumerate(loc):
        tp_next = _select_union_member(tp, elem)
        if tp_next is not None:  # a discriminator tag in the loc
            tp = tp_next
        elif isinstance(node, dict) and isinstance(elem, str) and elem in node:
            node, path, tp = node[elem], (*path, elem), _field_type(tp, elem)
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            node, path, tp = node[elem], (*path, elem), _item_type(tp)
        elif position == len(loc) - 1 and isinstance(elem, str) and kind == "missing":
            missing_key = elem
    return node, path, missing_key


# --------------------------------------------------------------------------------- pydantic helpers

_RELATIVE_RE = re.compile(r"^((?:[A-Za-z_][\w-]*|\[\d+\])(?:\.[A-Za-z_][\w-]*|\[\d+\])*): (.+)$", re.DOTALL)
_PART_RE = re.compile(r"\.?([A-Za-z_][\w-]*)|\[(\d+)\]")


def _parse_relative(text: str) -> PathKey | None:
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _PART_RE.match(text, pos)
        if match is None:
            return None
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    return tuple(parts)


_PATTERN_MESSAGES = {
    r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$": "expected lowercase letters, digits, '.' and '-', like 'my-plan'",
    r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$": (
        "expected letters, digits, '_', '.', '-' and spaces, starting with a letter or digit"
    ),
    r"^[A-Za-z0-9_.${}\- ]+$": "expected letters, digits, '_', '.', '-', spaces and ${{ }} templates",
}

_TYPE_MESSAGES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "int_parsing_size": "expected a smaller integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "string_unicode": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "set_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
    "none_required": "expected nothing (null)",
}


def _items(count: Any) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


_CTX_MESSAGES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "literal_error": lambda ctx: f"expected {ctx.get('expected', '')}".strip(),
    "greater_than_equal": lambda ctx: f"must be at least {ctx.get('ge')}",
    "greater_than": lambda ctx: f"must be more than {ctx.get('gt')}",
    "less_than_equal": lambda ctx: f"must be at most {ctx.get('le')}",
    "less_than": lambda ctx: f"must be less than {ctx.get('lt')}",
    "string_too_short": lambda ctx: _min_length(ctx, lambda n: f"be at least {n} characters long"),
    "string_too_long": lambda ctx: f"must be at most {ctx.get('max_length')} characters long",
    "too_short": lambda ctx: _min_length(ctx, lambda n: f"have at least {_items(n)}"),
    "too_long": lambda ctx: f"must have at most {_items(ctx.get('max_length'))}",
    "string_pattern_mismatch": lambda ctx: _PATTERN_MESSAGES.get(
        str(ctx.get("pattern", "")), f"must match the pattern {ctx.get('pattern', '')}"
    ),
}
"""Messages of the pydantic error kinds that say what was expected through the error's ``ctx``."""


def _min_length(ctx: Mapping[str, Any], rest: Callable[[Any], str]) -> str:
    minimum = ctx.get("min_length", 1)
    return "must not be empty" if minimum == 1 else f"must {rest(minimum)}"


def _clean_message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    msg = error["msg"]
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind in _CTX_MESSAGES:
        return _CTX_MESSAGES[kind](ctx)
    if kind in ("value_error", "assertion_error"):
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                return msg[len(prefix) :]
        return msg
    if kind == "enum":
        expected = str(ctx.get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected)
        given = error.get("input")
        hint = suggest(str(given), choices) if isinstance(given, str) else ""
        return f"expected one of: {', '.join(choices)}{hint}"
    return msg


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> tuple[Any, ...]:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        members: list[Any] = []
        for arg in typing.get_args(tp):
            if arg is not type(None):
                members.extend(_union_members(arg))
        return tuple(members)
    return (tp,)


def _tag_of(cls: Any) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        return None
    for disc in ("action", "type"):
        info = cls.model_fields.get(disc)
        if info is not None and typing.get_origin(info.annotation) is typing.Literal:
            args = typing.get_args(info.annotation)
            if args and isinstance(args[0], str):
                return args[0]
    return None


def _select_union_member(tp: Any, elem: Any) -> Any:
    """When ``elem`` is the discriminator tag of one member of the union ``tp``, that member."""
    if not isinstance(elem, str):
        return None
    members = _union_members(tp)
    if len(members) < 2 and _tag_of(members[0] if members else None) is None:
        return None
    for member in members:
        if _tag_of(member) == elem:
            return member
    return None


def _model_of(tp: Any) -> type[BaseModel] | None:
    for member in _union_members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _field_type(tp: Any, name: str) -> Any:
    members = _union_members(tp)
    for member in members:
        if isinstance(member, type) and issubclass(member, BaseModel):
            for fname, info in member.model_fields.items():
                if name in (fname, info.alias):
                    return info.annotation
            return None
        if typing.get_origin(member) is dict:
            args = typing.get_args(member)
            return args[1] if len(args) == 2 else None
    return None


def _item_type(tp: Any) -> Any:
    for member in _union_members(tp):
        if typing.get_origin(member) in (list, tuple):
            args = typing.get_args(member)
            return args[0] if args else None
    return None


def _parent_type(model: type[BaseModel], loc: Sequence[int | str]) -> Any:
    tp: Any = model
    for elem in loc[:-1]:
        chosen = _select_union_member(tp, elem)
        if chosen is not None:
            tp = chosen
        elif isinstance(elem, int):
            tp = _item_type(tp)
        else:
            nxt = _field_type(tp, elem)
            if nxt is not None:
                tp = nxt
    return tp


def _field_names(tp: Any) -> list[str]:
    model = _model_of(tp)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]
