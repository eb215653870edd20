"""Kubernetes JSON objects → the port dataclasses (never a client object across the port)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from migrator.policy.model import Protocol
from migrator.ports import ContainerPort, Node, Pod, Service, ServicePort

Obj = dict[str, Any]

ROLE_PREFIX = "node-role.kubernetes.io/"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def node_roles(labels: Mapping[str, str]) -> frozenset[str]:
    roles = {key[len(ROLE_PREFIX) :] for key in labels if key.startswith(ROLE_PREFIX) and key != ROLE_PREFIX}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    if "master" in roles:
        roles.add("control-plane")
    return frozenset(roles)


def node_cni(annotations: Mapping[str, str]) -> str | None:
    """The CNI a node's annotations show (Calico wins over flannel during a migration)."""
    if any(key.startswith("projectcalico.org/") for key in annotations):
        return "calico"
    if any(key.startswith("flannel.alpha.coreos.com/") for key in annotations):
        return "flannel"
    if any(key.startswith("io.cilium") or key.startswith("network.cilium.io") for key in annotations):
        return "cilium"
    return None


def node_address(obj: Mapping[str, Any]) -> str:
    addresses = (obj.get("status") or {}).get("addresses") or []
    by_type = {a.get("type"): a.get("address") for a in addresses}
    for kind in ("InternalIP", "ExternalIP", "Hostname"):
        if by_type.get(kind):
            return str(by_type[kind])
    return str(obj.get("metadata", {}).get("name", ""))


def to_node(obj: Mapping[str, Any]) -> Node:
    meta = obj.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    spec = obj.get("spec") or {}
    return Node(
        name=str(meta["name"]),
        address=node_address(obj),
        roles=node_roles(labels),
        labels=labels,
        schedulable=not bool(spec.get("unschedulable")),
        pod_cidr=spec.get("podCIDR"),
        cni=node_cni(meta.get("annotations") or {}),
    )


def controller_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(kind, name)`` of the object's controlling owner."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None


def is_ready(obj: Mapping[str, Any]) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def is_mirror(obj: Mapping[str, Any]) -> bool:
    return MIRROR_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {})


def has_empty_dir(obj: Mapping[str, Any]) -> bool:
    return any("emptyDir" in v for v in (obj.get("spec") or {}).get("volumes") or [])


def pod_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def to_pod(obj: Mapping[str, Any]) -> Pod:
    """The port's view of a pod: only the fields it has are read (a dry run maps every pod of the
    cluster, e.g. 20,000; the same as :func:`controller_of` and :func:`is_ready`, inlined)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    owner = None
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            owner = f"{ref.get('kind')!s}/{ref.get('name')!s}"
            break
    ports: tuple[int, ...] = ()
    container_ports: tuple[ContainerPort, ...] = ()
    for container in spec.get("containers") or ():
        if container.get("ports"):
            declared = container_ports_of(container["ports"])
            container_ports += declared
            ports += tuple(p.port for p in declared)
    ready = False
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
            break
    return Pod(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace", "")),
        node=str(spec.get("nodeName") or ""),
        ip=status.get("podIP"),
        labels=dict(meta.get("labels") or {}),
        owner=owner,
        host_network=bool(spec.get("hostNetwork")),
        ports=ports,
        ready=ready and not meta.get("deletionTimestamp"),
        container_ports=container_ports,
    )


_PROTOCOLS = {p.value: p for p in Protocol}


def container_ports_of(ports: Iterable[Mapping[str, Any]]) -> tuple[ContainerPort, ...]:
    """A container's ``ports`` (``containerPort``, ``protocol`` defaulting to TCP as the API server does,
    ``name``); an entry without a number is skipped (the API server would not have stored it)."""
    out: list[ContainerPort] = []
    for port in ports:
        number = port.get("containerPort")
        if number is None:
            continue
        protocol = _PROTOCOLS.get(str(port.get("protocol") or "TCP"), Protocol.TCP)
        out.append(ContainerPort(int(number), protocol, str(port.get("name") or "")))
    return tuple(out)


def _target_port(port: Mapping[str, Any]) -> int:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    return int(port.get("port", 0))  # a named port: the service port is the best guess without pods


def to_service(obj: Mapping[str, Any], endpoints: Iterable[str]) -> Service:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    cluster_ip = spec.get("clusterIP")
    ports = tuple(
        ServicePort(
            port=int(p.get("port", 0)),
            target_port=_target_port(p),
            protocol=str(p.get("protocol") or "TCP"),
            name=str(p.get("name") or ""),
            node_port=int(p["nodePort"]) if p.get("nodePort") else None,
        )
        for p in spec.get("ports") or []
    )
    return Service(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace", "")),
        cluster_ip=None if cluster_ip in (None, "", "None") else str(cluster_ip),
        ports=ports,
        selector=dict(spec.get("selector") or {}),
        endpoints=tuple(sorted(set(endpoints))),
    )


def slice_addresses(slice_obj: Mapping[str, Any]) -> list[str]:
    """Ready addresses of an EndpointSlice (``ready`` unset counts as ready)."""
    out: list[str] = []
    for ep in slice_obj.get("endpoints") or []:
        ready = (ep.get("conditions") or {}).get("ready")
        if ready is None or ready:
            out.extend(str(a) for a in ep.get("addresses") or [])
    return out


def endpoints_addresses(ep_obj: Mapping[str, Any]) -> list[str]:
    return [str(a.get("ip")) for subset in ep_obj.get("subsets") or [] for a in subset.get("addresses") or []]


def label_selector(match_labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` against labels (an empty selector matches everything)."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        present = key in labels
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True
