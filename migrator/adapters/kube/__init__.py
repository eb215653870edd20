"""The Kubernetes target: :class:`KubeCluster` (the ``Cluster`` port) with the official client."""

import os

from migrator.adapters.kube.api import (
    KubeApi,
    KubeConflict,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    WatchExpired,
    load_api_client,
    translate,
)
from migrator.adapters.kube.cluster import (
    FIELD_MANAGER,
    ApplyAction,
    ApplyConflict,
    ApplyResult,
    DrainPreview,
    KubeCluster,
    PodDisposition,
    Propagation,
    RolloutKind,
    RolloutStatus,
    kube_target,
)
from migrator.adapters.kube.cni import (
    CalicoPool,
    CniInfo,
    CniKind,
    FlannelConfig,
    FlannelNode,
    detect_from_objects,
)
from migrator.adapters.kube.lock import LeaseHolder, LeaseLock
from migrator.ports import Target

__all__ = [
    "FIELD_MANAGER",
    "ApplyAction",
    "ApplyConflict",
    "ApplyResult",
    "CalicoPool",
    "CniInfo",
    "CniKind",
    "DrainPreview",
    "FlannelConfig",
    "FlannelNode",
    "KubeApi",
    "KubeCluster",
    "KubeConflict",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "LeaseHolder",
    "LeaseLock",
    "PodDisposition",
    "Propagation",
    "RolloutKind",
    "RolloutStatus",
    "WatchExpired",
    "detect_from_objects",
    "kube_target",
    "load_api_client",
    "open_kube_target",
    "translate",
]


def open_kube_target(context: str | None = None) -> Target:
    """The ``--target kube[:CONTEXT]`` target: kubeconfig from ``$KUBECONFIG`` (or the default path)."""
    return kube_target(kubeconfig=os.environ.get("KUBECONFIG") or None, context=context)
