"""parse_network_policy / parse_namespace / parse_selector: valid objects, and every kind of invalid one
refused with the field path named (as the API server's validation names it)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from migrator.errors import UsageError
from migrator.policy.model import (
    IPBlock,
    LabelSelector,
    Operator,
    Peer,
    PolicyError,
    PolicyPort,
    PolicyType,
    Protocol,
    Requirement,
    parse_labels,
    parse_namespace,
    parse_network_policy,
    parse_selector,
)


def np(spec: dict[str, Any], name: str = "deny", namespace: str | None = "x") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


FULL = np(
    {
        "podSelector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        },
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}},
                    {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "Exists"}]}},
                    {"podSelector": {}, "namespaceSelector": {"matchLabels": {"ns": "y"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [
                    {"port": 80},
                    {"protocol": "UDP", "port": "dns"},
                    {"protocol": "TCP", "port": 8000, "endPort": 9000},
                ],
            }
        ],
        "egress": [{"to": [{"ipBlock": {"cidr": "2001:db8::/64"}}], "ports": [{"protocol": "SCTP"}]}, {}],
    }
)


def test_a_full_policy_parses_into_the_vocabulary() -> None:
    p = parse_network_policy(FULL, where="policy.yaml doc 1")
    assert (p.namespace, p.name, p.key) == ("x", "deny", "x/deny")
    assert p.pod_selector == LabelSelector(
        {"app": "web"}, (Requirement("tier", Operator.NOT_IN, frozenset({"db"})),)
    )
    assert p.policy_types == {PolicyType.INGRESS, PolicyType.EGRESS}
    rule = p.ingress[0]
    assert rule.peers[0] == Peer(pod_selector=LabelSelector({"pod": "b"}))
    assert rule.peers[1].namespace_selector == LabelSelector({}, (Requirement("ns", Operator.EXISTS),))
    assert rule.peers[2] == Peer(pod_selector=LabelSelector(), namespace_selector=LabelSelector({"ns": "y"}))
    assert rule.peers[3] == Peer(ip_block=IPBlock("10.0.0.0/8", ("10.1.0.0/16",)))
    assert rule.ports == (
        PolicyPort(Protocol.TCP, 80),
        PolicyPort(Protocol.UDP, "dns"),
        PolicyPort(Protocol.TCP, 8000, 9000),
    )
    assert p.egress[0].ports == (PolicyPort(Protocol.SCTP, None),)
    assert p.egress[1].peers == () and p.egress[1].ports == ()


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({"podSelector": {}}, {PolicyType.INGRESS}),
        ({"podSelector": {}, "ingress": [{}]}, {PolicyType.INGRESS}),
        ({"podSelector": {}, "egress": [{}]}, {PolicyType.INGRESS, PolicyType.EGRESS}),
        ({"podSelector": {}, "egress": []}, {PolicyType.INGRESS}),
        ({"podSelector": {}, "policyTypes": ["Egress"]}, {PolicyType.EGRESS}),
        ({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}, {PolicyType.EGRESS}),
    ],
)
def test_policy_types_default_as_the_api_server(spec: dict[str, Any], types: set[PolicyType]) -> None:
    assert parse_network_policy(np(spec)).policy_types == types


def test_missing_namespace_is_the_default_namespace_and_missing_spec_selects_all() -> None:
    p = parse_network_policy({"metadata": {"name": "p"}})
    assert (p.namespace, p.pod_selector, p.policy_types) == ("default", LabelSelector(), {PolicyType.INGRESS})
    assert parse_network_policy({"metadata": {"name": "p"}}, default_namespace="y").namespace == "y"


def test_a_cidr_with_host_bits_is_accepted_as_upstream_uses_it() -> None:
    p = parse_network_policy(
        np({"egress": [{"to": [{"ipBlock": {"cidr": "10.244.1.10/4", "except": ["10.244.1.11/32"]}}]}]})
    )
    assert p.egress[0].peers[0].ip_block == IPBlock("10.244.1.10/4", ("10.244.1.11/32",))


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(FULL)
    cur: Any = obj
    for key in path[:-1]:
        cur = cur[key]
    if value is _DELETE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return obj


_DELETE = object()
ING = ["spec", "ingress", 0]
PORT0 = [*ING, "ports", 0]
PEER0 = [*ING, "from", 0]
BLOCK = [*ING, "from", 3, "ipBlock"]
EXPR = ["spec", "podSelector", "matchExpressions", 0]

BAD = [
    # (what, path to change, new value, field named, words of the message)
    (
        "unknown protocol",
        [*PORT0, "protocol"],
        "ICMP",
        "spec.ingress[0].ports[0].protocol",
        "Unsupported value",
    ),
    (
        "lower-case protocol",
        [*PORT0, "protocol"],
        "tcp",
        "spec.ingress[0].ports[0].protocol",
        "Unsupported value",
    ),
    ("port 0", [*PORT0, "port"], 0, "spec.ingress[0].ports[0].port", "between 1 and 65535"),
    ("port too big", [*PORT0, "port"], 65536, "spec.ingress[0].ports[0].port", "between 1 and 65535"),
    ("port a bool", [*PORT0, "port"], True, "spec.ingress[0].ports[0].port", "integer or a port name"),
    ("port name too long", [*PORT0, "port"], "a-very-long-port-name", "spec.ingress[0].ports[0].port", "15"),
    ("port name upper case", [*PORT0, "port"], "Http", "spec.ingress[0].ports[0].port", "alpha-numeric"),
    (
        "port name digits only",
        [*PORT0, "port"],
        "8080",
        "spec.ingress[0].ports[0].port",
        "at least one letter",
    ),
    (
        "port name double hyphen",
        [*PORT0, "port"],
        "a--b",
        "spec.ingress[0].ports[0].port",
        "consecutive hyphens",
    ),
    ("port name leading hyphen", [*PORT0, "port"], "-ab", "spec.ingress[0].ports[0].port", "begin or end"),
    (
        "endPort < port",
        [*ING, "ports", 2, "endPort"],
        7999,
        "spec.ingress[0].ports[2].endPort",
        "greater than or equal",
    ),
    (
        "endPort too big",
        [*ING, "ports", 2, "endPort"],
        70000,
        "spec.ingress[0].ports[2].endPort",
        "between 1 and 65535",
    ),
    (
        "endPort with named port",
        [*ING, "ports", 1, "endPort"],
        90,
        "spec.ingress[0].ports[1].endPort",
        "non-numeric",
    ),
    (
        "endPort without port",
        [*ING, "ports", 2, "port"],
        _DELETE,
        "spec.ingress[0].ports[2].endPort",
        "not specified",
    ),
    ("invalid cidr", [*BLOCK, "cidr"], "10.0.0.0/33", "spec.ingress[0].from[3].ipBlock.cidr", "valid CIDR"),
    (
        "cidr without length",
        [*BLOCK, "cidr"],
        "10.0.0.1",
        "spec.ingress[0].from[3].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        "cidr netmask form",
        [*BLOCK, "cidr"],
        "10.0.0.0/255.0.0.0",
        "spec.ingress[0].from[3].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        "cidr zero-padded length",
        [*BLOCK, "cidr"],
        "10.0.0.0/08",
        "spec.ingress[0].from[3].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        "cidr with a zone",
        [*BLOCK, "cidr"],
        "fe80::1%eth0/64",
        "spec.ingress[0].from[3].ipBlock.cidr",
        "valid CIDR",
    ),
    (
        "cidr leading zeros",
        [*BLOCK, "cidr"],
        "010.0.0.0/8",
        "spec.ingress[0].from[3].ipBlock.cidr",
        "valid CIDR",
    ),
    ("missing cidr", [*BLOCK, "cidr"], _DELETE, "spec.ingress[0].from[3].ipBlock.cidr", "required"),
    (
        "except outside",
        [*BLOCK, "except"],
        ["11.0.0.0/16"],
        "spec.ingress[0].from[3].ipBlock.except[0]",
        "strict subset",
    ),
    (
        "except equal",
        [*BLOCK, "except"],
        ["10.0.0.0/8"],
        "spec.ingress[0].from[3].ipBlock.except[0]",
        "strict subset",
    ),
    (
        "except other family",
        [*BLOCK, "except"],
        ["::/128"],
        "spec.ingress[0].from[3].ipBlock.except[0]",
        "strict subset",
    ),
    (
        "except invalid",
        [*BLOCK, "except"],
        ["nope"],
        "spec.ingress[0].from[3].ipBlock.except[0]",
        "valid CIDR",
    ),
    (
        "ipBlock with podSelector",
        [*ING, "from", 3, "podSelector"],
        {},
        "spec.ingress[0].from[3]",
        "both ipBlock",
    ),
    (
        "ipBlock with nsSelector",
        [*ING, "from", 3, "namespaceSelector"],
        {},
        "spec.ingress[0].from[3]",
        "both ipBlock",
    ),
    ("empty peer", PEER0, {}, "spec.ingress[0].from[0]", "must specify a peer"),
    (
        "bad operator",
        [*EXPR, "operator"],
        "Like",
        "spec.podSelector.matchExpressions[0].operator",
        "Unsupported value",
    ),
    (
        "In without values",
        [*ING, "from", 1, "namespaceSelector", "matchExpressions", 0, "operator"],
        "In",
        "spec.ingress[0].from[1].namespaceSelector.matchExpressions[0].values",
        "must be specified",
    ),
    (
        "NotIn without values",
        [*EXPR, "values"],
        [],
        "spec.podSelector.matchExpressions[0].values",
        "must be specified",
    ),
    (
        "Exists with values",
        [*ING, "from", 1, "namespaceSelector", "matchExpressions", 0, "values"],
        ["a"],
        "spec.ingress[0].from[1].namespaceSelector.matchExpressions[0].values",
        "may not be specified",
    ),
    (
        "bad expression key",
        [*EXPR, "key"],
        "bad key",
        "spec.podSelector.matchExpressions[0].key",
        "invalid key",
    ),
    (
        "bad expression value",
        [*EXPR, "values"],
        ["no spaces"],
        "spec.podSelector.matchExpressions[0].values[0]",
        "invalid value",
    ),
    (
        "bad label key",
        ["spec", "podSelector", "matchLabels"],
        {"-app": "web"},
        "spec.podSelector.matchLabels.-app",
        "invalid key",
    ),
    (
        "bad label prefix",
        ["spec", "podSelector", "matchLabels"],
        {"Ex.com/app": "web"},
        "spec.podSelector.matchLabels.Ex.com/app",
        "prefix part",
    ),
    (
        "label key two slashes",
        ["spec", "podSelector", "matchLabels"],
        {"a/b/c": "web"},
        "spec.podSelector.matchLabels.a/b/c",
        "qualified name",
    ),
    (
        "bad label value",
        ["spec", "podSelector", "matchLabels"],
        {"app": "web!"},
        "spec.podSelector.matchLabels.app",
        "invalid value",
    ),
    (
        "label value too long",
        ["spec", "podSelector", "matchLabels"],
        {"app": "v" * 64},
        "spec.podSelector.matchLabels.app",
        "63",
    ),
    (
        "label value not a string",
        ["spec", "podSelector", "matchLabels"],
        {"app": 1},
        "spec.podSelector.matchLabels.app",
        "string",
    ),
    (
        "bad policyType",
        ["spec", "policyTypes"],
        ["Ingress", "Both"],
        "spec.policyTypes[1]",
        "Unsupported value",
    ),
    (
        "three policyTypes",
        ["spec", "policyTypes"],
        ["Ingress", "Egress", "Ingress"],
        "spec.policyTypes",
        "more than two",
    ),
    ("missing name", ["metadata", "name"], _DELETE, "metadata.name", "required"),
    ("bad name", ["metadata", "name"], "Deny_All", "metadata.name", "RFC 1123 subdomain"),
    ("bad namespace", ["metadata", "namespace"], "x.y", "metadata.namespace", "RFC 1123 label"),
    ("wrong kind", ["kind"], "Namespace", "kind", "NetworkPolicy"),
    ("wrong apiVersion", ["apiVersion"], "extensions/v1beta1", "apiVersion", "networking.k8s.io/v1"),
    ("unknown spec field", ["spec", "podselector"], {}, "spec.podselector", "unknown field"),
    (
        "unknown peer field",
        [*PEER0, "podSelectors"],
        {},
        "spec.ingress[0].from[0].podSelectors",
        "unknown field",
    ),
    ("ingress not a list", ["spec", "ingress"], {"from": []}, "spec.ingress", "must be a list"),
    ("ports not a list", [*ING, "ports"], "80", "spec.ingress[0].ports", "must be a list"),
    ("selector not an object", ["spec", "podSelector"], "app=web", "spec.podSelector", "must be an object"),
]


@pytest.mark.parametrize(("what", "path", "value", "field", "words"), BAD, ids=[b[0] for b in BAD])
def test_an_invalid_policy_names_the_field(
    what: str, path: list[Any], value: Any, field: str, words: str
) -> None:
    with pytest.raises(PolicyError) as info:
        parse_network_policy(_with(path, value), where="policy.yaml doc 2")
    err = info.value
    assert isinstance(err, UsageError)
    assert field in err.fields, f"{what}: {err.fields}"
    line = next(line for line in str(err).splitlines() if f": {field}: " in line)
    assert line.startswith("policy.yaml doc 2 (NetworkPolicy x/deny): ") or field.startswith("metadata")
    assert words in line, line


def test_the_message_format_of_the_brief() -> None:
    bad = np({"ingress": [{"ports": [{"port": 80, "endPort": 79}]}]})
    with pytest.raises(PolicyError) as info:
        parse_network_policy(bad, where="policy.yaml doc 2")
    assert str(info.value) == (
        "policy.yaml doc 2 (NetworkPolicy x/deny): spec.ingress[0].ports[0].endPort: 79: "
        "must be greater than or equal to `port`"
    )


def test_every_problem_is_reported_at_once() -> None:
    bad = np(
        {
            "podSelector": {"matchLabels": {"a": "b c"}},
            "ingress": [{"ports": [{"protocol": "X"}, {"port": 0}]}],
        }
    )
    with pytest.raises(PolicyError) as info:
        parse_network_policy(bad)
    assert info.value.fields == (
        "spec.podSelector.matchLabels.a",
        "spec.ingress[0].ports[0].protocol",
        "spec.ingress[0].ports[1].port",
    )
    assert str(info.value).splitlines()[0].startswith("NetworkPolicy x/deny: spec.podSelector.matchLabels.a:")


def test_not_an_object() -> None:
    with pytest.raises(PolicyError, match=r"doc 3 \(NetworkPolicy\): a NetworkPolicy must be an object"):
        parse_network_policy(["x"], where="doc 3")  # type: ignore[arg-type]


def test_namespace_parse_sets_the_name_label() -> None:
    ns = parse_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y", "labels": {"ns": "y"}}}
    )
    assert ns.name == "y"
    assert ns.labels == {"ns": "y", "kubernetes.io/metadata.name": "y"}
    forged = parse_namespace({"metadata": {"name": "y", "labels": {"kubernetes.io/metadata.name": "x"}}})
    assert forged.labels["kubernetes.io/metadata.name"] == "y"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"metadata": {}}, "metadata.name"),
        ({"metadata": {"name": "a.b"}}, "metadata.name"),
        ({"metadata": {"name": "y", "labels": {"k": "bad value"}}}, "metadata.labels.k"),
        ({"kind": "Pod", "metadata": {"name": "y"}}, "kind"),
    ],
)
def test_invalid_namespaces(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_namespace(obj, where="ns.yaml doc 1")
    assert field in info.value.fields
    assert str(info.value).startswith("ns.yaml doc 1 (Namespace")


def test_parse_selector_and_labels() -> None:
    assert parse_selector(None, where="w") == LabelSelector()
    sel = parse_selector(
        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, where="w"
    )
    assert sel.match_expressions == (Requirement("a", Operator.IN, frozenset({"1", "2"})),)
    with pytest.raises(PolicyError, match=r"^w: matchExpressions\[0\]\.operator: Unsupported value"):
        parse_selector({"matchExpressions": [{"key": "a", "operator": "in", "values": ["1"]}]}, where="w")
    assert parse_labels({"pod": "b", "example.com/x": ""}, where="w") == {"pod": "b", "example.com/x": ""}
    with pytest.raises(PolicyError) as info:
        parse_labels({"pod": "b/c"}, where="pod x/b")
    assert info.value.fields == ("metadata.labels.pod",)
