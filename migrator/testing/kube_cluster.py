"""Moved to :mod:`migrator.testing.kube_server` (:mod:`.seed` and :mod:`.process`); these names stay
importable from here for the tests that still import them from this module."""

from migrator.testing.kube_server.process import FakeClusterProcess
from migrator.testing.kube_server.seed import (
    CALICO_MANIFEST,
    calico_node_daemonset,
    flannel_api,
    write_calico_manifest,
)

__all__ = [
    "CALICO_MANIFEST",
    "FakeClusterProcess",
    "calico_node_daemonset",
    "flannel_api",
    "write_calico_manifest",
]
