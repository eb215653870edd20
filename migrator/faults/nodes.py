"""Faults on nodes through the target's node executor (Ansible playbooks ``fault-*.yml``, run by
:func:`migrator.playbooks.run_playbook`; callers get the executor with ``Target.node_executor``).

- :func:`gather_facts`: kernel features, interfaces, SSH path and fault records of each node (read-only);
- :func:`inject`: install :class:`~migrator.faults.spec.FaultPlan` s, each with its record and detached
  expiry timer; returns the record and the tc/iptables readback (evidence) per node;
- :func:`revert`: revert faults by id (or all) now; returns the readback after and the drift per node;
- :func:`list_faults`: the records of every node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.faults.spec import FaultPlan, NodeFacts, SshPath
from migrator.playbooks import run_playbook
from migrator.ports import Node, NodeExecutor

EventCallback = Callable[[Mapping[str, Any]], None]
FACT = "migrator_fault"
NEEDS_EXECUTOR = "faults need one"
"""What ``Target.node_executor`` says a fault needs the executor for."""


def collect(
    executor: NodeExecutor,
    playbook: str,
    hosts: Sequence[str],
    *,
    data_dir: Path,
    extra_vars: Mapping[str, Any] | None = None,
    facts: Sequence[str] = (FACT,),
    cancel: threading.Event | None = None,
    on_event: EventCallback | None = None,
    timeout: float = 120.0,
    become: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run ``playbook`` on ``hosts`` and return ``{host: {fact: value}}`` for the ``migrator_*`` facts set."""
    run = run_playbook(
        executor,
        playbook,
        hosts,
        data_dir=data_dir,
        extra_vars=extra_vars,
        become=become,
        timeout=timeout,
        cancel=cancel,
        on_event=on_event,
    )
    out: dict[str, dict[str, Any]] = {}
    for name in facts:
        for host, value in run.fact(name).items():
            out.setdefault(host, {})[name] = value
    return out


def gather_facts(
    executor: NodeExecutor,
    nodes: Sequence[Node],
    *,
    data_dir: Path,
    cancel: threading.Event | None = None,
    on_event: EventCallback | None = None,
    become: bool = False,
) -> dict[str, NodeFacts]:
    raw = collect(
        executor,
        "fault-facts.yml",
        [n.name for n in nodes],
        data_dir=data_dir,
        facts=("migrator_kernel_features", FACT),
        cancel=cancel,
        on_event=on_event,
        become=become,
    )
    result: dict[str, NodeFacts] = {}
    for node in nodes:
        got = raw.get(node.name, {})
        fault = got.get(FACT) or {}
        ssh = fault.get("ssh")
        result[node.name] = NodeFacts(
            name=node.name,
            address=node.address,
            interfaces={str(k): list(v) for k, v in (fault.get("interfaces") or {}).items()},
            ssh=SshPath(str(ssh["client"]), str(ssh["server"]), int(ssh["server_port"]))
            if isinstance(ssh, dict)
            else None,
            features=dict(got.get("migrator_kernel_features") or {}),
        )
    return result


@dataclass
class NodeOutcome:
    node: str
    record: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    before: dict[str, str] = field(default_factory=dict)  # inject: the readback just before the install
    drift: list[str] = field(default_factory=list)
    reverted: list[str] = field(default_factory=list)


def inject(
    executor: NodeExecutor,
    plans: Sequence[FaultPlan],
    ttl: int,
    *,
    data_dir: Path,
    cancel: threading.Event | None = None,
    on_event: EventCallback | None = None,
    become: bool = False,
    heartbeat: str | None = None,
    lease: int = 0,
) -> dict[str, NodeOutcome]:
    specs = {p.node: p.spec(ttl, heartbeat=heartbeat, lease=lease) for p in plans}
    raw = collect(
        executor,
        "fault-inject.yml",
        list(specs),
        data_dir=data_dir,
        extra_vars={"fault_specs": specs},
        cancel=cancel,
        on_event=on_event,
        become=become,
    )
    out: dict[str, NodeOutcome] = {}
    for node in specs:
        fact = raw.get(node, {}).get(FACT) or {}
        out[node] = NodeOutcome(
            node=node,
            record=dict(fact.get("record") or {}),
            evidence=dict(fact.get("evidence") or {}),
            before=dict(fact.get("before") or {}),
        )
    return out


def revert(
    executor: NodeExecutor,
    nodes: Sequence[str],
    *,
    ids: Sequence[str] = (),
    everything: bool = False,
    data_dir: Path,
    cancel: threading.Event | None = None,
    on_event: EventCallback | None = None,
    become: bool = False,
) -> dict[str, NodeOutcome]:
    raw = collect(
        executor,
        "fault-revert.yml",
        list(nodes),
        data_dir=data_dir,
        extra_vars={"fault_ids": list(ids), "fault_all": everything},
        cancel=cancel,
        on_event=on_event,
        become=become,
    )
    out: dict[str, NodeOutcome] = {}
    for node in nodes:
        fact = raw.get(node, {}).get(FACT) or {}
        evidence: dict[str, str] = {}
        for per_id in (fact.get("evidence") or {}).values():
            evidence.update(per_id)
        out[node] = NodeOutcome(
            node=node,
            evidence=evidence,
            drift=[str(d) for d in fact.get("drift") or []],
            reverted=[str(i) for i in fact.get("reverted") or []],
        )
    return out


def list_faults(
    executor: NodeExecutor,
    nodes: Sequence[str],
    *,
    data_dir: Path,
    cancel: threading.Event | None = None,
    become: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    raw = collect(executor, "fault-list.yml", list(nodes), data_dir=data_dir, cancel=cancel, become=become)
    return {node: list((raw.get(node, {}).get(FACT) or {}).get("faults") or []) for node in nodes}


def relevant(evidence: Mapping[str, str], plan_meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """The readback lines that concern one fault (its chain/comment, its qdisc), per command."""
    keys = [str(plan_meta[k]) for k in ("comment", "chain", "qdisc_handle", "interface") if plan_meta.get(k)]
    out: dict[str, list[str]] = {}
    for cmd, text in evidence.items():
        if cmd.startswith("tc ") or cmd.startswith("ip "):
            out[cmd] = [line for line in text.splitlines() if line.strip()]
            continue
        out[cmd] = [line for line in text.splitlines() if any(k in line for k in keys)]
    return out
