"""Every Kubernetes permission migrator uses: one table for ``docs/rbac.yaml`` and ``migrator doctor``.

Regenerate the document after changing the table::

    python -c "from migrator.targets.kube.rbac import write_rbac_yaml; write_rbac_yaml('docs/rbac.yaml')"
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from migrator.fsutil import atomic_write_text

ROLE_NAME = "migrator"

CALICO_GROUP = "crd.projectcalico.org"
MANAGE = ("get", "list", "watch", "create", "patch", "delete")


@dataclass(frozen=True)
class Permission:
    """Verbs on one resource (or subresource) of an API group, and why migrator needs them."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    subresource: str = ""

    @property
    def resource_ref(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def display(self) -> str:
        return f"{self.resource_ref}.{self.group}" if self.group else self.resource_ref


PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "namespaces", ("get",), "cluster identity (kube-system UID)"),
    Permission(
        "",
        "namespaces",
        ("create", "patch", "delete", "watch"),
        "the probe namespace (and wait until it is gone); apply CNI manifests",
    ),
    Permission("", "namespaces", ("list",), "namespace labels (NetworkPolicy namespaceSelectors)"),
    Permission(
        "networking.k8s.io",
        "networkpolicies",
        ("get", "list", "watch"),
        "the NetworkPolicies whose verdicts verify --scope policy checks",
    ),
    Permission("", "nodes", ("get", "list", "watch", "patch"), "list nodes, label, cordon and uncordon"),
    Permission(
        "", "pods", ("get", "list", "watch", "delete"), "drain, restart pods, wait for DaemonSet pods"
    ),
    Permission("", "pods", ("create",), "drain through the Eviction API", subresource="eviction"),
    Permission("", "pods", ("get",), "collect probe results from pod logs", subresource="log"),
    Permission(
        "", "services", ("get", "list", "create", "patch", "delete"), "services to verify; probe service"
    ),
    Permission("", "endpoints", ("get", "list"), "service endpoints (clusters without EndpointSlices)"),
    Permission("discovery.k8s.io", "endpointslices", ("get", "list"), "service endpoints"),
    Permission("", "configmaps", MANAGE, "read the CNI config; ship the probe agent; apply CNI manifests"),
    Permission("", "serviceaccounts", ("get", "create", "patch", "delete"), "apply CNI manifests"),
    Permission("", "events", ("create",), "audit Events on touched nodes"),
    Permission(
        "apps", "daemonsets", MANAGE, "detect the CNI; install, patch, wait for and delete CNI DaemonSets"
    ),
    Permission("apps", "deployments", MANAGE, "apply CNI manifests (controllers) and wait for rollouts"),
    Permission(
        "policy",
        "poddisruptionbudgets",
        ("get", "list", "create", "patch", "delete"),
        "name blocking PDBs in drain errors; apply CNI manifests",
    ),
    Permission("coordination.k8s.io", "leases", ("get", "create", "update", "delete"), "the run lock"),
    Permission(
        "rbac.authorization.k8s.io",
        "clusterroles",
        ("get", "create", "patch", "delete", "bind", "escalate"),
        "apply the CNI's own ClusterRoles",
    ),
    Permission(
        "rbac.authorization.k8s.io",
        "roles",
        ("get", "create", "patch", "delete"),
        "the probe's Role (it only reads ConfigMaps in migrator-probe)",
    ),
    Permission(
        "rbac.authorization.k8s.io",
        "rolebindings",
        ("get", "create", "patch", "delete"),
        "bind the probe's Role to its ServiceAccount",
    ),
    Permission(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        ("get", "create", "patch", "delete"),
        "apply the CNI's own ClusterRoleBindings",
    ),
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("get", "list", "watch", "create", "patch", "delete"),
        "install Calico's CRDs (and wait until they are Established)",
    ),
    Permission(CALICO_GROUP, "ippools", MANAGE, "Calico IP pools (wire-compatible with flannel)"),
    Permission(
        CALICO_GROUP, "ipamblocks", MANAGE, "keep each node's flannel pod CIDR as its Calico IPAM block"
    ),
    Permission(CALICO_GROUP, "blockaffinities", MANAGE, "pin each node's Calico block"),
    Permission(
        CALICO_GROUP, "ipamhandles", MANAGE, "the IPAM handle of each node's VTEP address (flannel's .0)"
    ),
    Permission(CALICO_GROUP, "felixconfigurations", MANAGE, "VXLAN VNI, port and MTU like flannel"),
    Permission(CALICO_GROUP, "bgpconfigurations", MANAGE, "the optional BGP stage"),
    Permission(CALICO_GROUP, "bgppeers", MANAGE, "the optional BGP stage (route reflectors)"),
)


NON_RESOURCE_GROUPS = ("authorization.k8s.io",)  # SelfSubjectAccessReviews: every user may ask


def required_permission(method: str, path: str, query: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(verb, group, resource[/subresource])`` an API request needs, or ``None`` for discovery and
    SelfSubjectAccessReviews (allowed to every authenticated user). Used to prove the table complete."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest or group in NON_RESOURCE_GROUPS:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else ""
    if method == "GET":
        verb = (
            "get" if name else ("watch" if str(query.get("watch", "")).lower() in ("1", "true") else "list")
        )
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        if method == "DELETE" and not name:
            verb = "deletecollection"
    return verb, group, f"{resource}/{sub}" if sub else resource


def granted(verb: str, group: str, resource_ref: str) -> bool:
    """Whether the table grants this verb on this (group, resource[/subresource])."""
    return any(p.group == group and p.resource_ref == resource_ref and verb in p.verbs for p in PERMISSIONS)


def checks() -> Iterator[tuple[Permission, str]]:
    """Every ``(permission, verb)`` pair the doctor checks."""
    for perm in PERMISSIONS:
        for verb in perm.verbs:
            yield perm, verb


def cluster_role_rules() -> list[dict[str, list[str]]]:
    """The ClusterRole rules, one per (group, resource) with the union of verbs, in table order."""
    merged: dict[tuple[str, str], list[str]] = {}
    for perm in PERMISSIONS:
        verbs = merged.setdefault((perm.group, perm.resource_ref), [])
        verbs.extend(v for v in perm.verbs if v not in verbs)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": verbs}
        for (group, resource), verbs in merged.items()
    ]


def render_rbac_yaml(namespace: str = "kube-system", service_account: str = ROLE_NAME) -> str:
    """``docs/rbac.yaml``: the ClusterRole, a ServiceAccount and the binding (edit the subject for a user)."""
    header = (
        "# Least-privilege RBAC for migrator (generated from migrator/targets/kube/rbac.py: do not edit).\n"
        "# Check a kubeconfig against it with: migrator doctor --target kube [--kubeconfig F] [--context C]\n"
        "# Why each rule exists:\n"
        + "".join(f"#   {p.display}: {', '.join(p.verbs)}: {p.why}\n" for p in PERMISSIONS)
    )
    docs = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ROLE_NAME, "labels": {"app.kubernetes.io/name": "migrator"}},
            "rules": cluster_role_rules(),
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ROLE_NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]
    return header + "---\n" + yaml.safe_dump_all(docs, sort_keys=False)


def write_rbac_yaml(path: str | Path) -> None:
    atomic_write_text(Path(path), render_rbac_yaml())
