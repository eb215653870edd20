"""A small fake Kubernetes API server for tests and benchmarks (loopback only, or in-process).

It speaks real Kubernetes JSON for the resources migrator uses, so that the official ``kubernetes``
client talks to it unchanged: over HTTP through an ordinary kubeconfig (:class:`FakeApiServer`), or in this
process through the client's own transport (:class:`LocalKube`). It keeps ``resourceVersion``, answers
404/409/422/429 like the real API server, paginates lists (``limit``/``continue``), streams watches (replay
since a resourceVersion, then new events until ``timeoutSeconds``), applies merge, strategic-merge (as a
merge patch), JSON patch and server-side apply (``application/apply-patch+yaml`` with field managers and
conflicts), honours ``dryRun=All``, refuses evictions that would break a PodDisruptionBudget (429 with a
Status body) and answers SelfSubjectAccessReviews.

By job:

- :mod:`.store`: resource types, objects, the watch event log, lists and watches, selectors;
- :mod:`.patch`: request bodies, merge and JSON patches, server-side apply and managed fields;
- :mod:`.controllers`: what a control plane does (DaemonSet pods, ReplicaSet replacements, graceful
  deletion, garbage collection, evictions with PDBs, CRDs served, pod logs);
- :mod:`.validation`: what the real server validates and defaults on NetworkPolicies (422 Invalid with
  field causes) and Namespaces (``kubernetes.io/metadata.name``), on every write;
- :mod:`.api`: :class:`FakeKubeApi`, the request logic (auth, faults, discovery, verbs) on all of that;
- :mod:`.http` (:class:`FakeApiServer`) and :mod:`.local` (:class:`LocalKube`): the two transports;
- :mod:`.objects` (fixture objects), :mod:`.seed` (the flannel cluster, Calico's CRDs and manifest,
  objects from YAML manifests: :func:`seed_manifests`),
  :mod:`.process` (a seeded server in its own process: ``python -m migrator.testing.kube_server``).

Simplifications (documented in docs/kube-target.md): strategic merge patches are merge patches; continue
tokens are not consistent snapshots; no admission; no validation or defaulting beyond a few fields and
the kinds of :mod:`.validation`.
"""

from migrator.testing.kube_server.api import FakeKubeApi, Fault, Request, Response
from migrator.testing.kube_server.http import FakeApiServer
from migrator.testing.kube_server.local import LocalKube
from migrator.testing.kube_server.objects import (
    make_configmap,
    make_daemonset,
    make_endpointslice,
    make_node,
    make_pdb,
    make_pod,
    make_service,
    pod_ready,
)
from migrator.testing.kube_server.patch import json_patch, merge_patch
from migrator.testing.kube_server.process import FakeClusterProcess
from migrator.testing.kube_server.seed import (
    CALICO_CRD_KINDS,
    CALICO_MANIFEST,
    FLANNEL_NET_CONF,
    SeedError,
    add_nodes,
    calico_crd,
    calico_crds,
    calico_node_daemonset,
    flannel_api,
    seed_flannel_cluster,
    seed_manifests,
    seed_netpol_model,
    write_calico_manifest,
)
from migrator.testing.kube_server.store import (
    ApiError,
    ResourceType,
    parse_field_selector,
    parse_label_selector,
    status_body,
)

__all__ = [
    "CALICO_CRD_KINDS",
    "CALICO_MANIFEST",
    "FLANNEL_NET_CONF",
    "ApiError",
    "FakeApiServer",
    "FakeClusterProcess",
    "FakeKubeApi",
    "Fault",
    "LocalKube",
    "Request",
    "ResourceType",
    "Response",
    "SeedError",
    "add_nodes",
    "calico_crd",
    "calico_crds",
    "calico_node_daemonset",
    "flannel_api",
    "json_patch",
    "make_configmap",
    "make_daemonset",
    "make_endpointslice",
    "make_node",
    "make_pdb",
    "make_pod",
    "make_service",
    "merge_patch",
    "parse_field_selector",
    "parse_label_selector",
    "pod_ready",
    "seed_flannel_cluster",
    "seed_manifests",
    "seed_netpol_model",
    "status_body",
    "write_calico_manifest",
]
