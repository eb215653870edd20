"""The fake API server's storage: resource types, objects with ``resourceVersion``, the watch event log,
lists (label and field selectors, ``limit``/``continue``) and watches.

What happens *because* an object changed (DaemonSet pods, garbage collection, ...) is not here: the store
calls :meth:`Store.changed` after every stored change, under its lock, and the control plane
(:mod:`.controllers`) overrides it.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

MAX_WATCH_SECONDS = 60.0
EVENT_LOG_SIZE = 20_000


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "nodes", "Node", False, ("status",)),
    ResourceType("", "v1", "namespaces", "Namespace", False),
    ResourceType("", "v1", "pods", "Pod", True, ("eviction", "status", "log")),
    ResourceType("", "v1", "services", "Service", True),
    ResourceType("", "v1", "endpoints", "Endpoints", True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True),
    ResourceType("", "v1", "events", "Event", True),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, ("status",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("status",)),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("status",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ResourceType(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
    ),
    ResourceType("crd.projectcalico.org", "v1", "ippools", "IPPool", False),
    ResourceType("operator.tigera.io", "v1", "installations", "Installation", False),
)

SPEC_FIELDS = ("spec", "data", "rules", "subjects", "roleRef", "subsets", "endpoints", "ports")


class ApiError(Exception):
    """An error answer: HTTP status, reason and message (turned into a Status body)."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}
        self.headers: dict[str, str] = {}


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}" not found',
        {"name": name, "kind": rtype.plural},
    )


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------- selectors

_SET_REQUIREMENT = re.compile(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)")


def _requirement(part: str) -> tuple[str, str, frozenset[str]]:
    """One requirement of a label selector: ``(op, key, values)``, op one of in, notin, absent, exists."""
    m = _SET_REQUIREMENT.fullmatch(part)
    if m:
        return m.group(2), m.group(1), frozenset(v.strip() for v in m.group(3).split(","))
    if "!=" in part:
        key, value = (x.strip() for x in part.split("!=", 1))
        return "notin", key, frozenset({value})
    if "=" in part:
        key, value = (x.strip() for x in part.replace("==", "=").split("=", 1))
        return "in", key, frozenset({value})
    if part.startswith("!"):
        return "absent", part[1:].strip(), frozenset()
    return "exists", part, frozenset()


def _meets(op: str, key: str, values: frozenset[str], labels: Mapping[str, str]) -> bool:
    if op == "in":
        return labels.get(key) in values
    if op == "notin":
        return labels.get(key) not in values
    if op == "absent":
        return key not in labels
    return key in labels


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Equality- and set-based label selectors (``a=b,c!=d,e,!f,g in (x,y),h notin (z)``)."""
    tests = [_requirement(raw.strip()) for raw in re.findall(r"[^,(]+(?:\([^)]*\))?", text) if raw.strip()]

    def matches(labels: Mapping[str, str]) -> bool:
        return all(_meets(op, key, values, labels) for op, key, values in tests)

    return matches


def match_label_selector_obj(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "absent"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is not None and not _meets(
            op, str(expr.get("key")), frozenset(expr.get("values") or []), labels
        ):
            return False
    return True


def get_path(obj: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def parse_field_selector(text: str) -> Callable[[Obj], bool]:
    tests: list[tuple[bool, str, str]] = []  # (equal, path, value)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "!=" in part:
            key, value = part.split("!=", 1)
            tests.append((False, key, value))
        else:
            key, value = part.replace("==", "=").split("=", 1)
            tests.append((True, key, value))

    def matches(obj: Obj) -> bool:
        return all((str(get_path(obj, k) or "") == v) == eq for eq, k, v in tests)

    return matches


def _query_filter(ns: str | None, query: Mapping[str, str]) -> Callable[[Obj], bool]:
    """The namespace, ``labelSelector`` and ``fieldSelector`` of a list or watch request as one test."""
    label_test = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
    field_test = parse_field_selector(query["fieldSelector"]) if query.get("fieldSelector") else None

    def matches(obj: Obj) -> bool:
        if ns is not None and obj["metadata"].get("namespace", "") != ns:
            return False
        if label_test is not None and not label_test(obj["metadata"].get("labels") or {}):
            return False
        return field_test is None or field_test(obj)

    return matches


# ------------------------------------------------------------------------------------------------ store


@dataclass
class WatchEvent:
    rv: int
    type: str
    rtype: ResourceType
    obj: Obj


class Store:
    """Objects by resource type, ``resourceVersion``, the watch event log (thread safe: ``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.stopping = threading.Event()  # set when the server stops: watches end
        self.rv = itertools.count(1000)
        self.last_rv = 1000
        self.resources: list[ResourceType] = list(RESOURCES)
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {r.key: {} for r in RESOURCES}
        self.types_by_path: dict[tuple[str, str, str], ResourceType] = {
            (r.group, r.version, r.plural): r for r in RESOURCES
        }
        self._sorted_keys: dict[str, list[tuple[str, str]]] = {}
        self._encoded: dict[tuple[Any, ...], bytes] = {}
        self.events: list[WatchEvent] = []
        self.events_dropped_rv = 0

    def changed(self, etype: str, rtype: ResourceType, old: Obj | None, new: Obj, *, quiet: bool) -> None:
        """Called (lock held) after ``new`` was stored (ADDED, MODIFIED) or removed (DELETED, ``new`` is
        the removed object); ``quiet``: a fixture added it without a watch event. Nothing here."""

    # -------------------------------------------------------------------------------- fixtures

    def rtype(self, kind_or_plural: str) -> ResourceType:
        for r in self.resources:
            if kind_or_plural in (r.kind, r.plural):
                return r
        raise KeyError(kind_or_plural)

    def register_type(self, rtype: ResourceType) -> None:
        """Serve a new kind (a CustomResourceDefinition's version)."""
        if (rtype.group, rtype.version, rtype.plural) in self.types_by_path:
            return
        self.resources.append(rtype)
        self.types_by_path[(rtype.group, rtype.version, rtype.plural)] = rtype
        self.objects.setdefault(rtype.key, {})

    def unregister_group(self, group: str) -> None:
        """Serve no kind of ``group`` (a cluster without the CRDs of the built-in ``IPPool`` and
        ``Installation``: served again once their CRDs are created). Its objects must be gone."""
        for rtype in [r for r in self.resources if r.group == group]:
            if self.objects.get(rtype.key):
                raise ValueError(f"{rtype.kind} objects exist: cannot stop serving {group}")
            self.resources.remove(rtype)
            self.types_by_path.pop((rtype.group, rtype.version, rtype.plural), None)

    def ensure_namespace(self, name: str) -> None:
        if ("", name) not in self.objects["/namespaces"]:
            self.add(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name},
                    "status": {"phase": "Active"},
                },
                log=False,
            )

    def add(self, obj: Obj, *, log: bool = True) -> Obj:
        """Create an object directly (fixtures); no admission. ``log=False``: no watch event (large seeds)."""
        with self.lock:
            return self.create(self.rtype(obj["kind"]), obj, log=log)

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        with self.lock:
            rtype = self.rtype(kind)
            found = self.objects[rtype.key].get((namespace if rtype.namespaced else "", name))
            return copy.deepcopy(found) if found is not None else None

    def find(self, kind: str, namespace: str | None = None) -> list[Obj]:
        with self.lock:
            rtype = self.rtype(kind)
            return [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self.objects[rtype.key].items())
                if namespace is None or ns == namespace
            ]

    def update(self, kind: str, name: str, namespace: str, mutate: Callable[[Obj], None]) -> Obj:
        """Change an object in place from a fixture or a controller (logged for watches)."""
        with self.lock:
            rtype = self.rtype(kind)
            obj = copy.deepcopy(self.objects[rtype.key][(namespace if rtype.namespaced else "", name)])
            mutate(obj)
            return self.store(rtype, obj)

    def remove(self, kind: str, name: str, namespace: str = "") -> None:
        with self.lock:
            rtype = self.rtype(kind)
            self.delete(rtype, namespace if rtype.namespaced else "", name)

    # ------------------------------------------------------------------------------ changes

    def _next_rv(self) -> str:
        self.last_rv = next(self.rv)
        return str(self.last_rv)

    def _log(self, etype: str, rtype: ResourceType, obj: Obj) -> None:
        self.events.append(WatchEvent(int(obj["metadata"]["resourceVersion"]), etype, rtype, obj))
        if len(self.events) > EVENT_LOG_SIZE:
            drop = len(self.events) - EVENT_LOG_SIZE
            self.events_dropped_rv = self.events[drop - 1].rv
            del self.events[:drop]
        self.lock.notify_all()

    def _check_new(self, rtype: ResourceType, meta: Obj) -> str:
        """The namespace of a new object, after the checks the API server makes (422, 404, 409)."""
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.kind} "" is invalid: metadata.name: Required value',
                    {"kind": rtype.plural},
                )
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        ns = str(meta.get("namespace", "")) if rtype.namespaced else ""
        if rtype.namespaced and not ns:
            raise ApiError(422, "Invalid", "metadata.namespace: Required value")
        if not rtype.namespaced:
            meta.pop("namespace", None)
        if rtype.namespaced and ("", ns) not in self.objects["/namespaces"]:
            raise ApiError(
                404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
            )
        if (ns, meta["name"]) in self.objects[rtype.key]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.plural} "{meta["name"]}" already exists',
                {"name": meta["name"], "kind": rtype.plural},
            )
        return ns

    def create(self, rtype: ResourceType, obj: Obj, *, log: bool = True, dry_run: bool = False) -> Obj:
        """Store a new object (``dry_run``: only what would be stored)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        ns = self._check_new(rtype, meta)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta["generation"] = 1
        if dry_run:
            meta["resourceVersion"] = ""
            return obj
        meta["resourceVersion"] = self._next_rv()
        self.objects[rtype.key][(ns, meta["name"])] = obj
        self._sorted_keys.pop(rtype.key, None)
        if log:
            self._log("ADDED", rtype, obj)
        self.changed("ADDED", rtype, None, obj, quiet=not log)
        return copy.deepcopy(obj)

    def store(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Replace an object (``generation`` follows its spec); no change, no new version."""
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rtype.namespaced else ""
        old = self.objects[rtype.key].get((ns, meta["name"]))
        if old is not None and old == obj:
            return copy.deepcopy(old)
        if old is not None:
            old_spec = {k: v for k, v in old.items() if k in SPEC_FIELDS}
            new_spec = {k: v for k, v in obj.items() if k in SPEC_FIELDS}
            if old_spec != new_spec:
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        self.objects[rtype.key][(ns, meta["name"])] = obj
        self._log("MODIFIED", rtype, obj)
        self.changed("MODIFIED", rtype, old, obj, quiet=False)
        return copy.deepcopy(obj)

    def store_status(self, rtype: ResourceType, ns: str, name: str, status: Obj) -> None:
        """Set an object's status as its controller does (no generation, no change hook)."""
        current = self.objects[rtype.key].get((ns, name))
        if current is None or current.get("status") == status:
            return
        new = copy.deepcopy(current)
        new["status"] = status
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[rtype.key][(ns, name)] = new
        self._log("MODIFIED", rtype, new)

    def delete(self, rtype: ResourceType, ns: str, name: str) -> Obj:
        """Remove an object now; the removed object, at its deletion's resourceVersion."""
        obj = self.objects[rtype.key].pop((ns, name))
        self._sorted_keys.pop(rtype.key, None)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._log("DELETED", rtype, obj)
        self.changed("DELETED", rtype, None, obj, quiet=False)
        return obj

    # ------------------------------------------------------------------------------ reading

    def encode_items(self, items: list[Obj]) -> bytes:
        """JSON of list items, cached per object version (lists of thousands of objects stay fast)."""
        out = []
        cache = self._encoded
        for obj in items:
            meta = obj.get("metadata") or {}
            key = (
                obj.get("kind", ""),
                meta.get("namespace", ""),
                meta.get("name", ""),
                meta.get("resourceVersion"),
            )
            data = cache.get(key)
            if data is None:
                data = json.dumps(obj, separators=(",", ":")).encode()
                if len(cache) > 200_000:
                    cache.clear()
                cache[key] = data
            out.append(data)
        return b",".join(out)

    def list_objects(self, rtype: ResourceType, ns: str | None, query: Mapping[str, str]) -> Obj:
        """A list answer: one page (``limit``, ``continue``) of the matching objects."""
        items = self.matching(rtype, ns, query)
        limit = int(query.get("limit") or 0)
        start = 0
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
                start = int(token["start"])
            except (ValueError, KeyError) as exc:
                raise ApiError(400, "BadRequest", "continue key is not valid") from exc
        meta: Obj = {"resourceVersion": str(self.last_rv)}
        if limit > 0:
            page = items[start : start + limit]
            if start + limit < len(items):
                meta["continue"] = base64.urlsafe_b64encode(
                    json.dumps({"start": start + limit, "rv": self.last_rv}).encode()
                ).decode()
                meta["remainingItemCount"] = len(items) - start - limit
        else:
            page = items[start:]
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta, "items": page}

    def matching(self, rtype: ResourceType, ns: str | None, query: Mapping[str, str]) -> list[Obj]:
        """The stored objects (not copies) of a list request, in key order."""
        matches = _query_filter(ns, query)
        store = self.objects[rtype.key]
        keys = self._sorted_keys.get(rtype.key)
        if keys is None:
            keys = self._sorted_keys[rtype.key] = sorted(store)
        return [store[key] for key in keys if (ns is None or key[0] == ns) and matches(store[key])]

    def watch_events(self, rtype: ResourceType, ns: str | None, query: Mapping[str, str]) -> Iterator[Obj]:
        """Yield watch events (dicts) until timeoutSeconds or shutdown; the caller writes them."""
        matches = _query_filter(ns, query)
        timeout = min(float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        deadline = time.monotonic() + timeout
        rv_text = query.get("resourceVersion") or ""
        with self.lock:
            dropped = self.events_dropped_rv
            if rv_text in ("", "0"):
                initial = [copy.deepcopy(o) for o in self.matching(rtype, ns, query)]
                since = self.last_rv
            else:
                since = int(rv_text)
                initial = []
        if since < dropped:  # only a given resourceVersion can be older than the event log
            message = f"too old resource version: {since} ({dropped})"
            yield {"type": "ERROR", "object": status_body(410, "Expired", message)}
            return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        while not self.stopping.is_set():
            with self.lock:
                batch = [e for e in self.events if e.rv > since and e.rtype is rtype and matches(e.obj)]
                if self.events:
                    since = max(since, self.events[-1].rv)
                if not batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.lock.wait(timeout=min(remaining, 0.25))
                    continue
            for event in batch:
                yield {"type": event.type, "object": copy.deepcopy(event.obj)}
            if time.monotonic() >= deadline:
                return
