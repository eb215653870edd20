"""Fixtures: a fake API server on 127.0.0.1 and a KubeCluster pointed at it through a kubeconfig."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migrator.targets.kube import KubeCluster
from migrator.testing.kube_server import FakeApiServer, FakeKubeApi


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
