"""Namespaces (with their labels) and NetworkPolicies (``networking.k8s.io/v1``), read through the
official client, paginated like every other listing, and served from the read snapshot when there is one.

Each NetworkPolicy is parsed by :func:`migrator.policy.model.parse_network_policy`. An object the model
rejects came from the API server, which validated it: it is logged and raised as a
:class:`~migrator.errors.PermanentError` naming it (``networkpolicy NS/NAME``), never skipped (a skipped
policy would make the expected verdicts wrong, silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loguru import logger

from migrator.errors import PermanentError
from migrator.policy.model import NAMESPACE_NAME_LABEL, PolicyError, parse_network_policy
from migrator.ports import Namespace, NetworkPolicy
from migrator.targets.kube.api import KubeApi
from migrator.targets.kube.snapshot import Snapshots


class InvalidPolicyObject(PermanentError):
    """The API server returned a NetworkPolicy the policy model refuses."""


def to_namespace(obj: Mapping[str, Any]) -> Namespace:
    """A Namespace object -> :class:`Namespace`; ``kubernetes.io/metadata.name`` is set when the server
    did not set it (clusters older than 1.21), as every newer server does."""
    meta = obj.get("metadata") or {}
    name = str(meta["name"])
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.setdefault(NAMESPACE_NAME_LABEL, name)
    return Namespace(name=name, labels=labels)


def to_network_policy(obj: Mapping[str, Any]) -> NetworkPolicy:
    """A NetworkPolicy object as the API server returns it -> :class:`NetworkPolicy` (see the module
    docstring for an object the model refuses)."""
    meta = obj.get("metadata") or {}
    where = f"networkpolicy {meta.get('namespace', '')}/{meta.get('name', '')}"
    try:
        return parse_network_policy(obj, where=where)
    except PolicyError as exc:
        logger.error("the API server returned an invalid {}: {}", where, exc)
        raise InvalidPolicyObject(
            f"{where}: the API server returned an object the policy model refuses: {exc}"
        ) from exc


class PolicyOps:
    """``list_namespaces`` and ``list_network_policies`` of :class:`~migrator.targets.kube.KubeCluster`."""

    def __init__(self, api: KubeApi, snapshots: Snapshots) -> None:
        self.api = api
        self.snapshots = snapshots

    def list_namespaces(self) -> list[Namespace]:
        """Every namespace with its labels (``kubernetes.io/metadata.name`` included)."""
        snap = self.snapshots.current
        if snap is not None:
            return list(snap.memo("namespaces", self._list_namespaces))
        return self._list_namespaces()

    def _list_namespaces(self) -> list[Namespace]:
        return self.api.list_converted("list namespaces", to_namespace, self.api.core.list_namespace)

    def list_network_policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        """The NetworkPolicies (of ``namespace``, else of every namespace), parsed."""
        snap = self.snapshots.current
        if snap is not None:
            every = snap.memo("networkpolicies", lambda: self._list_network_policies(None))
            return [p for p in every if namespace is None or p.namespace == namespace]
        return self._list_network_policies(namespace)

    def _list_network_policies(self, namespace: str | None) -> list[NetworkPolicy]:
        if namespace:
            return self.api.list_converted(
                f"list networkpolicies in {namespace}",
                to_network_policy,
                self.api.networking.list_namespaced_network_policy,
                namespace,
            )
        return self.api.list_converted(
            "list networkpolicies",
            to_network_policy,
            self.api.networking.list_network_policy_for_all_namespaces,
        )
