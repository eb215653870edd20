"""Writes to an object: request bodies, JSON merge and JSON patches, server-side apply with field managers
(``metadata.managedFields``, a simplified fieldsV1: one list of leaf paths per manager and operation) and
its conflicts. Pure functions: the caller stores the result."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import yaml

from migrator.testing.kube_server.store import ApiError, Obj, now_iso

Path = tuple[str, ...]


def parse_body(body: bytes, content_type: str) -> Any:
    """A request body: JSON, or YAML when the content type says so (400 otherwise)."""
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError:
        if "yaml" not in content_type:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ApiError(400, "BadRequest", f"the request body is not valid YAML: {exc}") from exc


# ---------------------------------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` removes a key)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _patch_op(parent: Any, last: str, op: Obj) -> None:
    """One JSON patch operation on the last step of its path (``KeyError``/``IndexError``: no such path)."""
    kind = op.get("op")
    key: Any = int(last) if isinstance(parent, list) and last != "-" else last
    if kind == "add":
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else key, op["value"])
        else:
            parent[key] = op["value"]
    elif kind == "replace":
        if not isinstance(parent, list) and key not in parent:
            raise KeyError(key)
        parent[key] = op["value"]
    elif kind == "remove":
        del parent[key]
    elif kind == "test":
        if parent[key] != op.get("value"):
            raise ApiError(422, "Invalid", f"test operation failed at {op.get('path')}")
    else:
        raise ApiError(422, "Invalid", f"unsupported json patch op {kind!r}")


def json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 JSON patch: add, remove, replace, test."""
    result = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(str(op.get("path", "")))
        if not parts:
            raise ApiError(422, "Invalid", "json patch on the whole document is not supported")
        try:
            parent: Any = result
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
            _patch_op(parent, parts[-1], op)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"json patch: path {op.get('path')} not found") from exc
    return result


# --------------------------------------------------------------------------------- field managers


def leaf_paths(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """The leaves of a JSON document (lists are leaves), for field ownership."""
    if isinstance(obj, dict) and obj:
        out: dict[Path, Any] = {}
        for key, value in obj.items():
            out.update(leaf_paths(value, (*prefix, key)))
        return out
    return {prefix: obj}


def owned_fields(obj: Obj) -> dict[Path, Any]:
    """The fields a manager can own: labels, annotations and everything but metadata/status."""
    fields: dict[Path, Any] = {}
    meta = obj.get("metadata") or {}
    for sub in ("labels", "annotations"):
        if meta.get(sub):
            fields.update(leaf_paths(meta[sub], ("metadata", sub)))
    for key, value in obj.items():
        if key in ("metadata", "status", "apiVersion", "kind"):
            continue
        fields.update(leaf_paths(value, (key,)))
    return fields


def get_field(obj: Any, path: Path) -> Any:
    cur = obj
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _del_field(obj: Obj, path: Path) -> None:
    cur: Any = obj
    for part in path[:-1]:
        if not isinstance(cur, dict) or part not in cur:
            return
        cur = cur[part]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)


def _deep_merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = _deep_merge(base.get(key), value)
        return out
    return copy.deepcopy(overlay)


def _entry_paths(entry: Mapping[str, Any]) -> list[Path]:
    return [tuple(p.split("\x1f")) for p in entry.get("fieldsV1", {}).get("f:paths", [])]


def record_manager(
    obj: Obj, manager: str, operation: str, fields: Mapping[Path, Any], *, steal: bool = False
) -> None:
    """Record field ownership in ``metadata.managedFields`` (``steal``: others lose these fields)."""
    meta = obj.setdefault("metadata", {})
    entries: list[Obj] = list(meta.get("managedFields") or [])
    mine = {"\x1f".join(p) for p in fields}
    kept = []
    for entry in entries:
        if entry.get("manager") == manager and entry.get("operation") == operation:
            continue
        if steal:
            paths = [p for p in entry.get("fieldsV1", {}).get("f:paths", []) if p not in mine]
            if not paths:
                continue
            kept.append({**entry, "fieldsV1": {"f:paths": paths}})
        else:
            kept.append(entry)
    if operation == "Update":
        previous = next(
            (e for e in entries if e.get("manager") == manager and e.get("operation") == "Update"), None
        )
        if previous is not None:
            mine |= set(previous.get("fieldsV1", {}).get("f:paths", []))
    kept.append(
        {
            "manager": manager,
            "operation": operation,
            "apiVersion": obj.get("apiVersion", ""),
            "time": now_iso(),
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:paths": sorted(mine)},
        }
    )
    meta["managedFields"] = kept


def record_update(current: Obj, new: Obj, manager: str) -> None:
    """An update (PUT/PATCH) by ``manager``: it now owns the fields it changed."""
    changed = {p: v for p, v in owned_fields(new).items() if get_field(current, p) != v}
    if changed:
        record_manager(new, manager, "Update", changed, steal=True)


# --------------------------------------------------------------------------------- server-side apply


def check_apply_body(applied: Any, kind: str, api_version: str, name: str) -> Obj:
    """The apply patch's object, after the checks the API server makes (400)."""
    if not isinstance(applied, dict):
        raise ApiError(400, "BadRequest", "apply patch must be an object")
    if applied.get("kind") != kind or applied.get("apiVersion") != api_version:
        raise ApiError(400, "BadRequest", f"apply patch kind {applied.get('kind')!r} does not match {kind}")
    if applied.setdefault("metadata", {}).get("name") != name:
        raise ApiError(400, "BadRequest", "the name of the object does not match the request")
    return applied


def _conflicts(current: Obj, manager: str, fields: Mapping[Path, Any]) -> ApiError | None:
    """409 naming the fields another manager owns with another value, or None."""
    conflicts: list[tuple[str, Path]] = []
    for entry in current["metadata"].get("managedFields") or []:
        if entry.get("manager") == manager:
            continue
        for path in _entry_paths(entry):
            if path in fields and get_field(current, path) != fields[path]:
                conflicts.append((str(entry.get("manager")), path))
    if not conflicts:
        return None
    listed = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
    return ApiError(
        409,
        "Conflict",
        f"Apply failed with {len(conflicts)} conflict(s): {listed}",
        {
            "causes": [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{m}"',
                    "field": "." + ".".join(p),
                }
                for m, p in conflicts
            ]
        },
    )


def apply_to(current: Obj, applied: Obj, manager: str, *, force: bool) -> Obj:
    """``current`` after ``manager`` applied ``applied``: its fields merged in, the fields it applied
    before and no longer applies removed (unless another manager owns them); 409 on conflicts unless
    ``force``."""
    fields = owned_fields(applied)
    conflict = _conflicts(current, manager, fields)
    if conflict is not None and not force:
        raise conflict
    entries = current["metadata"].get("managedFields") or []
    new = copy.deepcopy(current)
    previous = next(
        (e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"), None
    )
    if previous is not None:
        others = {p for e in entries if e is not previous for p in _entry_paths(e)}
        for path in _entry_paths(previous):
            if path not in fields and path not in others:
                _del_field(new, path)
    applied_meta = {k: v for k, v in applied["metadata"].items() if k in ("labels", "annotations")}
    body_rest = {k: v for k, v in applied.items() if k not in ("metadata", "apiVersion", "kind", "status")}
    new = _deep_merge(new, body_rest)
    new["metadata"] = _deep_merge(new["metadata"], applied_meta)
    record_manager(new, manager, "Apply", fields, steal=True)
    return dict(new)
