"""Kubernetes objects for fixtures, as ``kubectl get -o json`` shows them (plain dicts), and small readers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]


def _meta(name: str, namespace: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta


def make_node(
    name: str,
    *,
    ip: str,
    roles: tuple[str, ...] = (),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    pod_cidr: str | None = None,
    unschedulable: bool = False,
) -> Obj:
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    all_labels.update({f"node-role.kubernetes.io/{r}": "" for r in roles})
    all_labels.update(labels or {})
    spec: Obj = {}
    if pod_cidr:
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = [pod_cidr]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta(name, labels=all_labels, annotations=dict(annotations or {})),
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "b",
                "containerRuntimeVersion": "containerd://1.7.0",
                "kernelVersion": "6.1.0",
                "kubeProxyVersion": "v1.30.0",
                "kubeletVersion": "v1.30.0",
                "machineID": "m",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12",
                "systemUUID": "s",
            },
        },
    }


def make_pod(
    name: str,
    namespace: str,
    *,
    node: str,
    ip: str | None = None,
    labels: Mapping[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    host_network: bool = False,
    ports: tuple[int, ...] = (),
    ready: bool = True,
    mirror: bool = False,
    empty_dir: bool = False,
    image: str = "registry.example/app:1",
) -> Obj:
    annotations: Obj = {}
    if mirror:
        annotations["kubernetes.io/config.mirror"] = "mirror-hash"
    owner_refs = None
    if owner is not None:
        kind, owner_name = owner
        api_version = "apps/v1"
        owner_refs = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{kind}/{owner_name}")),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    container: Obj = {"name": "main", "image": image}
    if ports:
        container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in ports]
    spec: Obj = {"nodeName": node, "containers": [container]}
    if host_network:
        spec["hostNetwork"] = True
    if empty_dir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(
            name,
            namespace,
            labels=dict(labels or {}),
            annotations=annotations or None,
            ownerReferences=owner_refs,
        ),
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}] if ip else None,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def make_pdb(
    name: str,
    namespace: str,
    *,
    selector: Mapping[str, str],
    min_available: int | None = None,
    max_unavailable: int | None = None,
) -> Obj:
    spec: Obj = {"selector": {"matchLabels": dict(selector)}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }


def make_daemonset(
    name: str,
    namespace: str,
    *,
    labels: Mapping[str, str],
    node_selector: Mapping[str, str] | None = None,
    containers: list[Obj] | None = None,
    host_network: bool = False,
) -> Obj:
    pod_spec: Obj = {"containers": containers or [{"name": name, "image": f"registry.example/{name}:1"}]}
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if host_network:
        pod_spec["hostNetwork"] = True
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(name, namespace, labels=dict(labels)),
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            "updateStrategy": {"type": "RollingUpdate"},
        },
    }


def make_configmap(name: str, namespace: str, data: Mapping[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace), "data": dict(data)}


def make_service(
    name: str,
    namespace: str,
    *,
    cluster_ip: str,
    selector: Mapping[str, str],
    ports: list[Obj],
    type_: str = "ClusterIP",
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace),
        "spec": {"type": type_, "clusterIP": cluster_ip, "selector": dict(selector), "ports": ports},
    }


def make_endpointslice(service: str, namespace: str, *, addresses: list[tuple[str, bool]], port: int) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(f"{service}-abcde", namespace, labels={"kubernetes.io/service-name": service}),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in addresses],
        "ports": [{"port": port, "protocol": "TCP"}],
    }


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def owner_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(kind, name)`` of the object's controlling owner."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None
