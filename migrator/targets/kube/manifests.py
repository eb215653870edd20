"""Manifests on the API server: server-side apply (field manager ``migrator``, with its dry run), delete
with a propagation policy, and waiting by watch for any object of any kind (CRDs Established, gone)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException
from loguru import logger

from migrator.errors import Interrupted, PermanentError, StepFailed, StepTimeout, UsageError
from migrator.targets.kube.api import FIELD_MANAGER, KubeApi, KubeConflict, KubeNotFound, Obj, WatchExpired
from migrator.targets.kube.snapshot import Snapshots


class ApplyAction(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


class Propagation(StrEnum):
    FOREGROUND = "Foreground"
    BACKGROUND = "Background"
    ORPHAN = "Orphan"


@dataclass(frozen=True)
class ApplyResult:
    """One object of a server-side apply (or its server-side dry run)."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    action: ApplyAction
    dry_run: bool
    obj: Mapping[str, Any] = field(repr=False, default_factory=dict)
    validated: bool = True  # False: a dry run could not ask the server (its CRD or namespace comes first)
    note: str = ""

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


class ApplyConflict(PermanentError):
    """Server-side apply refused: fields owned by another manager (retry with ``force_conflicts``)."""


def _volatile_free(obj: Mapping[str, Any]) -> Obj:
    """An object without server-managed fields, to tell whether an apply changes anything."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp")
    }
    out["metadata"] = meta
    return out


def _raw_watch(api: KubeApi, collection: str) -> Callable[..., Any]:
    """A watch call on a collection path for :meth:`KubeApi.watch`, for kinds without a typed client
    method (CRDs, any group): the streamed urllib3 response, its status checked."""

    def call(
        *,
        watch: bool,
        resource_version: str,
        timeout_seconds: int,
        allow_watch_bookmarks: bool,
        _preload_content: bool,
        _request_timeout: Any,
        field_selector: str | None = None,
    ) -> Any:
        query = [
            ("watch", "true" if watch else "false"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
            ("allowWatchBookmarks", "true" if allow_watch_bookmarks else "false"),
        ]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        method, url, headers, body, post = api.client.param_serialize(
            method="GET",
            resource_path=collection,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = api.client.call_api(
            method, url, header_params=headers, body=body, post_params=post, _request_timeout=_request_timeout
        )
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp.response

    return call


def _documents(manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(manifests, str):
        try:
            docs: list[Any] = [d for d in yaml.safe_load_all(manifests) if d]
        except yaml.YAMLError as exc:
            raise UsageError(f"the manifest is not valid YAML: {exc}") from exc
    elif isinstance(manifests, Mapping):
        docs = [manifests]
    else:
        docs = list(manifests)
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, Mapping):
            raise UsageError(f"a manifest document is not an object: {doc!r:.100}")
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            out.extend(_documents(doc["items"]))
        else:
            out.append(doc)
    return out


class Manifests:
    def __init__(self, api: KubeApi, snapshots: Snapshots) -> None:
        self.api = api
        self.snapshots = snapshots

    def apply(
        self,
        manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        dry_run: bool = False,
        force_conflicts: bool = False,
        default_namespace: str = "default",
        crd_timeout: float = 60.0,
    ) -> list[ApplyResult]:
        """Server-side apply (field manager ``migrator``) of YAML text or objects, in order.

        ``dry_run`` sends ``dryRun=All``: the server validates and answers without persisting anything. An
        object whose CRD or namespace is created earlier in the same batch cannot be checked by the server
        in a dry run: it is reported with ``validated=False``. A real apply waits (bounded by
        ``crd_timeout``) for each CRD it creates to be Established before applying the next object."""
        if not dry_run:
            self.snapshots.invalidate()
        docs = _documents(manifests)
        batch_kinds = {
            (
                str((d.get("spec") or {}).get("group", "")),
                str(((d.get("spec") or {}).get("names") or {}).get("kind")),
            )
            for d in docs
            if d.get("kind") == "CustomResourceDefinition"
        }
        batch_namespaces = {
            str((d.get("metadata") or {}).get("name")) for d in docs if d.get("kind") == "Namespace"
        }
        results: list[ApplyResult] = []
        for obj in docs:
            api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
            meta = obj.get("metadata") or {}
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            try:
                result = self._apply_one(
                    obj, dry_run=dry_run, force=force_conflicts, default_namespace=default_namespace
                )
            except KubeNotFound as exc:
                namespace = meta.get("namespace")
                if dry_run and (group, kind) in batch_kinds:
                    note = f"its CustomResourceDefinition is created by this apply: {exc}"
                elif dry_run and namespace in batch_namespaces:
                    note = f"its namespace {namespace} is created by this apply: {exc}"
                else:
                    raise
                results.append(
                    ApplyResult(
                        api_version,
                        kind,
                        str(meta.get("name", "")),
                        namespace,
                        ApplyAction.CREATED,
                        True,
                        obj,
                        validated=False,
                        note=note,
                    )
                )
                logger.info("apply {} {} (dry run): not validated: {}", kind, meta.get("name"), note)
                continue
            results.append(result)
            if kind == "CustomResourceDefinition" and not dry_run:
                self.wait_crd_established(result.name, timeout=crd_timeout)
        return results

    def wait_crd_established(self, name: str, *, timeout: float) -> None:
        """Wait (by watch, bounded) until a CustomResourceDefinition is Established and served."""

        def established(crd: Mapping[str, Any] | None) -> bool:
            conditions = ((crd or {}).get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        if not self.wait_object(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None, established, timeout=timeout
        ):
            raise StepTimeout(f"CustomResourceDefinition {name} not Established after {timeout:g}s")

    def wait_object(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        done: Callable[[Obj | None], bool],
        *,
        timeout: float,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Wait by watch (``fieldSelector=metadata.name``, from a GET's resourceVersion) until ``done(obj)``
        (``obj`` is ``None`` once the object is gone); ``False`` at ``timeout``. Works for any kind."""
        path = self.api.object_path(api_version, kind, name, namespace)
        collection = path.rsplit("/", 1)[0]
        deadline = time.monotonic() + timeout
        what = f"watch {kind} {name}"
        for _ in range(1000):
            try:
                current: Obj | None = self.api.request(f"read {kind} {name}", "GET", path)
            except KubeNotFound:
                current = None
            if done(current):
                return True
            if current is None:  # absent and not done: wait for it to appear, from the list's version
                listed = self.api.request(
                    f"list {kind}", "GET", collection, query={"fieldSelector": f"metadata.name={name}"}
                )
                rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
            else:
                rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
            try:
                for etype, obj in self.api.watch(
                    what,
                    _raw_watch(self.api, collection),
                    resource_version=rv,
                    deadline=deadline,
                    cancel=cancel,
                    field_selector=f"metadata.name={name}",
                ):
                    if done(None if etype == "DELETED" else obj):
                        return True
            except WatchExpired:
                continue
            if cancel is not None and cancel.is_set():
                raise Interrupted(f"wait for {kind} {name} cancelled")
            if time.monotonic() >= deadline:
                return False
        raise StepFailed(f"wait for {kind} {name}: the watch kept expiring")

    def _apply_one(
        self, obj: Mapping[str, Any], *, dry_run: bool, force: bool, default_namespace: str
    ) -> ApplyResult:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        meta = dict(obj.get("metadata") or {})
        name = str(meta.get("name") or "")
        if not api_version or not kind or not name:
            raise UsageError(f"a manifest needs apiVersion, kind and metadata.name: {dict(obj)!r:.200}")
        _, namespaced = self.api.resource_for(api_version, kind)
        namespace = str(meta.get("namespace") or default_namespace) if namespaced else None
        body = dict(obj)
        if namespace:
            body["metadata"] = {**meta, "namespace": namespace}
        path = self.api.object_path(api_version, kind, name, namespace)
        what = f"apply {kind} {namespace + '/' if namespace else ''}{name}{' (dry run)' if dry_run else ''}"
        try:
            before: Obj | None = self.api.request(f"read {kind} {name}", "GET", path)
        except KubeNotFound:
            before = None
        query = {
            "fieldManager": FIELD_MANAGER,
            "force": "true" if force else None,
            "dryRun": "All" if dry_run else None,
        }
        try:
            after = self.api.request(
                what, "PATCH", path, query=query, body=body, content_type="application/apply-patch+yaml"
            )
        except KubeConflict as exc:
            raise ApplyConflict(
                f"{exc}. Another field manager owns these fields: use force_conflicts to take them over"
            ) from exc
        if before is None:
            action = ApplyAction.CREATED
        elif _volatile_free(before) == _volatile_free(after):
            action = ApplyAction.UNCHANGED
        else:
            action = ApplyAction.CONFIGURED
        logger.info("{}: {}", what, action)
        return ApplyResult(api_version, kind, name, namespace, action, dry_run, after)

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Propagation = Propagation.BACKGROUND,
        dry_run: bool = False,
        wait_timeout: float | None = None,
    ) -> bool:
        """Delete an object with a propagation policy; ``False`` when it was already absent. With
        ``wait_timeout``, wait (by watch, bounded) until it is gone."""
        if not dry_run:
            self.snapshots.invalidate()
        path = self.api.object_path(api_version, kind, name, namespace)
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": str(propagation)}
        if dry_run:
            body["dryRun"] = ["All"]
        try:
            self.api.request(
                f"delete {kind} {name}",
                "DELETE",
                path,
                body=body,
                query={"dryRun": "All" if dry_run else None},
            )
        except KubeNotFound:
            return False
        if wait_timeout is not None and not dry_run:
            gone = self.wait_object(
                api_version, kind, name, namespace, lambda obj: obj is None, timeout=wait_timeout
            )
            if not gone:
                raise StepTimeout(f"{kind} {name} still exists {wait_timeout:g}s after its deletion")
        return True
