"""``KubeProber``: the :class:`migrator.ports.Prober` of a real cluster.

It deploys, in the dedicated namespace ``migrator-probe``: a ServiceAccount with a Role that only reads
ConfigMaps there, the ConfigMap ``migrator-probe-agent`` holding the *same* agent code as the lab
(:mod:`migrator.probe.agent`, standard library only) and the runner (:mod:`migrator.probe.k8s.runner`), a
DaemonSet ``migrator-probe`` (image a parameter, default ``python:3.12-alpine``; it tolerates every taint,
so it runs on control-plane nodes too) and a Service ``migrator-probe`` in front of its pods.

A probe round needs no ``exec`` and no inbound connection: migrator writes one ConfigMap per node that
has work (labelled with the node's hash and the round), each pod's runner watches for its own and runs the
round with the agent, and prints the outcomes to its log; migrator reads the pod logs
(``GET pods/NAME/log``), then deletes the round's ConfigMaps. A continuous probe is a round with a rate
and a bounded duration whose results are printed every second; deleting its ConfigMaps stops it.

Where a probe comes from: a probe's ``source`` is a pod key (``ns/name``) or a node name. The probe runs
from the probe pod *on that source's node*, on the pod network (same node, same CNI, same routes), not
from inside the application pod itself (that would need ``exec`` or a privileged ``setns``). A source
whose node has no Ready probe pod is reported failed with ``no-probe-pod``.

``outside`` sources (a Service's NodePort on a node, as a user or a load balancer reaches it) run, with
``outside=OutsideMode.HOST_NETWORK`` (the default), from a second DaemonSet ``migrator-probe-host``: the
same runner on the nodes' *host* network (no pod IP, no CNI on the path at the source), with no
listening port. A NodePort probe to node X is sent by the host-network pod of another node (chosen
deterministically per destination, spread over the nodes), so it crosses the node network and enters X
through kube-proxy's NodePort rules like traffic from outside; it never starts on X itself (that would
be local traffic, a different path). This DaemonSet is deployed on the first ``outside`` probe only; it
needs the namespace's Pod Security level ``privileged`` (``hostNetwork``), which the namespace carries in
this mode. If it cannot roll out (an admission policy forbids host networking), ``outside`` probes are
reported failed with ``no-outside-probe-pod`` and the reason; ``OutsideMode.OFF`` reports them failed
``unsupported`` and never deploys it.

``policy`` probes (:data:`~migrator.ports.ProbeKind.POLICY`: may the source pod reach the destination on
this port and protocol, under the NetworkPolicies?) must leave from the *source pod's own* network
namespace: from the probe pod, the packets would carry the probe pod's IP and labels and be judged by
other policies (a host-network probe pod is subject to no egress policy at all). With
``policy=PolicyMode.NETNS`` (the default) they run from a third DaemonSet ``migrator-probe-netns``,
privileged with ``hostPID``, deployed on the first ``policy`` probe: migrator sends each target with the
source pod's UID, and that DaemonSet's runner (:mod:`migrator.targets.kube.netns_runner`, shipped in the
same ConfigMap) finds a process of that pod on its node through the kubelet's cgroup names and has the
agent enter ``/proc/<pid>/ns/net`` for the probe's socket. The alternatives were rejected: a probe pod
per source carrying the source's labels gets another IP (``ipBlock`` rules differ), is picked up by the
source's Services and adopted (then deleted) by its ReplicaSet, and writes into the users' namespaces;
an ephemeral container in each source pod changes the users' pods for good (ephemeral containers cannot
be removed). Limits, reported and never counted as a deny: a namespace whose admission forbids privileged
pods (``no-policy-probe-pod``, with the reason), a source that is not a pod (``no-source``), a source pod
on the host network (``unsupported``: NetworkPolicy does not apply to it), a pod whose process the node
cannot find (the agent's ``netns`` error, see :mod:`~migrator.targets.kube.netns_runner`);
``PolicyMode.OFF`` reports every ``policy`` probe ``unsupported`` and never deploys the DaemonSet.

``cleanup()`` deletes the namespace (and so everything in it); the kube target calls it when its run
lock is released, i.e. at the end of every run, resume and rollback.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from typing import Any

from loguru import logger

from migrator.errors import MigratorError, StepFailed
from migrator.ports import ContinuousProbe, Pod, ProbeKind, ProbeResult, ProbeTarget
from migrator.probe.k8s import runner
from migrator.targets.kube import netns_runner, types
from migrator.targets.kube.cluster import KubeCluster
from migrator.targets.kube.workloads import RolloutKind

NAMESPACE = "migrator-probe"
NAME = "migrator-probe"
HOST_NAME = "migrator-probe-host"  # the host-network DaemonSet of ``outside`` probes
HOST_SLOT = "host:"  # the runner's --node for a host-network pod: host:<node> (its rounds' label)
NETNS_NAME = "migrator-probe-netns"  # the privileged hostPID DaemonSet of ``policy`` probes
NETNS_SLOT = "netns:"  # its runner's --node: netns:<node>
NETNS_RUNNER = "netns_runner.py"
POD_SECURITY = {f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")}
AGENT_CONFIGMAP = "migrator-probe-agent"
DEFAULT_IMAGE = "python:3.12-alpine"
APP_LABEL = "app.kubernetes.io/name"
MANAGED = {"app.kubernetes.io/managed-by": "migrator"}
MAX_TARGETS_PER_CONFIGMAP = 2000  # ~250 bytes each: well under the 1 MiB ConfigMap limit


LOG_OVERLAP = 5  # seconds read again at each log poll (clock drift, lines written during the read)


@dataclass
class _LogCursor:
    """How far a pod's log was read: the last kubelet timestamp, the lines taken at it, when."""

    last: tuple[int, int] = (0, 0)
    at_last: set[str] = field(default_factory=set)
    read_at: float | None = None


def _log_stamp(text: str) -> tuple[int, int] | None:
    """A kubelet log timestamp (RFC 3339, UTC, up to nanoseconds) as (seconds, nanoseconds)."""
    if not text.endswith("Z") or "T" not in text:
        return None
    main, _, frac = text[:-1].partition(".")
    try:
        seconds = int(datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
        nanos = int((frac + "000000000")[:9]) if frac else 0
    except ValueError:
        return None
    return seconds, nanos


class OutsideMode(StrEnum):
    """Where ``outside`` (NodePort) probes come from."""

    HOST_NETWORK = "host-network"  # the host network of another node (DaemonSet migrator-probe-host)
    OFF = "off"  # not probed: reported failed "unsupported"


class PolicyMode(StrEnum):
    """How ``policy`` probes enter the source pod's network namespace."""

    NETNS = "netns"  # the privileged hostPID DaemonSet migrator-probe-netns (setns into the pod)
    OFF = "off"  # not probed: reported failed "unsupported"


def _source_code(*parts: str) -> str:
    return resources.files("migrator.probe").joinpath(*parts).read_text(encoding="utf-8")


def _netns_runner_code() -> str:
    return resources.files("migrator.targets.kube").joinpath(NETNS_RUNNER).read_text(encoding="utf-8")


def probe_manifests(
    *,
    image: str = DEFAULT_IMAGE,
    namespace: str = NAMESPACE,
    port: int = 8080,
    poll: float = 1.0,
    host_network: bool = False,
) -> list[dict[str, Any]]:
    """Every object the prober deploys first, in apply order. ``host_network``: the namespace allows
    host-network and privileged pods (Pod Security ``privileged``) for the ``outside`` and ``policy``
    DaemonSets (:func:`outside_manifest`, :func:`netns_manifest`, deployed on first use)."""
    labels = {APP_LABEL: NAME, **MANAGED}
    meta = {"namespace": namespace, "labels": labels}
    ns_labels = {**MANAGED, **(POD_SECURITY if host_network else {})}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": ns_labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": NAME, **meta},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": NAME, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": AGENT_CONFIGMAP, **meta},
            "data": {
                "agent.py": _source_code("agent.py"),
                "runner.py": _source_code("k8s", "runner.py"),
                NETNS_RUNNER: _netns_runner_code(),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": NAME, **meta},
            "spec": {
                "selector": {"matchLabels": {APP_LABEL: NAME}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "tolerations": [{"operator": "Exists"}],
                        "terminationGracePeriodSeconds": 2,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
                        "containers": [
                            {
                                "name": "probe",
                                "image": image,
                                "command": ["python", "-u", "/opt/migrator-probe/runner.py"],
                                "args": [f"--poll={poll}", f"--port={port}"],
                                "env": [
                                    {
                                        "name": "NODE_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                    },
                                    {
                                        "name": "POD_NAMESPACE",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                    },
                                ],
                                "ports": [{"name": "http", "containerPort": port}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/healthz", "port": port},
                                    "periodSeconds": 2,
                                },
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "code", "mountPath": "/opt/migrator-probe"}],
                            }
                        ],
                        "volumes": [{"name": "code", "configMap": {"name": AGENT_CONFIGMAP}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, **meta},
            "spec": {
                "selector": {APP_LABEL: NAME},
                "ports": [{"name": "http", "port": 80, "targetPort": port}],
            },
        },
    ]


def outside_manifest(
    *, image: str = DEFAULT_IMAGE, namespace: str = NAMESPACE, poll: float = 1.0
) -> dict[str, Any]:
    """The DaemonSet ``migrator-probe-host``: the runner on each node's host network, for ``outside``
    probes. No listening port (it would take a port on the node), no readiness probe (Ready = running);
    its rounds are labelled with ``host:<node>`` (``--node``), so the pod-network runner of the same node
    never runs them."""
    labels = {APP_LABEL: HOST_NAME, **MANAGED}
    ds = next(
        o for o in probe_manifests(image=image, namespace=namespace, poll=poll) if o["kind"] == "DaemonSet"
    )
    pod = ds["spec"]["template"]["spec"]
    container = dict(pod["containers"][0])
    container["args"] = [f"--poll={poll}", "--port=0", f"--node={HOST_SLOT}$(NODE_NAME)"]
    for key in ("ports", "readinessProbe"):
        container.pop(key, None)
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": HOST_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {APP_LABEL: HOST_NAME}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **pod,
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "containers": [container],
                },
            },
        },
    }


def netns_manifest(
    *, image: str = DEFAULT_IMAGE, namespace: str = NAMESPACE, poll: float = 1.0
) -> dict[str, Any]:
    """The DaemonSet ``migrator-probe-netns``: :mod:`~migrator.targets.kube.netns_runner` on each node,
    privileged (``setns`` needs CAP_SYS_ADMIN, opening another process's namespace CAP_SYS_PTRACE) with
    ``hostPID`` (the node's processes in ``/proc``), as root; on the pod network itself (its own
    namespace is never a source: the agent refuses it). No listening port, no readiness probe; its rounds
    are labelled ``netns:<node>``."""
    labels = {APP_LABEL: NETNS_NAME, **MANAGED}
    ds = next(
        o for o in probe_manifests(image=image, namespace=namespace, poll=poll) if o["kind"] == "DaemonSet"
    )
    pod = dict(ds["spec"]["template"]["spec"])
    container = dict(pod["containers"][0])
    container["command"] = ["python", "-u", f"/opt/migrator-probe/{NETNS_RUNNER}"]
    container["args"] = [f"--poll={poll}", "--port=0", f"--node={NETNS_SLOT}$(NODE_NAME)"]
    container["securityContext"] = {"privileged": True, "runAsUser": 0, "readOnlyRootFilesystem": True}
    for key in ("ports", "readinessProbe"):
        container.pop(key, None)
    pod["securityContext"] = {"runAsUser": 0}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NETNS_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {APP_LABEL: NETNS_NAME}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {**pod, "hostPID": True, "containers": [container]},
            },
        },
    }


def outside_source(dest_node: str, candidates: Sequence[str]) -> str | None:
    """The node whose host network sends the ``outside`` probes to ``dest_node``: never that node itself,
    the same one for a destination every time, spread over ``candidates``."""
    others = sorted(n for n in candidates if n != dest_node)
    if not others:
        return None
    return others[int(runner.node_hash(dest_node), 16) % len(others)]


def _failed(target: ProbeTarget, error: str) -> ProbeResult:
    return ProbeResult(target.source, target.dest, target.kind, False, None, error, time.time())


class KubeProber:
    """Probes through the ``migrator-probe`` DaemonSet (see the module docstring).

    ``deploy_timeout`` bounds the first rollout (image pull included); ``round_margin`` is added to the
    longest probe timeout to bound the wait for a round's results; ``poll`` is the runner's and the log
    reader's period.
    """

    def __init__(
        self,
        cluster: KubeCluster,
        *,
        image: str = DEFAULT_IMAGE,
        namespace: str = NAMESPACE,
        deploy_timeout: float = 300.0,
        round_margin: float = 30.0,
        poll: float = 1.0,
        log_readers: int = 16,
        outside: OutsideMode = OutsideMode.HOST_NETWORK,
        policy: PolicyMode = PolicyMode.NETNS,
    ) -> None:
        self.cluster = cluster
        self.outside = outside
        self.policy = policy
        self.netns_deployed = False
        self.netns_error: str | None = None
        self.outside_deployed = False
        self.outside_error: str | None = None
        self.log_readers = log_readers
        self.image = image
        self.namespace = namespace
        self.deploy_timeout = deploy_timeout
        self.round_margin = round_margin
        self.poll = poll
        self.deployed = False
        self._lock = threading.RLock()
        self._rounds = itertools.count(1)
        self._log_lock = threading.Lock()
        self._cursors: dict[str, _LogCursor] = {}  # pod key -> what was read of its log
        self._outcomes: dict[str, dict[str, list[dict[str, Any]]]] = {}  # round -> slot -> outcomes
        self._ended: dict[str, set[str]] = {}  # round -> slots whose runner ended it
        self._epoch = time.strftime("%Y%m%d%H%M%S", time.gmtime())

    # ----------------------------------------------------------------------------- lifecycle

    def deploy(self) -> None:
        """Apply the probe objects (idempotent) and wait for the DaemonSet's rollout."""
        with self._lock:
            if self.deployed:
                return
            logger.info("deploying the probe DaemonSet {}/{} ({})", self.namespace, NAME, self.image)
            host_network = self.outside is OutsideMode.HOST_NETWORK
            manifests = probe_manifests(
                image=self.image, namespace=self.namespace, poll=self.poll, host_network=host_network
            )
            self.cluster.apply(manifests)
            self.cluster.wait_rollout(
                RolloutKind.DAEMONSET, self.namespace, NAME, timeout=self.deploy_timeout
            )
            self.deployed = True

    def cleanup(self, *, wait_timeout: float | None = 60.0) -> None:
        """Delete the probe namespace and everything in it (idempotent)."""
        with self._lock:
            self.cluster.delete("v1", "Namespace", self.namespace, wait_timeout=wait_timeout)
            self.deployed = self.outside_deployed = self.netns_deployed = False
            self.outside_error = self.netns_error = None
            logger.info("removed the probe namespace {}", self.namespace)

    def deploy_outside(self) -> str | None:
        """Deploy the host-network DaemonSet (once) and wait for its rollout; the reason it cannot run,
        or ``None``. A failure is remembered: ``outside`` probes then fail at once with that reason."""
        with self._lock:
            if self.outside is OutsideMode.OFF:
                return "unsupported: outside probes are off (KubeProber outside=off)"
            if not (self.outside_deployed or self.outside_error):
                self.outside_error = self._deploy_daemonset(
                    HOST_NAME,
                    [outside_manifest(image=self.image, namespace=self.namespace, poll=self.poll)],
                    what="host-network DaemonSet",
                    failure="no-outside-probe-pod",
                    hint="host networking forbidden by an admission policy?",
                )
                self.outside_deployed = self.outside_error is None
            return self.outside_error

    def deploy_netns(self) -> str | None:
        """Deploy the privileged ``policy`` DaemonSet (once; the namespace gets Pod Security ``privileged``
        first) and wait for its rollout; the reason it cannot run, or ``None``. A failure is remembered:
        ``policy`` probes then fail at once with it."""
        with self._lock:
            if self.policy is PolicyMode.OFF:
                return "unsupported: policy probes are off (KubeProber policy=off)"
            if not (self.netns_deployed or self.netns_error):
                privileged = probe_manifests(namespace=self.namespace, host_network=True)[0]  # the Namespace
                self.netns_error = self._deploy_daemonset(
                    NETNS_NAME,
                    [privileged, netns_manifest(image=self.image, namespace=self.namespace, poll=self.poll)],
                    what="privileged DaemonSet",
                    failure="no-policy-probe-pod",
                    hint="privileged or hostPID pods forbidden by an admission policy?",
                )
                self.netns_deployed = self.netns_error is None
            return self.netns_error

    def _deploy_daemonset(
        self, name: str, objects: list[dict[str, Any]], *, what: str, failure: str, hint: str
    ) -> str | None:
        """Apply ``objects`` and wait for DaemonSet ``name`` to roll out; the failure reason, or ``None``.
        The caller holds ``_lock``."""
        logger.info("deploying the {} {}/{}", what, self.namespace, name)
        try:
            self.cluster.apply(objects)
            timeout = self.deploy_timeout
            self.cluster.wait_rollout(RolloutKind.DAEMONSET, self.namespace, name, timeout=timeout)
        except MigratorError as exc:
            error = f"{failure}: the {what} {self.namespace}/{name} did not roll out ({hint}): {exc}"
            logger.warning("{}", error)
            return error
        return None

    # ------------------------------------------------------------------------------ routing

    def probe_pods(self, app: str = NAME) -> dict[str, Pod]:
        """Node -> its Ready probe pod (``app``: ``HOST_NAME`` for the host-network ones)."""
        pods = self.cluster.list_pods(namespace=self.namespace)
        return {p.node: p for p in pods if p.ready and p.labels.get(APP_LABEL) == app}

    def _route(
        self, targets: Sequence[ProbeTarget]
    ) -> tuple[dict[str, list[int]], dict[int, ProbeResult], dict[str, Pod], dict[int, dict[str, Any]]]:
        """(slot -> indexes of its targets, failed results by index, slot -> probe pod, extra spec fields
        by index). A slot is a node name (its pod-network probe pod), ``host:<node>`` (its host-network
        probe pod) or ``netns:<node>`` (its privileged ``policy`` probe pod)."""
        node_list = self.cluster.list_nodes()
        nodes = {n.name for n in node_list}
        by_address = {n.address: n.name for n in node_list if n.address}
        pod_nodes = {p.key: p.node for p in self.cluster.list_pods()}
        probe_pods: dict[str, Pod] = dict(self.probe_pods())
        by_node: dict[str, list[int]] = {}
        failed: dict[int, ProbeResult] = {}
        outside_error: str | None = None
        host_pods: dict[str, Pod] = {}
        if any(t.source == "outside" for t in targets):
            outside_error = self.deploy_outside()
            if outside_error is None:
                host_pods = self.probe_pods(HOST_NAME)
                probe_pods.update({f"{HOST_SLOT}{n}": p for n, p in host_pods.items()})
        policy = [i for i, t in enumerate(targets) if t.kind is ProbeKind.POLICY]
        extras: dict[int, dict[str, Any]] = {}
        if policy:
            slots, policy_failed, extras = self._route_policy(targets, policy)
            probe_pods.update(slots)
            failed.update(policy_failed)
            for i, spec in extras.items():
                by_node.setdefault(spec.pop("slot"), []).append(i)
        for i, target in ((i, t) for i, t in enumerate(targets) if t.kind is not ProbeKind.POLICY):
            node = target.source if target.source in nodes else pod_nodes.get(target.source)
            if target.source == "outside":
                dest = by_address.get(target.host) or target.dest.rpartition("@")[2]
                sender = outside_source(dest, list(host_pods))
                if outside_error is not None:
                    failed[i] = _failed(target, outside_error)
                elif sender is None:
                    failed[i] = _failed(
                        target, f"no-outside-probe-pod: no Ready {HOST_NAME} pod on a node other than {dest}"
                    )
                else:
                    by_node.setdefault(f"{HOST_SLOT}{sender}", []).append(i)
            elif node is None:
                failed[i] = _failed(target, f"no-source: {target.source} is neither a node nor a pod")
            elif node not in probe_pods:
                failed[i] = _failed(target, f"no-probe-pod: no Ready probe pod on node {node}")
            else:
                by_node.setdefault(node, []).append(i)
        return by_node, failed, probe_pods, extras

    def _route_policy(
        self, targets: Sequence[ProbeTarget], indexes: Sequence[int]
    ) -> tuple[dict[str, Pod], dict[int, ProbeResult], dict[int, dict[str, Any]]]:
        """The ``policy`` targets: (``netns:<node>`` slot -> probe pod, failed by index, by index the
        slot and the source pod's UID for :mod:`~migrator.targets.kube.netns_runner`)."""
        failed: dict[int, ProbeResult] = {}
        error = self.deploy_netns()
        if error is not None:
            return {}, {i: _failed(targets[i], error) for i in indexes}, {}
        slots = {f"{NETNS_SLOT}{n}": p for n, p in self.probe_pods(NETNS_NAME).items()}
        sources = {types.pod_key(o): o for o in self.cluster.list_pod_objects()}
        extras: dict[int, dict[str, Any]] = {}
        for i in indexes:
            target = targets[i]
            obj = sources.get(target.source)
            spec = (obj or {}).get("spec") or {}
            slot = f"{NETNS_SLOT}{spec.get('nodeName') or ''}"
            if obj is None:
                failed[i] = _failed(
                    target, f"no-source: {target.source} is not a pod (policy probes start in one)"
                )
            elif spec.get("hostNetwork"):
                failed[i] = _failed(
                    target,
                    f"unsupported: {target.source} is on the host network"
                    " (NetworkPolicy does not apply to it)",
                )
            elif slot not in slots:
                failed[i] = _failed(
                    target, f"no-policy-probe-pod: no Ready {NETNS_NAME} pod on node {spec.get('nodeName')}"
                )
            else:
                extras[i] = {"slot": slot, netns_runner.UID_KEY: str(obj["metadata"]["uid"])}
        return slots, failed, extras

    # ------------------------------------------------------------------------------- rounds

    def _start_round(
        self,
        targets: Sequence[ProbeTarget],
        by_node: Mapping[str, list[int]],
        extra: Mapping[str, Any],
        spec_extras: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> tuple[str, list[str]]:
        rnd = f"{self._epoch}-{next(self._rounds):05d}"
        self._track(rnd)
        names: list[str] = []
        objects: list[dict[str, Any]] = []
        for n, (node, indexes) in enumerate(sorted(by_node.items())):
            if len(indexes) > MAX_TARGETS_PER_CONFIGMAP:
                raise StepFailed(
                    f"{len(indexes)} probes from node {node} in one round (at most"
                    f" {MAX_TARGETS_PER_CONFIGMAP}): sample the matrix (per_source)"
                )
            body = {
                "round": rnd,
                "targets": [{**_spec(targets[i]), **(spec_extras or {}).get(i, {})} for i in indexes],
                **extra,
            }
            name = f"migrator-probe-round-{rnd}-{n:05d}"
            names.append(name)
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": name,
                        "namespace": self.namespace,
                        "labels": {
                            runner.NODE_LABEL: runner.node_hash(node),
                            runner.ROUND_LABEL: rnd,
                            **MANAGED,
                        },
                    },
                    "data": {"targets.json": json.dumps(body, separators=(",", ":"))},
                }
            )
        if objects:
            self.cluster.apply(objects)
        return rnd, names

    def _end_round(self, names: Sequence[str]) -> None:
        for name in names:
            self.cluster.delete("v1", "ConfigMap", name, self.namespace)

    def read_log(self, pod: Pod, *, since_seconds: int | None = None) -> str:
        """The pod's log with kubelet timestamps (``timestamps=true``), the last ``since_seconds`` only."""
        api = self.cluster.api
        data = api.call_bytes(
            f"read the log of pod {pod.key}",
            api.core.read_namespaced_pod_log,
            pod.name,
            pod.namespace,
            timestamps=True,
            since_seconds=since_seconds,
        )
        return data.decode("utf-8", "replace")

    def new_log_lines(self, pod: Pod) -> list[str]:
        """The lines ``pod`` printed since the previous call (the first call: all of them).

        Each read asks only for the last seconds since the previous one (``sinceSeconds``, plus
        ``LOG_OVERLAP`` seconds for clock drift and lines written during the read), and the kubelet's
        timestamps drop what was read already: a long continuous probe costs each poll the new lines,
        not the whole log, and lines read before the kubelet rotates the log file are kept here."""
        with self._log_lock:
            cursor = self._cursors.setdefault(pod.key, _LogCursor())
            since = None if cursor.read_at is None else int(time.monotonic() - cursor.read_at) + LOG_OVERLAP
            started = time.monotonic()
        text = self.read_log(pod, since_seconds=since)
        fresh: list[str] = []
        with self._log_lock:
            for raw in text.splitlines():
                stamp_text, _, line = raw.partition(" ")
                stamp = _log_stamp(stamp_text)
                if stamp is None:  # no timestamp: keep the line as it is
                    fresh.append(raw)
                    continue
                if stamp < cursor.last or (stamp == cursor.last and line in cursor.at_last):
                    continue
                if stamp > cursor.last:
                    cursor.last, cursor.at_last = stamp, set()
                cursor.at_last.add(line)
                fresh.append(line)
            cursor.read_at = started
        return fresh

    def _track(self, rnd: str) -> None:
        with self._log_lock:
            self._outcomes.setdefault(rnd, {})
            self._ended.setdefault(rnd, set())

    def _forget(self, rnd: str) -> None:
        with self._log_lock:
            self._outcomes.pop(rnd, None)
            self._ended.pop(rnd, None)

    def collect(
        self,
        rnd: str,
        pods: Mapping[str, Pod],
        done: Mapping[str, list[dict[str, Any]]] | None = None,
    ) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
        """Outcomes of round ``rnd`` by slot so far, and the slots whose runner ended the round.

        The pods not done with the round are read (``log_readers`` at a time, new lines only: see
        :meth:`new_log_lines`); their lines go to every round being tracked (one-off and continuous
        rounds share pods), so nothing read is lost for another round. ``done`` is accepted for
        compatibility: what was read before is kept here anyway."""
        del done
        self._track(rnd)
        with self._log_lock:
            ended_now = set(self._ended[rnd])
        todo = [(slot, pod) for slot, pod in pods.items() if slot not in ended_now]
        with ThreadPoolExecutor(max_workers=max(1, min(self.log_readers, len(todo) or 1))) as pool:
            read = list(pool.map(lambda item: self.new_log_lines(item[1]), todo))
        slot_of = {pod.key: slot for slot, pod in pods.items()}
        with self._log_lock:
            for (_, pod), lines in zip(todo, read, strict=True):
                self._dispatch(pod, slot_of[pod.key], lines)
            outcomes = {slot: list(self._outcomes[rnd].get(slot, [])) for slot in pods}
            return outcomes, set(self._ended[rnd])

    def _dispatch(self, pod: Pod, slot: str, lines: Sequence[str]) -> None:
        """Parse result lines into the tracked rounds' outcomes (called with ``_log_lock`` held)."""
        for line in lines:
            head, _, rest = line.partition(" ")
            if head == runner.RESULT_PREFIX:
                got, _, payload = rest.partition(" ")
                if got in self._outcomes:
                    try:
                        self._outcomes[got].setdefault(slot, []).extend(json.loads(payload))
                    except ValueError:
                        logger.warning("probe pod {}: unreadable result line", pod.key)
            elif head == runner.END_PREFIX:
                got = rest.split(" ", 1)[0]
                if got in self._ended:
                    self._ended[got].add(slot)
                if " error: " in rest:
                    logger.warning("probe pod {}: {}", pod.key, rest)

    # ------------------------------------------------------------------------------- Prober

    def probe(self, targets: Sequence[ProbeTarget], *, concurrency: int = 256) -> list[ProbeResult]:
        self.deploy()
        by_node, failed, probe_pods, spec_extras = self._route(targets)
        pods = {node: probe_pods[node] for node in by_node}
        results: dict[int, ProbeResult] = dict(failed)
        if by_node:
            rnd, names = self._start_round(targets, by_node, {"concurrency": concurrency}, spec_extras)
            longest = max(targets[i].timeout for idx in by_node.values() for i in idx)
            deadline = time.monotonic() + longest + self.round_margin
            try:
                while True:
                    outcomes, ended = self.collect(rnd, pods)
                    if ended >= set(by_node) or time.monotonic() >= deadline:
                        break
                    time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
            finally:
                self._end_round(names)
                self._forget(rnd)
            for node, indexes in by_node.items():
                got = outcomes.get(node, [])
                for pos, i in enumerate(indexes):
                    if node in ended and pos < len(got):
                        results[i] = _result(got[pos])
                    else:
                        # a prober error, never "timeout": that word means the probe itself timed out
                        # (for a policy probe, an observed deny)
                        results[i] = _failed(targets[i], f"no-result: no result from the probe pod on {node}")
        return [results[i] for i in range(len(targets))]

    def start_continuous(
        self, targets: Sequence[ProbeTarget], *, rate_hz: float, max_duration: float
    ) -> ContinuousProbe:
        self.deploy()
        by_node, failed, probe_pods, spec_extras = self._route(targets)
        extra = {"continuous": True, "rate_hz": rate_hz, "duration": max_duration}
        rnd, names = self._start_round(targets, by_node, extra, spec_extras)
        return KubeContinuousProbe(
            self, rnd, names, {n: probe_pods[n] for n in by_node}, list(failed.values())
        )


def _spec(target: ProbeTarget) -> dict[str, Any]:
    return {
        "source": target.source,
        "dest": target.dest,
        "kind": target.kind.value,
        "host": target.host,
        "port": target.port,
        "protocol": target.protocol.value,
        "path": target.path,
        "expect_status": target.expect_status,
        "expect_body": target.expect_body,
        "timeout": target.timeout,
    }


def _result(raw: Mapping[str, Any]) -> ProbeResult:
    latency = raw.get("latency_ms")
    error = raw.get("error")
    return ProbeResult(
        source=str(raw.get("source", "")),
        dest=str(raw.get("dest", "")),
        kind=ProbeKind(str(raw.get("kind"))),
        ok=bool(raw.get("ok")),
        latency_ms=None if latency is None else float(latency),
        error=None if error is None else str(error),
        ts=float(raw.get("ts") or 0.0),
        elapsed_ms=None if raw.get("elapsed_ms") is None else float(raw["elapsed_ms"]),
    )


class KubeContinuousProbe:
    """A running continuous round; ``stop`` deletes its ConfigMaps (the runners stop) and collects."""

    def __init__(
        self, prober: KubeProber, rnd: str, names: list[str], pods: dict[str, Pod], failed: list[ProbeResult]
    ) -> None:
        self.prober = prober
        self.round = rnd
        self.names = names
        self.pods = pods
        self.failed = failed
        self.stopped: list[ProbeResult] | None = None

    def snapshot(self) -> list[ProbeResult]:
        if self.stopped is not None:
            return list(self.stopped)
        outcomes, _ = self.prober.collect(self.round, self.pods)
        return self.failed + [_result(o) for found in outcomes.values() for o in found]

    def stop(self) -> list[ProbeResult]:
        if self.stopped is not None:
            return list(self.stopped)
        self.prober._end_round(self.names)
        deadline = time.monotonic() + self.prober.round_margin
        while True:
            outcomes, ended = self.prober.collect(self.round, self.pods)
            if ended >= set(self.pods) or time.monotonic() >= deadline:
                break
            time.sleep(self.prober.poll)
        self.prober._forget(self.round)
        results = self.failed + [_result(o) for found in outcomes.values() for o in found]
        self.stopped = sorted(results, key=lambda r: r.ts)
        return list(self.stopped)
