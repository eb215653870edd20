"""What a real control plane does with the stored objects, reduced to what migrator meets:

- the DaemonSet controller: one pod per node its ``nodeSelector`` matches (recreated when the template
  changes), Ready after ``daemonset_ready_delay`` seconds (never when ``None``), and a status that follows;
- the ReplicaSet (StatefulSet, Job) controller: a deleted or evicted pod is recreated on another
  schedulable node, Ready after ``replacement_ready_delay`` seconds (never when ``None``);
- graceful deletion: pods (``pod_termination_seconds``) and namespaces (``namespace_termination_seconds``)
  are Terminating for a while, then gone;
- the garbage collector (a DaemonSet's pods go with it) and the namespace controller (its objects go);
- the disruption controller: evictions refused (429) while a PodDisruptionBudget allows no disruption;
- the apiextensions server: a CustomResourceDefinition's kinds are served, Established after
  ``crd_established_delay``;
- the kubelet's pod logs (:meth:`ControlPlane.append_log`, ``GET pods/NAME/log``).

``controllers_enabled=False`` stops the DaemonSet and ReplicaSet controllers (large seeds for benchmarks).
Timed work runs in :meth:`ControlPlane.run_timers` (a thread of the server).
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from migrator.testing.kube_server.objects import make_pod, owner_of, pod_ready
from migrator.testing.kube_server.store import (
    ApiError,
    Obj,
    ResourceType,
    Store,
    match_label_selector_obj,
    now_iso,
    status_body,
)

REPLICATED = ("ReplicaSet", "StatefulSet", "ReplicationController", "Job")


def _rfc3339nano(t: float) -> str:
    """A kubelet log timestamp: RFC 3339 in UTC with nanoseconds."""
    whole = int(t)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        + f".{min(round((t - whole) * 1e9), 999_999_999):09d}Z"
    )


def _int_or_percent(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return -(-int(value[:-1]) * total // 100)
    return int(value)


def _selects(selector: Mapping[str, str], node: Obj) -> bool:
    labels = node["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class ControlPlane(Store):
    """The store with its controllers (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.replacement_ready_delay: float | None = 0.3
        self.daemonset_ready_delay: float | None = 0.2
        self.pod_termination_seconds = 0.0
        # > 0: a deleted Namespace is Terminating (deletionTimestamp, phase) for that long, then goes
        self.namespace_termination_seconds = 0.0
        self.crd_established_delay = 0.2
        self.controllers_enabled = True
        self.ip_counter = itertools.count(1)
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_seq = itertools.count()
        self.pod_logs: dict[tuple[str, str], list[str]] = {}  # (namespace, pod) -> lines, see append_log
        self.pod_log_times: dict[tuple[str, str], list[float]] = {}  # when each line was written
        self.log_reads: list[tuple[str, str, dict[str, str]]] = []  # (namespace, pod, query) of each read
        self.ensure_namespace("kube-system")
        self.ensure_namespace("default")

    # ------------------------------------------------------------------------------- timers

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        with self.lock:
            heapq.heappush(self.timers, (time.monotonic() + delay, next(self.timer_seq), action))
            self.lock.notify_all()

    def run_timers(self) -> None:
        """The controller loop: runs due timers until ``stopping`` is set."""
        while not self.stopping.is_set():
            with self.lock:
                now = time.monotonic()
                due: list[Callable[[], None]] = []
                while self.timers and self.timers[0][0] <= now:
                    due.append(heapq.heappop(self.timers)[2])
                for action in due:
                    with contextlib.suppress(KeyError):
                        action()
                wait = min(0.1, self.timers[0][0] - now) if self.timers else 0.1
                self.lock.wait(timeout=max(wait, 0.001))

    def start_timers(self) -> threading.Thread:
        """Run :meth:`run_timers` in a daemon thread (stop it with :meth:`stop_timers`)."""
        self.stopping.clear()
        thread = threading.Thread(target=self.run_timers, name="fake-kube-controllers", daemon=True)
        thread.start()
        return thread

    def stop_timers(self) -> None:
        """Stop the controller loop and end every watch."""
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()

    # -------------------------------------------------------------------------- change hook

    def changed(self, etype: str, rtype: ResourceType, old: Obj | None, new: Obj, *, quiet: bool) -> None:
        meta = new["metadata"]
        ns = str(meta.get("namespace", ""))
        if rtype.kind == "DaemonSet":
            if etype == "DELETED":  # the garbage collector
                for (pns, pname), pod in list(self.objects["/pods"].items()):
                    if pns == ns and owner_of(pod) == ("DaemonSet", meta["name"]):
                        self.delete(self.rtype("Pod"), pns, pname)
            elif not quiet:
                self._reconcile_daemonset(ns, meta["name"])
        elif rtype.kind == "Pod" and etype == "MODIFIED":
            self._ds_status_on_pod_change(new)
        elif rtype.kind == "Pod" and etype == "DELETED":
            self._replace_pod(new)
            self._ds_status_on_pod_change(new)
            self.pod_logs.pop((ns, meta["name"]), None)
            self.pod_log_times.pop((ns, meta["name"]), None)
        elif rtype.kind == "Node" and old is not None and old["metadata"].get("labels") != meta.get("labels"):
            for ds_ns, ds_name in list(self.objects["apps/daemonsets"]):
                self._reconcile_daemonset(ds_ns, ds_name)
        elif rtype.kind == "Namespace" and etype == "DELETED":  # the namespace controller
            self._empty_namespace(str(meta["name"]))
        elif rtype.kind == "CustomResourceDefinition" and etype == "ADDED":
            self._register_crd(new)

    def _empty_namespace(self, name: str) -> None:
        for other in self.resources:
            if other.namespaced:
                for ons, oname in [k for k in self.objects[other.key] if k[0] == name]:
                    if (ons, oname) in self.objects[other.key]:
                        self.delete(other, ons, oname)

    # ------------------------------------------------------------------------- CRDs served

    def _register_crd(self, crd: Obj) -> None:
        """Serve the CRD's kind (every served version), Established after ``crd_established_delay``."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True):
                self.register_type(
                    ResourceType(
                        str(spec.get("group")),
                        str(version.get("name")),
                        str(names.get("plural")),
                        str(names.get("kind")),
                        spec.get("scope", "Namespaced") == "Namespaced",
                    )
                )
        name = str(crd["metadata"]["name"])

        def established() -> None:
            current = self.objects["apiextensions.k8s.io/customresourcedefinitions"].get(("", name))
            if current is not None:
                new = copy.deepcopy(current)
                new["status"] = {
                    "conditions": [
                        {"type": "Established", "status": "True"},
                        {"type": "NamesAccepted", "status": "True"},
                    ]
                }
                self.store(self.rtype("CustomResourceDefinition"), new)

        self.schedule(self.crd_established_delay, established)

    # ------------------------------------------------------------------------------ kubelet

    def append_log(self, namespace: str, pod: str, line: str) -> None:
        """What the container of ``namespace/pod`` writes to stdout (served by ``GET .../pods/NAME/log``)."""
        with self.lock:
            self.pod_logs.setdefault((namespace, pod), []).append(line.rstrip("\n"))
            self.pod_log_times.setdefault((namespace, pod), []).append(time.time())

    def read_log(self, namespace: str, pod: str, query: Mapping[str, str]) -> bytes:
        """``sinceSeconds``, ``timestamps``, ``tailLines`` and ``limitBytes`` as the kubelet honours them;
        404 for an unknown pod."""
        with self.lock:
            if (namespace, pod) not in self.objects["/pods"]:
                raise ApiError(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
            lines = list(self.pod_logs.get((namespace, pod), []))
            times = list(self.pod_log_times.get((namespace, pod), []))
        times = [0.0] * (len(lines) - len(times)) + times  # lines added to pod_logs directly
        self.log_reads.append((namespace, pod, dict(query)))
        if query.get("sinceSeconds"):
            cutoff = time.time() - int(query["sinceSeconds"])
            kept = [(t, line) for t, line in zip(times, lines, strict=True) if t >= cutoff]
            times, lines = [t for t, _ in kept], [line for _, line in kept]
        if query.get("timestamps") in ("true", "1", "True"):
            lines = [f"{_rfc3339nano(t)} {line}" for t, line in zip(times, lines, strict=True)]
        if query.get("tailLines"):
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) > 0 else []
        data = "".join(f"{line}\n" for line in lines).encode()
        if query.get("limitBytes"):
            data = data[: int(query["limitBytes"])]
        return data

    # -------------------------------------------------------------------- pods and replicas

    def _new_pod_ip(self) -> str:
        n = next(self.ip_counter)
        return f"10.244.{(n // 250) % 250}.{n % 250 + 2}"

    def _ready_action(self, ns: str, pod: Obj) -> Callable[[], None]:
        """Make this pod (this uid: not a later one of the same name) Ready."""
        name, uid = str(pod["metadata"]["name"]), str(pod["metadata"]["uid"])

        def action() -> None:
            current = self.objects["/pods"].get((ns, name))
            if current is None or current["metadata"]["uid"] != uid:
                return
            current = copy.deepcopy(current)
            current["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            self.store(self.rtype("Pod"), current)

        return action

    def _replace_pod(self, pod: Obj) -> None:
        """The ReplicaSet's way: a new pod on another schedulable node, Ready after a delay."""
        if not self.controllers_enabled:
            return
        owner = owner_of(pod)
        if owner is None or owner[0] not in REPLICATED:
            return
        old_node = pod["spec"].get("nodeName")
        nodes = [
            n
            for (_, name), n in sorted(self.objects["/nodes"].items())
            if not n.get("spec", {}).get("unschedulable") and name != old_node
        ]
        if not nodes:
            return
        new = copy.deepcopy(pod)
        meta = new["metadata"]
        meta["name"] = f"{owner[1]}-{uuid.uuid4().hex[:5]}"
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "managedFields"):
            meta.pop(key, None)
        new["spec"]["nodeName"] = nodes[0]["metadata"]["name"]
        new["status"] = {
            "phase": "Running",
            "podIP": self._new_pod_ip(),
            "conditions": [{"type": "Ready", "status": "False"}],
        }
        created = self.create(self.rtype("Pod"), new)
        if self.replacement_ready_delay is not None:
            self.schedule(self.replacement_ready_delay, self._ready_action(meta["namespace"], created))

    # ---------------------------------------------------------------------------- DaemonSets

    def _daemonset_pods(self, ns: str, name: str) -> list[Obj]:
        return [
            p
            for (pns, _), p in self.objects["/pods"].items()
            if pns == ns and owner_of(p) == ("DaemonSet", name)
        ]

    def _reconcile_daemonset(self, ns: str, name: str) -> None:
        if not self.controllers_enabled:
            return
        ds = self.objects["apps/daemonsets"].get((ns, name))
        if ds is None:
            return
        template = ds["spec"]["template"]
        selector = template["spec"].get("nodeSelector") or {}
        generation = str(ds["metadata"].get("generation", 1))
        pod_type = self.rtype("Pod")
        pods = {p["spec"].get("nodeName"): p for p in self._daemonset_pods(ns, name)}
        wanted = [
            node for (_, node), obj in sorted(self.objects["/nodes"].items()) if _selects(selector, obj)
        ]
        for node_name, pod in list(pods.items()):
            stale = pod["metadata"].get("annotations", {}).get("fake/generation") != generation
            if node_name not in wanted or stale:
                self.delete(pod_type, ns, pod["metadata"]["name"])
                del pods[node_name]
        for node_name in wanted:
            if node_name not in pods:
                created = self.create(pod_type, self._daemonset_pod(ds, node_name))
                if self.daemonset_ready_delay is not None:
                    self.schedule(self.daemonset_ready_delay, self._ready_action(ns, created))
        self.update_daemonset_status(ns, name)

    def _daemonset_pod(self, ds: Obj, node_name: str) -> Obj:
        """The DaemonSet's new pod on a node (not Ready yet)."""
        meta, template = ds["metadata"], ds["spec"]["template"]
        host_network = bool(template["spec"].get("hostNetwork"))
        node_obj = self.objects["/nodes"][("", node_name)]
        ip = node_obj["status"]["addresses"][0]["address"] if host_network else self._new_pod_ip()
        pod = make_pod(
            f"{meta['name']}-{uuid.uuid4().hex[:5]}",
            meta["namespace"],
            node=node_name,
            ip=ip,
            labels=template["metadata"].get("labels") or {},
            owner=("DaemonSet", meta["name"]),
            host_network=host_network,
            ready=False,
        )
        pod["metadata"]["annotations"] = {"fake/generation": str(meta.get("generation", 1))}
        pod["metadata"]["ownerReferences"][0]["uid"] = meta["uid"]
        if template["spec"].get("containers"):  # the pod runs the template's containers
            pod["spec"]["containers"] = copy.deepcopy(template["spec"]["containers"])
        return pod

    def update_daemonset_status(self, ns: str, name: str) -> None:
        """The DaemonSet controller's status of a DaemonSet, from its pods and the nodes it selects."""
        ds = self.objects["apps/daemonsets"].get((ns, name))
        if ds is None:
            return
        generation = str(ds["metadata"].get("generation", 1))
        pods = self._daemonset_pods(ns, name)
        selector = ds["spec"]["template"]["spec"].get("nodeSelector") or {}
        desired = sum(1 for n in self.objects["/nodes"].values() if _selects(selector, n))
        ready = sum(1 for p in pods if pod_ready(p))
        updated = sum(
            1 for p in pods if p["metadata"].get("annotations", {}).get("fake/generation") == generation
        )
        status = {
            "observedGeneration": int(generation),
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": len(pods),
            "updatedNumberScheduled": updated,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": desired - ready,
            "numberMisscheduled": 0,
        }
        self.store_status(self.rtype("DaemonSet"), ns, name, status)

    def _ds_status_on_pod_change(self, pod: Obj) -> None:
        owner = owner_of(pod)
        if owner and owner[0] == "DaemonSet":
            self.update_daemonset_status(pod["metadata"]["namespace"], owner[1])

    # ------------------------------------------------------------------------------ deletion

    def delete_object(self, rtype: ResourceType, ns: str, name: str) -> Obj:
        """A DELETE as the API server and its controllers do it: pods and namespaces terminate first
        (when configured), everything else goes at once."""
        if rtype.kind == "Pod":
            return self.delete_pod(ns, name)
        if rtype.kind == "Namespace" and self.namespace_termination_seconds > 0:
            return self._terminate(rtype, "", name, self.namespace_termination_seconds)
        return self.delete(rtype, ns, name)

    def _terminate(self, rtype: ResourceType, ns: str, name: str, seconds: float) -> Obj:
        """Mark the object Terminating (``deletionTimestamp``), remove it ``seconds`` later."""
        current = self.objects[rtype.key][(ns, name)]
        if current["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(current)
        marked = copy.deepcopy(current)
        marked["metadata"]["deletionTimestamp"] = now_iso()
        if rtype.kind == "Pod":
            marked["metadata"]["deletionGracePeriodSeconds"] = 30
        else:
            marked.setdefault("status", {})["phase"] = "Terminating"
        stored = self.store(rtype, marked)
        uid = current["metadata"]["uid"]

        def finish() -> None:
            cur = self.objects[rtype.key].get((ns, name))
            if cur is not None and cur["metadata"]["uid"] == uid:
                self.delete(rtype, ns, name)

        self.schedule(seconds, finish)
        return stored

    def delete_pod(self, ns: str, name: str) -> Obj:
        if (ns, name) not in self.objects["/pods"]:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        if self.pod_termination_seconds > 0:
            return self._terminate(self.rtype("Pod"), ns, name, self.pod_termination_seconds)
        return self.delete(self.rtype("Pod"), ns, name)

    # ---------------------------------------------------------------------------- evictions

    def _disruption_status(self, pdb: Obj) -> Obj:
        """What the disruption controller computes for a PodDisruptionBudget now."""
        ns, spec = pdb["metadata"]["namespace"], pdb["spec"]
        matching = [
            p
            for (pns, _), p in self.objects["/pods"].items()
            if pns == ns and match_label_selector_obj(spec["selector"], p["metadata"].get("labels") or {})
        ]
        healthy = sum(1 for p in matching if pod_ready(p) and not p["metadata"].get("deletionTimestamp"))
        if "minAvailable" in spec:
            desired = _int_or_percent(spec["minAvailable"], len(matching))
        else:
            desired = len(matching) - _int_or_percent(spec.get("maxUnavailable", 0), len(matching))
        return {
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": max(healthy - desired, 0),
            "expectedPods": len(matching),
            "observedGeneration": pdb["metadata"].get("generation", 1),
        }

    def evict(self, ns: str, name: str, dry_run: bool) -> Obj:
        """The Eviction API: 429 while a PodDisruptionBudget of the (Ready) pod allows no disruption."""
        pod = self.objects["/pods"].get((ns, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        labels = pod["metadata"].get("labels") or {}
        if not pod["metadata"].get("deletionTimestamp"):
            pdb_type = self.rtype("PodDisruptionBudget")
            for (pdb_ns, pdb_name), pdb in sorted(self.objects[pdb_type.key].items()):
                if pdb_ns != ns or not match_label_selector_obj(pdb["spec"].get("selector"), labels):
                    continue
                status = self._disruption_status(pdb)
                if pdb.get("status") != status:
                    self.store(pdb_type, {**copy.deepcopy(pdb), "status": status})
                if status["disruptionsAllowed"] < 1 and pod_ready(pod):
                    raise ApiError(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb_name} needs "
                                    f"{status['desiredHealthy']} healthy pods "
                                    f"and has {status['currentHealthy']} currently",
                                }
                            ]
                        },
                    )
        if not dry_run:
            self.delete_pod(ns, name)
        return status_body(201, "", "")
