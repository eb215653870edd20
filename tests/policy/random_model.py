"""A seeded random cluster of pods, namespaces and NetworkPolicies (for the agreement test and the bench).

Policies are made as plain objects and go through :func:`parse_network_policy`, so they are valid. The mix:
pod selectors (matchLabels, every operator), namespace selectors, both in one peer, ipBlocks with excepts
over the pod range and outside it, numeric ports, endPort ranges, named ports (also of the wrong
protocol), protocol-only ports, empty rules, default-deny, Ingress/Egress/both policyTypes; a few
host-network pods and pods without an IP.
"""

from __future__ import annotations

import random
from typing import Any

from migrator.policy.model import (
    ContainerPort,
    Namespace,
    NetworkPolicy,
    PolicyPod,
    Protocol,
    parse_network_policy,
)

APPS = ("web", "api", "db", "cache", "queue", "auth")
TIERS = ("front", "back", "data")
ENVS = ("prod", "dev")
NAMED = (
    ContainerPort(80, Protocol.TCP, "http"),
    ContainerPort(443, Protocol.TCP, "https"),
    ContainerPort(53, Protocol.UDP, "dns"),
    ContainerPort(8080, Protocol.TCP, "alt"),
)
PROBE_PORTS = (
    (80, Protocol.TCP),
    (443, Protocol.TCP),
    (53, Protocol.UDP),
    (8080, Protocol.TCP),
    (81, Protocol.UDP),
)


def make_pods(rnd: random.Random, n_pods: int, n_namespaces: int) -> tuple[list[Namespace], list[PolicyPod]]:
    namespaces = [
        Namespace(f"ns{k}", {"team": rnd.choice(("red", "blue", "green")), "env": rnd.choice(ENVS)})
        for k in range(n_namespaces)
    ]
    pods = []
    for i in range(n_pods):
        ns = namespaces[i % n_namespaces].name
        labels = {"app": rnd.choice(APPS), "tier": rnd.choice(TIERS)}
        if rnd.random() < 0.5:
            labels["env"] = rnd.choice(ENVS)
        ports = tuple(p for p in NAMED if rnd.random() < 0.6)
        host = rnd.random() < 0.02
        ip: str | None = f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"
        if rnd.random() < 0.01:
            ip = None
        elif host:
            ip = f"192.168.0.{i % 250 + 1}"
        pods.append(PolicyPod(ns, f"p{i}", labels, ip, ports, host_network=host))
    return namespaces, pods


def _selector(rnd: random.Random) -> dict[str, Any]:
    roll = rnd.random()
    if roll < 0.15:
        return {}
    if roll < 0.55:
        return {"matchLabels": {"app": rnd.choice(APPS)}}
    op = rnd.choice(("In", "NotIn", "Exists", "DoesNotExist"))
    key = rnd.choice(("app", "tier", "env"))
    expr: dict[str, Any] = {"key": key, "operator": op}
    if op in ("In", "NotIn"):
        pool = {"app": APPS, "tier": TIERS, "env": ENVS}[key]
        expr["values"] = rnd.sample(pool, rnd.randint(1, 2))
    out: dict[str, Any] = {"matchExpressions": [expr]}
    if rnd.random() < 0.3:
        out["matchLabels"] = {"tier": rnd.choice(TIERS)}
    return out


def _ns_selector(rnd: random.Random, n_namespaces: int) -> dict[str, Any]:
    roll = rnd.random()
    if roll < 0.2:
        return {}
    if roll < 0.6:
        return {"matchLabels": {"kubernetes.io/metadata.name": f"ns{rnd.randrange(n_namespaces)}"}}
    if roll < 0.8:
        return {"matchLabels": {"team": rnd.choice(("red", "blue", "green"))}}
    return {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}


def _peer(rnd: random.Random, n_namespaces: int) -> dict[str, Any]:
    roll = rnd.random()
    if roll < 0.35:
        return {"podSelector": _selector(rnd)}
    if roll < 0.55:
        return {"namespaceSelector": _ns_selector(rnd, n_namespaces)}
    if roll < 0.8:
        return {"podSelector": _selector(rnd), "namespaceSelector": _ns_selector(rnd, n_namespaces)}
    if rnd.random() < 0.2:
        return {"ipBlock": {"cidr": "192.168.0.0/24"}}
    third = rnd.randrange(4)
    block: dict[str, Any] = {"cidr": f"10.64.{third}.0/24"}
    if rnd.random() < 0.5:
        block["except"] = [f"10.64.{third}.{rnd.randrange(0, 256, 16)}/28"]
    if rnd.random() < 0.2:
        block = {"cidr": "10.64.0.0/14", "except": ["10.64.1.0/24"]}
    return {"ipBlock": block}


def _port(rnd: random.Random) -> dict[str, Any]:
    roll = rnd.random()
    if roll < 0.35:
        return {"port": rnd.choice((80, 443, 8080, 81))}
    if roll < 0.5:
        return {"protocol": "UDP", "port": rnd.choice((53, 81))}
    if roll < 0.65:
        start = rnd.choice((70, 440, 8000))
        return {"port": start, "endPort": start + rnd.randint(0, 100)}
    if roll < 0.85:
        name = rnd.choice(("http", "https", "dns", "alt"))
        proto = "UDP" if name == "dns" else "TCP"
        if rnd.random() < 0.15:
            proto = "UDP" if proto == "TCP" else "TCP"  # a named port of the wrong protocol matches nothing
        return {"protocol": proto, "port": name}
    return {"protocol": rnd.choice(("TCP", "UDP"))}


def _rule(rnd: random.Random, peers_key: str, n_namespaces: int) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if rnd.random() < 0.85:
        rule[peers_key] = [_peer(rnd, n_namespaces) for _ in range(rnd.randint(1, 3))]
    if rnd.random() < 0.7:
        rule["ports"] = [_port(rnd) for _ in range(rnd.randint(1, 2))]
    return rule


def make_policies(rnd: random.Random, n_policies: int, n_namespaces: int) -> list[NetworkPolicy]:
    out = []
    for k in range(n_policies):
        spec: dict[str, Any] = {"podSelector": _selector(rnd)}
        kind = rnd.random()
        if kind < 0.45 or kind >= 0.8:
            spec["ingress"] = [_rule(rnd, "from", n_namespaces) for _ in range(rnd.choice((0, 1, 1, 2, 3)))]
        if kind >= 0.45:
            spec["egress"] = [_rule(rnd, "to", n_namespaces) for _ in range(rnd.choice((0, 1, 1, 2)))]
            if "ingress" in spec or rnd.random() < 0.5:
                spec["policyTypes"] = ["Ingress", "Egress"] if "ingress" in spec else ["Egress"]
        obj = {
            "metadata": {"name": f"pol-{k}", "namespace": f"ns{rnd.randrange(n_namespaces)}"},
            "spec": spec,
        }
        out.append(parse_network_policy(obj, where=f"random policy {k}"))
    return out


def make_world(
    seed: int, n_pods: int, n_policies: int, n_namespaces: int
) -> tuple[list[NetworkPolicy], list[Namespace], list[PolicyPod]]:
    rnd = random.Random(seed)
    namespaces, pods = make_pods(rnd, n_pods, n_namespaces)
    return make_policies(rnd, n_policies, n_namespaces), namespaces, pods
