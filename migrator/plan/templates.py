"""Templates and parameters.

``${{ params.NAME }}`` is replaced when a plan is loaded (see :mod:`migrator.plan.loader`): a scalar that
is only a template takes the parameter's typed value, a template inside other text takes its text form.
``${{ node.name }}``, ``${{ node.address }}`` and ``${{ run.id }}`` are runtime templates: they stay in the
loaded plan as text and the engine renders them with :func:`render_runtime` / :func:`render_step` for each
node; :class:`RuntimeTemplate` compiles a model once to render it cheaply for many nodes.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from migrator.errors import Location, PlanError, Problem
from migrator.plan.models import ParamSpec, ParamType
from migrator.plan.types import parse_duration

TEMPLATE_RE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_EXPR_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_-]*)$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PARAMS = "params"
#: runtime namespaces and their fields, rendered by the engine
RUNTIME_FIELDS: dict[str, tuple[str, ...]] = {"node": ("name", "address"), "run": ("id",)}
NODE_NAMESPACE = "node"

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class TemplateRef:
    """One ``${{ namespace.name }}`` in a string."""

    namespace: str
    name: str
    start: int
    end: int

    @property
    def text(self) -> str:
        return f"${{{{ {self.namespace}.{self.name} }}}}"


def suggest(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def known_list(choices: Sequence[str]) -> str:
    return ", ".join(choices) if choices else "(none)"


def find_templates(text: str) -> list[TemplateRef]:
    """Every template in ``text``; raise ``ValueError`` with a clean message for a malformed one."""
    refs: list[TemplateRef] = []
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            return refs
        match = TEMPLATE_RE.match(text, start)
        if match is None:
            raise ValueError("unterminated template: '${{' without '}}'")
        expr = match.group(1).strip()
        parsed = _EXPR_RE.match(expr)
        if parsed is None:
            raise ValueError(
                f"invalid template '${{{{ {expr} }}}}': expected ${{{{ params.NAME }}}},"
                " ${{ node.name }}, ${{ node.address }} or ${{ run.id }}"
            )
        refs.append(TemplateRef(parsed.group(1), parsed.group(2), match.start(), match.end()))
        pos = match.end()


def check_ref(ref: TemplateRef, params: Sequence[str]) -> None:
    """Raise ``ValueError`` when ``ref`` names an unknown namespace, param or runtime field."""
    if ref.namespace == PARAMS:
        if ref.name not in params:
            raise ValueError(
                f"undefined param {ref.name!r} in {ref.text}{suggest(ref.name, params)}"
                + ("" if suggest(ref.name, params) else f" (declared params: {known_list(params)})")
            )
        return
    fields = RUNTIME_FIELDS.get(ref.namespace)
    if fields is None:
        namespaces = [PARAMS, *RUNTIME_FIELDS]
        raise ValueError(
            f"unknown template namespace {ref.namespace!r} in {ref.text}"
            f"{suggest(ref.namespace, namespaces)}"
            + ("" if suggest(ref.namespace, namespaces) else f" (known: {known_list(namespaces)})")
        )
    if ref.name not in fields:
        raise ValueError(
            f"unknown field {ref.name!r} in {ref.text}{suggest(ref.name, fields)}"
            + ("" if suggest(ref.name, fields) else f" ({ref.namespace} has: {known_list(fields)})")
        )


# ------------------------------------------------------------------------------------------------ params


def param_text(value: Any) -> str:
    """The text form of a param value, used when a template sits inside other text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return ",".join(param_text(v) for v in value)
    return str(value)


def _to_string(value: Any, from_cli: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a string")
    return value if isinstance(value, str) else param_text(value)


def _to_integer(value: Any, from_cli: bool) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,18}\s*", value):
        return int(value)
    raise ValueError("expected an integer")


def _to_number(value: Any, from_cli: bool) -> int | float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, int | float):
        return value
    if not isinstance(value, str) or len(value) >= 50:
        raise ValueError("expected a number")
    try:
        result = float(value)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(result):
        raise ValueError("expected a number")
    return result


def _to_boolean(value: Any, from_cli: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false (or yes/no)")


def _to_duration(value: Any, from_cli: bool) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a duration like 30s or 5m")
    parse_duration(value)
    return value.strip() if isinstance(value, str) else value


def _to_list(value: Any, from_cli: bool) -> list[Any]:
    if from_cli and isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    raise ValueError(
        "expected a comma-separated list" if from_cli else "expected a list of strings or numbers"
    )


#: how a value of each param type is checked and converted: ``(value, from_cli) -> typed value``
_COERCE: dict[ParamType, Callable[[Any, bool], Any]] = {
    ParamType.STRING: _to_string,
    ParamType.INTEGER: _to_integer,
    ParamType.NUMBER: _to_number,
    ParamType.BOOLEAN: _to_boolean,
    ParamType.DURATION: _to_duration,
    ParamType.LIST: _to_list,
}


def coerce_param(spec: ParamSpec, value: Any, *, from_cli: bool) -> Any:
    """Check and convert a param value (a YAML default, or a ``--set`` string when ``from_cli``).

    Raise ``ValueError`` with a message that says what was expected.
    """
    texts = value if isinstance(value, list) else [value]
    if any(isinstance(text, str) and "${{" in text for text in texts):
        raise ValueError("templates (${{ ... }}) are not allowed in param values")
    coerce = _COERCE.get(spec.type)
    if coerce is None:  # pragma: no cover - exhaustive
        raise ValueError(f"unsupported param type {spec.type}")
    result = coerce(value, from_cli)
    if spec.enum is not None:
        _check_enum(result, spec.enum)
    return result


def _check_enum(result: Any, enum: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``result`` (every item of a list) is one of ``enum``."""
    items = result if isinstance(result, list) else [result]
    allowed = [param_text(e) for e in enum]
    for item in items:
        if item not in enum and param_text(item) not in allowed:
            raise ValueError(f"expected one of: {', '.join(allowed)}{suggest(param_text(item), allowed)}")


# --------------------------------------------------------------------------------- load-time rendering


def substitute_params(text: str, values: Mapping[str, Any]) -> Any:
    """Replace the ``params`` templates in ``text``; runtime templates stay.

    A text that is exactly one params template (spaces around it allowed) gives the typed value.
    Templates must already be checked with :func:`find_templates` and :func:`check_ref`.
    """
    refs = [r for r in find_templates(text) if r.namespace == PARAMS]
    if not refs:
        return text
    if len(refs) == 1 and text[: refs[0].start].strip() == "" and text[refs[0].end :].strip() == "":
        return values[refs[0].name]
    out, pos = [], 0
    for ref in refs:
        out.append(text[pos : ref.start])
        out.append(param_text(values[ref.name]))
        pos = ref.end
    out.append(text[pos:])
    return "".join(out)


# ----------------------------------------------------------------------------------- runtime rendering

Context = Mapping[str, Mapping[str, str]]
"""A runtime context: ``{"node": {"name": ..., "address": ...}, "run": {"id": ...}}``."""


def _runtime_error(message: str) -> PlanError:
    return PlanError(message, [Problem(Location("<runtime>"), "", message)])


def _substitute(text: str, refs: Sequence[TemplateRef], context: Context) -> str:
    out, pos = [], 0
    for ref in refs:
        namespace = context.get(ref.namespace)
        if namespace is None or ref.name not in namespace:
            where = "outside a for_each stage" if ref.namespace == NODE_NAMESPACE else "here"
            raise _runtime_error(f"template {ref.text} cannot be rendered {where}")
        out.append(text[pos : ref.start])
        out.append(str(namespace[ref.name]))
        pos = ref.end
    out.append(text[pos:])
    return "".join(out)


def render_runtime(text: str, context: Context) -> str:
    """Render the runtime templates of ``text``: ``context = {"node": {"name": ..., "address": ...},
    "run": {"id": ...}}``.

    A template whose namespace or field is not in ``context`` raises :class:`PlanError`: the engine must
    not run a step with an unrendered template.
    """
    if "${{" not in text:
        return text
    try:
        refs = find_templates(text)
    except ValueError as exc:
        raise _runtime_error(str(exc)) from None
    return _substitute(text, refs, context)


_T = TypeVar("_T")
_MALFORMED = "<malformed>"  # in RuntimeTemplate.namespaces when a template cannot be parsed
_Renderer = Callable[[Context], Any]


def _compile(value: Any, namespaces: set[str]) -> _Renderer | None:
    """A function that renders the runtime templates of ``value``, or ``None`` when it has none.

    Only the parts that hold a template are visited when rendering: everything else is shared with
    ``value``. Adds the namespaces the templates use to ``namespaces``.
    """
    if isinstance(value, str):
        return _compile_text(value, namespaces)
    if isinstance(value, BaseModel):
        fields = [
            (name, fn)
            for name in type(value).model_fields
            if (fn := _compile(getattr(value, name), namespaces)) is not None
        ]
        if not fields:
            return None
        model = value

        def render_model(context: Context) -> Any:
            return model.model_copy(update={name: fn(context) for name, fn in fields})

        return render_model
    if isinstance(value, list | tuple):
        items = [(i, fn) for i, v in enumerate(value) if (fn := _compile(v, namespaces)) is not None]
        if not items:
            return None
        seq, as_tuple = value, isinstance(value, tuple)

        def render_seq(context: Context) -> Any:
            out = list(seq)
            for i, fn in items:
                out[i] = fn(context)
            return tuple(out) if as_tuple else out

        return render_seq
    if isinstance(value, dict):
        entries = [(k, fn) for k, v in value.items() if (fn := _compile(v, namespaces)) is not None]
        if not entries:
            return None
        mapping = value

        def render_dict(context: Context) -> Any:
            out = dict(mapping)
            for k, fn in entries:
                out[k] = fn(context)
            return out

        return render_dict
    return None


def _compile_text(text: str, namespaces: set[str]) -> _Renderer | None:
    if "${{" not in text:
        return None
    try:
        refs = find_templates(text)
    except ValueError as exc:
        message = str(exc)
        namespaces.add(_MALFORMED)

        def malformed(context: Context) -> Any:
            raise _runtime_error(message)

        return malformed
    namespaces.update(ref.namespace for ref in refs)
    return lambda context: _substitute(text, refs, context)


class RuntimeTemplate(Generic[_T]):
    """A plan model (a step, a check, any part of a plan) compiled once for runtime rendering.

    Compiling walks the model once and keeps only the paths to its templates, so :meth:`render` costs
    nothing for a model without templates (it returns the model itself) and, for one with templates, only
    the strings that hold them are substituted and only the models, lists and dicts on their way are
    copied (the rest is shared). :attr:`namespaces` says which runtime namespaces the templates use: a
    step whose templates do not use ``node`` renders to the same model for every node, so the engine can
    render it once per stage (:meth:`uses_node`).
    """

    __slots__ = ("_render", "namespaces", "value")

    def __init__(self, value: _T) -> None:
        self.value = value
        namespaces: set[str] = set()
        self._render = _compile(value, namespaces)
        self.namespaces: frozenset[str] = frozenset(namespaces)

    @property
    def static(self) -> bool:
        """No runtime template at all: :meth:`render` returns :attr:`value` itself."""
        return self._render is None

    def uses_node(self) -> bool:
        """Whether a template refers to ``node.*`` (a malformed template counts as one, so that its
        error comes where a per-node rendering would raise it)."""
        return NODE_NAMESPACE in self.namespaces or _MALFORMED in self.namespaces

    def render(self, context: Context) -> _T:
        """``value`` with every runtime template rendered (the same rules as :func:`render_runtime`)."""
        if self._render is None:
            return self.value
        result: _T = self._render(context)
        return result


def render_step(step: _T, context: Context) -> _T:
    """A copy of a step (or check, or any plan model) with every runtime template rendered.

    Strings are rendered everywhere in the model: its name, its args (nested dicts and lists included)
    and its explicit ``undo``. Unchanged parts are shared, not copied. The copy is not re-validated.
    To render one model for many nodes, compile it once with :class:`RuntimeTemplate`.
    """
    return RuntimeTemplate(step).render(context)
