"""A small fake Kubernetes API server for tests and benchmarks (loopback only).

It speaks real Kubernetes JSON over HTTP for the resources migrator uses, so that the official
``kubernetes`` client can be pointed at it through an ordinary kubeconfig. It keeps ``resourceVersion``,
answers 404/409/422/429 like the real API server, paginates lists (``limit``/``continue``), streams watches
(chunked ``?watch=true``: replay since a resourceVersion, then new events until ``timeoutSeconds``), applies
merge, strategic-merge (as a merge patch), JSON patch and server-side apply (``application/apply-patch+yaml``
with field managers and conflicts), honours ``dryRun=All``, refuses evictions that would break a
PodDisruptionBudget (429 with a Status body) and answers SelfSubjectAccessReviews.

Two tiny controllers make drains realistic: a pod owned by a ReplicaSet/StatefulSet that is deleted or
evicted is recreated on another schedulable node and becomes Ready after ``replacement_ready_delay``
seconds (never when ``None``); DaemonSets get one pod per matching node (``nodeSelector`` only), Ready after
``daemonset_ready_delay`` seconds, and a status that follows.

Simplifications (documented in docs/kube-target.md): strategic merge patches are merge patches; continue
tokens are not consistent snapshots; no admission, no defaulting beyond a few fields.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import heapq
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

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


def _rfc3339nano(t: float) -> str:
    """A kubelet log timestamp: RFC 3339 in UTC with nanoseconds."""
    whole = int(t)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        + f".{min(round((t - whole) * 1e9), 999_999_999):09d}Z"
    )


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------- selectors


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Equality- and set-based label selectors (``a=b,c!=d,e,!f,g in (x,y),h notin (z)``)."""
    tests: list[tuple[str, str, frozenset[str]]] = []  # (op, key, values)
    for raw in re.findall(r"[^,(]+(?:\([^)]*\))?", text):
        part = raw.strip()
        if not part:
            continue
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            tests.append((m.group(2), m.group(1), frozenset(v.strip() for v in m.group(3).split(","))))
        elif "!=" in part:
            key, value = (x.strip() for x in part.split("!=", 1))
            tests.append(("notin", key, frozenset({value})))
        elif "=" in part:
            key, value = (x.strip() for x in part.replace("==", "=").split("=", 1))
            tests.append(("in", key, frozenset({value})))
        elif part.startswith("!"):
            tests.append(("absent", part[1:].strip(), frozenset()))
        else:
            tests.append(("exists", part, frozenset()))

    def matches(labels: Mapping[str, str]) -> bool:
        for op, key, values in tests:
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and labels.get(key) in values:
                return False
            if op == "absent" and key in labels:
                return False
            if op == "exists" and key not in labels:
                return False
        return True

    return matches


def match_label_selector_obj(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
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


# ---------------------------------------------------------------------------------------------- patches


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


def json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 JSON patch: add, remove, replace, test."""
    result = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(str(op.get("path", "")))
        if not parts:
            raise ApiError(422, "Invalid", "json patch on the whole document is not supported")
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        kind = op.get("op")
        try:
            if kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), op["value"])
                else:
                    parent[last] = op["value"]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = op["value"]
                else:
                    if last not in parent:
                        raise KeyError(last)
                    parent[last] = op["value"]
            elif kind == "remove":
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            elif kind == "test":
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
                if current != op.get("value"):
                    raise ApiError(422, "Invalid", f"test operation failed at {op.get('path')}")
            else:
                raise ApiError(422, "Invalid", f"unsupported json patch op {kind!r}")
        except (KeyError, IndexError, ValueError) as exc:
            raise ApiError(422, "Invalid", f"json patch: path {op.get('path')} not found") from exc
    return result


def leaf_paths(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """The leaves of a JSON document (lists are leaves), for field ownership."""
    if isinstance(obj, dict) and obj:
        out: dict[tuple[str, ...], Any] = {}
        for key, value in obj.items():
            out.update(leaf_paths(value, (*prefix, key)))
        return out
    return {prefix: obj}


def owned_fields(obj: Obj) -> dict[tuple[str, ...], Any]:
    """The fields a manager can own: labels, annotations and everything but metadata/status."""
    fields: dict[tuple[str, ...], Any] = {}
    meta = obj.get("metadata") or {}
    for sub in ("labels", "annotations"):
        if meta.get(sub):
            fields.update(leaf_paths(meta[sub], ("metadata", sub)))
    for key, value in obj.items():
        if key in ("metadata", "status", "apiVersion", "kind"):
            continue
        fields.update(leaf_paths(value, (key,)))
    return fields


def _get_tuple(obj: Any, path: tuple[str, ...]) -> Any:
    cur = obj
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _del_tuple(obj: Obj, path: tuple[str, ...]) -> None:
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


# --------------------------------------------------------------------------------------------- objects


def _meta(name: str, namespace: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta


def make_node(
    name: str,
    *,
    ip: str,
    roles: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    pod_cidr: str | None = None,
    unschedulable: bool = False,
) -> Obj:
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    all_labels.update({f"node-role.kubernetes.io/{r}": "" for r in roles})
    all_labels.update(labels or {})
    spec: Obj = {}
    if pod_cidr:
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = [pod_cidr]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta(name, labels=all_labels, annotations=dict(annotations or {})),
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "b",
                "containerRuntimeVersion": "containerd://1.7.0",
                "kernelVersion": "6.1.0",
                "kubeProxyVersion": "v1.30.0",
                "kubeletVersion": "v1.30.0",
                "machineID": "m",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12",
                "systemUUID": "s",
            },
        },
    }


def make_pod(
    name: str,
    namespace: str,
    *,
    node: str,
    ip: str | None = None,
    labels: Mapping[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    host_network: bool = False,
    ports: tuple[int, ...] = (),
    ready: bool = True,
    mirror: bool = False,
    empty_dir: bool = False,
    image: str = "registry.example/app:1",
) -> Obj:
    annotations: Obj = {}
    if mirror:
        annotations["kubernetes.io/config.mirror"] = "mirror-hash"
    owner_refs = None
    if owner is not None:
        kind, owner_name = owner
        api_version = "apps/v1"
        owner_refs = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{kind}/{owner_name}")),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    container: Obj = {"name": "main", "image": image}
    if ports:
        container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in ports]
    spec: Obj = {"nodeName": node, "containers": [container]}
    if host_network:
        spec["hostNetwork"] = True
    if empty_dir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(
            name,
            namespace,
            labels=dict(labels or {}),
            annotations=annotations or None,
            ownerReferences=owner_refs,
        ),
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}] if ip else None,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def make_pdb(
    name: str,
    namespace: str,
    *,
    selector: Mapping[str, str],
    min_available: int | None = None,
    max_unavailable: int | None = None,
) -> Obj:
    spec: Obj = {"selector": {"matchLabels": dict(selector)}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }


def make_daemonset(
    name: str,
    namespace: str,
    *,
    labels: Mapping[str, str],
    node_selector: Mapping[str, str] | None = None,
    containers: list[Obj] | None = None,
    host_network: bool = False,
) -> Obj:
    pod_spec: Obj = {"containers": containers or [{"name": name, "image": f"registry.example/{name}:1"}]}
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if host_network:
        pod_spec["hostNetwork"] = True
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(name, namespace, labels=dict(labels)),
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            "updateStrategy": {"type": "RollingUpdate"},
        },
    }


def make_configmap(name: str, namespace: str, data: Mapping[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace), "data": dict(data)}


def make_service(
    name: str,
    namespace: str,
    *,
    cluster_ip: str,
    selector: Mapping[str, str],
    ports: list[Obj],
    type_: str = "ClusterIP",
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace),
        "spec": {"type": type_, "clusterIP": cluster_ip, "selector": dict(selector), "ports": ports},
    }


def make_endpointslice(service: str, namespace: str, *, addresses: list[tuple[str, bool]], port: int) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(f"{service}-abcde", namespace, labels={"kubernetes.io/service-name": service}),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in addresses],
        "ports": [{"port": port, "protocol": "TCP"}],
    }


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


# ------------------------------------------------------------------------------------------------ store


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


@dataclass
class WatchEvent:
    rv: int
    type: str
    rtype: ResourceType
    obj: Obj


class FakeKubeApi:
    """The state and the request logic of the fake API server (thread safe)."""

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.RLock())
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
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.record_requests = True
        self.token: str | None = None
        self.denied: set[tuple[str, str, str, str]] = set()  # (verb, group, resource, subresource)
        self.replacement_ready_delay: float | None = 0.3
        self.daemonset_ready_delay: float | None = 0.2
        self.pod_termination_seconds = 0.0
        # > 0: a deleted Namespace is Terminating (deletionTimestamp, phase) for that long, then goes
        self.namespace_termination_seconds = 0.0
        self.crd_established_delay = 0.2
        self.controllers_enabled = True
        self.ip_counter = itertools.count(1)
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_seq = itertools.count()
        self.stopping = threading.Event()
        self.pod_logs: dict[tuple[str, str], list[str]] = {}  # (namespace, pod) -> lines, see append_log
        self.pod_log_times: dict[tuple[str, str], list[float]] = {}  # when each line was written
        self.log_reads: list[tuple[str, str, dict[str, str]]] = []  # (namespace, pod, query) of each read
        self.ensure_namespace("kube-system")
        self.ensure_namespace("default")

    # -------------------------------------------------------------------------------- helpers

    def rtype(self, kind_or_plural: str) -> ResourceType:
        for r in self.resources:
            if kind_or_plural in (r.kind, r.plural):
                return r
        raise KeyError(kind_or_plural)

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

    def _next_rv(self) -> str:
        self.last_rv = next(self.rv)
        return str(self.last_rv)

    def add(self, obj: Obj, *, log: bool = True) -> Obj:
        """Create an object directly (fixtures); no admission."""
        with self.lock:
            rtype = self.rtype(obj["kind"])
            return self._create(rtype, obj, log=log)

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
            return self._store(rtype, obj, "MODIFIED")

    def remove(self, kind: str, name: str, namespace: str = "") -> None:
        with self.lock:
            rtype = self.rtype(kind)
            self._remove(rtype, namespace if rtype.namespaced else "", name)

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        with self.lock:
            heapq.heappush(self.timers, (time.monotonic() + delay, next(self.timer_seq), action))
            self.lock.notify_all()

    def run_timers(self) -> None:
        """The controller loop: runs due timers until ``stopping`` is set."""
        while not self.stopping.is_set():
            with self.lock:
                now = time.monotonic()
                due: list[Callable[[], None]] = []
                while self.timers and self.timers[0][0] <= now:
                    due.append(heapq.heappop(self.timers)[2])
                for action in due:
                    with contextlib.suppress(KeyError):
                        action()
                wait = min(0.1, self.timers[0][0] - now) if self.timers else 0.1
                self.lock.wait(timeout=max(wait, 0.001))

    def _log(self, etype: str, rtype: ResourceType, obj: Obj) -> None:
        self.events.append(WatchEvent(int(obj["metadata"]["resourceVersion"]), etype, rtype, obj))
        if len(self.events) > EVENT_LOG_SIZE:
            drop = len(self.events) - EVENT_LOG_SIZE
            self.events_dropped_rv = self.events[drop - 1].rv
            del self.events[:drop]
        self.lock.notify_all()

    def _create(self, rtype: ResourceType, obj: Obj, *, log: bool = True, dry_run: bool = False) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rtype.kind} "" is invalid: metadata.name: Required value',
                    {"kind": rtype.plural},
                )
        ns = meta.get("namespace", "") if rtype.namespaced else ""
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
        if rtype.kind == "DaemonSet" and log:
            self._reconcile_daemonset(ns, meta["name"])
        if rtype.kind == "CustomResourceDefinition":
            self._register_crd(obj)
        return copy.deepcopy(obj)

    def _register_crd(self, crd: Obj) -> None:
        """Serve the CRD's kind (every served version), Established after ``crd_established_delay``."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            rtype = ResourceType(
                str(spec.get("group")),
                str(version.get("name")),
                str(names.get("plural")),
                str(names.get("kind")),
                spec.get("scope", "Namespaced") == "Namespaced",
            )
            if (rtype.group, rtype.version, rtype.plural) in self.types_by_path:
                continue
            self.resources.append(rtype)
            self.types_by_path[(rtype.group, rtype.version, rtype.plural)] = rtype
            self.objects.setdefault(rtype.key, {})
        name = str(crd["metadata"]["name"])

        def established() -> None:
            current = self.objects["apiextensions.k8s.io/customresourcedefinitions"].get(("", name))
            if current is not None:
                new = copy.deepcopy(current)
                new["status"] = {
                    "conditions": [
                        {"type": "Established", "status": "True"},
                        {"type": "NamesAccepted", "status": "True"},
                    ]
                }
                self._store(self.rtype("CustomResourceDefinition"), new)

        self.schedule(self.crd_established_delay, established)

    def _store(self, rtype: ResourceType, obj: Obj, etype: str = "MODIFIED") -> Obj:
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
        self._log(etype, rtype, obj)
        if rtype.kind == "DaemonSet":
            self._reconcile_daemonset(ns, meta["name"])
        elif rtype.kind == "Pod":
            self._ds_status_on_pod_change(obj)
        elif (
            rtype.kind == "Node" and old is not None and (old["metadata"].get("labels") != meta.get("labels"))
        ):
            for ds_ns, ds_name in list(self.objects["apps/daemonsets"]):
                self._reconcile_daemonset(ds_ns, ds_name)
        return copy.deepcopy(obj)

    def _remove(self, rtype: ResourceType, ns: str, name: str) -> Obj:
        obj = self.objects[rtype.key].pop((ns, name))
        self._sorted_keys.pop(rtype.key, None)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._log("DELETED", rtype, obj)
        if rtype.kind == "Pod":
            self._on_pod_gone(obj)
            self._ds_status_on_pod_change(obj)
        elif rtype.kind == "DaemonSet":
            for (pns, pname), pod in list(self.objects["/pods"].items()):
                if pns == ns and _owner(pod) == ("DaemonSet", name):
                    self._remove(self.rtype("Pod"), pns, pname)
        elif rtype.kind == "Namespace":  # the namespace controller: everything in it goes
            for other in self.resources:
                if other.namespaced:
                    for ons, oname in [k for k in self.objects[other.key] if k[0] == name]:
                        if (ons, oname) in self.objects[other.key]:
                            self._remove(other, ons, oname)
        if rtype.kind == "Pod":
            self.pod_logs.pop((ns, name), None)
            self.pod_log_times.pop((ns, name), None)
        return obj

    # ----------------------------------------------------------------------------------- pod logs

    def append_log(self, namespace: str, pod: str, line: str) -> None:
        """What the container of ``namespace/pod`` writes to stdout (served by ``GET .../pods/NAME/log``)."""
        with self.lock:
            self.pod_logs.setdefault((namespace, pod), []).append(line.rstrip("\n"))
            self.pod_log_times.setdefault((namespace, pod), []).append(time.time())

    def read_log(self, namespace: str, pod: str, query: Mapping[str, str]) -> tuple[int, bytes]:
        """``sinceSeconds``, ``timestamps``, ``tailLines`` and ``limitBytes`` as the kubelet honours them;
        404 for an unknown pod."""
        with self.lock:
            if (namespace, pod) not in self.objects["/pods"]:
                return 404, json.dumps(
                    status_body(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
                ).encode()
            lines = list(self.pod_logs.get((namespace, pod), []))
            times = list(self.pod_log_times.get((namespace, pod), []))
        times = [0.0] * (len(lines) - len(times)) + times  # lines added to pod_logs directly
        self.log_reads.append((namespace, pod, dict(query)))
        if query.get("sinceSeconds"):
            cutoff = time.time() - int(query["sinceSeconds"])
            kept = [(t, line) for t, line in zip(times, lines, strict=True) if t >= cutoff]
            times, lines = [t for t, _ in kept], [line for _, line in kept]
        if query.get("timestamps") in ("true", "1", "True"):
            lines = [f"{_rfc3339nano(t)} {line}" for t, line in zip(times, lines, strict=True)]
        if query.get("tailLines"):
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) > 0 else []
        data = "".join(f"{line}\n" for line in lines).encode()
        if query.get("limitBytes"):
            data = data[: int(query["limitBytes"])]
        return 200, data

    # ------------------------------------------------------------------------------ controllers

    def _new_pod_ip(self) -> str:
        n = next(self.ip_counter)
        return f"10.244.{(n // 250) % 250}.{n % 250 + 2}"

    def _set_ready(self, ns: str, name: str, uid: str) -> None:
        pod = self.objects["/pods"].get((ns, name))
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        pod = copy.deepcopy(pod)
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        self._store(self.rtype("Pod"), pod)

    def _ready_action(self, ns: str, pod: Obj) -> Callable[[], None]:
        name, uid = str(pod["metadata"]["name"]), str(pod["metadata"]["uid"])

        def action() -> None:
            self._set_ready(ns, name, uid)

        return action

    def _on_pod_gone(self, pod: Obj) -> None:
        if not self.controllers_enabled:
            return
        owner = _owner(pod)
        if owner is None or owner[0] not in ("ReplicaSet", "StatefulSet", "ReplicationController", "Job"):
            return
        old_node = pod["spec"].get("nodeName")
        nodes = [
            n
            for (_, name), n in sorted(self.objects["/nodes"].items())
            if not n.get("spec", {}).get("unschedulable") and name != old_node
        ]
        if not nodes:
            return
        new = copy.deepcopy(pod)
        meta = new["metadata"]
        meta["name"] = f"{owner[1]}-{uuid.uuid4().hex[:5]}"
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "managedFields"):
            meta.pop(key, None)
        new["spec"]["nodeName"] = nodes[0]["metadata"]["name"]
        new["status"] = {
            "phase": "Running",
            "podIP": self._new_pod_ip(),
            "conditions": [{"type": "Ready", "status": "False"}],
        }
        created = self._create(self.rtype("Pod"), new)
        if self.replacement_ready_delay is not None:
            ns, name, uid = meta["namespace"], created["metadata"]["name"], created["metadata"]["uid"]
            self.schedule(self.replacement_ready_delay, lambda: self._set_ready(ns, name, uid))

    def _reconcile_daemonset(self, ns: str, name: str) -> None:
        if not self.controllers_enabled:
            return
        ds = self.objects["apps/daemonsets"].get((ns, name))
        if ds is None:
            return
        template = ds["spec"]["template"]
        selector = template["spec"].get("nodeSelector") or {}
        generation = int(ds["metadata"].get("generation", 1))
        pod_type = self.rtype("Pod")
        pods = {
            p["spec"].get("nodeName"): p
            for (pns, _), p in self.objects["/pods"].items()
            if pns == ns and _owner(p) == ("DaemonSet", name)
        }
        wanted = []
        for (_, node_name), node in sorted(self.objects["/nodes"].items()):
            labels = node["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in selector.items()):
                wanted.append(node_name)
        for node_name, pod in list(pods.items()):
            stale = pod["metadata"].get("annotations", {}).get("fake/generation") != str(generation)
            if node_name not in wanted or stale:
                self._remove(pod_type, ns, pod["metadata"]["name"])
                del pods[node_name]
        for node_name in wanted:
            if node_name in pods:
                continue
            host_network = bool(template["spec"].get("hostNetwork"))
            node_obj = self.objects["/nodes"][("", node_name)]
            ip = node_obj["status"]["addresses"][0]["address"] if host_network else self._new_pod_ip()
            pod = make_pod(
                f"{name}-{uuid.uuid4().hex[:5]}",
                ns,
                node=node_name,
                ip=ip,
                labels=template["metadata"].get("labels") or {},
                owner=("DaemonSet", name),
                host_network=host_network,
                ready=False,
            )
            pod["metadata"]["annotations"] = {"fake/generation": str(generation)}
            pod["metadata"]["ownerReferences"][0]["uid"] = ds["metadata"]["uid"]
            if template["spec"].get("containers"):  # the pod runs the template's containers
                pod["spec"]["containers"] = copy.deepcopy(template["spec"]["containers"])
            created = self._create(pod_type, pod)
            if self.daemonset_ready_delay is not None:
                self.schedule(self.daemonset_ready_delay, self._ready_action(ns, created))
        self._update_daemonset_status(ns, name)

    def _update_daemonset_status(self, ns: str, name: str) -> None:
        ds = self.objects["apps/daemonsets"].get((ns, name))
        if ds is None:
            return
        generation = str(ds["metadata"].get("generation", 1))
        pods = [
            p
            for (pns, _), p in self.objects["/pods"].items()
            if pns == ns and _owner(p) == ("DaemonSet", name)
        ]
        selector = ds["spec"]["template"]["spec"].get("nodeSelector") or {}
        desired = sum(
            1
            for n in self.objects["/nodes"].values()
            if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        )
        ready = sum(1 for p in pods if pod_ready(p))
        updated = sum(
            1 for p in pods if p["metadata"].get("annotations", {}).get("fake/generation") == generation
        )
        status = {
            "observedGeneration": int(generation),
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": len(pods),
            "updatedNumberScheduled": updated,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": desired - ready,
            "numberMisscheduled": 0,
        }
        if ds.get("status") != status:
            new = copy.deepcopy(ds)
            new["status"] = status
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.objects["apps/daemonsets"][(ns, name)] = new
            self._log("MODIFIED", self.rtype("DaemonSet"), new)

    def _ds_status_on_pod_change(self, pod: Obj) -> None:
        owner = _owner(pod)
        if owner and owner[0] == "DaemonSet":
            self._update_daemonset_status(pod["metadata"]["namespace"], owner[1])

    # ----------------------------------------------------------------------------- operations

    def _terminate_namespace(self, name: str, current: Obj) -> Obj:
        """The namespace controller's way: Terminating first, then (with its contents) gone."""
        if current["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(current)
        marked = copy.deepcopy(current)
        marked["metadata"]["deletionTimestamp"] = now_iso()
        marked.setdefault("status", {})["phase"] = "Terminating"
        stored = self._store(self.rtype("Namespace"), marked)
        uid = current["metadata"]["uid"]

        def finish() -> None:
            cur = self.objects["/namespaces"].get(("", name))
            if cur is not None and cur["metadata"]["uid"] == uid:
                self._remove(self.rtype("Namespace"), "", name)

        self.schedule(self.namespace_termination_seconds, finish)
        return stored

    def delete_pod(self, ns: str, name: str) -> Obj:
        pod = self.objects["/pods"].get((ns, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        if self.pod_termination_seconds > 0:
            if not pod["metadata"].get("deletionTimestamp"):
                marked = copy.deepcopy(pod)
                marked["metadata"]["deletionTimestamp"] = now_iso()
                marked["metadata"]["deletionGracePeriodSeconds"] = 30
                stored = self._store(self.rtype("Pod"), marked)
                uid = pod["metadata"]["uid"]

                def finish() -> None:
                    cur = self.objects["/pods"].get((ns, name))
                    if cur is not None and cur["metadata"]["uid"] == uid:
                        self._remove(self.rtype("Pod"), ns, name)
                        self._ds_status_on_pod_change(cur)

                self.schedule(self.pod_termination_seconds, finish)
                return stored
            return copy.deepcopy(pod)
        removed = self._remove(self.rtype("Pod"), ns, name)
        self._ds_status_on_pod_change(removed)
        return removed

    def evict(self, ns: str, name: str, body: Obj, dry_run: bool) -> Obj:
        pod = self.objects["/pods"].get((ns, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        labels = pod["metadata"].get("labels") or {}
        if not pod["metadata"].get("deletionTimestamp"):
            for (pdb_ns, pdb_name), pdb in sorted(self.objects["policy/poddisruptionbudgets"].items()):
                if pdb_ns != ns or not match_label_selector_obj(pdb["spec"].get("selector"), labels):
                    continue
                matching = [
                    p
                    for (pns, _), p in self.objects["/pods"].items()
                    if pns == ns
                    and match_label_selector_obj(pdb["spec"]["selector"], p["metadata"].get("labels") or {})
                ]
                healthy = sum(
                    1 for p in matching if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
                )
                spec = pdb["spec"]
                if "minAvailable" in spec:
                    desired = _int_or_percent(spec["minAvailable"], len(matching))
                else:
                    desired = len(matching) - _int_or_percent(spec.get("maxUnavailable", 0), len(matching))
                allowed = max(healthy - desired, 0)
                new_status = {
                    "currentHealthy": healthy,
                    "desiredHealthy": desired,
                    "disruptionsAllowed": allowed,
                    "expectedPods": len(matching),
                    "observedGeneration": pdb["metadata"].get("generation", 1),
                }
                if pdb.get("status") != new_status:
                    updated = copy.deepcopy(pdb)
                    updated["status"] = new_status
                    self._store(self.rtype("PodDisruptionBudget"), updated)
                if allowed < 1 and pod_ready(pod):
                    raise ApiError(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb_name} needs {desired} "
                                    f"healthy pods "
                                    f"and has {healthy} currently",
                                }
                            ]
                        },
                    )
        if not dry_run:
            self.delete_pod(ns, name)
        return status_body(201, "", "")

    # ------------------------------------------------------------------------------ dispatch

    def check_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.method is None or fault.method == method) and re.search(fault.path, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

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

    def discovery(self, path: str) -> Obj | None:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake", "platform": "linux/amd64"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"]}
        if parts == ["apis"]:
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
        group_version = None
        if parts == ["api", "v1"]:
            group_version = ("", "v1")
        elif len(parts) == 3 and parts[0] == "apis":
            group_version = (parts[1], parts[2])
        if group_version is None:
            return None
        found = [r for r in self.resources if (r.group, r.version) == group_version]
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
        items = self._matching(rtype, ns, query)
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

    def _matching(self, rtype: ResourceType, ns: str | None, query: Mapping[str, str]) -> list[Obj]:
        label_test = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
        field_test = parse_field_selector(query["fieldSelector"]) if query.get("fieldSelector") else None
        out = []
        store = self.objects[rtype.key]
        keys = self._sorted_keys.get(rtype.key)
        if keys is None:
            keys = self._sorted_keys[rtype.key] = sorted(store)
        for key in keys:
            obj_ns, obj = key[0], store[key]
            if ns is not None and obj_ns != ns:
                continue
            if label_test is not None and not label_test(obj["metadata"].get("labels") or {}):
                continue
            if field_test is not None and not field_test(obj):
                continue
            out.append(obj)
        return out

    def watch_events(self, rtype: ResourceType, ns: str | None, query: Mapping[str, str]) -> Iterator[Obj]:
        """Yield watch events (dicts) until timeoutSeconds or shutdown; the caller writes them."""
        label_test = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
        field_test = parse_field_selector(query["fieldSelector"]) if query.get("fieldSelector") else None

        def matches(obj: Obj) -> bool:
            if ns is not None and obj["metadata"].get("namespace", "") != ns:
                return False
            if label_test is not None and not label_test(obj["metadata"].get("labels") or {}):
                return False
            return field_test is None or field_test(obj)

        timeout = min(float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        deadline = time.monotonic() + timeout
        rv_text = query.get("resourceVersion") or ""
        with self.lock:
            if rv_text in ("", "0"):
                initial = [copy.deepcopy(o) for o in self._matching(rtype, ns, query)]
                since = self.last_rv
            else:
                since = int(rv_text)
                initial = []
                if since < self.events_dropped_rv:
                    yield {
                        "type": "ERROR",
                        "object": status_body(
                            410, "Expired", f"too old resource version: {since} ({self.events_dropped_rv})"
                        ),
                    }
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

    def record(self, method: str, path: str, query: Mapping[str, str]) -> None:
        """Keep ``(method, path, query)`` in ``requests`` (when ``record_requests``)."""
        if self.record_requests:
            with self.lock:
                self.requests.append((method, path, dict(query)))

    def handle(  # noqa: PLR0917
        self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str, auth: str | None
    ) -> tuple[int, Obj | Iterator[Obj], dict[str, str]]:
        """Answer one request: ``(status, body or watch event iterator, headers)``."""
        self.record(method, path, query)
        fault = self.check_fault(method, path)
        if fault is not None and fault.delay > 0:
            self.stopping.wait(min(fault.delay, MAX_WATCH_SECONDS))
        if fault is not None:
            reason = fault.reason or {
                401: "Unauthorized",
                403: "Forbidden",
                404: "NotFound",
                409: "Conflict",
                429: "TooManyRequests",
            }.get(fault.status, "InternalError")
            return fault.status, status_body(fault.status, reason, fault.message), dict(fault.headers)
        if self.token is not None and auth != f"Bearer {self.token}":
            return 401, status_body(401, "Unauthorized", "Unauthorized"), {}
        try:
            if method == "GET":
                disc = self.discovery(path)
                if disc is not None:
                    return 200, disc, {}
            rtype, ns, name, sub = self.resolve(path)
            with self.lock:
                return self._dispatch(method, rtype, ns, name, sub, query, body, content_type)
        except ApiError as err:
            return err.code, status_body(err.code, err.reason, err.message, err.details), err.headers

    def _dispatch(  # noqa: PLR0917
        self,
        method: str,
        rtype: ResourceType,
        ns: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
        body: bytes,
        content_type: str,
    ) -> tuple[int, Obj | Iterator[Obj], dict[str, str]]:
        dry_run = query.get("dryRun") == "All"
        key_ns = (ns or "") if rtype.namespaced else ""
        if method == "GET" and name is None:
            if query.get("watch") in ("true", "1"):
                return 200, self.watch_events(rtype, ns if rtype.namespaced else None, query), {}
            return 200, self.list_objects(rtype, ns if rtype.namespaced else None, query), {}
        if method == "POST" and name is None:
            obj = _parse_body(body, content_type)
            if rtype.namespaced:
                obj.setdefault("metadata", {}).setdefault("namespace", ns)
                if obj["metadata"]["namespace"] != ns:
                    raise ApiError(
                        400, "BadRequest", "the namespace of the object does not match the request"
                    )
            if query.get("fieldManager"):
                _record_manager(obj, query["fieldManager"], "Update", owned_fields(obj))
            return 201, self._create(rtype, obj, dry_run=dry_run), {}
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        current = self.objects[rtype.key].get((key_ns, name))
        if sub == "eviction" and rtype.kind == "Pod" and method == "POST":
            return 201, self.evict(key_ns, name, _parse_body(body, content_type), dry_run), {}
        if method == "PATCH" and "apply-patch" in content_type:
            return self._apply(rtype, key_ns, name, current, body, query, dry_run)
        if current is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}" not found',
                {"name": name, "kind": rtype.plural},
            )
        if method == "GET":
            return 200, copy.deepcopy(current), {}
        if method == "DELETE":
            if rtype.kind == "Pod" and not dry_run:
                return 200, self.delete_pod(key_ns, name), {}
            opts = _parse_body(body, content_type) if body else {}
            pre_rv = (opts.get("preconditions") or {}).get("resourceVersion")
            if pre_rv and pre_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rtype.plural} "{name}": '
                    "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                )
            if dry_run:
                return 200, copy.deepcopy(current), {}
            if rtype.kind == "Namespace" and self.namespace_termination_seconds > 0:
                return 200, self._terminate_namespace(name, current), {}
            return 200, self._remove(rtype, key_ns, name), {}
        if method == "PUT":
            obj = _parse_body(body, content_type)
            sent_rv = obj.get("metadata", {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rtype.plural} "{name}": '
                    "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                    {"name": name, "kind": rtype.plural},
                )
            obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
            for keep in ("uid", "creationTimestamp", "generation", "namespace", "managedFields"):
                if keep in current["metadata"]:
                    obj["metadata"][keep] = current["metadata"][keep]
            if sub == "status":
                new = copy.deepcopy(current)
                new["status"] = obj.get("status")
                obj = new
            elif "status" in current and "status" not in obj:
                obj["status"] = current["status"]
            if dry_run:
                return 200, obj, {}
            return 200, self._store(rtype, obj), {}
        if method == "PATCH":
            patch = _parse_body(body, content_type)
            if "json-patch" in content_type:
                if not isinstance(patch, list):
                    raise ApiError(400, "BadRequest", "json patch must be a list")
                new = json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "merge patch must be an object")
                new = merge_patch(copy.deepcopy(current), patch)  # never share dicts with the stored object
            new["metadata"]["name"] = current["metadata"]["name"]
            new["metadata"]["uid"] = current["metadata"]["uid"]
            sent_rv = (
                (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            )
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been modified',
                )
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            manager = query.get("fieldManager") or "unknown"
            changed = {p: v for p, v in owned_fields(new).items() if _get_tuple(current, p) != v}
            if changed:
                _record_manager(new, manager, "Update", changed, steal=True)
            if dry_run:
                return 200, new, {}
            return 200, self._store(rtype, new), {}
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _apply(  # noqa: PLR0917
        self,
        rtype: ResourceType,
        ns: str,
        name: str,
        current: Obj | None,
        body: bytes,
        query: Mapping[str, str],
        dry_run: bool,
    ) -> tuple[int, Obj, dict[str, str]]:
        manager = query.get("fieldManager")
        if not manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                "Required value: is required for apply patch",
            )
        applied = _parse_body(body, "application/yaml")
        if not isinstance(applied, dict):
            raise ApiError(400, "BadRequest", "apply patch must be an object")
        if applied.get("kind") != rtype.kind or applied.get("apiVersion") != rtype.api_version:
            raise ApiError(
                400, "BadRequest", f"apply patch kind {applied.get('kind')!r} does not match {rtype.kind}"
            )
        meta = applied.setdefault("metadata", {})
        if meta.get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the request")
        fields = owned_fields(applied)
        if current is None:
            if rtype.namespaced:
                meta["namespace"] = ns
            _record_manager(applied, manager, "Apply", fields)
            return 201, self._create(rtype, applied, dry_run=dry_run), {}
        force = query.get("force") in ("true", "1")
        conflicts: list[tuple[str, tuple[str, ...]]] = []
        for entry in current["metadata"].get("managedFields") or []:
            if entry.get("manager") == manager:
                continue
            for path in _entry_paths(entry):
                if path in fields and _get_tuple(current, path) != fields[path]:
                    conflicts.append((str(entry.get("manager")), path))
        if conflicts and not force:
            listed = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
            raise ApiError(
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
        new = copy.deepcopy(current)
        previous = next(
            (
                e
                for e in current["metadata"].get("managedFields") or []
                if e.get("manager") == manager and e.get("operation") == "Apply"
            ),
            None,
        )
        if previous is not None:
            others = {
                p
                for e in current["metadata"].get("managedFields") or []
                if e is not previous
                for p in _entry_paths(e)
            }
            for path in _entry_paths(previous):
                if path not in fields and path not in others:
                    _del_tuple(new, path)
        applied_meta = {k: v for k, v in meta.items() if k in ("labels", "annotations")}
        body_rest = {
            k: v for k, v in applied.items() if k not in ("metadata", "apiVersion", "kind", "status")
        }
        new = _deep_merge(new, body_rest)
        new["metadata"] = _deep_merge(new["metadata"], applied_meta)
        _record_manager(new, manager, "Apply", fields, steal=True)
        if dry_run:
            return 200, new, {}
        return 200, self._store(rtype, new), {}

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


def _int_or_percent(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return -(-int(value[:-1]) * total // 100)
    return int(value)


def _owner(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None


def _entry_paths(entry: Mapping[str, Any]) -> list[tuple[str, ...]]:
    return [tuple(p.split("\x1f")) for p in entry.get("fieldsV1", {}).get("f:paths", [])]


def _record_manager(
    obj: Obj, manager: str, operation: str, fields: Mapping[tuple[str, ...], Any], *, steal: bool = False
) -> None:
    """Record field ownership in ``metadata.managedFields`` (a simplified fieldsV1)."""
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


def _parse_body(body: bytes, content_type: str) -> Any:
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


# ----------------------------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or "application/json"
        api = self.server.api
        if method == "POST" and split.path.endswith("/selfsubjectaccessreviews"):
            api.record(method, split.path, query)
            if api.token is not None and self.headers.get("Authorization") != f"Bearer {api.token}":
                self._send(401, status_body(401, "Unauthorized", "Unauthorized"), {})
                return
            fault = api.check_fault(method, split.path)
            if fault is not None:
                self._send(fault.status, status_body(fault.status, "Fault", fault.message), fault.headers)
                return
            self._send(201, api.self_subject_access_review(_parse_body(body, content_type)), {})
            return
        log = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", split.path)
        if method == "GET" and log is not None:
            api.record(method, split.path, query)
            if api.token is not None and self.headers.get("Authorization") != f"Bearer {api.token}":
                self._send(401, status_body(401, "Unauthorized", "Unauthorized"), {})
                return
            code, text = api.read_log(log.group(1), log.group(2), query)
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if code == 200 else "application/json")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        status, payload, headers = api.handle(
            method, split.path, query, body, content_type, self.headers.get("Authorization")
        )
        if isinstance(payload, dict):
            self._send(status, payload, headers)
        else:
            self._stream(payload)

    def _send(self, status: int, payload: Obj, headers: Mapping[str, str]) -> None:
        items = payload.get("items")
        if isinstance(items, list) and str(payload.get("kind", "")).endswith("List"):
            head = {k: v for k, v in payload.items() if k != "items"}
            encoded = self.server.api.encode_items(items)
            data = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"items":[' + encoded + b"]}"
        else:
            data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[Obj]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: FakeKubeApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api


class FakeApiServer:
    """The fake API server on 127.0.0.1 with a random port; a context manager."""

    def __init__(self, api: FakeKubeApi | None = None) -> None:
        self.api = api or FakeKubeApi()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake API server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApiServer:
        self.api.stopping.clear()
        self._server = _Server(self.api)
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="fake-kube-api",
            daemon=True,
        )
        timers = threading.Thread(target=self.api.run_timers, name="fake-kube-controllers", daemon=True)
        self._threads = [serve, timers]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.api.stopping.set()
        with self.api.lock:
            self.api.lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, *, context: str = "fake", token: str = "fake-token") -> Obj:  # noqa: S107
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": f"{context}-user", "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-user"}}],
            "current-context": context,
        }

    def write_kubeconfig(self, path: Path, *, context: str = "fake", token: str = "fake-token") -> Path:  # noqa: S107
        path.write_text(yaml.safe_dump(self.kubeconfig(context=context, token=token)))
        return path


# ------------------------------------------------------------------------------------------- scenarios


def add_nodes(api: FakeKubeApi, workers: int = 3, control_planes: int = 1) -> list[str]:
    """Plain nodes ``cp1..`` (control plane, 198.18.0.10+) and ``w1..`` (workers, 198.18.0.20+)."""
    names = []
    for i in range(control_planes):
        name = f"cp{i + 1}"
        api.add(
            make_node(
                name, ip=f"198.18.0.{10 + i}", roles=("control-plane",), pod_cidr=f"10.244.{100 + i}.0/24"
            )
        )
        names.append(name)
    for i in range(workers):
        name = f"w{i + 1}"
        api.add(make_node(name, ip=f"198.18.0.{20 + i}", roles=("worker",), pod_cidr=f"10.244.{i}.0/24"))
        names.append(name)
    return names


FLANNEL_NET_CONF = {
    "Network": "10.244.0.0/16",
    "SubnetLen": 24,
    "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": False},
}


def seed_flannel_cluster(
    api: FakeKubeApi,
    *,
    workers: int = 3,
    control_planes: int = 1,
    app_pods_per_node: int = 1,
    log: bool = False,
) -> list[str]:
    """A flannel cluster as ``kubeadm`` + kube-flannel leave it: nodes with pod CIDRs and flannel
    annotations, the kube-flannel DaemonSet, its ``kube-flannel-cfg`` ConfigMap and pods, a ``shop``
    app (owned by a ReplicaSet, with a PDB of ``minAvailable: 1``) and its NodePort service. Returns the
    node names, control plane first. ``log=False`` keeps large seeds out of the watch event log."""
    names: list[str] = []
    api.ensure_namespace("kube-flannel")
    api.ensure_namespace("shop")
    total = control_planes + workers
    # a /16 holds 256 node /24s: a bigger cluster gets flannel's network as a /8 (pod CIDRs stay valid)
    net_conf = FLANNEL_NET_CONF if total <= 256 else {**FLANNEL_NET_CONF, "Network": "10.0.0.0/8"}
    api.add(
        make_configmap(
            "kube-flannel-cfg",
            "kube-flannel",
            {"net-conf.json": json.dumps(net_conf), "cni-conf.json": "{}"},
        ),
        log=log,
    )
    for i in range(total):
        cp = i < control_planes
        name = f"cp-{i + 1:02d}" if cp else f"node-{i - control_planes + 1:05d}"
        ip = f"198.18.{i // 250}.{i % 250 + 2}"
        cidr_third, cidr_second = i % 256, (244 + i // 256) % 256
        annotations = {
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": json.dumps(
                {"VNI": 1, "VtepMAC": f"02:42:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01"}
            ),
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": ip,
        }
        api.add(
            make_node(
                name,
                ip=ip,
                roles=("control-plane",) if cp else (),
                pod_cidr=f"10.{cidr_second}.{cidr_third}.0/24",
                annotations=annotations,
            ),
            log=log,
        )
        flannel_pod = make_pod(
            f"kube-flannel-ds-{i:05d}",
            "kube-flannel",
            node=name,
            ip=ip,
            host_network=True,
            labels={"app": "flannel"},
            owner=("DaemonSet", "kube-flannel-ds"),
            image="docker.io/flannel/flannel:v0.25.1",
        )
        flannel_pod["metadata"]["annotations"] = {"fake/generation": "1"}
        api.add(flannel_pod, log=log)
        if cp:
            api.add(make_pod(f"kube-apiserver-{name}", "kube-system", node=name, ip=ip, mirror=True), log=log)
        else:
            for j in range(app_pods_per_node):
                api.add(
                    make_pod(
                        f"web-{i:05d}-{j}",
                        "shop",
                        node=name,
                        ip=f"10.{cidr_second}.{cidr_third}.{j + 2}",
                        labels={"app": "web"},
                        owner=("ReplicaSet", "web-5d9c7"),
                        ports=(8080,),
                    ),
                    log=log,
                )
        names.append(name)
    flannel_ds = make_daemonset(
        "kube-flannel-ds",
        "kube-flannel",
        labels={"app": "flannel"},
        host_network=True,
        containers=[{"name": "kube-flannel", "image": "docker.io/flannel/flannel:v0.25.1"}],
    )
    controllers, api.controllers_enabled = api.controllers_enabled, False
    try:  # the DaemonSet's pods were seeded above: no reconcile
        api.add(flannel_ds, log=log)
    finally:
        api.controllers_enabled = controllers
    with api.lock:
        api._update_daemonset_status("kube-flannel", "kube-flannel-ds")
    api.add(make_pdb("web", "shop", selector={"app": "web"}, min_available=1), log=log)
    api.add(
        make_service(
            "web",
            "shop",
            cluster_ip="10.96.0.80",
            selector={"app": "web"},
            type_="NodePort",
            ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}],
        ),
        log=log,
    )
    return names


CALICO_CRD_KINDS: tuple[tuple[str, str], ...] = (
    ("FelixConfiguration", "felixconfigurations"),
    ("IPAMBlock", "ipamblocks"),
    ("BlockAffinity", "blockaffinities"),
    ("IPAMHandle", "ipamhandles"),
)


def calico_crd(kind: str, plural: str) -> Obj:
    """A cluster-scoped ``crd.projectcalico.org/v1`` CustomResourceDefinition, as Calico's manifests ship
    them (schemas reduced to ``x-kubernetes-preserve-unknown-fields``)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.crd.projectcalico.org"},
        "spec": {
            "group": "crd.projectcalico.org",
            "scope": "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


def calico_crds(kinds: tuple[tuple[str, str], ...] = CALICO_CRD_KINDS) -> list[Obj]:
    """The Calico CRDs migrator uses beyond the built-in ``IPPool`` (Felix configuration and IPAM)."""
    return [calico_crd(kind, plural) for kind, plural in kinds]
