"""Fixtures: the fake API server on 127.0.0.1 with a KubeCluster pointed at it through a kubeconfig
(``fake``, ``cluster``, ``make_cluster``: end-to-end, and tests about what goes over the wire), and the
same fake in-process behind the client's transport (``local``, ``local_cluster``, ``make_local_cluster``:
unit tests of the adapter, no socket)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migrator.targets.kube import KubeCluster
from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, LocalKube


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer(FakeKubeApi())
    server.api.token = "test-token"
    with server:
        yield server


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> Path:
    return fake.write_kubeconfig(tmp_path / "kubeconfig", context="fake", token="test-token")


@pytest.fixture
def make_cluster(kubeconfig: Path) -> Iterator[Callable[..., KubeCluster]]:
    made: list[KubeCluster] = []

    def factory(**kwargs: object) -> KubeCluster:
        kwargs.setdefault("watch_chunk", 1.0)
        cluster = KubeCluster(kubeconfig=str(kubeconfig), context="fake", **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.close()


@pytest.fixture
def cluster(make_cluster: Callable[..., KubeCluster]) -> KubeCluster:
    return make_cluster()


@pytest.fixture
def local() -> Iterator[LocalKube]:
    kube = LocalKube(FakeKubeApi())
    kube.api.token = "test-token"
    with kube:
        yield kube


@pytest.fixture
def make_local_cluster(local: LocalKube) -> Callable[..., KubeCluster]:
    def factory(**kwargs: object) -> KubeCluster:
        kwargs.setdefault("watch_chunk", 1.0)
        return local.cluster(**kwargs)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def local_cluster(make_local_cluster: Callable[..., KubeCluster]) -> KubeCluster:
    return make_local_cluster()
