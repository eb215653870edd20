"""Services with their ready endpoints (EndpointSlices, else the older Endpoints)."""

from __future__ import annotations

from loguru import logger

from migrator.ports import Service
from migrator.targets.kube import types
from migrator.targets.kube.api import KubeApi, KubeNotFound
from migrator.targets.kube.snapshot import Snapshots


class ServiceOps:
    def __init__(self, api: KubeApi, snapshots: Snapshots) -> None:
        self.api = api
        self.snapshots = snapshots

    def list_services(self, namespace: str | None = None) -> list[Service]:
        snap = self.snapshots.current
        if snap is not None:
            return snap.services(namespace, lambda: self._list_services(namespace))
        return self._list_services(namespace)

    def _list_services(self, namespace: str | None) -> list[Service]:
        if namespace:
            services = self.api.list_all(
                f"list services in {namespace}", self.api.core.list_namespaced_service, namespace
            ).items
        else:
            services = self.api.list_all("list services", self.api.core.list_service_for_all_namespaces).items
        endpoints = self._service_endpoints(namespace)
        return [
            types.to_service(
                s, endpoints.get((s["metadata"].get("namespace", ""), s["metadata"]["name"]), [])
            )
            for s in services
        ]

    def _service_endpoints(self, namespace: str | None) -> dict[tuple[str, str], list[str]]:
        """Ready addresses per service, from EndpointSlices (else the older Endpoints)."""
        try:
            return self._slice_endpoints(namespace)
        except KubeNotFound:
            logger.debug("no EndpointSlice API, falling back to Endpoints")
        if namespace:
            eps = self.api.list_all(
                "list endpoints", self.api.core.list_namespaced_endpoints, namespace
            ).items
        else:
            eps = self.api.list_all("list endpoints", self.api.core.list_endpoints_for_all_namespaces).items
        out: dict[tuple[str, str], list[str]] = {}
        for ep in eps:
            meta = ep.get("metadata") or {}
            out[(str(meta.get("namespace", "")), str(meta["name"]))] = types.endpoints_addresses(ep)
        return out

    def _slice_endpoints(self, namespace: str | None) -> dict[tuple[str, str], list[str]]:
        if namespace:
            slices = self.api.list_all(
                "list endpointslices", self.api.discovery_v1.list_namespaced_endpoint_slice, namespace
            ).items
        else:
            slices = self.api.list_all(
                "list endpointslices", self.api.discovery_v1.list_endpoint_slice_for_all_namespaces
            ).items
        out: dict[tuple[str, str], list[str]] = {}
        for sl in slices:
            meta = sl.get("metadata") or {}
            svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
            if svc:
                out.setdefault((str(meta.get("namespace", "")), str(svc)), []).extend(
                    types.slice_addresses(sl)
                )
        return out
