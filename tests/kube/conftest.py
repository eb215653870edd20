"""Fixtures: a fake API server on 127.0.0.1 and a KubeCluster pointed at it through a kubeconfig."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migrator.adapters.kube import KubeCluster
from migrator.adapters.kube_fake_server import FakeApiServer, FakeKubeApi, make_node


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


def add_nodes(fake: FakeApiServer, workers: int = 3, control_planes: int = 1) -> list[str]:
    names = []
    for i in range(control_planes):
        name = f"cp{i + 1}"
        fake.api.add(
            make_node(
                name, ip=f"198.18.0.{10 + i}", roles=("control-plane",), pod_cidr=f"10.244.{100 + i}.0/24"
            )
        )
        names.append(name)
    for i in range(workers):
        name = f"w{i + 1}"
        fake.api.add(make_node(name, ip=f"198.18.0.{20 + i}", roles=("worker",), pod_cidr=f"10.244.{i}.0/24"))
        names.append(name)
    return names
