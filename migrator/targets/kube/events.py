"""Kubernetes Events on the nodes migrator touches: "cordoned by migrator run X for CNI migration"."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from kubernetes import client as k8s
from loguru import logger

from migrator.errors import MigratorError
from migrator.targets.kube.api import KubeApi


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeEvents:
    """Records an Event per change on a node, naming the run and its purpose (nothing without a run id)."""

    def __init__(
        self, api: KubeApi, *, run_id: str | None, purpose: str = "CNI migration", namespace: str = "default"
    ) -> None:
        self.api = api
        self.run_id = run_id
        self.purpose = purpose
        self.namespace = namespace

    def record(self, node: str, reason: str, action: str, *, type_: str = "Normal") -> None:
        """A Kubernetes Event on a node: "<action> by migrator run X for <purpose>" (best effort)."""
        if self.run_id is None:
            return
        message = f"{action} by migrator run {self.run_id} for {self.purpose}"
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{node}.migrator.",
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "migrator"},
                "annotations": {"migrator.io/run-id": self.run_id},
            },
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node},
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "migrator", "host": socket.gethostname()},
            "reportingComponent": "migrator",
            "reportingInstance": f"{socket.gethostname()}-{os.getpid()}",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.api.call(
                f"record event on node {node}",
                self.api.core.create_namespaced_event,
                self.namespace,
                k8s.CoreV1Event.from_dict(body),
            )
        except MigratorError as err:
            logger.warning("could not record a Kubernetes Event on node {}: {}", node, err)
