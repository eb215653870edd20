"""NetworkPolicy enforced in the lab: one shared 3-node calico lab with the netpol app for the module.

Each test applies policies through ``Lab.apply`` (the ``lab apply`` path), probes a handful of cells from
inside the pods (TCP connects, UDP datagrams), and removes its policies again (also after a failure).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrator.lab import net, sh
from migrator.lab.lab import Lab
from migrator.lab.netpol import pod_chain
from migrator.lab.spec import AppKind, CniKind, LabSpec
from migrator.targets.lab.cluster import LabCluster
from tests.clihelp import migrator_env, run_migrator
from tests.lab.conftest import host_traces
from tests.lab.netpol_probe import Cell, pod_ip, policy_doc, probe, probe_all, service_ip, write_docs

pytestmark = pytest.mark.lab

FLANNEL_UNDERLAY = "198.18.31.0/24"


def _verdicts(lab: Lab, cells: dict[Cell, str]) -> dict[Cell, str]:
    seen = probe_all(lab, list(cells))
    return {c: s.verdict for c, s in seen.items()}


def test_default_deny_ingress_and_allow_rules_open_exactly_what_they_should(
    netpol_clean: Lab, tmp_path: Path
) -> None:
    lab = netpol_clean
    ya, yb, zb = pod_ip(lab, "y/a"), pod_ip(lab, "y/b"), pod_ip(lab, "z/b")
    before = {
        Cell("x/b", ya, 80): "allow",
        Cell("x/b", ya, 81, "udp"): "allow",
        Cell("z/a", ya, 80): "allow",
    }
    assert _verdicts(lab, before) == before
    docs = [
        policy_doc("y", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        policy_doc(
            "y",
            "allow-x-to-a",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                        "ports": [{"port": "serve-80-tcp"}, {"port": 81, "protocol": "UDP"}],
                    }
                ],
            },
        ),
    ]
    out = lab.apply([write_docs(tmp_path, docs)])
    assert [(o.key, o.action.value) for o in out] == [
        ("y/deny-all", "created"),
        ("y/allow-x-to-a", "created"),
    ]
    want = {
        Cell("x/b", ya, 80): "allow",  # named port serve-80-tcp, from namespace x
        Cell("x/c", ya, 80): "allow",
        Cell("x/b", ya, 81): "deny",  # TCP 81 not allowed
        Cell("x/b", ya, 80, "udp"): "deny",  # UDP 80 not allowed
        Cell("x/c", ya, 81, "udp"): "allow",  # UDP 81 allowed
        Cell("z/a", ya, 80): "deny",  # not from x (z/a shares a node with y/a or not: both enforced)
        Cell("z/a", ya, 81, "udp"): "deny",
        Cell("x/a", yb, 80): "deny",  # y/b only under deny-all
        Cell("y/a", yb, 81, "udp"): "deny",
        Cell("x/a", zb, 80): "allow",  # z has no policy
        Cell("y/a", zb, 81, "udp"): "allow",  # y's egress is not isolated
    }
    seen = probe_all(lab, list(want))
    assert {c: s.verdict for c, s in seen.items()} == want
    # denied probes are REJECTed (reset / port unreachable), so they answer fast
    assert all(s.ms < 500 for c, s in seen.items() if want[c] == "deny"), seen


def test_ipblock_except(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    yb, xa = pod_ip(lab, "y/b"), pod_ip(lab, "x/a")
    docs = [
        policy_doc(
            "y",
            "from-pods-but-xa",
            {
                "podSelector": {"matchLabels": {"pod": "b"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{xa}/32"]}}]}],
            },
        )
    ]
    lab.apply([write_docs(tmp_path, docs)])
    want = {
        Cell("x/a", yb, 80): "deny",
        Cell("x/a", yb, 81, "udp"): "deny",
        Cell("x/b", yb, 80): "allow",
        Cell("z/c", yb, 81, "udp"): "allow",
    }
    assert _verdicts(lab, want) == want


def test_egress_to_service_after_dnat_and_dns(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    docs = [
        policy_doc(
            "x",
            "a-egress",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {"ns": "y"}},
                                "podSelector": {"matchLabels": {"pod": "b"}},
                            }
                        ],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    },
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                }
                            }
                        ],
                        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    },
                ],
            },
        )
    ]
    lab.apply([write_docs(tmp_path, docs)])
    syb, syc = service_ip(lab, "y/s-y-b"), service_ip(lab, "y/s-y-c")
    want = {
        Cell("x/a", syb, 80): "allow",  # through the ClusterIP: checked on the real endpoint (y/b)
        Cell("x/a", syb, 81): "deny",
        Cell("x/a", syc, 80): "deny",
        Cell("x/a", pod_ip(lab, "y/b"), 80): "allow",
        Cell("x/a", pod_ip(lab, "z/b"), 80): "deny",
        Cell("x/b", syc, 80): "allow",  # x/b's egress is not isolated
    }
    assert _verdicts(lab, want) == want
    # DNS egress: the resolver (ClusterIP 10.96.0.10, DNAT'd to a coredns pod in kube-system) answers
    res = lab.exec(
        "x/a",
        [
            "python3",
            "-I",
            "-S",
            "-c",
            "import socket; print(socket.gethostbyname('s-y-b.y.svc.cluster.local'))",
        ],
        timeout=15,
    )
    assert res.ok and res.stdout.strip() == syb, res
    # and without the DNS rule, the query is refused
    docs[0]["spec"]["egress"] = docs[0]["spec"]["egress"][:1]
    lab.apply([write_docs(tmp_path, docs)])
    res = lab.exec(
        "x/a",
        [
            "python3",
            "-I",
            "-S",
            "-c",
            "import socket; print(socket.gethostbyname('s-y-b.y.svc.cluster.local'))",
        ],
        timeout=30,
    )
    assert not res.ok


def test_conntrack_lets_replies_of_allowed_connections_back(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    docs = [
        policy_doc(
            "y",
            "a-in-from-xb-no-egress",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}
                ],
            },
        )
    ]
    lab.apply([write_docs(tmp_path, docs)])
    ya, xb = pod_ip(lab, "y/a"), pod_ip(lab, "x/b")
    tcp = probe(lab, Cell("x/b", ya, 80))
    assert tcp.verdict == "allow" and '"pod": "a"' in tcp.body  # the HTTP reply came back
    udp = probe(lab, Cell("z/b", ya, 81, "udp"))
    assert udp.verdict == "allow" and '"port": 81' in udp.body  # the UDP reply came back
    assert probe(lab, Cell("y/a", xb, 80)).verdict == "deny"  # y/a itself may not open anything
    assert probe(lab, Cell("x/c", ya, 80)).verdict == "deny"


_UDP_FROM_PORT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.settimeout(1.0)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"probe")
try:
    s.recv(2048)
    print("allow")
except (ConnectionRefusedError, TimeoutError, socket.timeout):
    print("deny")
"""


def _udp_from_port(lab: Lab, src: str, host: str, port: int, sport: int) -> str:
    res = lab.exec(src, ["python3", "-c", _UDP_FROM_PORT, host, str(port), str(sport)], timeout=10)
    return res.stdout.strip()


def test_a_new_deny_ends_udp_flows_seen_before(netpol_clean: Lab, tmp_path: Path) -> None:
    """A UDP flow allowed before a policy change must not ride its conntrack entry past a deny: the same
    source port, after a default-deny, is denied (the agent deletes the changed pods' UDP entries)."""
    lab = netpol_clean
    ya = pod_ip(lab, "y/a")
    assert _udp_from_port(lab, "x/b", ya, 80, 40123) == "allow"  # the flow now has a conntrack entry
    deny = policy_doc("y", "deny-all-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    lab.apply([write_docs(tmp_path, [deny])])
    assert _udp_from_port(lab, "x/b", ya, 80, 40123) == "deny"
    lab.delete([write_docs(tmp_path, [deny], "delete.yaml")])
    assert _udp_from_port(lab, "x/b", ya, 80, 40123) == "allow"


def test_label_changes_reconcile(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    docs = [
        policy_doc(
            "y",
            "a-from-clients",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]},
                    {"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]},
                ],
            },
        )
    ]
    lab.apply([write_docs(tmp_path, docs)])
    ya = pod_ip(lab, "y/a")
    cells = [Cell("x/c", ya, 80), Cell("z/a", ya, 81, "udp")]
    assert [probe(lab, c).verdict for c in cells] == ["deny", "deny"]
    lab.label("pod", "x/c", {"role": "client"})
    assert [probe(lab, c).verdict for c in cells] == ["allow", "deny"]
    lab.label("namespace", "z", {"team": "blue"})
    assert [probe(lab, c).verdict for c in cells] == ["allow", "allow"]
    lab.label("pod", "x/c", {"role": None})
    lab.label("namespace", "z", {"team": None})
    assert [probe(lab, c).verdict for c in cells] == ["deny", "deny"]
    # a pod label change through lab apply (kind Pod: labels only)
    pod_doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "c", "namespace": "x", "labels": {"role": "client"}},
    }
    out = lab.apply([write_docs(tmp_path, [pod_doc], "pod.yaml")])
    assert [o.action.value for o in out] == ["labeled"]
    assert probe(lab, cells[0]).verdict == "allow"


def test_pod_restart_keeps_name_andpolicy_doc(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    docs = [policy_doc("y", "deny-all", {"podSelector": {}})]
    lab.apply([write_docs(tmp_path, docs)])
    node = lab.require().pods["y/a"].node
    old_ip = pod_ip(lab, "y/a")
    new = lab.restart_pods(node)
    assert "y/a" in new  # the bare pod keeps its name
    ya = pod_ip(lab, "y/a")
    st = lab.require()
    assert ya != old_ip or st.pods["y/a"].container_id  # a new sandbox
    assert probe(lab, Cell("x/a", ya, 80)).verdict == "deny"
    lab.delete([write_docs(tmp_path, docs)])
    assert probe(lab, Cell("x/a", ya, 80)).verdict == "allow"


def test_policy_delete_restores_and_removes_kernel_objects(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    ya = pod_ip(lab, "y/a")
    docs = [
        policy_doc("y", "deny-all", {"podSelector": {}}),
        policy_doc(
            "y",
            "allow-b",
            {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]},
        ),
    ]
    lab.apply([write_docs(tmp_path, docs)])
    assert probe(lab, Cell("x/a", ya, 80)).verdict == "deny"
    st = lab.require()
    assert all(n.netpol.hooked for n in st.nodes.values())
    assert any(n.netpol.sets for n in st.nodes.values())
    out = lab.delete([write_docs(tmp_path, docs)])
    assert [o.action.value for o in out] == ["deleted", "deleted"]
    assert probe(lab, Cell("x/a", ya, 80)).verdict == "allow"
    for n in lab.require().nodes.values():
        ipt = sh.run(net.exec_argv(n.netns, ["iptables-save"])).stdout
        sets = sh.run(net.exec_argv(n.netns, ["ipset", "list", "-n"])).stdout
        assert "MNP-" not in ipt and "mnp-" not in sets, n.name
        assert n.netpol.times_ms and not n.netpol.hooked


def test_sctp_is_reported_unsupported(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    st = lab.require()
    sctp = next(c for c in st.capabilities if c.name == "sctp")
    assert not sctp.available and "SCTP" in sctp.detail
    # an SCTP-only allow rule programs nothing: the pod stays isolated for TCP and UDP
    docs = [
        policy_doc(
            "z",
            "sctp-only",
            {
                "podSelector": {"matchLabels": {"pod": "c"}},
                "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}],
            },
        )
    ]
    lab.apply([write_docs(tmp_path, docs)])
    zc = pod_ip(lab, "z/c")
    want = {Cell("x/a", zc, 80): "deny", Cell("x/a", zc, 80, "udp"): "deny"}
    assert _verdicts(lab, want) == want


def test_status_shows_policy_agent_and_reconcile_times(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    lab.apply([write_docs(tmp_path, [policy_doc("x", "deny", {"podSelector": {}})])])
    status = lab.status()
    for n in status["nodes"]:
        assert n["policy"]["agent"] == "felix" and n["policy"]["enforcing"]
        assert n["policy"]["last_ms"] is not None and n["policy"]["median_ms"] is not None
    assert [p["name"] for p in status["network_policies"]] == ["deny"]
    assert {"name": "x", "labels": {"ns": "x", "kubernetes.io/metadata.name": "x"}} in status["namespaces"]
    pod = next(p for p in status["pods"] if p["namespace"] == "x" and p["name"] == "a")
    assert pod["containers"] == ["cont-80-tcp", "cont-80-udp", "cont-81-tcp", "cont-81-udp"]


def test_lab_cluster_lists_namespaces_policies_and_container_ports(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    lab.apply([write_docs(tmp_path, [policy_doc("x", "deny", {"podSelector": {}})])])
    cluster = LabCluster(lab)
    names = {n.name: dict(n.labels) for n in cluster.list_namespaces()}
    assert names["y"] == {"ns": "y", "kubernetes.io/metadata.name": "y"}
    assert {"default", "kube-system", "kube-flannel", "x", "y", "z"} <= set(names)
    assert [p.key for p in cluster.list_network_policies()] == ["x/deny"]
    assert cluster.list_network_policies("y") == []
    pod = next(p for p in cluster.list_pods("x") if p.name == "a")
    assert {(c.name, c.port, c.protocol.value) for c in pod.container_ports} == {
        ("serve-80-tcp", 80, "TCP"),
        ("serve-81-tcp", 81, "TCP"),
        ("serve-80-udp", 80, "UDP"),
        ("serve-81-udp", 81, "UDP"),
    }
    assert pod.owner is None  # a bare pod


# ------------------------------------------------------------------------------------------ the CLI


@dataclass(frozen=True)
class CliOut:
    exit_code: int
    output: str


def _cli(lab: Lab, *args: str) -> CliOut:
    """``migrator lab ARGS --name LAB`` as a subprocess (exit codes mapped as for a user)."""
    res = run_migrator(
        "lab", *args, "--name", lab.name, env=migrator_env(Path(os.environ["MIGRATOR_HOME"]), COLUMNS="200")
    )
    return CliOut(res.returncode, res.stdout + res.stderr)


def test_cli_bad_document_names_file_document_and_field_and_applies_nothing(
    netpol_clean: Lab, tmp_path: Path
) -> None:
    lab = netpol_clean
    good = policy_doc("y", "deny-all", {"podSelector": {}})
    bad = policy_doc(
        "y", "bad", {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}
    )
    path = write_docs(tmp_path, [good, bad], "two.yaml")
    res = _cli(lab, "apply", "-f", str(path))
    assert res.exit_code == 2, res.output
    assert "two.yaml" in res.output and "document 2" in res.output and "protocol" in res.output
    assert lab.require().policies == {}  # the good first document was not applied either
    unknown = write_docs(
        tmp_path, [good, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}], "k.yaml"
    )
    res = _cli(lab, "apply", "-f", str(unknown))
    assert res.exit_code == 2 and "document 2" in res.output and "kind" in res.output, res.output
    pod_spec = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"containers": []},
    }
    res = _cli(lab, "apply", "-f", str(write_docs(tmp_path, [pod_spec], "pod.yaml")))
    assert res.exit_code == 2 and "spec" in res.output and "only change metadata.labels" in res.output, (
        res.output
    )
    missing_ns = policy_doc("nope", "p", {"podSelector": {}})
    res = _cli(lab, "apply", "-f", str(write_docs(tmp_path, [missing_ns], "ns.yaml")))
    assert res.exit_code == 2 and "metadata.namespace" in res.output and "nope" in res.output, res.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Namespace\n---\nkind: [unclosed\n")
    res = _cli(lab, "apply", "-f", str(broken))
    assert res.exit_code == 2 and "broken.yaml" in res.output and "document 2" in res.output, res.output
    res = _cli(lab, "delete", "-f", str(write_docs(tmp_path, [good], "del.yaml")))
    assert res.exit_code == 2 and "not found" in res.output, res.output
    assert lab.require().policies == {}


def test_cli_apply_delete_label_and_json(netpol_clean: Lab, tmp_path: Path) -> None:
    lab = netpol_clean
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "w", "labels": {"ns": "w"}}},
        policy_doc("w", "deny", {"podSelector": {}}),
    ]
    path = write_docs(tmp_path, docs)
    res = _cli(lab, "apply", "-f", str(path), "-o", "json", "--dry-run")  # validated, nothing changed
    assert res.exit_code == 0, res.output
    assert [o["action"] for o in json.loads(res.output)] == ["created", "created"]
    assert all(o["dry_run"] for o in json.loads(res.output))
    assert "w" not in lab.require().namespaces and lab.require().policies == {}
    res = _cli(lab, "apply", "-f", str(path), "-o", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [
        {"kind": "Namespace", "key": "w", "action": "created"},
        {"kind": "NetworkPolicy", "key": "w/deny", "action": "created"},
    ]
    res = _cli(lab, "label", "namespace", "w", "team=red")
    assert res.exit_code == 0 and "namespace/w labeled" in res.output, res.output
    assert lab.require().namespaces["w"].labels == {
        "ns": "w",
        "team": "red",
        "kubernetes.io/metadata.name": "w",
    }
    res = _cli(lab, "label", "pod", "-n", "x", "a", "extra=1")
    assert res.exit_code == 0 and "pod/x/a labeled" in res.output, res.output
    res = _cli(lab, "label", "pod", "x/a", "extra-")
    assert res.exit_code == 0 and "extra" not in lab.require().pods["x/a"].labels
    res = _cli(lab, "label", "pod", "x/nope", "k=v")
    assert res.exit_code == 2 and "not found" in res.output
    res = _cli(lab, "label", "namespace", "w", "bad key=v")
    assert res.exit_code == 2 and "invalid label key" in res.output, res.output
    res = _cli(lab, "delete", "-f", str(path))
    assert res.exit_code == 0 and "namespace/w deleted" in res.output, res.output
    assert "w" not in lab.require().namespaces and lab.require().policies == {}


def test_drain_moves_bare_pods_under_their_names_and_policy_follows(
    netpol_clean: Lab, tmp_path: Path
) -> None:
    """Runs last on the shared lab (it leaves the pods on two nodes, the drained one uncordoned)."""
    lab = netpol_clean
    docs = [
        policy_doc(
            "y",
            "a-from-x-only",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
            },
        )
    ]
    lab.apply([write_docs(tmp_path, docs)])
    node = lab.require().pods["y/a"].node
    try:
        evicted, _skipped = lab.drain(node, timeout=60)
        assert "y/a" in evicted
        st = lab.require()
        assert st.pods["y/a"].node != node  # same name, another node
        ya = pod_ip(lab, "y/a")
        want = {Cell("x/b", ya, 80): "allow", Cell("z/b", ya, 80): "deny", Cell("z/c", ya, 81, "udp"): "deny"}
        assert _verdicts(lab, want) == want
        # the drained node has no chain left for the pods that left it
        moved = set(evicted)
        chains = sh.run(net.exec_argv(st.nodes[node].netns, ["iptables-save"])).stdout
        assert all(pod_chain("I", k) not in chains for k in moved)
    finally:
        lab.set_schedulable(node, True)


# ------------------------------------------------------------------------------------- flannel, down


def test_flannel_node_does_not_enforce_bookinfo_with_netpol_and_down_leaves_nothing(
    migrator_home: Path, tmp_path: Path
) -> None:
    name = f"npf{os.getpid() % 1000}"
    flab = Lab(name)
    try:
        flab.up(
            LabSpec(
                name=name,
                nodes=2,
                cni=CniKind.FLANNEL,
                pods_per_node=0,
                app=(AppKind.BOOKINFO, AppKind.NETPOL),
                underlay=FLANNEL_UNDERLAY,
            )
        )
        flab.apply([write_docs(tmp_path, [policy_doc("y", "deny-all", {"podSelector": {}})])])
        st = flab.require()
        assert {"default/productpage", "y/s-y-a"} <= set(st.services)  # both apps
        assert any(p.labels.get("app") == "productpage" for p in st.pods.values()) and "z/c" in st.pods
        assert all(n.netpol.agent is None and not n.netpol.hooked for n in st.nodes.values())
        assert (
            probe(flab, Cell("x/a", pod_ip(flab, "y/a"), 80)).verdict == "allow"
        )  # flannel: no NetworkPolicy
        assert all(not n["policy"]["enforcing"] for n in flab.status()["nodes"])
    finally:
        res = flab.down()
    assert not res.leftovers, res.leftovers
    assert not host_traces(name, migrator_home / "labs" / name)
    host_sets = subprocess.run(
        ["ipset", "list", "-n"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    assert "mnp-" not in host_sets
    host_ipt = subprocess.run(
        ["iptables-save"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    assert "MNP-" not in host_ipt
