"""``migrator doctor --target kube``: can this kubeconfig do everything migrator does?

It reaches the cluster, then asks the API server, with one SelfSubjectAccessReview per verb and resource of
:data:`migrator.targets.kube.rbac.PERMISSIONS` (the table ``docs/rbac.yaml`` is generated from), which
permissions are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from kubernetes import client as k8s
from loguru import logger

from migrator.errors import MigratorError
from migrator.targets.kube.api import KubeApi
from migrator.targets.kube.cluster import KubeCluster
from migrator.targets.kube.rbac import PERMISSIONS, Permission


class CheckStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"
    ERROR = "error"


@dataclass(frozen=True)
class PermissionCheck:
    permission: Permission
    verb: str
    status: CheckStatus
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.verb} {self.permission.display}"


@dataclass(frozen=True)
class DoctorReport:
    identity: str | None
    checks: tuple[PermissionCheck, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def missing(self) -> list[PermissionCheck]:
        return [c for c in self.checks if c.status is not CheckStatus.OK]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing


def check_permission(api: KubeApi, permission: Permission, verb: str) -> PermissionCheck:
    body = k8s.V1SelfSubjectAccessReview.from_dict(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": permission.group,
                    "resource": permission.resource,
                    "subresource": permission.subresource,
                }
            },
        }
    )
    try:
        answer = api.call(
            f"SelfSubjectAccessReview {verb} {permission.display}",
            api.authorization.create_self_subject_access_review,
            body,
        )
    except MigratorError as err:
        return PermissionCheck(permission, verb, CheckStatus.ERROR, str(err))
    status = answer.get("status") or {}
    if status.get("allowed"):
        return PermissionCheck(permission, verb, CheckStatus.OK)
    return PermissionCheck(
        permission,
        verb,
        CheckStatus.MISSING,
        str(status.get("reason") or status.get("evaluationError") or "not allowed"),
    )


def run_doctor(
    cluster: KubeCluster, permissions: Sequence[Permission] = PERMISSIONS, workers: int = 8
) -> DoctorReport:
    """Reach the cluster, then check every permission (a few in parallel)."""
    try:
        identity = cluster.identity()
    except MigratorError as err:
        logger.error("cannot reach the cluster: {}", err)
        return DoctorReport(identity=None, error=str(err))
    pairs = [(perm, verb) for perm in permissions for verb in perm.verbs]
    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="doctor") as pool:
        results = list(pool.map(lambda pair: check_permission(cluster.api, pair[0], pair[1]), pairs))
    report = DoctorReport(identity=identity, checks=tuple(results))
    logger.info("doctor: {} of {} permissions missing", len(report.missing), len(results))
    return report
