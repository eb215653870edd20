"""A routine "not found" read leaves no reference cycle behind (against the fake API server, in-process).

tenacity keeps the error of the last attempt, and the error's traceback keeps tenacity's frames: without
care that is a cycle through every frame the error passed, so whatever those frames hold (a dry run's
snapshot of every pod) lives until a full collection instead of being freed by reference counting.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from migrator.engine.dryrun import _gc_paused
from migrator.targets.kube.api import KubeNotFound
from migrator.targets.kube.cluster import KubeCluster


class _Held:
    """Stands for what a caller's frame holds (e.g. the read snapshot)."""


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    with _gc_paused():  # as a dry run does
        yield


def _read_missing(cluster: KubeCluster) -> weakref.ref[_Held]:
    held = _Held()
    ref = weakref.ref(held)
    with pytest.raises(KubeNotFound):
        cluster.api.read(
            "read ConfigMap kube-system/absent",
            cluster.api.core.read_namespaced_config_map,
            "absent",
            "kube-system",
        )
    try:
        cluster.api.read(
            "read ConfigMap kube-system/absent",
            cluster.api.core.read_namespaced_config_map,
            "absent",
            "kube-system",
        )
    except KubeNotFound as exc:
        assert "not found" in str(exc)
    return ref


def test_a_not_found_read_frees_its_callers_locals_without_the_collector(
    local_cluster: KubeCluster, no_collector: None
) -> None:
    ref = _read_missing(local_cluster)
    assert ref() is None, "the caller's locals outlived its frame: a reference cycle through the error"
