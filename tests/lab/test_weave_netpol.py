"""weave-npc in the lab: NetworkPolicy on a 3-node ``--cni weave`` lab with the e2e netpol model, enforced by
the lab's policy agent under weave-npc's names (``WEAVE-NPC*`` chains, ``weave-*`` ipsets), on bridged
traffic (same node) and across the L2 overlay; a few upstream e2e cases cell by cell."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, CniKind, LabSpec
from tests.lab.conftest import policies_reset, unique_lab
from tests.lab.netpol_probe import Cell, pod_ip, policy_doc, probe_grouped, run_case, write_docs
from tests.policy.e2e_cases import CASES, Case

pytestmark = pytest.mark.lab
# default-deny ingress, a namespaceSelector allow, an updated pod label, egress deny of a namespace, an
# ipBlock egress rule with except, UDP-only
PICKED = ("L120", "L224", "L640", "L722", "L1019", "L1182")
WEAVE_CASES = [c for c in CASES if c.id in PICKED]


@pytest.fixture(scope="module")
def weave_netpol_lab(migrator_home: Path) -> Iterator[Lab]:
    name, underlay = unique_lab("wn")
    lab = Lab(name)
    try:
        spec = LabSpec(
            name=name, nodes=3, cni=CniKind.WEAVE, pods_per_node=0, app=(AppKind.NETPOL,), underlay=underlay
        )
        lab.up(spec)
        yield lab
    finally:
        res = lab.down()
        assert not res.leftovers, res.leftovers


@pytest.fixture()
def weave_clean(weave_netpol_lab: Lab, tmp_path: Path) -> Iterator[Lab]:
    with policies_reset(weave_netpol_lab, tmp_path) as lab:
        yield lab


def test_the_picked_cases_exist() -> None:
    assert sorted(c.id for c in WEAVE_CASES) == sorted(PICKED)


def test_weave_npc_programs_its_own_names(weave_clean: Lab, tmp_path: Path) -> None:
    lab = weave_clean
    deny = policy_doc(
        "x", "deny-to-a", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]}
    )
    allow = policy_doc(
        "x",
        "b-to-a",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        },
    )
    lab.apply([write_docs(tmp_path, [deny, allow])])
    st = lab.require()
    a = st.pods["x/a"]
    rules = lab.exec(a.node, ["iptables", "-S"]).stdout
    assert "-A FORWARD -j WEAVE-NPC" in rules and "-A INPUT -j WEAVE-NPC-EGRESS" in rules
    assert "-N WEAVE-NPC-I-" in rules and "MNP-" not in rules
    sets = lab.exec(a.node, ["ipset", "list", "-n"]).stdout.split()
    assert any(s.startswith("weave-") for s in sets) and not any(s.startswith("mnp-") for s in sets)
    assert st.nodes[a.node].netpol.engine == "weave-npc"
    same = next(p for p in st.pods.values() if p.node == a.node and p.namespace in "yz" and p.ip)
    other = next(p for p in st.pods.values() if p.node != a.node and p.namespace in "yz" and p.ip)
    cells = [Cell(src.key, pod_ip(lab, "x/a"), 80) for src in (same, other, st.pods["x/b"])]
    seen = probe_grouped(lab, cells)
    assert [seen[c].verdict for c in cells] == ["deny", "deny", "allow"]  # bridged, over the overlay, allowed


@pytest.mark.parametrize("case", WEAVE_CASES, ids=[c.id for c in WEAVE_CASES])
def test_weave_npc_e2e_case(weave_clean: Lab, tmp_path: Path, case: Case) -> None:
    run_case(weave_clean, tmp_path, case)
