"""What a CNI driver is: :class:`CniDriver` (detection from plain objects, the agent's DaemonSet, the node
leftovers and the vars of the node playbooks), with the pieces every driver uses.

A driver holds what is specific to one CNI; the registry (:mod:`migrator.cni.drivers`) lists them. Targets
call the drivers; actions and checks ask the registry, never switch on CNI names.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from migrator.cni.info import CalicoPool, CniKind, CniNode, FlannelConfig

Obj = Mapping[str, Any]
ConfigMaps = Mapping[tuple[str, str], Obj]
"""ConfigMap objects by (namespace, name)."""

BLOCKING_CONFLIST = "00-migrator-blocking.conflist"
"""The CNI config ``cni-switch-teardown.yml`` installs while a node is between two CNIs (sorted first, its
plugin does not exist: no pod is wired); the switch playbook removes it once the new CNI is ready."""


@dataclass(frozen=True)
class AgentRef:
    """A CNI's node agent: the DaemonSet a migration installs, restricts and removes. ``name`` is how
    messages and :attr:`CniInfo.agents <migrator.cni.info.CniInfo.agents>` call it."""

    name: str
    namespace: str
    daemonset: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.daemonset}"


@dataclass(frozen=True)
class NodeLeftovers:
    """What a CNI leaves on a node: interfaces, iptables chain prefixes, CNI config files, other files,
    ipsets (by name prefix) and iptables rules of built-in chains naming its interfaces (``-i``/``-o``:
    Weave Net puts its FORWARD accepts there, in no chain of its own).

    ``chain_owner`` is how ``node-facts.yml`` groups the CNI's chains; ``file_facts`` maps a node fact that
    is set when a file is still there to that file."""

    links: tuple[str, ...]
    chain_prefixes: tuple[str, ...]
    chain_owner: str
    cni_files: tuple[str, ...]
    extra_files: tuple[str, ...] = ()
    file_facts: Mapping[str, str] = field(default_factory=dict)
    ipset_prefixes: tuple[str, ...] = ()
    rule_interfaces: tuple[str, ...] = ()

    def teardown_vars(self) -> dict[str, Any]:
        """The vars of ``cni-switch-teardown.yml`` that remove all of it (``ipset_prefixes`` and
        ``rule_interfaces`` only when the CNI has some: the playbook defaults them to none)."""
        out: dict[str, Any] = {
            "links": list(self.links),
            "chain_prefixes": list(self.chain_prefixes),
            "cni_files": list(self.cni_files),
            "extra_files": list(self.extra_files),
        }
        if self.ipset_prefixes:
            out["ipset_prefixes"] = list(self.ipset_prefixes)
        if self.rule_interfaces:
            out["rule_interfaces"] = list(self.rule_interfaces)
        return out

    def on_hosts(self, facts: Mapping[str, Any], hosts: Sequence[str]) -> dict[str, list[str]]:
        """Per host with something left: what (``facts``: ``{host: migrator_node_facts}``)."""
        out = {host: self.found(facts.get(host)) for host in hosts}
        return {host: found for host, found in out.items() if found}

    def found(self, facts: Any) -> list[str]:
        """What is still there on a node, from its ``migrator_node_facts`` (``no node facts`` without)."""
        if not isinstance(facts, Mapping):
            return ["no node facts"]
        found = [f"device {i['name']}" for i in facts.get("interfaces", []) if i.get("name") in self.links]
        found += [
            f"file {x['name']}"
            for x in facts.get("cni", {}).get("files", [])
            if x.get("name") in (*self.cni_files, BLOCKING_CONFLIST)
        ]
        for table, chains in facts.get("iptables", {}).get("chains", {}).get(self.chain_owner, {}).items():
            found += [f"chain {table}/{c}" for c in chains]
        found += [f"file {path}" for fact, path in self.file_facts.items() if facts.get(fact)]
        found += [
            f"ipset {name}"
            for name in (facts.get("ipsets") or {}).get("names", [])
            if str(name).startswith(self.ipset_prefixes) and self.ipset_prefixes
        ]
        on_ifaces = facts.get("iptables", {}).get("interface_rules", {})
        found += [f"{on_ifaces[i]} iptables rule(s) on {i}" for i in self.rule_interfaces if on_ifaces.get(i)]
        return found


def pod_spec(ds: Obj) -> Obj:
    spec: Obj = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    return spec


def env(ds: Obj) -> dict[str, str]:
    """The literal env values of a DaemonSet's containers."""
    out: dict[str, str] = {}
    for container in pod_spec(ds).get("containers") or []:
        for var in container.get("env") or []:
            if "value" in var:
                out[str(var["name"])] = str(var["value"])
    return out


def container_names(ds: Obj) -> set[str]:
    spec = pod_spec(ds)
    return {str(c.get("name")) for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}


def image_tag(ds: Obj) -> str | None:
    for container in pod_spec(ds).get("containers") or []:
        image = str(container.get("image") or "")
        if ":" in image.rsplit("/", 1)[-1]:
            return image.rsplit(":", 1)[-1]
    return None


class CniDriver:
    """One CNI. Subclasses set the class attributes and override what their CNI has.

    - ``source_rank``: while several CNIs are present, the lowest rank is the migration's source (a
      migration's destination ranks last: flannel stays the source while Calico is being installed);
    - ``configmaps``: the ConfigMaps (namespace, name) detection reads for :meth:`source_config`;
    - ``agent``: the DaemonSet a migration installs and removes (``None``: migrator does not drive it);
    - ``leftovers``: what the CNI leaves on a node (``None``: not known, no teardown);
    - ``seen_as``: other names a target may give a node on this CNI (``Node.cni``): the kube target tells a
      node's network by its annotations, and a Canal node has flannel's.
    """

    kind: ClassVar[CniKind]
    source_rank: ClassVar[int]
    configmaps: ClassVar[tuple[tuple[str, str], ...]] = ()
    agent: ClassVar[AgentRef | None] = None
    leftovers: ClassVar[NodeLeftovers | None] = None
    seen_as: ClassVar[tuple[str, ...]] = ()

    def matches(self, ds: Obj) -> bool:
        """Whether a DaemonSet is this CNI's (drivers are asked in registry order, the first one wins)."""
        raise NotImplementedError

    def configmaps_of(self, ds: Obj) -> tuple[tuple[str, str], ...]:
        """ConfigMaps (namespace, name) this DaemonSet names, read besides ``configmaps`` (flannel's
        net-conf.json is in the ConfigMap its DaemonSet mounts, in any namespace)."""
        return ()

    def seen_without_daemonset(
        self, found: Collection[CniKind], nodes: Sequence[Obj], pools: Sequence[CalicoPool]
    ) -> bool:
        """Whether other evidence (node annotations, IPPools) shows the CNI when no DaemonSet did."""
        return False

    def source_config(self, ds: Obj, configmaps: ConfigMaps) -> tuple[dict[str, Any], FlannelConfig | None]:
        """The raw source config (``CniInfo.config``) and flannel's net-conf.json when the CNI uses it."""
        return {}, None

    def node(self, obj: Obj, cni: str | None = None) -> CniNode:
        """A node object as this CNI (the source) sees it: its pod CIDR, its record when the CNI keeps
        one; ``cni`` is the network the node's kubelet uses now."""
        return plain_node(obj, cni)

    def teardown_vars(self, fail_at_node: str = "") -> dict[str, Any]:
        """The vars of ``cni-switch-teardown.yml`` on a node leaving this CNI."""
        if self.leftovers is None:
            raise NotImplementedError(f"{self.kind}: what it leaves on a node is not known")
        return {**self.leftovers.teardown_vars(), "fail_at_node": fail_at_node}


def pod_cidr_of(obj: Obj) -> str | None:
    cidr = (obj.get("spec") or {}).get("podCIDR")
    return None if cidr is None else str(cidr)


def plain_node(obj: Obj, cni: str | None = None) -> CniNode:
    """A node object without a record of the source CNI."""
    return CniNode(name=str((obj.get("metadata") or {}).get("name")), pod_cidr=pod_cidr_of(obj), cni=cni)
