"""NetworkPolicies and namespaces on the kube target, and the fake API server's NetworkPolicy validation:
upstream objects (Kubernetes docs, the e2e netpol suite) are accepted and read back parsed exactly as the
policy model parses them; bad objects are refused by the fake with the real server's 422 causes, and the
model refuses the same objects naming the same field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from migrator.errors import TemporaryError
from migrator.policy.model import (
    NAMESPACE_NAME_LABEL,
    ContainerPort,
    PolicyError,
    PolicyType,
    Protocol,
    parse_network_policy,
)
from migrator.targets.kube import KubeCluster, KubeForbidden, KubeInvalid, KubeNotFound
from migrator.targets.kube.policies import InvalidPolicyObject
from migrator.targets.kube.rbac import granted, required_permission
from migrator.testing.kube_server import (
    FakeClusterProcess,
    Fault,
    LocalKube,
    SeedError,
    add_nodes,
    seed_manifests,
    seed_netpol_model,
)
from migrator.testing.kube_server.store import Store
from tests.policy.e2e_cases import CASES, PODS, Apply, resolve
from tests.policy.test_policy_parse import BAD as MODEL_BAD
from tests.policy.test_policy_parse import _with

UPSTREAM = Path(__file__).parent / "data" / "netpol-upstream.yaml"


def _upstream_policies() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(UPSTREAM.read_text()):
        items = doc["items"] if doc["kind"] == "List" else [doc]
        out.extend(o for o in items if o["kind"] == "NetworkPolicy")
    return out


def _post(
    cluster: KubeCluster, namespace: str, obj: dict[str, Any], *, strict: bool = False
) -> tuple[int, dict[str, Any]]:
    """POST through the real client's transport, auth and serialization, without its own pydantic
    checks (it refuses some invalid objects itself, e.g. an ipBlock without cidr: the server must too)."""
    client = cluster.api.client
    method, url, headers, body, post = client.param_serialize(
        method="POST",
        resource_path=f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
        query_params=[("fieldValidation", "Strict")] if strict else [],
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        body=obj,
        auth_settings=["BearerToken"],
    )
    resp = client.call_api(method, url, header_params=headers, body=body, post_params=post)
    resp.read()
    return resp.status, json.loads(resp.data)


def _policy(spec: dict[str, Any], name: str = "bad", namespace: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# ------------------------------------------------------------------------------- accepted objects


def test_upstream_policies_are_accepted_and_defaulted_like_the_real_server(local: LocalKube) -> None:
    stored = seed_manifests(local.api, UPSTREAM)
    kinds = [o["kind"] for o in stored]
    assert kinds.count("Namespace") == 3 and kinds.count("NetworkPolicy") == 9  # the List's 2 included
    deny = local.api.get("NetworkPolicy", "deny-ingress", "x")
    assert deny is not None and deny["spec"]["policyTypes"] == ["Ingress"]
    egress = local.api.get("NetworkPolicy", "allow-egress", "x")
    assert egress is not None
    assert egress["spec"]["policyTypes"] == ["Ingress", "Egress"]  # egress rules: Egress added
    assert egress["spec"]["egress"][0]["ports"] == [{"port": "serve-80-tcp", "protocol": "TCP"}]
    ns = local.api.get("Namespace", "x")
    assert ns is not None and ns["metadata"]["labels"] == {"ns": "x", NAMESPACE_NAME_LABEL: "x"}


def test_list_network_policies_parses_every_object_like_the_model(local_cluster: KubeCluster) -> None:
    api = local_cluster.api
    for obj in yaml.safe_load_all(UPSTREAM.read_text()):  # through the real client's apply
        local_cluster.apply([obj])
    expected = sorted((parse_network_policy(o, where="t") for o in _upstream_policies()), key=lambda p: p.key)
    listed = local_cluster.list_network_policies()
    assert sorted(listed, key=lambda p: p.key) == expected
    assert {p.key for p in local_cluster.list_network_policies("z")} == {
        "z/allow-only-sctp-ingress-on-port-81",
        "z/allow-only-udp-ingress-on-port-81",
    }
    by_key = {p.key: p for p in listed}
    assert by_key["x/allow-egress"].policy_types == frozenset({PolicyType.INGRESS, PolicyType.EGRESS})
    cidr = by_key["x/allow-client-a-via-cidr-egress-rule"].egress[0].peers[0].ip_block
    assert cidr is not None and cidr.except_ == ("10.244.2.7/32",)
    assert api.page_size == 500


def test_listings_are_paginated(make_local_cluster: Any, local: LocalKube) -> None:
    seed_manifests(local.api, UPSTREAM)
    cluster = make_local_cluster(page_size=2)
    assert len(cluster.list_network_policies()) == 9
    assert len(cluster.list_namespaces()) == 5  # default, kube-system, x, y, z
    lists = [q for m, p, q in local.api.requests if p == "/apis/networking.k8s.io/v1/networkpolicies"]
    assert len(lists) == 5 and all(q.get("limit") == "2" for q in lists)  # 9 policies, 2 a page


def test_every_e2e_suite_policy_is_accepted_and_round_trips(
    local_cluster: KubeCluster, local: LocalKube
) -> None:
    """All 48 upstream cases' policies (each Apply step), posted through the real client."""
    add_nodes(local.api, workers=3)
    ips = seed_netpol_model(local.api, ["w1", "w2", "w3"])
    assert set(ips) == set(PODS)
    posted = 0
    for case in CASES:
        for step in case.steps:
            if not isinstance(step, Apply):
                continue
            obj = resolve(step.policy, ips)
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            local_cluster.apply([obj])  # server-side apply: create or replace
            (got,) = [p for p in local_cluster.list_network_policies(ns) if p.name == name]
            assert got == parse_network_policy(obj, where=step.key), step.key
            local_cluster.delete("networking.k8s.io/v1", "NetworkPolicy", name, ns)
            posted += 1
    assert posted >= 48


def test_namespaces_carry_their_name_label_even_when_a_client_changes_it(local_cluster: KubeCluster) -> None:
    core = local_cluster.api.core
    core.create_namespace({"metadata": {"name": "w", "labels": {"team": "a"}}})
    core.patch_namespace("w", {"metadata": {"labels": {NAMESPACE_NAME_LABEL: "other", "team": "b"}}})
    (w,) = [n for n in local_cluster.list_namespaces() if n.name == "w"]
    assert w.labels == {"team": "b", NAMESPACE_NAME_LABEL: "w"}
    with pytest.raises(ApiException) as bad:
        core.create_namespace({"metadata": {"name": "Bad_Name"}})
    assert bad.value.status == 422


def test_container_ports_are_read_with_tcp_as_the_default_protocol(
    local_cluster: KubeCluster, local: LocalKube
) -> None:
    add_nodes(local.api, workers=1)
    seed_netpol_model(local.api, ["w1"])
    pod = local.api.get("Pod", "a", "x")
    assert pod is not None
    pod["metadata"]["name"] = "d"
    pod["spec"]["containers"].append(
        {
            "name": "side",
            "image": "i",
            "ports": [{"containerPort": 9090}, {"containerPort": 53, "protocol": "UDP"}],
        }
    )
    local.api.add(pod)
    by_key = {p.key: p for p in local_cluster.list_pods(namespace="x")}
    assert by_key["x/a"].container_ports == (
        ContainerPort(80, Protocol.TCP, "serve-80-tcp"),
        ContainerPort(80, Protocol.UDP, "serve-80-udp"),
        ContainerPort(81, Protocol.TCP, "serve-81-tcp"),
        ContainerPort(81, Protocol.UDP, "serve-81-udp"),
    )
    assert by_key["x/d"].container_ports[-2:] == (
        ContainerPort(9090, Protocol.TCP),
        ContainerPort(53, Protocol.UDP),
    )
    assert by_key["x/d"].ports == (80, 80, 81, 81, 9090, 53)


def test_read_snapshot_serves_namespaces_and_policies_from_one_list(
    local_cluster: KubeCluster, local: LocalKube
) -> None:
    seed_manifests(local.api, UPSTREAM)
    with local_cluster.read_snapshot(prefetch=False):
        before = len(local.api.requests)
        for _ in range(3):
            assert len(local_cluster.list_network_policies()) == 9
            assert len(local_cluster.list_network_policies("x")) == 6
            assert len(local_cluster.list_namespaces()) == 5
        assert len(local.api.requests) - before == 2  # one list of each
    assert len(local_cluster.list_namespaces()) == 5
    assert len(local.api.requests) - before == 3  # outside the snapshot: read again


def test_the_new_listings_need_only_granted_permissions(local_cluster: KubeCluster, local: LocalKube) -> None:
    seed_manifests(local.api, UPSTREAM)
    local.api.requests.clear()
    local_cluster.list_namespaces()
    local_cluster.list_network_policies()
    local_cluster.list_network_policies("x")
    needed = {required_permission(m, p, q) for m, p, q in local.api.requests}
    assert needed == {("list", "", "namespaces"), ("list", "networking.k8s.io", "networkpolicies")}
    assert all(granted(*n) for n in needed if n is not None)


def test_an_invalid_object_from_the_server_is_named(local_cluster: KubeCluster, local: LocalKube) -> None:
    """An object stored without today's validation (e.g. by an older API server) is not skipped."""
    local.api.ensure_namespace("x")
    bad = _policy({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]}, name="old")
    with local.api.lock:  # the store itself, under the fake's admission: what an older server let in
        Store.create(local.api, local.api.rtype("NetworkPolicy"), bad)
    with pytest.raises(
        InvalidPolicyObject, match=r"networkpolicy x/old: .*spec\.ingress\[0\]\.ports\[0\]\.endPort"
    ):
        local_cluster.list_network_policies()


# ------------------------------------------------------------------------------- refused objects


def _in_port(**port: Any) -> dict[str, Any]:
    return {"ingress": [{"ports": [port]}]}


def _eg_port(**port: Any) -> dict[str, Any]:
    return {"egress": [{"ports": [port]}]}


def _from(**peer: Any) -> dict[str, Any]:
    return {"ingress": [{"from": [peer]}]}


def _to(**peer: Any) -> dict[str, Any]:
    return {"egress": [{"to": [peer]}]}


def _block(cidr: str, *excepts: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr, "except": list(excepts)}}


def _pods(*exprs: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": labels, "matchExpressions": list(exprs)}}


IN_PORT = "spec.ingress[0].ports[0]"
EG_PORT = "spec.egress[0].ports[0]"
FROM = "spec.ingress[0].from[0]"
TO = "spec.egress[0].to[0]"
EXPR = "spec.podSelector.matchExpressions[0]"
INVALID, REQUIRED, FORBIDDEN, UNSUPPORTED = (
    "FieldValueInvalid",
    "FieldValueRequired",
    "FieldValueForbidden",
    "FieldValueNotSupported",
)

# (id, spec, the field the error names, the cause's reason): each refused by the fake and by the model
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("endPort below port", _in_port(port=81, endPort=80), f"{IN_PORT}.endPort", INVALID),
    ("endPort with a named port", _in_port(port="serve-80-tcp", endPort=90), f"{IN_PORT}.endPort", INVALID),
    ("endPort without port", _eg_port(endPort=90), f"{EG_PORT}.endPort", INVALID),
    ("endPort out of range", _in_port(port=80, endPort=65536), f"{IN_PORT}.endPort", INVALID),
    ("protocol ICMP", _in_port(protocol="ICMP", port=80), f"{IN_PORT}.protocol", UNSUPPORTED),
    ("protocol in lower case", _in_port(protocol="tcp", port=80), f"{IN_PORT}.protocol", UNSUPPORTED),
    ("port 0", _in_port(port=0), f"{IN_PORT}.port", INVALID),
    ("port 65536", _eg_port(port=65536), f"{EG_PORT}.port", INVALID),
    ("named port with upper case", _in_port(port="Serve-80"), f"{IN_PORT}.port", INVALID),
    ("named port longer than 15", _in_port(port="serve-80-tcp-long"), f"{IN_PORT}.port", INVALID),
    ("named port of digits", _in_port(port="8080"), f"{IN_PORT}.port", INVALID),
    ("named port with --", _in_port(port="a--b"), f"{IN_PORT}.port", INVALID),
    ("cidr not a CIDR", _to(ipBlock={"cidr": "10.0.0.1"}), f"{TO}.ipBlock.cidr", INVALID),
    ("cidr /33", _to(ipBlock={"cidr": "10.0.0.0/33"}), f"{TO}.ipBlock.cidr", INVALID),
    ("cidr missing", _to(ipBlock={"except": ["10.0.0.0/24"]}), f"{TO}.ipBlock.cidr", REQUIRED),
    ("except outside", _from(**_block("10.0.0.0/16", "10.1.0.0/24")), f"{FROM}.ipBlock.except[0]", INVALID),
    ("except equal", _from(**_block("10.0.0.0/16", "10.0.0.0/16")), f"{FROM}.ipBlock.except[0]", INVALID),
    (
        "except not a CIDR",
        _from(**_block("10.0.0.0/16", "10.0.300.0/24")),
        f"{FROM}.ipBlock.except[0]",
        INVALID,
    ),
    ("ipBlock and podSelector", _from(**_block("10.0.0.0/8"), podSelector={}), FROM, FORBIDDEN),
    ("empty peer", {"egress": [{"to": [{}]}]}, TO, REQUIRED),
    ("In without values", _pods({"key": "pod", "operator": "In"}), f"{EXPR}.values", REQUIRED),
    (
        "Exists with values",
        _from(namespaceSelector={"matchExpressions": [{"key": "ns", "operator": "Exists", "values": ["x"]}]}),
        f"{FROM}.namespaceSelector.matchExpressions[0].values",
        FORBIDDEN,
    ),
    (
        "unknown operator",
        _pods({"key": "pod", "operator": "Equals", "values": ["a"]}),
        f"{EXPR}.operator",
        INVALID,
    ),
    (
        "key with a space",
        {"podSelector": {"matchLabels": {"bad key": "a"}}},
        "spec.podSelector.matchLabels",
        INVALID,
    ),
    (
        "value starting with -",
        _from(podSelector={"matchLabels": {"pod": "-a"}}),
        f"{FROM}.podSelector.matchLabels",
        INVALID,
    ),
    (
        "expression value too long",
        _pods({"key": "pod", "operator": "In", "values": ["a" * 64]}),
        f"{EXPR}.values[0]",
        INVALID,
    ),
    ("named port that is a number", _in_port(port="80"), f"{IN_PORT}.port", INVALID),
    ("cidr with a leading zero", _to(ipBlock={"cidr": "010.0.0.0/8"}), f"{TO}.ipBlock.cidr", INVALID),
    ("IPv4 except in IPv6", _to(**_block("2001:db8::/64", "10.0.0.0/8")), f"{TO}.ipBlock.except[0]", INVALID),
    ("empty key", _pods({"key": "", "operator": "Exists"}), f"{EXPR}.key", INVALID),
    (
        "key prefix upper case",
        {"podSelector": {"matchLabels": {"Example.com/a": "b"}}},
        "spec.podSelector.matchLabels",
        INVALID,
    ),
    ("policyTypes misspelt", {"policyTypes": ["Ingres"]}, "spec.policyTypes[0]", UNSUPPORTED),
    ("three policyTypes", {"policyTypes": ["Ingress", "Egress", "Ingress"]}, "spec.policyTypes", INVALID),
]


@pytest.mark.parametrize(("spec", "field", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_the_fake_refuses_like_the_real_server(
    local_cluster: KubeCluster, local: LocalKube, spec: dict[str, Any], field: str, reason: str
) -> None:
    local.api.ensure_namespace("x")
    spec = {"podSelector": {}, **copy.deepcopy(spec)}
    networking = local_cluster.api.networking
    code, status = _post(local_cluster, "x", _policy(spec))
    assert code == 422
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('NetworkPolicy.networking.k8s.io "bad" is invalid: ')
    assert status["details"]["group"] == "networking.k8s.io" and status["details"]["kind"] == "NetworkPolicy"
    causes = {(c["field"], c["reason"]) for c in status["details"]["causes"]}
    assert (field, reason) in causes
    assert local.api.find("NetworkPolicy") == []
    # the same refusal on update, patch, server-side apply and dry runs (all through the real client)
    networking.create_namespaced_network_policy("x", _policy({"podSelector": {}}))
    with pytest.raises(ApiException) as on_patch:
        networking.patch_namespaced_network_policy("bad", "x", {"spec": spec})
    assert on_patch.value.status == 422
    with pytest.raises(KubeInvalid, match="is invalid"):
        local_cluster.apply([_policy(spec)], dry_run=True)
    stored = local.api.get("NetworkPolicy", "bad", "x")
    assert stored is not None and stored["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytest.mark.parametrize(("spec", "field"), [b[1:3] for b in BAD], ids=[b[0] for b in BAD])
def test_the_model_refuses_the_same_objects_naming_the_same_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_network_policy(_policy({"podSelector": {}, **copy.deepcopy(spec)}), where="bad.yaml")
    assert field in str(refused.value)
    assert "bad.yaml" in str(refused.value)


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("cidr with host bits (as upstream writes it)", _to(ipBlock={"cidr": "10.0.0.1/24"})),
    ("IPv6 with an except", _to(**_block("2001:db8::/64", "2001:db8::/96"))),
    ("the same policyType twice", {"policyTypes": ["Ingress", "Ingress"]}),
    ("endPort equal to port", _in_port(port=80, endPort=80)),
    ("SCTP with every port", _in_port(protocol="SCTP")),
    ("a prefixed label key", {"podSelector": {"matchLabels": {"example.com/a": "b"}}}),
    ("no podSelector", {"podSelector": None}),
    ("an empty egress rule (allow all)", {"egress": [{}]}),
]


@pytest.mark.parametrize("spec", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_edge_cases_accepted_by_both(
    local_cluster: KubeCluster, local: LocalKube, spec: dict[str, Any]
) -> None:
    local.api.ensure_namespace("x")
    obj = _policy({"podSelector": {}, **copy.deepcopy(spec)}, name="good")
    code, stored = _post(local_cluster, "x", obj)
    assert code == 201, stored
    assert local_cluster.list_network_policies("x") == [parse_network_policy(obj, where="t")]


def test_a_bad_name_is_refused_by_both(local_cluster: KubeCluster, local: LocalKube) -> None:
    local.api.ensure_namespace("x")
    obj = _policy({"podSelector": {}}, name="Bad_Name")
    with pytest.raises(ApiException) as refused:
        local_cluster.api.networking.create_namespaced_network_policy("x", obj)
    assert refused.value.status == 422
    assert '"field":"metadata.name"' in str(refused.value.body).replace(" ", "")
    with pytest.raises(PolicyError, match=r"metadata\.name"):
        parse_network_policy(obj, where="t")


# ------------------------------------------------------------------------------------- the seed


def test_a_bad_seed_document_is_named_and_nothing_is_stored(local: LocalKube, tmp_path: Path) -> None:
    good = UPSTREAM.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        good + "---\napiVersion: v1\nkind: List\nitems:\n"
        "  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p, namespace: y},"
        " spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 10}]}]}}\n"
    )
    with pytest.raises(SeedError) as refused:
        seed_manifests(local.api, bad)
    message = str(refused.value)
    assert message.startswith(f"{bad} document 12 .items[0]: ")
    assert "spec.ingress[0].ports[0].endPort" in message
    assert local.api.find("NetworkPolicy") == [] and local.api.get("Namespace", "x") is None
    with pytest.raises(SeedError, match=r"document 1: namespace 'nowhere' does not exist"):
        seed_manifests(
            local.api,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            "metadata: {name: p, namespace: nowhere}\nspec: {podSelector: {}}\n",
        )


def test_a_replace_is_validated_and_defaulted_and_bumps_the_generation(
    local_cluster: KubeCluster, local: LocalKube
) -> None:
    local.api.ensure_namespace("x")
    networking = local_cluster.api.networking
    networking.create_namespaced_network_policy("x", _policy({"podSelector": {}}, name="p"))
    current = local.api.get("NetworkPolicy", "p", "x")
    assert current is not None and current["metadata"]["generation"] == 1
    changed = _policy({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}, name="p")
    changed["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    networking.replace_namespaced_network_policy("p", "x", changed)
    stored = local.api.get("NetworkPolicy", "p", "x")
    assert stored is not None and stored["metadata"]["generation"] == 2
    # the new body is defaulted on its own, as the real server decodes it: it has egress rules now
    assert stored["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert stored["spec"]["egress"] == [{"ports": [{"port": 53, "protocol": "UDP"}]}]
    bad = _policy({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 1}]}]}, name="p")
    bad["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as refused:
        networking.replace_namespaced_network_policy("p", "x", bad)
    assert refused.value.status == 422
    assert local.api.get("NetworkPolicy", "p", "x") == stored


def test_network_policies_are_watched_and_deleted_like_the_other_resources(
    local_cluster: KubeCluster, local: LocalKube
) -> None:
    seed_manifests(local.api, UPSTREAM)
    api = local_cluster.api
    listed = api.list_all("list", api.networking.list_namespaced_network_policy, "y")
    api.call("delete", api.networking.delete_namespaced_network_policy, "deny-all", "y")
    events = list(
        api.watch(
            "watch",
            api.networking.list_namespaced_network_policy,
            "y",
            resource_version=listed.resource_version,
            deadline=__import__("time").monotonic() + 1.0,
        )
    )
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("DELETED", "deny-all")]
    assert local_cluster.list_network_policies("y") == []


def test_the_server_process_seeds_network_policies_from_manifests(tmp_path: Path) -> None:
    """Over HTTP, from the fake server in its own process (as the benchmarks run it)."""
    config = tmp_path / "kubeconfig"
    with FakeClusterProcess(4, config, pods_per_node=1, lifetime=120, manifests=(UPSTREAM,)):
        cluster = KubeCluster(kubeconfig=str(config), watch_chunk=1.0)
        try:
            listed = cluster.list_network_policies()
            namespaces = {n.name: n for n in cluster.list_namespaces()}
        finally:
            cluster.close()
    assert sorted(p.key for p in listed) == sorted(
        f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in _upstream_policies()
    )
    assert namespaces["y"].labels == {"ns": "y", NAMESPACE_NAME_LABEL: "y"}


def test_errors_of_the_new_listings_are_translated_at_the_boundary(
    local_cluster: KubeCluster, local: LocalKube
) -> None:
    seed_manifests(local.api, UPSTREAM)
    local.api.faults.append(Fault(path="/networkpolicies$", status=403, method="GET"))
    with pytest.raises(KubeForbidden, match=r"list networkpolicies: HTTP 403.*docs/rbac\.yaml"):
        local_cluster.list_network_policies()
    local.api.faults.append(Fault(path="/namespaces/x/networkpolicies$", status=404, method="GET"))
    with pytest.raises(KubeNotFound, match="list networkpolicies in x"):
        local_cluster.list_network_policies("x")
    local.api.faults.append(Fault(path="^/api/v1/namespaces$", status=503, method="GET", times=2))
    assert len(local_cluster.list_namespaces()) == 5, "a temporary error is retried (bounded)"
    local.api.faults.append(Fault(path="^/api/v1/namespaces$", status=500, method="GET", times=10))
    with pytest.raises(TemporaryError, match="list namespaces: HTTP 500"):
        local_cluster.list_namespaces()
    local.api.faults.clear()


@pytest.mark.parametrize(
    ("obj", "field"),
    [(_with(list(path), value), str(field)) for _what, path, value, field, _words in MODEL_BAD],  # type: ignore[call-overload]
    ids=[b[0] for b in MODEL_BAD],
)
def test_the_fake_refuses_every_object_the_models_own_tests_refuse(
    local_cluster: KubeCluster, local: LocalKube, obj: dict[str, Any], field: str
) -> None:
    """The policy model's invalid objects (tests/policy/test_policy_parse.py), posted as kubectl does
    (``fieldValidation=Strict``): each refused, a 422 naming the field (a matchLabels error names the
    map, as the real server does) or a 400 for a wrong type, kind or unknown field (or a 404 for a
    namespace that is no valid name)."""
    local.api.ensure_namespace("x")
    namespace = str(obj["metadata"].get("namespace") or "x")
    code, status = _post(local_cluster, namespace, obj, strict=True)
    assert code in (400, 404, 422), status
    if code == 422:
        assert any(field.startswith(c["field"]) for c in status["details"]["causes"]), status
    assert local.api.find("NetworkPolicy") == []


def test_unknown_fields_are_dropped_by_default_and_refused_when_strict(
    local_cluster: KubeCluster, local: LocalKube
) -> None:
    local.api.ensure_namespace("x")
    obj = _policy({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "portName": "web"}]}], "tier": 1})
    code, status = _post(local_cluster, "x", obj, strict=True)
    assert (code, status["message"]) == (
        400,
        'strict decoding error: unknown field "spec.ingress[0].ports[0].portName", unknown field "spec.tier"',
    )
    code, stored = _post(local_cluster, "x", obj)  # the server's default (Warn): dropped, as Go decodes it
    assert code == 201, stored
    assert stored["spec"] == {
        "podSelector": {},
        "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}],
        "policyTypes": ["Ingress"],
    }
    # a misspelt peer is dropped too, and what is left is an empty peer: refused
    misspelt = _policy({"podSelector": {}, "ingress": [{"from": [{"podSelectors": {}}]}]}, name="p2")
    code, status = _post(local_cluster, "x", misspelt)
    assert code == 422 and status["details"]["causes"][0]["field"] == "spec.ingress[0].from[0]"
