"""The fake API server's own semantics, through the real client (others use it for their tests too), and
its in-process transport."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from migrator.errors import TemporaryError
from migrator.targets.kube import ApplyAction, KubeCluster, KubeForbidden, KubeNotFound
from migrator.testing.kube_server import (
    FakeApiServer,
    Fault,
    LocalKube,
    json_patch,
    make_configmap,
    merge_patch,
    parse_label_selector,
)


def test_create_conflict_invalid_and_stale_update(fake: FakeApiServer, cluster: KubeCluster) -> None:
    core = cluster.api.core
    body = k8s.V1ConfigMap.from_dict({"metadata": {"name": "a"}, "data": {"k": "v"}})
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.resource_version and created.metadata.uid
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map("default", body)
    assert exists.value.status == 409 and "AlreadyExists" in str(exists.value.body)
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_config_map("default", k8s.V1ConfigMap.from_dict({"metadata": {}}))
    assert invalid.value.status == 422
    stale = k8s.V1ConfigMap.from_dict({"metadata": {"name": "a", "resourceVersion": "1"}, "data": {"k": "w"}})
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("a", "default", stale)
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("b", "default")
    assert missing.value.status == 404


def test_json_patch_and_label_selectors(fake: FakeApiServer, cluster: KubeCluster) -> None:
    fake.api.add(make_configmap("a", "default", {"k": "v"}))
    core = cluster.api.core
    patched = core.patch_namespaced_config_map(
        "a",
        "default",
        [{"op": "add", "path": "/metadata/labels", "value": {"tier": "web"}}],
        _content_type="application/json-patch+json",
    )
    assert patched.metadata.labels == {"tier": "web"}
    assert [
        c.metadata.name
        for c in core.list_namespaced_config_map("default", label_selector="tier in (web,db)").items
    ] == ["a"]
    assert core.list_namespaced_config_map("default", label_selector="tier!=web").items == []


def test_server_side_apply_removes_fields_it_no_longer_applies(
    fake: FakeApiServer, cluster: KubeCluster
) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default"},
        "data": {"a": "1", "b": "2"},
    }
    cluster.apply(cm)
    cluster.apply({**cm, "data": {"a": "1"}})
    assert fake.api.get("ConfigMap", "c", "default")["data"] == {"a": "1"}  # type: ignore[index]


def test_helpers() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    assert json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {"a": [1, 2]}
    selector = parse_label_selector("app=web,!canary,tier notin (db),env")
    assert selector({"app": "web", "tier": "fe", "env": "p"})
    assert not selector({"app": "web", "canary": "1", "env": "p"})
    assert not selector({"app": "web", "tier": "db", "env": "p"})


def test_watch_replay_keeps_each_version(fake: FakeApiServer, cluster: KubeCluster) -> None:
    fake.api.add(make_configmap("a", "default", {"k": "v"}))
    rv = str(fake.api.last_rv)
    for value in ("1", "2"):
        cluster.api.core.patch_namespaced_config_map(
            "a", "default", {"data": {"k": value}}, _content_type="application/merge-patch+json"
        )
    events = list(
        cluster.api.watch(
            "watch",
            cluster.api.core.list_namespaced_config_map,
            "default",
            resource_version=rv,
            deadline=time.monotonic() + 1,
        )
    )
    assert [o["data"]["k"] for _, o in events] == ["1", "2"]
    rvs = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert rvs[0] < rvs[1]


def _some_calls(cluster: KubeCluster) -> list[str]:
    """A few calls of each kind through KubeApi; what each one gave."""
    api = cluster.api
    out = [str(len(api.list_all("list", api.core.list_namespaced_config_map, "default").items))]
    api.call(
        "patch",
        api.core.patch_namespaced_config_map,
        "a",
        "default",
        {"data": {"k": "w"}},
        field_manager="t",
        _content_type="application/merge-patch+json",
    )
    out.append(api.read("read", api.core.read_namespaced_config_map, "a", "default")["data"]["k"])
    try:
        api.read("read", api.core.read_namespaced_config_map, "nope", "default")
    except KubeNotFound as exc:
        out.append(type(exc).__name__)
    out.append(cluster.apply(make_configmap("b", "default", {"x": "1"}), dry_run=True)[0].action)
    return out


def test_the_local_transport_sends_what_http_sends(
    fake: FakeApiServer,
    make_cluster: Callable[..., KubeCluster],
    local: LocalKube,
    make_local_cluster: Callable[..., KubeCluster],
) -> None:
    """In-process, the client builds the same requests (methods, paths, queries) and reads the same
    answers as over HTTP: only the socket is gone."""
    results, logs = [], []
    for api, make in ((fake.api, make_cluster), (local.api, make_local_cluster)):
        for name in ("a", "c"):
            api.add(make_configmap(name, "default", {"k": "v"}))
        api.requests.clear()
        results.append(_some_calls(make(page_size=1)))
        logs.append(list(api.requests))
    assert results[0] == results[1] == ["2", "w", "KubeNotFound", ApplyAction.CREATED]
    assert logs[0] == logs[1]
    assert [q.get("limit") for m, p, q in logs[0][:2]] == ["1", "1"]


def test_the_local_transport_times_out_and_checks_the_token(
    local: LocalKube, make_local_cluster: Callable[..., KubeCluster]
) -> None:
    local.api.faults.append(Fault(path="/configmaps/a$", status=504, delay=20))
    cluster = make_local_cluster(request_timeout=0.5, read_attempts=1)
    started = time.monotonic()
    with pytest.raises(TemporaryError, match="cannot reach the Kubernetes API server"):
        cluster.api.read("read", cluster.api.core.read_namespaced_config_map, "a", "default")
    assert time.monotonic() - started < 5, "the client's read timeout, not the fault's 20 s"
    with pytest.raises(KubeForbidden, match="401"):
        local.cluster(token="wrong").identity()
