"""The model's semantics beyond the e2e cases: selectors, peers, ipBlocks, ports, policyTypes, pods that
are never selected, addresses that are no pod, the deciding policies, the compiled rules, and that
decide() and matrix() agree on a random larger model."""

from __future__ import annotations

import random
from typing import Any

import pytest

from migrator.policy.model import (
    CompiledRule,
    ContainerPort,
    Decision,
    IPBlock,
    LabelSelector,
    Namespace,
    Operator,
    PeerMatch,
    PolicyError,
    PolicyModel,
    PolicyPod,
    PortMatch,
    Protocol,
    Requirement,
    Verdict,
    iter_bits,
    parse_network_policy,
)
from tests.policy.random_model import PROBE_PORTS, make_world

TCP, UDP, SCTP = Protocol.TCP, Protocol.UDP, Protocol.SCTP
ALLOW, DENY = Verdict.ALLOW, Verdict.DENY
PORTS = (ContainerPort(80, TCP, "http"), ContainerPort(53, UDP, "dns"), ContainerPort(9000, TCP, "metrics"))


def pod(
    key: str,
    ip: str | None,
    host_network: bool = False,
    ports: tuple[ContainerPort, ...] = PORTS,
    **labels: str,
) -> PolicyPod:
    ns, name = key.split("/")
    return PolicyPod(ns, name, {"app": name, **labels}, ip, ports, host_network)


WEB = pod("x/web", "10.0.1.1", tier="front")
API = pod("x/api", "10.0.1.2", tier="back")
DB = pod("y/db", "10.0.2.1", tier="data")
CACHE = pod("y/cache", "10.0.2.2", ports=(ContainerPort(6379, TCP, "http"),))
OTHER = pod("z/other", "10.0.3.1")
HOST = pod("x/host", "192.168.0.5", host_network=True)
PENDING = pod("x/pending", None)
PODS = [WEB, API, DB, CACHE, OTHER, HOST, PENDING]
NAMESPACES = [
    Namespace("x", {"team": "red"}),
    Namespace("y", {"team": "blue"}),
    Namespace("z", {"team": "red"}),
]


def np(name: str, ns: str, spec: dict[str, Any]) -> Any:
    return parse_network_policy({"metadata": {"name": name, "namespace": ns}, "spec": spec})


def model(*policies: Any) -> PolicyModel:
    return PolicyModel(policies, NAMESPACES, PODS)


def verdict(
    m: PolicyModel, src: PolicyPod | str, dst: PolicyPod | str, port: int = 80, proto: Protocol = TCP
) -> Verdict:
    return m.decide(src, dst, port, proto).verdict


# ------------------------------------------------------------------------------------------ selectors


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (LabelSelector(), {}, True),
        (LabelSelector({"a": "1"}), {"a": "1", "b": "2"}, True),
        (LabelSelector({"a": "1", "b": "2"}), {"a": "1"}, False),
        (LabelSelector({"a": "1"}), {"a": "2"}, False),
        (LabelSelector({}, (Requirement("a", Operator.IN, frozenset({"1", "2"})),)), {"a": "2"}, True),
        (LabelSelector({}, (Requirement("a", Operator.IN, frozenset({"1"})),)), {}, False),
        (LabelSelector({}, (Requirement("a", Operator.NOT_IN, frozenset({"1"})),)), {"a": "2"}, True),
        (LabelSelector({}, (Requirement("a", Operator.NOT_IN, frozenset({"1"})),)), {}, True),
        (LabelSelector({}, (Requirement("a", Operator.NOT_IN, frozenset({"1"})),)), {"a": "1"}, False),
        (LabelSelector({}, (Requirement("a", Operator.EXISTS),)), {"a": ""}, True),
        (LabelSelector({}, (Requirement("a", Operator.EXISTS),)), {"b": "1"}, False),
        (LabelSelector({}, (Requirement("a", Operator.DOES_NOT_EXIST),)), {"b": "1"}, True),
        (LabelSelector({}, (Requirement("a", Operator.DOES_NOT_EXIST),)), {"a": "1"}, False),
        (LabelSelector({"b": "2"}, (Requirement("a", Operator.EXISTS),)), {"a": "1"}, False),
        (LabelSelector({"b": "2"}, (Requirement("a", Operator.EXISTS),)), {"a": "1", "b": "2"}, True),
    ],
)
def test_selector_semantics(selector: LabelSelector, labels: dict[str, str], expected: bool) -> None:
    assert selector.matches(labels) is expected


def test_equal_selectors_share_a_cache_key() -> None:
    a = LabelSelector({"x": "1", "y": "2"}, (Requirement("k", Operator.IN, frozenset({"b", "a"})),))
    b = LabelSelector({"y": "2", "x": "1"}, (Requirement("k", Operator.IN, frozenset({"a", "b"})),))
    assert a.cache_key == b.cache_key
    assert a.cache_key != LabelSelector({"x": "1"}).cache_key


# -------------------------------------------------------------------------------------------- peers


def test_pod_selector_alone_is_the_policy_namespace() -> None:
    m = model(
        np(
            "p",
            "y",
            {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {}}]}]},
        )
    )
    assert verdict(m, CACHE, DB) is ALLOW  # same namespace y
    assert verdict(m, WEB, DB) is DENY  # x: not y
    assert verdict(m, DB, CACHE) is ALLOW  # cache is not selected


def test_namespace_selector_alone_and_both_anded() -> None:
    only_ns = model(
        np(
            "p",
            "y",
            {
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}}}]}],
            },
        )
    )
    assert [verdict(only_ns, s, DB) for s in (WEB, API, OTHER, CACHE)] == [ALLOW, ALLOW, ALLOW, DENY]
    both = model(
        np(
            "p",
            "y",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "red"}},
                                "podSelector": {"matchLabels": {"tier": "front"}},
                            },
                        ]
                    }
                ],
            },
        )
    )
    assert [verdict(both, s, DB) for s in (WEB, API, OTHER, CACHE)] == [ALLOW, DENY, DENY, DENY]


def test_peers_of_one_rule_are_ored_and_rules_and_policies_union() -> None:
    m = model(
        np(
            "a",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"app": "cache"}}},
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}},
                        ]
                    }
                ],
            },
        ),
        np(
            "b",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {}}]}
                ],
            },
        ),
    )
    assert [verdict(m, s, DB) for s in (CACHE, OTHER, WEB, API)] == [ALLOW, ALLOW, ALLOW, DENY]
    assert m.decide(WEB, DB, 80, TCP).policies == ("y/b",)
    assert m.decide(API, DB, 80, TCP) == Decision(DENY, DENY, ALLOW, ("y/a", "y/b"))


def test_ip_block_with_except_matches_pods_and_addresses() -> None:
    m = model(
        np(
            "p",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}]}],
            },
        )
    )
    assert verdict(m, OTHER, DB) is ALLOW  # 10.0.3.1
    assert verdict(m, WEB, DB) is DENY  # 10.0.1.1 is in the except
    assert verdict(m, "10.0.200.7", DB) is ALLOW  # no pod, inside
    assert verdict(m, "10.0.1.200", DB) is DENY
    assert verdict(m, "172.16.0.1", DB) is DENY
    assert verdict(m, "10.0.3.1", DB) is ALLOW  # the address of a pod is that pod


def test_an_address_that_is_no_pod_matches_only_ip_blocks() -> None:
    m = model(
        np(
            "p",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"namespaceSelector": {}}]}],
            },
        )
    )
    assert verdict(m, OTHER, DB) is ALLOW
    assert verdict(m, "10.9.9.9", DB) is DENY
    egress = model(
        np(
            "e",
            "x",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {}, "namespaceSelector": {}}]}],
            },
        )
    )
    assert verdict(egress, WEB, "8.8.8.8") is DENY
    assert verdict(egress, WEB, DB) is ALLOW
    assert verdict(egress, API, "8.8.8.8") is ALLOW  # api's egress is not isolated
    with pytest.raises(PolicyError, match="neither a pod nor an IP"):
        egress.decide(WEB, "not-an-ip", 80, TCP)
    with pytest.raises(PolicyError, match="not in the model"):
        egress.decide(pod("q/nobody", "10.1.1.1"), WEB, 80, TCP)


def test_host_network_and_ipless_pods_are_never_selected() -> None:
    deny_x = np(
        "deny", "x", {"podSelector": {}, "ingress": [], "egress": [], "policyTypes": ["Ingress", "Egress"]}
    )
    m = model(deny_x)
    assert m.ingress_policies(WEB) == (deny_x,)
    assert m.ingress_policies(HOST) == () and m.egress_policies(HOST) == ()
    assert m.ingress_policies(PENDING) == ()
    assert verdict(m, HOST, DB) is ALLOW and verdict(m, DB, HOST) is ALLOW
    # as a peer: a selector never matches it, an ipBlock of its (node) address does
    by_selector = model(
        np(
            "p",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"namespaceSelector": {}}]}],
            },
        )
    )
    assert verdict(by_selector, HOST, DB) is DENY
    by_block = model(
        np(
            "p",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/24"}}]}],
            },
        )
    )
    assert verdict(by_block, HOST, DB) is ALLOW


# -------------------------------------------------------------------------------------------- ports


def test_numbered_ranges_protocols_and_omitted_ports() -> None:
    m = model(
        np(
            "p",
            "y",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "ports": [
                            {"port": 8000, "endPort": 8010},
                            {"protocol": "UDP"},
                            {"protocol": "SCTP", "port": 80},
                        ]
                    }
                ],
            },
        )
    )
    assert [verdict(m, WEB, DB, p) for p in (7999, 8000, 8005, 8010, 8011)] == [
        DENY,
        ALLOW,
        ALLOW,
        ALLOW,
        DENY,
    ]
    assert verdict(m, WEB, DB, 8005, UDP) is ALLOW  # every UDP port
    assert verdict(m, WEB, DB, 12345, UDP) is ALLOW
    assert verdict(m, WEB, DB, 80, TCP) is DENY
    assert verdict(m, WEB, DB, 80, SCTP) is ALLOW
    assert verdict(m, WEB, DB, 81, SCTP) is DENY


def test_named_ports_resolve_against_the_destination_with_the_same_protocol() -> None:
    ingress = model(
        np("p", "y", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}, {"port": "dns"}]}]})
    )
    assert verdict(ingress, WEB, DB, 80) is ALLOW  # db: http is 80/TCP
    assert verdict(ingress, WEB, CACHE, 80) is DENY  # cache: http is 6379
    assert verdict(ingress, WEB, CACHE, 6379) is ALLOW
    assert verdict(ingress, WEB, DB, 53, UDP) is DENY  # "dns" with protocol TCP (default): db's dns is UDP
    assert verdict(ingress, WEB, DB, 53, TCP) is DENY
    egress = model(
        np(
            "e",
            "x",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "egress": [{"ports": [{"protocol": "UDP", "port": "dns"}, {"port": "http"}]}],
            },
        )
    )
    assert verdict(egress, WEB, DB, 53, UDP) is ALLOW
    assert verdict(egress, WEB, CACHE, 80) is DENY  # the peer's own http port is 6379
    assert verdict(egress, WEB, CACHE, 6379) is ALLOW
    assert verdict(egress, WEB, "8.8.8.8", 53, UDP) is DENY  # an address has no named ports


def test_an_egress_ip_block_never_matches_a_named_port() -> None:
    m = model(
        np(
            "e",
            "x",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "http"}, {"port": 9000}]}
                ],
            },
        )
    )
    assert verdict(m, WEB, DB, 80) is DENY
    assert verdict(m, WEB, DB, 9000) is ALLOW


# -------------------------------------------------------------------------------------- policyTypes


def test_explicit_egress_alone_does_not_isolate_ingress() -> None:
    m = model(np("e", "y", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [], "egress": []}))
    assert verdict(m, WEB, DB) is ALLOW  # ingress rules ignored: not an Ingress policy
    assert m.decide(DB, WEB, 80, TCP) == Decision(DENY, ALLOW, DENY, ("y/e",))
    assert m.ingress_policies(DB) == ()


def test_empty_rule_allows_all_and_empty_list_denies_all() -> None:
    deny = np("deny", "y", {"podSelector": {}, "ingress": []})
    allow = np("allow", "y", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]})
    m = model(deny, allow)
    assert m.decide(WEB, DB, 1234, UDP) == Decision(ALLOW, ALLOW, ALLOW, ("y/allow",))
    assert m.decide("1.2.3.4", DB, 1, TCP).verdict is ALLOW
    assert m.decide(WEB, CACHE, 80, TCP) == Decision(DENY, DENY, ALLOW, ("y/deny",))


def test_both_sides_denying_name_both_sides_policies() -> None:
    m = model(
        np("in", "y", {"podSelector": {}, "ingress": []}),
        np("out", "x", {"podSelector": {}, "policyTypes": ["Egress"]}),
    )
    assert m.decide(WEB, DB, 80, TCP) == Decision(DENY, DENY, DENY, ("x/out", "y/in"))
    assert m.decide(OTHER, WEB, 80, TCP) == Decision(ALLOW, ALLOW, ALLOW, ())


def test_duplicate_keys_are_refused() -> None:
    p = np("p", "x", {})
    with pytest.raises(PolicyError, match="listed twice"):
        PolicyModel([p, p], NAMESPACES, PODS)
    with pytest.raises(PolicyError, match="listed twice"):
        PolicyModel([], NAMESPACES, [WEB, WEB])


# ---------------------------------------------------------------------------------------- pod_rules


def test_pod_rules_resolve_named_ports_and_expand_egress() -> None:
    ing = np(
        "in",
        "y",
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"app": "cache"}}},
                        {"ipBlock": {"cidr": "10.0.3.0/24"}},
                    ],
                    "ports": [{"port": "http"}, {"port": 1, "endPort": 9}],
                },
                {"ports": [{"protocol": "UDP", "port": "nope"}]},
                {},
            ],
        },
    )
    eg = np(
        "out",
        "x",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/8"}},
                    ],
                    "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53}],
                },
            ],
        },
    )
    m = model(ing, eg)
    db = m.pod_rules(DB)
    assert (db.ingress_isolated, db.egress_isolated) == (True, False)
    assert db.ingress == (
        CompiledRule(
            "y/in",
            PeerMatch(frozenset({"10.0.2.2"}), (IPBlock("10.0.3.0/24"),)),
            (PortMatch(TCP, 80), PortMatch(TCP, 1, 9)),
        ),
        CompiledRule("y/in", None, None),
    )  # the rule with only an undeclared named port matches nothing: left out
    assert m.pod_rules(CACHE).ingress[0].ports == (PortMatch(TCP, 6379), PortMatch(TCP, 1, 9))
    web = m.pod_rules(WEB)
    assert (web.ingress_isolated, web.egress_isolated) == (False, True)
    assert web.egress == (
        CompiledRule(
            "x/out",
            PeerMatch(frozenset({"10.0.2.1", "10.0.2.2"}), (IPBlock("10.0.0.0/8"),)),
            (PortMatch(UDP, 53),),
        ),
        CompiledRule("x/out", PeerMatch(frozenset({"10.0.2.1"})), (PortMatch(TCP, 80),)),
        CompiledRule("x/out", PeerMatch(frozenset({"10.0.2.2"})), (PortMatch(TCP, 6379),)),
    )
    assert m.pod_rules(API) == type(db)(pod=API, ingress_isolated=False, egress_isolated=False)


# -------------------------------------------------------------------------------- matrix vs decide


@pytest.mark.parametrize(("seed", "n_pods", "n_policies"), [(7, 120, 80), (11, 80, 120), (23, 90, 40)])
def test_matrix_agrees_with_decide_on_a_random_larger_model(seed: int, n_pods: int, n_policies: int) -> None:
    policies, namespaces, pods = make_world(seed=seed, n_pods=n_pods, n_policies=n_policies, n_namespaces=6)
    m = PolicyModel(policies, namespaces, pods)
    seen = {ALLOW: 0, DENY: 0}
    for port, proto in PROBE_PORTS:
        mx = m.matrix(port, proto)
        for src, dst, v in mx.cells():
            d = m.decide(src, dst, port, proto)
            assert d.verdict is v, f"{src.key} -> {dst.key} {port}/{proto}: matrix {v}, decide {d}"
            i, j = m.index(src), m.index(dst)
            assert d.egress is (ALLOW if mx.egress_rows[i] >> j & 1 else DENY)
            assert d.ingress is (ALLOW if mx.ingress_rows[i] >> j & 1 else DENY)
            seen[v] += 1
    assert seen[ALLOW] > 1000 and seen[DENY] > 1000  # a mix, not a trivial model


def test_the_order_of_policies_and_pods_changes_nothing() -> None:
    policies, namespaces, pods = make_world(seed=5, n_pods=70, n_policies=60, n_namespaces=5)
    m = PolicyModel(policies, namespaces, pods)
    rnd = random.Random(1)
    shuffled = PolicyModel(rnd.sample(policies, len(policies)), namespaces, list(reversed(pods)))
    for port, proto in PROBE_PORTS:
        a = {(s.key, d.key): v for s, d, v in m.matrix(port, proto).cells()}
        b = {(s.key, d.key): v for s, d, v in shuffled.matrix(port, proto).cells()}
        assert a == b


def test_matrix_cells_and_decisions() -> None:
    m = model(np("deny", "y", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": []}))
    mx = m.matrix(80, TCP)
    assert mx.allowed(WEB, CACHE) and not mx.allowed("x/web", "y/db")
    assert mx.verdict(WEB, DB) is DENY
    assert mx.decision(WEB, DB).policies == ("y/deny",)
    denied = {(s.key, d.key) for s, d, v in mx.cells() if v is DENY}
    assert denied == {(p.key, "y/db") for p in PODS}
    assert list(iter_bits(0b10110)) == [1, 2, 4]


def test_addresses_of_pods_are_those_pods_and_others_only_meet_ip_blocks() -> None:
    policies, namespaces, pods = make_world(seed=3, n_pods=60, n_policies=40, n_namespaces=4)
    m = PolicyModel(policies, namespaces, pods)
    by_ip = {p.ip: p for p in pods if p.ip and not p.host_network}
    for p in pods:
        for q in pods:
            if q.ip in by_ip:
                assert m.decide(q.ip, p, 80, TCP) == m.decide(q, p, 80, TCP)
                assert m.decide(p, q.ip, 80, TCP) == m.decide(p, q, 80, TCP)
    rnd = random.Random(5)
    outside = [f"10.64.{rnd.randrange(4)}.{rnd.randrange(200, 256)}" for _ in range(20)] + ["8.8.8.8"]
    verdicts = set()
    for address in outside:
        assert address not in by_ip
        for p in pods:
            verdicts.add(m.decide(address, p, 80, TCP).verdict)
            verdicts.add(m.decide(p, address, 80, TCP).verdict)
    assert verdicts == {ALLOW, DENY}
