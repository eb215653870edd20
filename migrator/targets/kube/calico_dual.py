"""Calico beside another CNI on a real cluster: the objects of the dual-overlay install (Weave Net ->
Calico, issue 15; part of ``KubeCniOps``; the actions are :mod:`migrator.actions.cni_dual`).

Both overlays run on every node until the end, so nothing of the source is taken over (no per-node IPAM
blocks, no VTEP annotations: Calico's IPAM allocates from a pool of its own). What migrator writes:

- the user's Calico manifest (``calico.yaml`` or ``calico-vxlan.yaml``, server-side apply), its calico-node
  DaemonSet changed so that

  - it selects every node: no migration nodeSelector (the manifest's own, ``kubernetes.io/os: linux``,
    stays);
  - its ``install-cni`` init container writes the CNI config under ``cni_conf_name``
    (``CNI_CONF_NAME``, Calico's env var; ``20-calico.conflist``), sorted after the source's
    ``10-weave.conflist``: the kubelets keep the source's until a node is switched;
  - calico-node creates no pool of its own: ``NO_DEFAULT_POOLS=true``, and ``CALICO_IPV4POOL_CIDR`` /
    ``CALICO_IPV6POOL_CIDR`` removed (calico-node refuses to start with both). Without that, calico-node's
    start creates ``default-ipv4-ippool`` when no IPv4 pool exists yet (from ``CALICO_IPV4POOL_CIDR``, else
    kubeadm's ``podSubnet``, else ``192.168.0.0/16``, with ``natOutgoing`` on): with the real manifests
    (the env is commented out there) that would be 192.168.0.0/16 beside migrator's pool. The pools are
    applied before the DaemonSet as well;
  - Felix's ``FELIX_VXLANPORT`` / ``FELIX_VXLANVNI`` = the plan's, if the manifest sets them (neither real
    manifest does): Felix ranks its environment above every FelixConfiguration;

- IPPool ``migrator-dual-overlay``: ``cidr`` = the new pod CIDR, ``blockSize``, ``vxlanMode: Always``,
  ``ipipMode: Never``, ``natOutgoing: true``;
- IPPool ``migrator-<source>-range``: the source's range, ``disabled: true`` (nothing is allocated from
  it), ``natOutgoing: false``, ``disableBGPExport: true``. Felix's nat-outgoing rule masquerades only
  traffic to destinations outside every IPPool, so pods of the new range reach the source's pods with
  their own addresses (NetworkPolicy still tells them apart);
- FelixConfiguration ``default``: ``vxlanPort`` / ``vxlanVNI`` = the plan's (4789 / 4096; Weave's fastdp
  uses UDP 6784).

Both pools are labelled ``app.kubernetes.io/managed-by=migrator``. :func:`remove` (the install's undo)
deletes those pools and takes migrator's FelixConfiguration fields back with an empty apply; the rest of the
manifest (CRDs, RBAC, ``calico-config``, calico-kube-controllers) stays, as for flannel -> Calico.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrator.cni import MIGRATION_LABEL, CalicoPool, CniKind, calico
from migrator.cni.base import pod_spec
from migrator.errors import StepFailed, UsageError
from migrator.targets.kube.api import KubeNotFound, Obj

if TYPE_CHECKING:
    from migrator.targets.kube.cluster import KubeCluster

CALICO_V1 = "crd.projectcalico.org/v1"
MANAGED = {"app.kubernetes.io/managed-by": "migrator"}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=migrator"
POOL_NAME = "migrator-dual-overlay"
CNI_CONF_NAME_ENV = "CNI_CONF_NAME"
NO_DEFAULT_POOLS_ENV = "NO_DEFAULT_POOLS"
POOL_CIDR_ENVS = ("CALICO_IPV4POOL_CIDR", "CALICO_IPV6POOL_CIDR")
FELIX_VXLAN_PORT_ENV = "FELIX_VXLANPORT"
FELIX_VXLAN_VNI_ENV = "FELIX_VXLANVNI"
INSTALL_CNI = "install-cni"


def source_pool_name(source: CniKind) -> str:
    return f"migrator-{source.value}-range"


def is_dual_overlay(config: Mapping[str, str] | None) -> bool:
    """Whether an ``apply_cni_agent(CALICO, config=...)`` is the dual-overlay install (its own ``pool``)."""
    return bool(config and config.get("pool"))


@dataclass(frozen=True)
class DualConfig:
    """calico-node's config beside the source (:func:`migrator.actions.cni_dual.calico_config`)."""

    pool: str
    block_size: int
    vxlan_port: int
    vxlan_vni: int
    cni_conf_name: str
    nat_exclude: str
    manifest: str

    @classmethod
    def parse(cls, config: Mapping[str, str]) -> DualConfig:
        """The config's values, checked (a bad one names its key)."""

        def cidr(key: str) -> str:
            try:
                return str(ipaddress.IPv4Network(str(config.get(key, "")), strict=False))
            except ValueError as exc:
                raise UsageError(f"Calico config {key}={config.get(key)!r} is not an IPv4 CIDR") from exc

        def number(key: str, default: int) -> int:
            try:
                return int(config.get(key, default))
            except ValueError as exc:
                raise UsageError(f"Calico config {key}={config.get(key)!r} is not a number") from exc

        return cls(
            pool=cidr("pool"),
            block_size=number("block_size", 26),
            vxlan_port=number("vxlan_port", 4789),
            vxlan_vni=number("vxlan_vni", 4096),
            cni_conf_name=str(config.get("cni_conf_name") or "20-calico.conflist"),
            nat_exclude=cidr("nat_exclude"),
            manifest=str(config.get("manifest") or ""),
        )


# ------------------------------------------------------------------------------------------- the objects


def pools(cfg: DualConfig, source: CniKind) -> list[Obj]:
    """Calico's pool, and the source's range as a disabled pool (no masquerade to it)."""
    return [
        {
            "apiVersion": CALICO_V1,
            "kind": "IPPool",
            "metadata": {"name": POOL_NAME, "labels": dict(MANAGED)},
            "spec": {
                "cidr": cfg.pool,
                "blockSize": cfg.block_size,
                "vxlanMode": "Always",
                "ipipMode": "Never",
                "natOutgoing": True,
            },
        },
        {
            "apiVersion": CALICO_V1,
            "kind": "IPPool",
            "metadata": {"name": source_pool_name(source), "labels": dict(MANAGED)},
            "spec": {
                "cidr": cfg.nat_exclude,
                "disabled": True,
                "natOutgoing": False,
                "vxlanMode": "Never",
                "ipipMode": "Never",
                "disableBGPExport": True,
            },
        },
    ]


def felix_configuration(cfg: DualConfig) -> Obj:
    return {
        "apiVersion": CALICO_V1,
        "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": {"vxlanPort": cfg.vxlan_port, "vxlanVNI": cfg.vxlan_vni},
    }


def _set_env(container: dict[str, Any], name: str, value: str | None, *, only_if_set: bool = False) -> str:
    """Set (``None``: remove) one env var of a container in place; what changed ('' for nothing)."""
    env_list = [dict(v) for v in container.get("env") or []]
    index = next((i for i, v in enumerate(env_list) if v.get("name") == name), None)
    old = env_list[index] if index is not None else None
    if (index is None and (value is None or only_if_set)) or old == {"name": name, "value": value}:
        return ""
    if index is None:
        env_list.append({"name": name, "value": value})
    elif value is None:
        del env_list[index]
    else:
        env_list[index] = {"name": name, "value": value}
    container["env"] = env_list
    before = None if old is None else old.get("value", old.get("valueFrom"))
    return f"{container.get('name')} env {name}: {before!r} -> {value!r}"


def _containers(ds: Mapping[str, Any], name: str, *, init: bool) -> list[dict[str, Any]]:
    key = "initContainers" if init else "containers"
    return [c for c in pod_spec(ds).get(key) or [] if c.get("name") == name]


def prepare_calico_node(ds: dict[str, Any], cfg: DualConfig) -> list[str]:
    """calico-node's DaemonSet for the dual overlay (see the module doc), changed in place; what changed."""
    spec = ds.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    changed: list[str] = []
    selector = dict(spec.get("nodeSelector") or {})
    if MIGRATION_LABEL in selector:
        selector.pop(MIGRATION_LABEL)
        spec["nodeSelector"] = selector
        changed.append(f"nodeSelector without {MIGRATION_LABEL}")
    installers = _containers(ds, INSTALL_CNI, init=True)
    if not installers:
        raise UsageError(
            f"calico-node has no {INSTALL_CNI} init container: migrator cannot name Calico's CNI config"
            f" {cfg.cni_conf_name} (after the source's)"
        )
    for container in installers:
        changed.append(_set_env(container, CNI_CONF_NAME_ENV, cfg.cni_conf_name))
    for container in _containers(ds, "calico-node", init=False):
        changed.append(_set_env(container, NO_DEFAULT_POOLS_ENV, "true"))
        changed += [_set_env(container, name, None) for name in POOL_CIDR_ENVS]
        changed.append(_set_env(container, FELIX_VXLAN_PORT_ENV, str(cfg.vxlan_port), only_if_set=True))
        changed.append(_set_env(container, FELIX_VXLAN_VNI_ENV, str(cfg.vxlan_vni), only_if_set=True))
    return [line for line in changed if line]


def dual_overlay_objects(cfg: DualConfig, source: CniKind) -> tuple[list[Obj], list[str]]:
    """The manifest's objects (its ``kind: List`` documents unpacked) with calico-node prepared, and the
    pools and the FelixConfiguration right before calico-node's DaemonSet (after the CRDs); and what was
    changed in calico-node. A manifest migrator cannot install is refused
    (:func:`migrator.cni.calico.manifest_problems`)."""
    docs = calico.load_manifest(cfg.manifest)
    problems = calico.manifest_problems(docs, None, cfg.manifest)
    if problems:
        raise UsageError("; ".join(problems))
    out: list[Obj] = []
    changed: list[str] = []
    for doc in docs:
        if doc.get("kind") == "DaemonSet" and calico.is_calico_node(doc):
            changed += prepare_calico_node(doc, cfg)
            out += [*pools(cfg, source), felix_configuration(cfg)]
        out.append(doc)
    return out, changed


def installed_problems(ds: Mapping[str, Any], cfg: DualConfig) -> list[str]:
    """Why an installed calico-node (no manifest given) cannot run beside the source as it is."""
    problems: list[str] = []
    names = {
        str(v.get("value"))
        for c in _containers(ds, INSTALL_CNI, init=True)
        for v in c.get("env") or []
        if v.get("name") == CNI_CONF_NAME_ENV
    }
    if names != {cfg.cni_conf_name}:
        problems.append(
            f"the installed calico-node's {INSTALL_CNI} {CNI_CONF_NAME_ENV} is {sorted(names) or 'unset'},"
            f" not {cfg.cni_conf_name} (sorted after the source's CNI config)"
        )
    if MIGRATION_LABEL in (pod_spec(ds).get("nodeSelector") or {}):
        problems.append(f"the installed calico-node selects {MIGRATION_LABEL}, not every node")
    env = {
        str(v.get("name")): v.get("value", v.get("valueFrom"))
        for c in _containers(ds, "calico-node", init=False)
        for v in c.get("env") or []
    }
    for name, wanted in ((FELIX_VXLAN_PORT_ENV, cfg.vxlan_port), (FELIX_VXLAN_VNI_ENV, cfg.vxlan_vni)):
        if name in env and env[name] != str(wanted):
            problems.append(f"the installed calico-node's {name} is {env[name]!r}, not {wanted}")
    if problems:
        problems.append("give the Calico manifest (plan parameter calico_manifest) and migrator sets them")
    return problems


def conflicting_pools(existing: Sequence[CalicoPool], cfg: DualConfig, source: CniKind) -> list[str]:
    """IPPools not migrator's that Calico would allocate from (any other enabled pool) or that overlap the
    new pool or the source's range."""
    ours = {POOL_NAME, source_pool_name(source)}
    wanted = [ipaddress.IPv4Network(cfg.pool), ipaddress.IPv4Network(cfg.nat_exclude)]
    out = []
    for p in existing:
        if p.name in ours:
            continue
        try:
            cidr = ipaddress.ip_network(p.cidr, strict=False)
        except ValueError:
            continue
        if cidr.version != 4:
            continue
        if any(cidr.overlaps(w) for w in wanted):
            out.append(f"Calico IPPool {p.name} ({cidr}) overlaps {cfg.pool} or {cfg.nat_exclude}")
        elif not p.disabled:
            out.append(
                f"Calico IPPool {p.name} ({cidr}) is enabled: Calico's IPAM would give pods addresses from it"
                f" too, not only from {cfg.pool} (disable or delete it first)"
            )
    return out


# ------------------------------------------------------------------------------------------- the removal


def _managed_pools(cluster: KubeCluster) -> list[str]:
    path = cluster.api.object_path(CALICO_V1, "IPPool", None, None)
    try:
        listed = cluster.api.request(
            "list Calico IPPools", "GET", path, query={"labelSelector": MANAGED_SELECTOR}
        )
    except KubeNotFound:
        return []
    names = {str((p.get("metadata") or {}).get("name")) for p in listed.get("items") or []}
    return sorted(n for n in names if n == POOL_NAME or (n.startswith("migrator-") and n.endswith("-range")))


def _take_back_felix(cluster: KubeCluster, *, dry_run: bool) -> list[str]:
    """An empty apply of FelixConfiguration ``default``: the fields migrator alone owns go, those another
    manager (calico-node, the user) owns stay; what went (from the object before and after, so no
    reading of managedFields)."""
    path = cluster.api.object_path(CALICO_V1, "FelixConfiguration", "default", None)
    try:
        current = cluster.api.request("read FelixConfiguration default", "GET", path)
    except KubeNotFound:
        return []
    empty = {"apiVersion": CALICO_V1, "kind": "FelixConfiguration", "metadata": {"name": "default"}}
    (result,) = cluster.apply([empty], dry_run=dry_run)
    before, after = current.get("spec") or {}, result.obj.get("spec") or {}
    gone = sorted(key for key in before if key not in after)
    if not gone:
        return []
    dry = " (server dry run)" if dry_run else ""
    return [f"FelixConfiguration default: migrator's {', '.join(gone)} taken back{dry}"]


def missing_crds(cluster: KubeCluster) -> list[str]:
    """Why the pools and Felix's config cannot be written without a manifest (their CRDs missing)."""
    missing = []
    for kind in ("IPPool", "FelixConfiguration"):
        try:
            cluster.api.resource_for(CALICO_V1, kind)
        except KubeNotFound:
            missing.append(kind)
    if not missing:
        return []
    return [
        f"Calico's CRDs of {', '.join(missing)} are not installed: give the Calico manifest (plan parameter"
        " calico_manifest)"
    ]


def remove(cluster: KubeCluster, *, dry_run: bool) -> list[str]:
    """Delete the pools of the dual-overlay install and take migrator's Felix fields back (idempotent)."""
    dry = " (server dry run)" if dry_run else ""
    lines = [
        f"IPPool {name} deleted{dry}"
        for name in _managed_pools(cluster)
        if cluster.delete(CALICO_V1, "IPPool", name, dry_run=dry_run)
    ]
    return lines + _take_back_felix(cluster, dry_run=dry_run)


def refuse(problems: Sequence[str], *, dry_run: bool) -> list[str]:
    """``would fail`` lines in a dry run, else :class:`StepFailed`."""
    if dry_run:
        return [f"would fail: {p}" for p in problems]
    raise StepFailed("; ".join(problems))
