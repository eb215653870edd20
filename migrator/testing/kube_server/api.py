"""The fake API server's request logic, whatever carries the requests (:mod:`.http` over a loopback
socket, :mod:`.local` in-process): :meth:`FakeKubeApi.handle` answers one request like the real API
server (authentication, injected faults, discovery, CRUD, subresources, dry runs, server-side apply,
SelfSubjectAccessReviews) on the store and its control plane."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from migrator.testing.kube_server import crd_schema
from migrator.testing.kube_server.controllers import ControlPlane
from migrator.testing.kube_server.patch import (
    apply_to,
    check_apply_body,
    json_patch,
    merge_patch,
    owned_fields,
    parse_body,
    record_manager,
    record_update,
)
from migrator.testing.kube_server.store import (
    MAX_WATCH_SECONDS,
    ApiError,
    Obj,
    ResourceType,
    not_found,
    status_body,
)
from migrator.testing.kube_server.validation import admit, check_unknown_fields

DEFAULT_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
}


@dataclass
class Fault:
    """An injected answer: requests matching ``method`` and ``path`` (a regex) get ``status``."""

    path: str
    status: int
    method: str | None = None
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    message: str = "injected fault"
    delay: float = 0.0  # seconds to hang before answering (a slow or stuck API server)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    body: bytes = b""
    content_type: str = "application/json"
    auth: str | None = None
    timeout: float | None = None  # how long the client waits for the answer (None: as long as it takes)

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"

    def parsed(self) -> object:
        return parse_body(self.body, self.content_type)

    def parsed_object(self, what: str) -> Obj:
        obj = self.parsed()
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", f"{what} must be an object")
        return obj


class RequestTimedOut(Exception):
    """The client gave up waiting (an injected ``Fault.delay`` longer than its ``Request.timeout``)."""


@dataclass
class Response:
    """An answer: a JSON object, the events of a watch, or text (a pod's log)."""

    status: int
    body: Obj | Iterator[Obj] | bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return "text/plain" if isinstance(self.body, bytes) else "application/json"


def _strict(request: Request) -> bool:
    """``fieldValidation=Strict`` (kubectl's default; the server's own default is Warn)."""
    return request.query.get("fieldValidation") == "Strict"


def _error(err: ApiError) -> Response:
    return Response(err.code, status_body(err.code, err.reason, err.message, err.details), dict(err.headers))


def _modified(rtype: ResourceType, name: str, details: bool = True) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rtype.plural} "{name}": '
        "the object has been modified; please apply your changes "
        "to the latest version and try again",
        {"name": name, "kind": rtype.plural} if details else None,
    )


class FakeKubeApi(ControlPlane):
    """The state and the request logic of the fake API server (thread safe).

    ``token``: the bearer token every request must carry (``None``: any); ``faults``: injected answers;
    ``denied``: ``(verb, group, resource, subresource)`` a SelfSubjectAccessReview refuses; ``requests``:
    every request's ``(method, path, query)`` (while ``record_requests``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.record_requests = True
        self.token: str | None = None
        self.denied: set[tuple[str, str, str, str]] = set()  # (verb, group, resource, subresource)
        self.field_validation = "Warn"  # fieldValidation of a request without one ("Strict": as kubectl)

    # ------------------------------------------------------------------------------ admission

    def create(self, rtype: ResourceType, obj: Obj, *, log: bool = True, dry_run: bool = False) -> Obj:
        """Validated and defaulted as the real server does (:mod:`.validation`), then stored."""
        return super().create(rtype, admit(rtype.kind, obj), log=log, dry_run=dry_run)

    def store(self, rtype: ResourceType, obj: Obj) -> Obj:
        return super().store(rtype, admit(rtype.kind, obj))

    # ---------------------------------------------------------------------------------- entry

    def record(self, method: str, path: str, query: Mapping[str, str]) -> None:
        """Keep ``(method, path, query)`` in ``requests`` (when ``record_requests``)."""
        if self.record_requests:
            with self.lock:
                self.requests.append((method, path, dict(query)))

    def check_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.method is None or fault.method == method) and re.search(fault.path, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def handle(self, request: Request) -> Response:
        """Answer one request."""
        self.record(request.method, request.path, request.query)
        fault = self.check_fault(request.method, request.path)
        if fault is not None:
            if fault.delay > 0:
                wait = min(fault.delay, MAX_WATCH_SECONDS)
                if request.timeout is not None and request.timeout < wait:
                    self.stopping.wait(request.timeout)
                    raise RequestTimedOut(
                        f"{request.method} {request.path}: no answer in {request.timeout:g}s"
                    )
                self.stopping.wait(wait)
            reason = fault.reason or DEFAULT_REASONS.get(fault.status, "InternalError")
            return Response(
                fault.status, status_body(fault.status, reason, fault.message), dict(fault.headers)
            )
        if self.token is not None and request.auth != f"Bearer {self.token}":
            return Response(401, status_body(401, "Unauthorized", "Unauthorized"))
        try:
            if request.method == "GET":
                disc = self.discovery(request.path)
                if disc is not None:
                    return Response(200, disc)
            if request.method == "POST" and request.path.endswith("/selfsubjectaccessreviews"):
                return Response(201, self.self_subject_access_review(request.parsed_object("the review")))
            rtype, ns, name, sub = self.resolve(request.path)
            with self.lock:
                return self._dispatch(request, rtype, ns, name, sub)
        except ApiError as err:
            return _error(err)

    def encode(self, body: Obj) -> bytes:
        """The JSON of an answer (list items through the :meth:`encode_items` cache)."""
        items = body.get("items")
        if isinstance(items, list) and str(body.get("kind", "")).endswith("List"):
            head = {k: v for k, v in body.items() if k != "items"}
            encoded = self.encode_items(items)
            return json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"items":[' + encoded + b"]}"
        return json.dumps(body, separators=(",", ":")).encode()

    # ------------------------------------------------------------------------------ discovery

    def resolve(self, path: str) -> tuple[ResourceType, str | None, str | None, str | None]:
        """``(type, namespace, name, subresource)`` of an API path."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype = self.types_by_path.get((group, version, rest[0]))
        if rtype is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return rtype, ns, name, sub

    def _group_list(self) -> Obj:
        groups = sorted({(r.group, r.version) for r in self.resources if r.group})
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                }
                for g, v in groups
            ],
        }

    def _resource_list(self, group: str, version: str) -> Obj | None:
        found = [r for r in self.resources if (r.group, r.version) == (group, version)]
        if not found:
            return None
        resources = []
        for r in found:
            resources.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }
            )
            resources.extend(
                {
                    "name": f"{r.plural}/{s}",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create", "get", "patch"],
                }
                for s in r.subresources
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": found[0].api_version,
            "resources": resources,
        }

    def discovery(self, path: str) -> Obj | None:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake", "platform": "linux/amd64"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"]}
        if parts == ["apis"]:
            return self._group_list()
        if parts == ["api", "v1"]:
            return self._resource_list("", "v1")
        if len(parts) == 3 and parts[0] == "apis":
            return self._resource_list(parts[1], parts[2])
        return None

    def self_subject_access_review(self, body: Obj) -> Obj:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        key = (
            attrs.get("verb", ""),
            attrs.get("group", ""),
            attrs.get("resource", ""),
            attrs.get("subresource", ""),
        )
        allowed = key not in self.denied
        body = copy.deepcopy(body)
        body["status"] = {"allowed": allowed, "reason": "" if allowed else "denied by the fake RBAC"}
        body.setdefault("apiVersion", "authorization.k8s.io/v1")
        body.setdefault("kind", "SelfSubjectAccessReview")
        return body

    # ------------------------------------------------------------------------------- dispatch

    def _dispatch(
        self, request: Request, rtype: ResourceType, ns: str | None, name: str | None, sub: str | None
    ) -> Response:
        if name is None:
            return self._collection(request, rtype, ns)
        key_ns = (ns or "") if rtype.namespaced else ""
        if rtype.kind == "Pod" and sub == "eviction" and request.method == "POST":
            request.parsed()  # the body must parse; its options are not used
            return Response(201, self.evict(key_ns, name, request.dry_run))
        if rtype.kind == "Pod" and sub == "log" and request.method == "GET":
            return Response(200, self.read_log(key_ns, name, request.query))
        if request.method == "PATCH" and "apply-patch" in request.content_type:
            return self._apply(request, rtype, key_ns, name)
        current = self.objects[rtype.key].get((key_ns, name))
        if current is None:
            raise not_found(rtype, name)
        if request.method == "GET":
            return Response(200, copy.deepcopy(current))
        if request.method == "DELETE":
            return self._delete(request, rtype, key_ns, name, current)
        if request.method == "PUT":
            return self._put(request, rtype, name, sub, current)
        if request.method == "PATCH":
            return self._patch(request, rtype, name, current)
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported")

    def _collection(self, request: Request, rtype: ResourceType, ns: str | None) -> Response:
        scope = ns if rtype.namespaced else None
        if request.method == "GET":
            if request.query.get("watch") in ("true", "1"):
                return Response(200, self.watch_events(rtype, scope, request.query))
            return Response(200, self.list_objects(rtype, scope, request.query))
        if request.method != "POST":
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection")
        obj = check_unknown_fields(rtype.kind, request.parsed_object("the object"), strict=_strict(request))
        if rtype.namespaced:
            obj.setdefault("metadata", {}).setdefault("namespace", ns)
            if obj["metadata"]["namespace"] != ns:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
        if request.query.get("fieldManager"):
            record_manager(obj, request.query["fieldManager"], "Update", owned_fields(obj))
        self._admit(request, rtype, obj)
        return Response(201, self.create(rtype, obj, dry_run=request.dry_run))

    def _delete(self, request: Request, rtype: ResourceType, ns: str, name: str, current: Obj) -> Response:
        opts = request.parsed() if request.body else {}
        pre_rv = ((opts.get("preconditions") if isinstance(opts, dict) else None) or {}).get(
            "resourceVersion"
        )
        if pre_rv and pre_rv != current["metadata"]["resourceVersion"]:
            raise _modified(rtype, name, details=False)
        if request.dry_run:
            return Response(200, copy.deepcopy(current))
        return Response(200, self.delete_object(rtype, ns, name))

    def _put(
        self, request: Request, rtype: ResourceType, name: str, sub: str | None, current: Obj
    ) -> Response:
        obj = check_unknown_fields(rtype.kind, request.parsed_object("the object"), strict=_strict(request))
        sent_rv = obj.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise _modified(rtype, name)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        for keep in ("uid", "creationTimestamp", "generation", "namespace", "managedFields"):
            if keep in current["metadata"]:
                obj.setdefault("metadata", {})[keep] = current["metadata"][keep]
        if sub == "status":
            obj = {**copy.deepcopy(current), "status": obj.get("status")}
        elif "status" in current and "status" not in obj:
            obj["status"] = current["status"]
        self._admit(request, rtype, obj)
        if request.dry_run:
            return Response(200, admit(rtype.kind, obj))
        return Response(200, self.store(rtype, obj))

    def _patch(self, request: Request, rtype: ResourceType, name: str, current: Obj) -> Response:
        patch = request.parsed()
        if "json-patch" in request.content_type:
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json patch must be a list")
            new = json_patch(current, patch)
        else:
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "merge patch must be an object")
            new = merge_patch(copy.deepcopy(current), patch)  # never share dicts with the stored object
        new["metadata"]["name"] = current["metadata"]["name"]
        new["metadata"]["uid"] = current["metadata"]["uid"]
        sent_rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been modified',
            )
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        record_update(current, new, request.query.get("fieldManager") or "unknown")
        self._admit(request, rtype, new)
        if request.dry_run:
            return Response(200, admit(rtype.kind, new))
        return Response(200, self.store(rtype, new))

    def _admit(self, request: Request, rtype: ResourceType, obj: Obj) -> None:
        """A custom resource against its CRD's schema (:mod:`.crd_schema`): refused, or pruned."""
        strict = (request.query.get("fieldValidation") or self.field_validation) == "Strict"
        crd_schema.admit(self.objects[crd_schema.CRD_KEY], rtype, obj, strict=strict)

    def _apply(self, request: Request, rtype: ResourceType, ns: str, name: str) -> Response:
        """Server-side apply (``application/apply-patch+yaml``): create, or merge with field managers."""
        manager = request.query.get("fieldManager")
        if not manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                "Required value: is required for apply patch",
            )
        applied = check_apply_body(
            parse_body(request.body, "application/yaml"), rtype.kind, rtype.api_version, name
        )
        applied = check_unknown_fields(rtype.kind, applied, strict=True)  # apply: "field not declared"
        current = self.objects[rtype.key].get((ns, name))
        if current is None:
            if rtype.namespaced:
                applied["metadata"]["namespace"] = ns
            self._admit(request, rtype, applied)
            record_manager(applied, manager, "Apply", owned_fields(applied))
            return Response(201, self.create(rtype, applied, dry_run=request.dry_run))
        new = apply_to(current, applied, manager, force=request.query.get("force") in ("true", "1"))
        self._admit(request, rtype, new)
        if request.dry_run:
            return Response(200, admit(rtype.kind, new))
        return Response(200, self.store(rtype, new))
