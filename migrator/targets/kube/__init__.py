"""The Kubernetes target: :class:`KubeCluster` (the ``Cluster`` port) with the official client, composed of
one object per job (see :mod:`migrator.targets.kube.cluster`), and :class:`KubeCniOps` (the ``CniOps`` port
on it; the CNI vocabulary is :mod:`migrator.cni`)."""

from migrator.targets.kube.api import (
    FIELD_MANAGER,
    KubeApi,
    KubeConflict,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    WatchExpired,
    load_api_client,
    translate,
)
from migrator.targets.kube.cluster import KubeCluster
from migrator.targets.kube.cni import KubeCniOps
from migrator.targets.kube.drain import DrainPreview, PodDisposition
from migrator.targets.kube.lock import LeaseHolder, LeaseLock
from migrator.targets.kube.manifests import ApplyAction, ApplyConflict, ApplyResult, Propagation
from migrator.targets.kube.target import KubeRunLock, open_kube_target
from migrator.targets.kube.workloads import RolloutKind, RolloutStatus

__all__ = [
    "FIELD_MANAGER",
    "ApplyAction",
    "ApplyConflict",
    "ApplyResult",
    "DrainPreview",
    "KubeApi",
    "KubeCluster",
    "KubeCniOps",
    "KubeConflict",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "KubeRunLock",
    "LeaseHolder",
    "LeaseLock",
    "PodDisposition",
    "Propagation",
    "RolloutKind",
    "RolloutStatus",
    "WatchExpired",
    "load_api_client",
    "open_kube_target",
    "translate",
]
