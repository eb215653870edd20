"""Benchmark: a changed NetworkPolicy enforced on every node of the lab (target: median <= 1 s).

Builds a 3-node calico lab with the netpol app (its own name and underlay), then makes ``--changes``
policy changes (alternately a default-deny ingress in namespace y applied, and deleted) and measures,
for each, the time from ``Lab.apply``/``Lab.delete`` (the ``lab apply``/``lab delete`` path, in this
process) until TCP probes to a y pod on *every* node (y/a, y/b, y/c sit on three different nodes) see
the new verdict (deny = the REJECT's reset; allow = connect). Probes go through the lab's prober (sockets
opened inside the source pods' namespaces), every 10 ms, bounded by ``--deadline`` seconds per change.

Also measured in the same run, on the same lab and the same rules: the agent's atomic programming (one
``ipset restore`` + one ``iptables-restore`` per node, nodes in parallel) against the naive way (nodes one
after the other, one ``iptables``/``ipset`` command per rule and per entry). Prints medians and the ratio.

    python bench/netpol_reconcile.py [--changes 12] [--underlay 198.18.31.0/24]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from migrator.lab import net, netpol, sh
from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, CniKind, LabSpec
from migrator.lab.state import LabState
from migrator.ports import ProbeKind, ProbeProtocol, ProbeTarget
from migrator.targets.lab.prober import LabProber

DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "bench-deny", "namespace": "y"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
SOURCES = {"y/a": "x/a", "y/b": "x/b", "y/c": "x/c"}


def _targets(st: LabState) -> list[ProbeTarget]:
    out = []
    for dst, src in SOURCES.items():
        ip = st.pods[dst].ip
        assert ip
        out.append(
            ProbeTarget(
                source=src,
                dest=dst,
                kind=ProbeKind.POLICY,
                host=ip,
                port=80,
                protocol=ProbeProtocol.TCP,
                timeout=0.5,
            )
        )
    return out


def _wait_verdict(
    prober: LabProber, targets: list[ProbeTarget], allowed: bool, deadline: float
) -> float | None:
    """Seconds until every target shows ``allowed`` (ok) or a deny (refused/reset), else ``None``."""
    t0 = time.monotonic()
    pending = list(targets)
    for _ in range(10_000):  # bounded in count, and in time below
        results = prober.probe(pending)
        pending = [
            t
            for t, r in zip(pending, results, strict=True)
            if not (r.ok if allowed else (not r.ok and (r.error or "").split(":")[0] in ("refused", "reset")))
        ]
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() - t0 > deadline:
            return None
        time.sleep(0.01)
    return None


def _naive_apply(st: LabState, per_node: dict[str, netpol.NodeRules]) -> float:
    """The naive way: node after node, one command per set entry and per rule (then everything removed)."""
    t0 = time.monotonic()
    for name, nr in per_node.items():
        ns = st.nodes[name].netns
        for s in nr.sets.values():
            sh.run(net.exec_argv(ns, ["ipset", "create", s.name + "n", s.kind, "family", "inet", "-exist"]))
            for e in s.entries:
                sh.run(net.exec_argv(ns, ["ipset", "add", s.name + "n", *e.split(), "-exist"]))
        chains = ["NAIVE-" + c[4:] for c in (*netpol.TOP_CHAINS, *nr.chains)]
        for c in chains:
            sh.run(net.exec_argv(ns, ["iptables", "-N", c]), check=False)
        for line in nr.rules:
            parts = line.split(" ", 2)
            chain = "NAIVE-" + parts[1][4:]
            rest = parts[2].replace("-j MNP-", "-j NAIVE-")
            rest = " ".join(w + "n" if w.startswith(netpol.SET_PREFIX) else w for w in rest.split(" "))
            # the comment is one quoted word in the restore format; split on spaces outside quotes
            argv = ["iptables", "-A", chain, *_split(rest)]
            sh.run(net.exec_argv(ns, argv))
    elapsed = time.monotonic() - t0
    for name, nr in per_node.items():  # clean up (not timed)
        ns = st.nodes[name].netns
        for c in ["NAIVE-" + c[4:] for c in (*netpol.TOP_CHAINS, *nr.chains)]:
            sh.run(net.exec_argv(ns, ["iptables", "-F", c]), check=False)
        for c in ["NAIVE-" + c[4:] for c in (*netpol.TOP_CHAINS, *nr.chains)]:
            sh.run(net.exec_argv(ns, ["iptables", "-X", c]), check=False)
        for s in nr.sets.values():
            sh.run(net.exec_argv(ns, ["ipset", "destroy", s.name + "n"]), check=False)
    return elapsed


def _split(text: str) -> list[str]:
    out: list[str] = []
    cur = ""
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=12)
    ap.add_argument("--underlay", default="198.18.31.0/24")
    ap.add_argument("--deadline", type=float, default=10.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    os.environ.setdefault("MIGRATOR_HOME", tempfile.mkdtemp(prefix="np-bench-"))
    name = "npbench"
    lab = Lab(name)
    tmp = Path(tempfile.mkdtemp(prefix="np-bench-files-"))
    deny_file = tmp / "deny.yaml"
    deny_file.write_text(yaml.safe_dump(DENY))
    # a bigger policy set for the programming comparison: every namespace isolated, pods allowed by label
    many = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"p{i}", "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": {"pod": pod}},
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": other}}}],
                        "ports": [{"port": 80 + (i % 2)}, {"port": "serve-81-udp", "protocol": "UDP"}],
                    },
                    {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"10.244.{i % 3}.0/28"]}}]},
                ],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": ns}}}]}],
                "policyTypes": ["Ingress", "Egress"],
            },
        }
        for i, (ns, pod, other) in enumerate(
            (ns, pod, other) for ns in "xyz" for pod in "abc" for other in "abc" if other != pod
        )
    ]
    many_file = tmp / "many.yaml"
    many_file.write_text(yaml.safe_dump_all(many))
    rss: list[int] = []
    try:
        t0 = time.monotonic()
        lab.up(
            LabSpec(
                name=name,
                nodes=3,
                cni=CniKind.CALICO,
                pods_per_node=0,
                app=(AppKind.NETPOL,),
                underlay=args.underlay,
            )
        )
        print(f"lab up (3 nodes, calico, netpol app): {time.monotonic() - t0:.1f} s")
        st = lab.require()
        prober = LabProber(lab.netns_map(st), retries=0)
        targets = _targets(st)
        nodes_of = sorted({st.pods[d].node for d in SOURCES})
        print(f"destinations y/a, y/b, y/c on nodes {', '.join(nodes_of)}")
        assert _wait_verdict(prober, targets, True, args.deadline) is not None, "pods not reachable before"
        enforce: list[float] = []
        reconcile: list[float] = []
        failed = 0
        for i in range(args.changes):
            applying = i % 2 == 0
            t_start = time.monotonic()
            if applying:
                lab.apply([deny_file])
            else:
                lab.delete([deny_file])
            t_applied = time.monotonic() - t_start
            seen = _wait_verdict(prober, targets, not applying, args.deadline)
            if seen is None:
                failed += 1
                print(
                    f"change {i + 1}: {'apply' if applying else 'delete'}: NOT seen within {args.deadline}s"
                )
                continue
            enforce.append(t_applied + seen)
            reconcile.append(t_applied)
            print(
                f"change {i + 1:2d}: {'apply ' if applying else 'delete'}  "
                f"returned {t_applied * 1000:6.1f} ms, "
                f"new verdict on every node {(t_applied + seen) * 1000:6.1f} ms"
            )
        st = lab.require()
        node_medians = {
            n.name: statistics.median(n.netpol.times_ms) for n in st.nodes.values() if n.netpol.times_ms
        }

        # programming: the agent's atomic restore vs the naive way, same rules, same run
        lab.apply([many_file])
        st = lab.require()
        m = netpol.model(st)
        pods = netpol.live_pods(st)
        per_node = {
            n.name: netpol.render_node(
                [m.pod_rules(netpol.policy_pod(p)) for p in pods if p.node == n.name and not p.host_network]
            )
            for n in st.nodes.values()
        }
        n_rules = sum(len(nr.rules) for nr in per_node.values())
        n_entries = sum(len(s.entries) for nr in per_node.values() for s in nr.sets.values())
        agent_times = []
        for _ in range(5):
            t1 = time.monotonic()
            lab.reconcile_policies()
            agent_times.append(time.monotonic() - t1)
        naive_times = [_naive_apply(st, per_node) for _ in range(3)]
        lab.delete([many_file])
        rss = [sh.rss_kb(c.pid) for k, p in st.pods.items() if k[0] in "xyz" for c in p.containers if c.pid]
    finally:
        res = lab.down()
        if res.leftovers:
            print(f"lab down left: {res.leftovers}")
    if not enforce:
        print("no change was seen enforced")
        return 1
    med = statistics.median(enforce)
    print()
    print(f"changes: {len(enforce)} seen, {failed} not seen")
    print(
        f"enforced on every node: median {med * 1000:.1f} ms, max {max(enforce) * 1000:.1f} ms "
        "(target <= 1000 ms)"
    )
    print(f"lab apply/delete returned (reconcile done): median {statistics.median(reconcile) * 1000:.1f} ms")
    print(
        "agent reconcile per node (median of its kept times): "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in node_medians.items())
    )
    a, b = statistics.median(agent_times), statistics.median(naive_times)
    print(
        f"programming {len(many)} policies ({n_rules} rules, {n_entries} set entries over 3 nodes): "
        f"agent (atomic restore, nodes in parallel, model included) median {a * 1000:.1f} ms; "
        f"naive (one command per rule/entry, node after node) median {b * 1000:.1f} ms; ratio {b / a:.1f}x"
    )
    print(
        "netpol pod servers (one process per pod, 4 ports): "
        f"RSS median {statistics.median(rss or [0]) / 1024:.1f} MiB"
    )
    return 0 if med <= 1.0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
