"""The registry of CNI drivers, and detection from plain objects (:func:`detect_from_objects`).

A new CNI is one driver module (a :class:`~migrator.cni.base.CniDriver`) and its line in :data:`DRIVERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from migrator.cni import calico, canal, cilium, flannel, weave
from migrator.cni.base import (
    AgentRef,
    CniDriver,
    ConfigMaps,
    NodeLeftovers,
    Obj,
    image_tag,
    plain_node,
    pod_spec,
)
from migrator.cni.info import CniInfo, CniKind
from migrator.errors import UsageError

DRIVERS: tuple[CniDriver, ...] = (canal.DRIVER, flannel.DRIVER, calico.DRIVER, weave.DRIVER, cilium.DRIVER)
"""Every driver, in the order a DaemonSet is classified (Canal first: its DaemonSet runs flannel and
calico-node)."""
BY_KIND: Mapping[CniKind, CniDriver] = {d.kind: d for d in DRIVERS}
SOURCE_ORDER: tuple[CniKind, ...] = tuple(d.kind for d in sorted(DRIVERS, key=lambda d: d.source_rank))
"""Which present CNI is a migration's source: the first (flannel stays the source while Calico is being
installed)."""


def driver(kind: CniKind) -> CniDriver:
    """The driver of a recognised CNI."""
    try:
        return BY_KIND[kind]
    except KeyError:
        raise UsageError(f"no CNI driver for {kind!r}") from None


def agent(kind: CniKind) -> AgentRef:
    """The node agent (DaemonSet) of a CNI a migration installs and removes."""
    ref = driver(kind).agent
    if ref is None:
        raise UsageError(f"migrator does not drive {kind}'s node agent")
    return ref


def agents() -> dict[CniKind, AgentRef]:
    """Every node agent a migration drives, by CNI."""
    return {d.kind: d.agent for d in DRIVERS if d.agent is not None}


def leftovers(name: str) -> NodeLeftovers | None:
    """What the CNI ``name`` leaves on a node (``None`` when it is not known)."""
    found = next((d for d in DRIVERS if d.kind.value == name), None)
    return found.leftovers if found is not None else None


def seen_as(name: str) -> tuple[str, ...]:
    """Other names a target may give a node on the CNI ``name`` (:attr:`CniDriver.seen_as`)."""
    found = next((d for d in DRIVERS if d.kind.value == name), None)
    return found.seen_as if found is not None else ()


def classify_daemonset(ds: Obj) -> CniKind | None:
    """The CNI whose DaemonSet this is, or ``None``."""
    return next((d.kind for d in DRIVERS if d.matches(ds)), None)


def detection_configmaps(daemonsets: Sequence[Obj] = ()) -> tuple[tuple[str, str], ...]:
    """Every ConfigMap (namespace, name) detection reads: the drivers' own, and those the CNIs'
    DaemonSets among ``daemonsets`` mount (flannel in a namespace of the user's choosing)."""
    named = [
        key
        for ds in daemonsets
        if (kind := classify_daemonset(ds)) is not None
        for key in BY_KIND[kind].configmaps_of(ds)
    ]
    return tuple(dict.fromkeys([*named, *(key for d in DRIVERS for key in d.configmaps)]))


def _node_selector(ds: Obj) -> dict[str, str]:
    return dict(pod_spec(ds).get("nodeSelector") or {})


def detect_from_objects(
    daemonsets: Sequence[Obj],
    configmaps: ConfigMaps,
    nodes: Sequence[Obj],
    ippools: Sequence[Obj] = (),
    *,
    kubelet_cni: Callable[[Obj], str | None] | None = None,
) -> CniInfo:
    """Detect the CNI from plain objects (DaemonSets, ConfigMaps by (namespace, name), nodes, IPPools).

    ``kubelet_cni`` reads a node object's current network (``CniNode.cni``) the way the target knows it.
    """
    found: dict[CniKind, Obj] = {}
    for ds in daemonsets:
        kind = classify_daemonset(ds)
        if kind is not None and kind not in found:
            found[kind] = ds
    pools = calico.pools(ippools)
    for d in DRIVERS:
        if d.kind not in found and d.seen_without_daemonset(found, nodes, pools):
            found[d.kind] = {}
    present = tuple(k for k in SOURCE_ORDER if k in found)
    source = driver(present[0]) if present else None
    read = source.node if source is not None else plain_node
    per_node = {}
    for obj in nodes:
        node = read(obj, kubelet_cni(obj) if kubelet_cni is not None else None)
        per_node[node.name] = node
    if source is None:
        return CniInfo(kind=CniKind.UNKNOWN, nodes=per_node, calico_pools=pools)
    ds = found[source.kind]
    meta = ds.get("metadata") or {}
    config, flannel_conf = source.source_config(ds, configmaps)
    return CniInfo(
        kind=source.kind,
        present=present,
        namespace=meta.get("namespace"),
        daemonset=meta.get("name"),
        version=image_tag(ds) if ds else None,
        config=config,
        flannel=flannel_conf,
        nodes=per_node,
        calico_pools=pools,
        agents={ref.name: _node_selector(found[kind]) for kind, ref in agents().items() if found.get(kind)},
    )
