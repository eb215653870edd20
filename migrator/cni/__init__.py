"""One CNI vocabulary (:mod:`~migrator.cni.info`: ``CniKind``, ``CniInfo``...), the ``CniOps`` port
(:mod:`~migrator.cni.ops`) and a driver per CNI (:mod:`~migrator.cni.drivers`: flannel, Calico; Canal,
Weave Net and Cilium recognised). Below ``ports`` (``Target.cni`` is a ``CniOps``) and ``lab``; of
migrator it imports only ``migrator.errors``."""

from migrator.cni.base import BLOCKING_CONFLIST, AgentRef, CniDriver, NodeLeftovers
from migrator.cni.drivers import agent, classify_daemonset, detect_from_objects, driver, leftovers
from migrator.cni.info import (
    CALICO_MODE_LABEL,
    DUAL_OVERLAY_SOURCES,
    MIGRATION_LABEL,
    WIRE_COMPATIBLE_SOURCES,
    CalicoMode,
    CalicoPool,
    CniInfo,
    CniKind,
    CniNode,
    FlannelConfig,
)
from migrator.cni.ops import CniOps

__all__ = [
    "BLOCKING_CONFLIST",
    "CALICO_MODE_LABEL",
    "DUAL_OVERLAY_SOURCES",
    "MIGRATION_LABEL",
    "WIRE_COMPATIBLE_SOURCES",
    "AgentRef",
    "CalicoMode",
    "CalicoPool",
    "CniDriver",
    "CniInfo",
    "CniKind",
    "CniNode",
    "CniOps",
    "FlannelConfig",
    "NodeLeftovers",
    "agent",
    "classify_daemonset",
    "detect_from_objects",
    "driver",
    "leftovers",
]
