"""Drain like ``kubectl drain``: cordon, evict through the Eviction API (PodDisruptionBudgets honoured,
refusals retried until the timeout), wait by watch until the evicted pods are gone; and its preview."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubernetes import client as k8s
from loguru import logger
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from migrator.errors import Interrupted, MigratorError, StepFailed, StepTimeout, TemporaryError
from migrator.ports import DrainResult
from migrator.targets.kube import types
from migrator.targets.kube.api import KubeApi, KubeNotFound, Obj
from migrator.targets.kube.events import NodeEvents
from migrator.targets.kube.nodes import NodeOps
from migrator.targets.kube.pods import PodOps


class PodDisposition(StrEnum):
    """What a drain does with a pod."""

    EVICT = "evict"
    SKIP_DAEMONSET = "skip-daemonset"
    SKIP_MIRROR = "skip-mirror"
    SKIP_TERMINATING = "skip-terminating"
    REFUSE_EMPTYDIR = "refuse-emptydir"
    REFUSE_UNMANAGED = "refuse-unmanaged"


REFUSED = (PodDisposition.REFUSE_EMPTYDIR, PodDisposition.REFUSE_UNMANAGED)


@dataclass(frozen=True)
class DrainPreview:
    """A drain's plan: every pod of the node with its disposition, and the evictions refused now."""

    node: str
    pods: Mapping[str, PodDisposition]
    blocked: Mapping[str, str] = field(default_factory=dict)

    @property
    def to_evict(self) -> list[str]:
        return sorted(k for k, d in self.pods.items() if d is PodDisposition.EVICT)

    @property
    def refused(self) -> list[str]:
        return sorted(k for k, d in self.pods.items() if d in REFUSED)


def classify_pod(pod: Mapping[str, Any], *, delete_emptydir_data: bool, force: bool) -> PodDisposition:
    """What ``kubectl drain`` would do with the pod."""
    if types.is_mirror(pod):
        return PodDisposition.SKIP_MIRROR
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return PodDisposition.SKIP_TERMINATING
    owner = types.controller_of(pod)
    if owner is not None and owner[0] == "DaemonSet":
        return PodDisposition.SKIP_DAEMONSET
    phase = (pod.get("status") or {}).get("phase")
    if owner is None and phase not in ("Succeeded", "Failed") and not force:
        return PodDisposition.REFUSE_UNMANAGED
    if types.has_empty_dir(pod) and not delete_emptydir_data:
        return PodDisposition.REFUSE_EMPTYDIR
    return PodDisposition.EVICT


def _refusal(name: str, refused: Mapping[PodDisposition, list[str]]) -> StepFailed:
    parts = []
    if refused.get(PodDisposition.REFUSE_EMPTYDIR):
        parts.append(
            "pods with local storage (emptyDir): "
            f"{', '.join(refused[PodDisposition.REFUSE_EMPTYDIR])}"
            " (allow with delete_emptydir_data)"
        )
    if refused.get(PodDisposition.REFUSE_UNMANAGED):
        parts.append(
            f"pods not managed by a controller: {', '.join(refused[PodDisposition.REFUSE_UNMANAGED])}"
            " (allow with force)"
        )
    return StepFailed(f"cannot drain node {name}: " + "; ".join(parts), node=name, detail="; ".join(parts))


class _EvictionsPending(Exception):
    """Some evictions were refused (PDB) or failed for a while; tenacity retries the round."""


def _stop_on(cancel: threading.Event | None) -> Any:
    def stop(_state: RetryCallState) -> bool:
        return cancel is not None and cancel.is_set()

    return stop


@dataclass
class _Evictions:
    """The evictions of one drain: what is still to evict, what was, why the last attempts failed."""

    pending: dict[str, Obj]
    evicted: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)


class Drainer:
    """``delete_emptydir_data`` and ``force`` are the defaults of the kubectl drain flags of the same
    names; ``eviction_grace_seconds`` the evictions' grace period (the pods' own when ``None``)."""

    def __init__(
        self,
        api: KubeApi,
        nodes: NodeOps,
        pods: PodOps,
        events: NodeEvents,
        *,
        delete_emptydir_data: bool = False,
        force: bool = False,
        eviction_grace_seconds: int | None = None,
    ) -> None:
        self.api = api
        self.nodes = nodes
        self.pods = pods
        self.events = events
        self.delete_emptydir_data = delete_emptydir_data
        self.force = force
        self.eviction_grace_seconds = eviction_grace_seconds

    def drain_node(
        self,
        name: str,
        *,
        timeout: float,
        cancel: threading.Event | None = None,
        delete_emptydir_data: bool | None = None,
        force: bool | None = None,
    ) -> DrainResult:
        """Cordon, then evict the node's pods through the Eviction API like ``kubectl drain``.

        DaemonSet and mirror pods are skipped. Evictions refused by a PodDisruptionBudget (429) are retried
        until ``timeout``; then :class:`StepTimeout` names the blocking pods and PDBs. Finally it waits (by
        watch) until the evicted pods are gone. ``cancel`` stops it with :class:`Interrupted`.
        """
        self.pods.snapshots.invalidate()
        deadline = time.monotonic() + timeout
        emptydir = self.delete_emptydir_data if delete_emptydir_data is None else delete_emptydir_data
        force_ = self.force if force is None else force
        self.nodes.set_schedulable(name, False)
        to_evict: dict[str, Obj] = {}
        skipped: list[str] = []
        refused: dict[PodDisposition, list[str]] = {}
        for pod in self.pods.list_raw(None, name).items:
            disposition = classify_pod(pod, delete_emptydir_data=emptydir, force=force_)
            key = types.pod_key(pod)
            if disposition is PodDisposition.EVICT:
                to_evict[key] = pod
            elif disposition in REFUSED:
                refused.setdefault(disposition, []).append(key)
            else:
                skipped.append(key)
        if refused:
            raise _refusal(name, refused)
        done = self._evict_all(name, _Evictions(dict(to_evict)), deadline, timeout, cancel)
        self.pods.wait_gone(name, {k: to_evict[k] for k in done.evicted}, deadline, timeout, cancel)
        self.events.record(name, "MigratorDrain", f"drained ({len(done.evicted)} pods evicted)")
        logger.info("drained node {}: {} evicted, {} skipped", name, len(done.evicted), len(skipped))
        return DrainResult(node=name, evicted=tuple(done.evicted), skipped=tuple(skipped))

    def _evict_round(self, run: _Evictions, deadline: float, cancel: threading.Event | None) -> None:
        """Try every pending eviction once; :class:`_EvictionsPending` if some are left."""
        for key in list(run.pending):
            if cancel is not None and cancel.is_set():
                return
            ns, pod_name = key.split("/", 1)
            try:
                self._evict(ns, pod_name, deadline=deadline)
            except KubeNotFound:
                pass  # already gone
            except TemporaryError as err:  # 429 (PDB), 5xx, 409: retry in the next round
                run.blocked[key] = str(err)
                continue
            run.evicted.append(key)
            run.pending.pop(key)
            run.blocked.pop(key, None)
        if run.pending:
            raise _EvictionsPending()

    def _evict_all(
        self, name: str, run: _Evictions, deadline: float, timeout: float, cancel: threading.Event | None
    ) -> _Evictions:
        """Evict in rounds (backing off) until none is pending, ``deadline`` or ``cancel``."""
        retrying = Retrying(
            retry=retry_if_exception_type(_EvictionsPending),
            stop=stop_after_delay(max(deadline - time.monotonic(), 0.0)) | _stop_on(cancel),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=1.0),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._evict_round(run, deadline, cancel)
        except _EvictionsPending:
            if cancel is not None and cancel.is_set():
                raise Interrupted(
                    f"drain of node {name} cancelled; evicted {len(run.evicted)} pods"
                ) from None
            raise self._drain_timeout(name, timeout, run.pending, run.blocked) from None
        if cancel is not None and cancel.is_set():
            raise Interrupted(f"drain of node {name} cancelled; evicted {len(run.evicted)} pods")
        return run

    def preview_drain(
        self,
        name: str,
        *,
        delete_emptydir_data: bool | None = None,
        force: bool | None = None,
        server_dry_run: bool = True,
    ) -> DrainPreview:
        """What :meth:`drain_node` would do, changing nothing: each pod's disposition and, with
        ``server_dry_run``, which evictions the API server refuses now (``dryRun=All`` evictions: PDBs)."""
        emptydir = self.delete_emptydir_data if delete_emptydir_data is None else delete_emptydir_data
        force_ = self.force if force is None else force
        pods: dict[str, PodDisposition] = {}
        blocked: dict[str, str] = {}
        for pod in self.pods.list_raw(None, name).items:
            key = types.pod_key(pod)
            pods[key] = classify_pod(pod, delete_emptydir_data=emptydir, force=force_)
            if server_dry_run and pods[key] is PodDisposition.EVICT:
                ns, pod_name = key.split("/", 1)
                try:
                    self._evict(ns, pod_name, dry_run=True)
                except KubeNotFound:
                    continue
                except TemporaryError as err:
                    blocked[key] = str(err)
        return DrainPreview(node=name, pods=pods, blocked=blocked)

    def _evict(
        self, namespace: str, name: str, *, dry_run: bool = False, deadline: float | None = None
    ) -> None:
        body: Obj = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if self.eviction_grace_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": self.eviction_grace_seconds}
        self.api.call(
            f"evict pod {namespace}/{name}",
            self.api.core.create_namespaced_pod_eviction,
            name,
            namespace,
            k8s.V1Eviction.from_dict(body),
            dry_run="All" if dry_run else None,
            _request_timeout=self._request_budget(deadline),
        )

    def _request_budget(self, deadline: float | None) -> float:
        """A request's timeout: the configured one, cut to what is left before ``deadline`` (at least 1 s)."""
        if deadline is None:
            return self.api.request_timeout
        return max(min(self.api.request_timeout, deadline - time.monotonic()), 1.0)

    def blocking_pdbs(self, pods: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
        """PodDisruptionBudgets selecting each pod: ``{pod key: ["ns/pdb (status)", ...]}``."""
        by_ns: dict[str, list[Obj]] = {}
        out: dict[str, list[str]] = {}
        for pod in pods:
            ns = str(pod["metadata"].get("namespace", ""))
            if ns not in by_ns:
                by_ns[ns] = self.api.list_all(
                    f"list poddisruptionbudgets in {ns}",
                    self.api.policy.list_namespaced_pod_disruption_budget,
                    ns,
                ).items
            labels = pod["metadata"].get("labels") or {}
            for pdb in by_ns[ns]:
                if types.selector_matches(pdb.get("spec", {}).get("selector"), labels):
                    st = pdb.get("status") or {}
                    out.setdefault(types.pod_key(pod), []).append(
                        f"PodDisruptionBudget {ns}/{pdb['metadata']['name']} (disruptionsAllowed="
                        f"{st.get('disruptionsAllowed', '?')}, "
                        f"currentHealthy={st.get('currentHealthy', '?')}, "
                        f"desiredHealthy={st.get('desiredHealthy', '?')})"
                    )
        return out

    def _drain_timeout(
        self, name: str, timeout: float, pending: Mapping[str, Obj], blocked: Mapping[str, str]
    ) -> StepTimeout:
        try:
            pdbs = self.blocking_pdbs(pending.values())
        except MigratorError as err:
            logger.warning("cannot list PodDisruptionBudgets for the drain report: {}", err)
            pdbs = {}
        lines = []
        for key in sorted(pending):
            why = "; ".join(pdbs.get(key, [])) or blocked.get(key, "eviction not accepted")
            lines.append(f"pod {key} blocked by {why}")
        detail = "\n".join(lines)
        return StepTimeout(
            f"drain of node {name} timed out after {timeout:g}s: " + "; ".join(lines),
            node=name,
            detail=detail,
        )
