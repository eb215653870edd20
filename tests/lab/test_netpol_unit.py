"""The lab's NetworkPolicy pieces without a lab: the agent's rendering, the apps, documents and labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.errors import UsageError
from migrator.lab import netpol, objects, workloads
from migrator.lab.spec import AppKind, LabSpec, validate_spec
from migrator.lab.state import NetpolNodeState
from migrator.policy.model import (
    CompiledRule,
    IPBlock,
    PeerMatch,
    PodRules,
    PolicyPod,
    PortMatch,
    Protocol,
)

POD = PolicyPod(namespace="y", name="a", labels={"pod": "a"}, ip="10.244.1.5")


def _rules(**kw: object) -> PodRules:
    base: dict[str, object] = {"pod": POD, "ingress_isolated": True, "egress_isolated": False}
    base.update(kw)
    return PodRules(**base)  # type: ignore[arg-type]


def test_render_ingress_rule_with_pods_ports_and_ipblock_except() -> None:
    pr = _rules(
        ingress=(
            CompiledRule(
                "y/p1",
                PeerMatch(pod_ips=frozenset({"10.244.0.3", "10.244.2.9"})),
                (PortMatch(Protocol.TCP, 80),),
            ),
            CompiledRule(
                "y/p2",
                PeerMatch(ip_blocks=(IPBlock("10.244.0.0/16", ("10.244.0.4/32",)),)),
                (PortMatch(Protocol.UDP, 81, 85), PortMatch(Protocol.UDP)),
            ),
        )
    )
    nr = netpol.render_node([pr])
    chain = netpol.pod_chain("I", "y/a")
    assert nr.chains == [chain]
    kinds = sorted((s.kind, s.entries) for s in nr.sets.values())
    assert kinds == [
        ("hash:ip", ("10.244.0.3", "10.244.2.9")),
        ("hash:net", ("10.244.0.0/16", "10.244.0.4/32 nomatch")),
    ]
    ipset_for = {s.kind: s.name for s in nr.sets.values()}
    assert nr.rules[0] == "-A MNP-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"  # first
    assert f"-A MNP-FORWARD -d 10.244.1.5/32 -j {chain}" in nr.rules
    assert not any(r.startswith("-A MNP-INPUT -s") for r in nr.rules)  # egress not isolated
    mine = [r for r in nr.rules if r.startswith(f"-A {chain} ")]
    pods, block = (
        f"-m set --match-set {ipset_for['hash:ip']} src",
        f"-m set --match-set {ipset_for['hash:net']} src",
    )
    assert mine == [
        f'-A {chain} {pods} -p tcp -m tcp --dport 80 -m comment --comment "y/p1" -j RETURN',
        f'-A {chain} {block} -p udp -m udp --dport 81:85 -m comment --comment "y/p2" -j RETURN',
        f'-A {chain} {block} -p udp -m comment --comment "y/p2" -j RETURN',
        f"-A {chain} -j MNP-REJECT",
    ]
    assert "-A MNP-REJECT -p tcp -j REJECT --reject-with tcp-reset" in nr.rules
    assert nr.rules[-1] == "-A MNP-REJECT -j REJECT --reject-with icmp-port-unreachable"


def test_render_egress_any_peer_sctp_skipped_and_empty_selection_allows_nothing() -> None:
    pr = _rules(
        ingress_isolated=False,
        egress_isolated=True,
        egress=(
            CompiledRule("y/any", None, (PortMatch(Protocol.UDP, 53),)),
            CompiledRule("y/sctp", None, (PortMatch(Protocol.SCTP, 80),)),
            CompiledRule("y/nobody", PeerMatch(), None),
            CompiledRule("y/world", PeerMatch(ip_blocks=(IPBlock("0.0.0.0/0"),)), None),
        ),
    )
    nr = netpol.render_node([pr])
    chain = netpol.pod_chain("E", "y/a")
    assert f"-A MNP-FORWARD -s 10.244.1.5/32 -j {chain}" in nr.rules
    assert f"-A MNP-INPUT -s 10.244.1.5/32 -j {chain}" in nr.rules  # to its own node too
    mine = [r for r in nr.rules if r.startswith(f"-A {chain} ")]
    (world,) = nr.sets.values()
    assert world.entries == ("0.0.0.0/1", "128.0.0.0/1")  # hash:net takes no /0
    assert mine == [
        f'-A {chain} -p udp -m udp --dport 53 -m comment --comment "y/any" -j RETURN',
        f'-A {chain} -m set --match-set {world.name} dst -m comment --comment "y/world" -j RETURN',
        f"-A {chain} -j MNP-REJECT",
    ]
    assert nr.sctp_skipped == 1


def test_long_policy_keys_fit_the_comment_match() -> None:
    key = "y/" + "p" * 253
    nr = netpol.render_node([_rules(ingress=(CompiledRule(key, None, None),))])
    (rule,) = [r for r in nr.rules if "--comment" in r]
    assert f'--comment "{key[: netpol.MAX_COMMENT]}" -j RETURN' in rule


def test_set_names_are_content_addressed() -> None:
    a = netpol.ip_set(["10.0.0.2", "10.0.0.1"])
    b = netpol.ip_set(["10.0.0.1", "10.0.0.2"])
    c = netpol.ip_set(["10.0.0.1"])
    assert a.name == b.name != c.name and len(a.name) <= 31
    assert netpol.net_set(IPBlock("fd00::/8")) is None  # the lab is IPv4 only


def test_iptables_text_hooks_once_deletes_stale_and_unhooks() -> None:
    nr = netpol.render_node([_rules(ingress=())])
    first = netpol.iptables_text(nr, NetpolNodeState())
    assert "-I FORWARD 1 -j MNP-FORWARD" in first and "-I INPUT 1 -j MNP-INPUT" in first
    state = NetpolNodeState(hooked=True, chains=["MNP-I-OLD000000000", *nr.chains])
    again = netpol.iptables_text(nr, state)
    assert "-I FORWARD" not in again  # hooked already
    assert again.splitlines()[-2:] == ["-X MNP-I-OLD000000000", "COMMIT"]
    gone = netpol.iptables_text(None, state)
    assert "-D FORWARD -j MNP-FORWARD" in gone and "-D INPUT -j MNP-INPUT" in gone
    assert all(f"-X {c}" in gone for c in (*netpol.TOP_CHAINS, *state.chains))
    text = netpol.ipset_text(
        netpol.render_node(
            [_rules(ingress=(CompiledRule("p", PeerMatch(pod_ips=frozenset({"10.0.0.1"})), None),))]
        ).sets.values()
    )
    assert text.startswith("create mnp-") and "hash:ip family inet -exist" in text and "add mnp-" in text


# ------------------------------------------------------------------------------------------ the spec


def test_spec_apps() -> None:
    assert LabSpec().app == (AppKind.BOOKINFO,)
    assert LabSpec(app="netpol,bookinfo").app == (AppKind.BOOKINFO, AppKind.NETPOL)
    assert LabSpec(app=AppKind.NONE).app == (AppKind.NONE,)
    assert validate_spec(app=["netpol"]).has_app(AppKind.NETPOL)
    with pytest.raises(UsageError, match="none"):
        validate_spec(app="none,netpol")
    with pytest.raises(UsageError, match="app"):
        validate_spec(app="wordpress")


def test_netpol_objects() -> None:
    spec = LabSpec(app=(AppKind.NETPOL,), pods_per_node=0)
    wls, svcs = workloads.default_objects(spec)
    pods = sorted(w.key for w in wls if w.kind == "Pod")
    assert pods == [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    w = next(w for w in wls if w.key == "x/a")
    assert w.template.labels == {"pod": "a"}
    assert workloads.pod_name(w, 0, 17) == "a"  # the name survives restarts
    assert {(c.name, c.container) for c in w.template.container_ports} == {
        ("serve-80-tcp", "cont-80-tcp"),
        ("serve-81-tcp", "cont-81-tcp"),
        ("serve-80-udp", "cont-80-udp"),
        ("serve-81-udp", "cont-81-udp"),
    }
    svc = next(s for s in svcs if s.key == "y/s-y-b")
    assert svc.selector == {"pod": "b"}
    assert {(p.port, p.protocol) for p in svc.ports} == {(80, "TCP"), (80, "UDP"), (81, "TCP"), (81, "UDP")}
    ns = {n.name: n.labels for n in workloads.default_namespaces(spec)}
    assert ns["z"] == {"ns": "z", "kubernetes.io/metadata.name": "z"}
    assert ns["kube-system"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert "x" not in {n.name for n in workloads.default_namespaces(LabSpec())}


# --------------------------------------------------------------------------------- documents, labels


def test_load_documents_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least one file"):
        objects.load_documents([])
    with pytest.raises(UsageError, match=r"nope\.yaml: cannot read"):
        objects.load_documents([tmp_path / "nope.yaml"])
    f = tmp_path / "list.yaml"
    f.write_text("---\n---\nkind: Namespace\n---\n- a\n")
    with pytest.raises(UsageError, match=r"list.yaml: document 2: not a mapping"):
        objects.load_documents([f])
    g = tmp_path / "ok.yaml"
    ns_doc = "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n"
    g.write_text(ns_doc.format("w") + "---\n\n---\n" + ns_doc.format("v"))
    docs = objects.load_documents([g])
    assert [(d.index, d.obj["metadata"]["name"]) for d in docs] == [(1, "w"), (2, "v")]


def test_check_labels() -> None:
    assert objects.check_labels({"a.b/c-d": "x_y.z", "k": ""}, "w") == {"a.b/c-d": "x_y.z", "k": ""}
    for bad in ({"-k": "v"}, {"k": "v" * 64}, {"Bad_Prefix/k": "v"}, {"k": 1}):
        with pytest.raises(UsageError, match=r"w: metadata\.labels"):
            objects.check_labels(bad, "w")


def test_parse_label_args() -> None:
    assert objects.parse_label_args(["a=1", "b-", "c="]) == {"a": "1", "b": None, "c": ""}
    with pytest.raises(UsageError, match="key=value"):
        objects.parse_label_args(["oops"])
    with pytest.raises(UsageError, match="at least one label"):
        objects.parse_label_args([])
