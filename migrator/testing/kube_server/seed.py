"""Seeded clusters: plain nodes, the flannel cluster ``kubeadm`` + kube-flannel leave (what the
migration starts from), Calico's CRDs, and the small Calico manifest ``plans/flannel-to-calico.yaml``
installs in tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from migrator.testing.kube_server.api import FakeKubeApi
from migrator.testing.kube_server.objects import (
    make_configmap,
    make_daemonset,
    make_node,
    make_pdb,
    make_pod,
    make_service,
)
from migrator.testing.kube_server.store import ApiError, Obj
from migrator.testing.kube_server.validation import admit


def add_nodes(api: FakeKubeApi, workers: int = 3, control_planes: int = 1) -> list[str]:
    """Plain nodes ``cp1..`` (control plane, 198.18.0.10+) and ``w1..`` (workers, 198.18.0.20+)."""
    names = []
    for i in range(control_planes):
        name = f"cp{i + 1}"
        api.add(
            make_node(
                name, ip=f"198.18.0.{10 + i}", roles=("control-plane",), pod_cidr=f"10.244.{100 + i}.0/24"
            )
        )
        names.append(name)
    for i in range(workers):
        name = f"w{i + 1}"
        api.add(make_node(name, ip=f"198.18.0.{20 + i}", roles=("worker",), pod_cidr=f"10.244.{i}.0/24"))
        names.append(name)
    return names


FLANNEL_NET_CONF = {
    "Network": "10.244.0.0/16",
    "SubnetLen": 24,
    "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": False},
}


def seed_flannel_cluster(
    api: FakeKubeApi,
    *,
    workers: int = 3,
    control_planes: int = 1,
    app_pods_per_node: int = 1,
    log: bool = False,
) -> list[str]:
    """A flannel cluster as ``kubeadm`` + kube-flannel leave it: nodes with pod CIDRs and flannel
    annotations, the kube-flannel DaemonSet, its ``kube-flannel-cfg`` ConfigMap and pods, a ``shop``
    app (owned by a ReplicaSet, with a PDB of ``minAvailable: 1``) and its NodePort service. Returns the
    node names, control plane first. ``log=False`` keeps large seeds out of the watch event log."""
    names: list[str] = []
    api.ensure_namespace("kube-flannel")
    api.ensure_namespace("shop")
    total = control_planes + workers
    # a /16 holds 256 node /24s: a bigger cluster gets flannel's network as a /8 (pod CIDRs stay valid)
    net_conf = FLANNEL_NET_CONF if total <= 256 else {**FLANNEL_NET_CONF, "Network": "10.0.0.0/8"}
    api.add(
        make_configmap(
            "kube-flannel-cfg",
            "kube-flannel",
            {"net-conf.json": json.dumps(net_conf), "cni-conf.json": "{}"},
        ),
        log=log,
    )
    for i in range(total):
        cp = i < control_planes
        name = f"cp-{i + 1:02d}" if cp else f"node-{i - control_planes + 1:05d}"
        ip = f"198.18.{i // 250}.{i % 250 + 2}"
        cidr_third, cidr_second = i % 256, (244 + i // 256) % 256
        annotations = {
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/backend-data": json.dumps(
                {"VNI": 1, "VtepMAC": f"02:42:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01"}
            ),
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": ip,
        }
        api.add(
            make_node(
                name,
                ip=ip,
                roles=("control-plane",) if cp else (),
                pod_cidr=f"10.{cidr_second}.{cidr_third}.0/24",
                annotations=annotations,
            ),
            log=log,
        )
        flannel_pod = make_pod(
            f"kube-flannel-ds-{i:05d}",
            "kube-flannel",
            node=name,
            ip=ip,
            host_network=True,
            labels={"app": "flannel"},
            owner=("DaemonSet", "kube-flannel-ds"),
            image="docker.io/flannel/flannel:v0.25.1",
        )
        flannel_pod["metadata"]["annotations"] = {"fake/generation": "1"}
        api.add(flannel_pod, log=log)
        if cp:
            api.add(make_pod(f"kube-apiserver-{name}", "kube-system", node=name, ip=ip, mirror=True), log=log)
        else:
            for j in range(app_pods_per_node):
                api.add(
                    make_pod(
                        f"web-{i:05d}-{j}",
                        "shop",
                        node=name,
                        ip=f"10.{cidr_second}.{cidr_third}.{j + 2}",
                        labels={"app": "web"},
                        owner=("ReplicaSet", "web-5d9c7"),
                        ports=(8080,),
                    ),
                    log=log,
                )
        names.append(name)
    flannel_ds = make_daemonset(
        "kube-flannel-ds",
        "kube-flannel",
        labels={"app": "flannel"},
        host_network=True,
        containers=[{"name": "kube-flannel", "image": "docker.io/flannel/flannel:v0.25.1"}],
    )
    controllers, api.controllers_enabled = api.controllers_enabled, False
    try:  # the DaemonSet's pods were seeded above: no reconcile
        api.add(flannel_ds, log=log)
    finally:
        api.controllers_enabled = controllers
    with api.lock:
        api.update_daemonset_status("kube-flannel", "kube-flannel-ds")
    api.add(make_pdb("web", "shop", selector={"app": "web"}, min_available=1), log=log)
    api.add(
        make_service(
            "web",
            "shop",
            cluster_ip="10.96.0.80",
            selector={"app": "web"},
            type_="NodePort",
            ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}],
        ),
        log=log,
    )
    return names


CALICO_CRD_KINDS: tuple[tuple[str, str], ...] = (
    ("FelixConfiguration", "felixconfigurations"),
    ("IPAMBlock", "ipamblocks"),
    ("BlockAffinity", "blockaffinities"),
    ("IPAMHandle", "ipamhandles"),
)


def calico_crd(kind: str, plural: str) -> Obj:
    """A cluster-scoped ``crd.projectcalico.org/v1`` CustomResourceDefinition, as Calico's manifests ship
    them (schemas reduced to ``x-kubernetes-preserve-unknown-fields``)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.crd.projectcalico.org"},
        "spec": {
            "group": "crd.projectcalico.org",
            "scope": "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


def calico_crds(kinds: tuple[tuple[str, str], ...] = CALICO_CRD_KINDS) -> list[Obj]:
    """The Calico CRDs migrator uses beyond the built-in ``IPPool`` (Felix configuration and IPAM)."""
    return [calico_crd(kind, plural) for kind, plural in kinds]


#: A small Calico manifest (a CRD, calico-node's ServiceAccount and DaemonSet): enough for the install
#: stage's server-side dry run to have something to apply.
CALICO_MANIFEST = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: felixconfigurations.crd.projectcalico.org}
spec:
  group: crd.projectcalico.org
  scope: Cluster
  names:
    kind: FelixConfiguration
    plural: felixconfigurations
    singular: felixconfiguration
    listKind: FelixConfigurationList
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: calico-node, namespace: kube-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: calico-node, namespace: kube-system, labels: {k8s-app: calico-node}}
spec:
  selector: {matchLabels: {k8s-app: calico-node}}
  template:
    metadata: {labels: {k8s-app: calico-node}}
    spec:
      hostNetwork: true
      containers: [{name: calico-node, image: "docker.io/calico/node:v3.27.0"}]
"""


def calico_node_daemonset(
    *,
    image: str | None = None,
    node_selector: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A fresh copy of calico-node's DaemonSet of :data:`CALICO_MANIFEST` (for tests that apply their own
    Calico objects), with another ``image``, a pod ``nodeSelector`` or container ``env`` if given."""
    daemonset: dict[str, Any] = next(
        d for d in yaml.safe_load_all(CALICO_MANIFEST) if d["kind"] == "DaemonSet"
    )
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if image is not None:
        container["image"] = image
    if node_selector is not None:
        pod["nodeSelector"] = dict(node_selector)
    if env is not None:
        container["env"] = [{"name": name, "value": value} for name, value in env.items()]
    return daemonset


def write_calico_manifest(path: Path) -> Path:
    path.write_text(CALICO_MANIFEST)
    return path


def flannel_api(
    nodes: int, *, control_planes: int = 3, pods_per_node: int = 2, quiet: bool = False
) -> FakeKubeApi:
    """A flannel cluster of ``nodes`` nodes (``control_planes`` of them control plane, named first);
    every node runs its kube-flannel pod and each worker ``pods_per_node - 1`` app pods under a PDB.

    ``quiet``: no request log and no controllers (large seeds for benchmarks)."""
    api = FakeKubeApi()
    if quiet:
        api.record_requests = False
        api.controllers_enabled = False
    seed_flannel_cluster(
        api,
        workers=nodes - control_planes,
        control_planes=control_planes,
        app_pods_per_node=max(pods_per_node - 1, 0),
    )
    return api


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when there is one: ~10x faster


class SeedError(ValueError):
    """A seed manifest the fake cannot load; the message names the file, the document and the field."""


def _manifest_docs(source: str | Path) -> tuple[str, list[Any]]:
    """``(where, documents)`` of a YAML manifest (a path, or the text itself)."""
    if isinstance(source, Path):
        where, text = str(source), source.read_text(encoding="utf-8")
    else:
        where, text = "<manifest>", source
    try:
        docs = [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if d is not None]  # a safe loader
    except yaml.YAMLError as exc:
        raise SeedError(f"{where}: not YAML: {' '.join(str(exc).split())}") from exc
    return where, docs


def seed_manifests(api: FakeKubeApi, *sources: str | Path) -> list[Obj]:
    """Load NetworkPolicies (and the Namespaces, Pods and other kinds the fake serves) from YAML
    manifests (paths, or YAML text): multi-document files and ``kind: List`` items, validated and
    defaulted as the real API server does. A bad document is a :class:`SeedError` naming the file, the
    document (1-based; ``.items[i]`` in a List) and the server's message; then nothing is stored.
    Namespaced objects need their namespace (stored already, or created by an earlier document).
    Returns the stored objects."""
    planned: list[tuple[str, Obj]] = []
    namespaces = {name for _, name in api.objects["/namespaces"]}
    for source in sources:
        where, docs = _manifest_docs(source)
        for n, doc in enumerate(docs, start=1):
            items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else None
            entries = [(f"{where} document {n} .items[{i}]", o) for i, o in enumerate(items or [])]
            for here, obj in entries if items is not None else [(f"{where} document {n}", doc)]:
                planned.append((here, _checked_seed(api, here, obj, namespaces)))
    with api.lock:
        return [api.add(obj) for _, obj in planned]


def _checked_seed(api: FakeKubeApi, here: str, obj: Any, namespaces: set[str]) -> Obj:
    if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
        raise SeedError(f"{here}: not a Kubernetes object (apiVersion and kind are required)")
    try:
        rtype = api.rtype(str(obj["kind"]))
    except KeyError:
        raise SeedError(f"{here}: the fake API server does not serve kind {obj['kind']}") from None
    if rtype.api_version != obj["apiVersion"]:
        raise SeedError(f"{here}: {obj['kind']} is served as {rtype.api_version}, not {obj['apiVersion']}")
    meta = obj.setdefault("metadata", {})
    if rtype.namespaced:
        meta.setdefault("namespace", "default")
        if meta["namespace"] not in namespaces:
            raise SeedError(f"{here}: namespace {meta['namespace']!r} does not exist")
    elif rtype.kind == "Namespace":
        namespaces.add(str(meta.get("name") or ""))
    try:
        admitted = admit(rtype.kind, obj)
    except ApiError as exc:
        raise SeedError(f"{here}: {exc.message}") from exc
    return admitted


NETPOL_NAMESPACES = ("x", "y", "z")
NETPOL_PODS = ("a", "b", "c")


def netpol_pod_ports() -> list[Obj]:
    """The container ports of every pod of the e2e netpol model: TCP and UDP on 80 and 81, named."""
    return [
        {"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
        for port in (80, 81)
        for proto in ("TCP", "UDP")
    ]


def seed_netpol_model(api: FakeKubeApi, nodes: list[str]) -> dict[str, str]:
    """The model of the Kubernetes e2e netpol suite: namespaces x, y, z (label ``ns: <name>``, plus
    ``kubernetes.io/metadata.name`` from the server), pods a, b, c in each (label ``pod: <name>``, spread
    over ``nodes``, Ready, with :func:`netpol_pod_ports`) and Services ``s-<ns>-<pod>``. Returns each
    pod's IP by key (``x/a``: 10.244.1.11 ...)."""
    ips: dict[str, str] = {}
    for n, ns in enumerate(NETPOL_NAMESPACES):
        api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}})
        for m, name in enumerate(NETPOL_PODS):
            ip = f"10.244.{n + 1}.{m + 11}"
            pod = make_pod(name, ns, node=nodes[(3 * n + m) % len(nodes)], ip=ip, labels={"pod": name})
            pod["spec"]["containers"][0]["ports"] = netpol_pod_ports()
            api.add(pod)
            api.add(
                make_service(
                    f"s-{ns}-{name}",
                    ns,
                    cluster_ip=f"10.96.{n + 1}.{m + 11}",
                    selector={"pod": name},
                    ports=[
                        {
                            "name": f"service-port-{p['protocol'].lower()}-{p['containerPort']}",
                            "port": p["containerPort"],
                            "protocol": p["protocol"],
                            "targetPort": p["containerPort"],
                        }
                        for p in netpol_pod_ports()
                    ],
                )
            )
            ips[f"{ns}/{name}"] = ip
    return ips
