"""Custom resources checked against their CustomResourceDefinition's ``openAPIV3Schema``, as the API server
does for a structural schema: a value of the wrong type, a missing required field, a value outside an
``enum``, a ``pattern``, a bound or a length is refused (422 Invalid, the server's message per field); a
field the schema does not know is pruned, or with ``fieldValidation=Strict`` refused (400 BadRequest,
``strict decoding error: unknown field "spec.x"``).

Covered: ``type``, ``properties``, ``additionalProperties``, ``items``, ``required``, ``enum``,
``nullable``, ``pattern``, ``minimum``/``maximum`` (and ``exclusive*``), ``minLength``/``maxLength``,
``minItems``/``maxItems``, ``anyOf``/``allOf``/``oneOf`` (value checks: their branches add no fields),
``x-kubernetes-int-or-string``, ``x-kubernetes-preserve-unknown-fields``. Not covered: CEL rules
(``x-kubernetes-validations``), ``default``, formats other than the integer widths.

A CRD whose schema is ``x-kubernetes-preserve-unknown-fields`` at its root (the fakes' reduced CRDs)
accepts anything, as the real server does.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrator.testing.kube_server.store import ApiError, Obj, ResourceType

ROOT_FIELDS = ("apiVersion", "kind", "metadata")
CRD_KEY = "apiextensions.k8s.io/customresourcedefinitions"
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
GO_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


@dataclass
class SchemaCheck:
    """What a check found: ``errors`` (``path: message``, as the server words them) and ``unknown``
    (the paths of fields the schema does not declare)."""

    errors: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, dict | list) else json.dumps(value)[:80]


def _type_of(value: Any) -> str:
    return GO_TYPES.get(type(value), type(value).__name__)


def _type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    wanted = schema.get("type")
    if wanted is None:
        return True
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return bool(_type_of(value) == wanted)


def _value_checks(path: str, value: Any, schema: Mapping[str, Any], out: SchemaCheck) -> None:
    """enum, pattern, bounds, lengths, integer formats; and anyOf/allOf/oneOf of value checks."""
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_shown(v) for v in schema["enum"])
        out.errors.append(f"{path}: Unsupported value: {_shown(value)}: supported values: {allowed}")
    if isinstance(value, str):
        _string_checks(path, value, schema, out)
    if isinstance(value, int | float) and not isinstance(value, bool):
        _number_checks(path, value, schema, out)
    if isinstance(value, list):
        _list_checks(path, value, schema, out)
    _combinators(path, value, schema, out)


@functools.lru_cache(maxsize=1024)
def _pattern(text: str) -> re.Pattern[str] | None:
    """A schema's ``pattern`` (Go's RE2 syntax): its inline ``(?i)``, which RE2 allows anywhere and Python
    only at the start, becomes a flag; ``None`` for a pattern Python cannot compile (not checked)."""
    flags = re.IGNORECASE if "(?i)" in text else 0
    try:
        return re.compile(text.replace("(?i)", ""), flags)
    except re.error:
        return None


def _string_checks(path: str, value: str, schema: Mapping[str, Any], out: SchemaCheck) -> None:
    shown = _shown(value)
    pattern = _pattern(str(schema["pattern"])) if "pattern" in schema else None
    if pattern is not None and not pattern.search(value):
        out.errors.append(
            f"{path}: Invalid value: {shown}: {path} in body should match '{schema['pattern']}'"
        )
    if "maxLength" in schema and len(value) > int(schema["maxLength"]):
        out.errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
    if "minLength" in schema and len(value) < int(schema["minLength"]):
        out.errors.append(
            f"{path}: Invalid value: {shown}: {path} in body should be at least"
            f" {schema['minLength']} chars long"
        )


def _number_checks(path: str, value: float, schema: Mapping[str, Any], out: SchemaCheck) -> None:
    shown = _shown(value)
    low, high = INT_RANGES.get(str(schema.get("format")), (None, None))
    if low is not None and high is not None and not low <= value <= high:
        out.errors.append(f"{path}: Invalid value: {shown}: {path} in body is out of {schema['format']}")
    if "minimum" in schema:
        bound = schema["minimum"]
        if value < bound or (schema.get("exclusiveMinimum") and value == bound):
            out.errors.append(
                f"{path}: Invalid value: {shown}: {path} in body should be greater than or equal to {bound}"
            )
    if "maximum" in schema:
        bound = schema["maximum"]
        if value > bound or (schema.get("exclusiveMaximum") and value == bound):
            out.errors.append(
                f"{path}: Invalid value: {shown}: {path} in body should be less than or equal to {bound}"
            )


def _list_checks(path: str, value: list[Any], schema: Mapping[str, Any], out: SchemaCheck) -> None:
    if "maxItems" in schema and len(value) > int(schema["maxItems"]):
        out.errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
    if "minItems" in schema and len(value) < int(schema["minItems"]):
        out.errors.append(
            f"{path}: Invalid value: {len(value)}: {path} in body should have at least"
            f" {schema['minItems']} items"
        )


def _combinators(path: str, value: Any, schema: Mapping[str, Any], out: SchemaCheck) -> None:
    shown = _shown(value)
    for branch in schema.get("allOf") or []:
        _check(path, value, branch, out, unknown=False)
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key) or []
        if not branches:
            continue
        passing = 0
        for branch in branches:
            trial = SchemaCheck()
            _check(path, value, branch, trial, unknown=False)
            passing += not trial.errors
        if passing == 0 or (key == "oneOf" and passing > 1):
            out.errors.append(f"{path}: Invalid value: {shown}: must validate {key} of the schemas")


def _check(
    path: str, value: Any, schema: Mapping[str, Any], out: SchemaCheck, *, unknown: bool = True
) -> None:
    if value is None:
        if not schema.get("nullable") and schema.get("type") is not None:
            out.errors.append(
                f'{path}: Invalid value: "null": {path} in body must be of type {schema["type"]}'
            )
        return
    if not _type_ok(value, schema):
        wanted = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        out.errors.append(
            f'{path}: Invalid value: "{_type_of(value)}": {path} in body must be of type {wanted}:'
            f' "{_type_of(value)}"'
        )
        return
    _value_checks(path, value, schema, out)
    if isinstance(value, dict):
        _check_object(path, value, schema, out, unknown=unknown)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _check(f"{path}[{i}]", item, schema["items"], out, unknown=unknown)


def _check_object(
    path: str, value: Mapping[str, Any], schema: Mapping[str, Any], out: SchemaCheck, *, unknown: bool
) -> None:
    props: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for name in schema.get("required") or []:
        if name not in value:
            out.errors.append(f"{path}.{name}: Required value" if path else f"{name}: Required value")
    for key, item in value.items():
        sub = f"{path}.{key}" if path else str(key)
        if key in props:
            _check(sub, item, props[key], out, unknown=unknown)
        elif isinstance(extra, dict):
            _check(sub, item, extra, out, unknown=unknown)
        elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
            continue
        elif unknown and (props or schema.get("type") == "object"):
            out.unknown.append(sub)


def check(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> SchemaCheck:
    """Check a whole object (its ``apiVersion``, ``kind`` and ``metadata`` are the server's own)."""
    out = SchemaCheck()
    if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
        return out
    body = {k: v for k, v in obj.items() if k not in ROOT_FIELDS}
    root = {
        **schema,
        "properties": {k: v for k, v in (schema.get("properties") or {}).items() if k not in ROOT_FIELDS},
    }
    root.pop("required", None)
    for name in schema.get("required") or []:
        if name not in ROOT_FIELDS and name not in body:
            out.errors.append(f"{name}: Required value")
    _check("", body, root, out)
    return out


def prune(obj: Obj, paths: Iterable[str]) -> None:
    """Remove the unknown fields (``spec.a.b``, ``spec.list[2].c``) in place, as the server prunes them."""
    for path in sorted(paths, key=len, reverse=True):
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        parent: Any = obj
        for part in parts[:-1]:
            parent = parent[int(part[1:-1])] if part.startswith("[") else parent.get(part)
            if parent is None:
                break
        if isinstance(parent, dict):
            parent.pop(parts[-1], None)


def schema_for(crds: Mapping[tuple[str, str], Obj], rtype: ResourceType) -> Mapping[str, Any] | None:
    """The ``openAPIV3Schema`` of the stored CRD that serves ``rtype`` (``None``: no CRD, a built-in)."""
    for crd in crds.values():
        spec = crd.get("spec") or {}
        if spec.get("group") != rtype.group or (spec.get("names") or {}).get("plural") != rtype.plural:
            continue
        for version in spec.get("versions") or []:
            if version.get("name") == rtype.version:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                return schema if isinstance(schema, dict) else None
    return None


def admit(crds: Mapping[tuple[str, str], Obj], rtype: ResourceType, obj: Obj, *, strict: bool) -> None:
    """Refuse ``obj`` as the API server would (422 on a schema violation; 400 on an unknown field under
    strict field validation) or prune its unknown fields in place."""
    schema = schema_for(crds, rtype)
    if schema is None:
        return
    found = check(obj, schema)
    name = str((obj.get("metadata") or {}).get("name", ""))
    if found.errors:
        raise ApiError(
            422,
            "Invalid",
            f'{rtype.kind}.{rtype.group} "{name}" is invalid: [{", ".join(found.errors)}]',
            {
                "name": name,
                "group": rtype.group,
                "kind": rtype.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": e} for e in found.errors],
            },
        )
    if found.unknown:
        if strict:
            shown = ", ".join(f'unknown field "{p}"' for p in found.unknown)
            raise ApiError(400, "BadRequest", f"strict decoding error: {shown}")
        prune(obj, found.unknown)
