"""The lab, by name: a facade over its jobs.

- ``up``: :mod:`migrator.lab.build`; ``down``: :mod:`migrator.lab.teardown`;
- ``status``: :mod:`migrator.lab.status`; ``exec``: :mod:`migrator.lab.access`;
- the emulated control plane: :mod:`migrator.lab.control` (labels, cordon, drain, restarts, reconcile,
  services), :mod:`migrator.lab.agents` (DaemonSets and their node agents), :mod:`migrator.lab.kubelet`
  (pods).

Every mutating operation holds the lab's lock (taken here) and saves the state before acting (in the jobs).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.errors import MigratorError, UsageError
from migrator.lab import access, agents, build, control, netpol, objects, sh, status, teardown
from migrator.lab.build import UpResult
from migrator.lab.spec import LabSpec, lab_prefix
from migrator.lab.state import LabPhase, LabState, StateStore
from migrator.lab.teardown import DownResult


class Lab:
    """One lab, by name."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.store = StateStore(name)
        self.prefix = lab_prefix(name)

    # ------------------------------------------------------------------------------------------ reading

    def load(self) -> LabState | None:
        return self.store.load()

    def require(self) -> LabState:
        st = self.store.load()
        if st is None or st.phase != LabPhase.UP:
            raise UsageError(f"lab {self.name!r} is not up; run: migrator lab up")
        return st

    def status(self) -> dict[str, Any]:
        st = self.store.load()
        if st is None:
            return {"name": self.name, "phase": "absent"}
        return status.status_dict(st)

    def endpoints(self, st: LabState, key: str) -> list[str]:
        """The IPs of the running pods behind service ``key`` (``namespace/name``) in ``st``."""
        return control.endpoints(st, key)

    # ------------------------------------------------------------------------------------------ up, down

    def up(self, spec: LabSpec) -> UpResult:
        """Build the lab (idempotent: a lab already up is left as is); leftovers of an unfinished operation
        are removed first, and a failed build is torn down."""
        if spec.name != self.name:
            raise UsageError(f"spec name {spec.name!r} does not match lab {self.name!r}")
        if os.geteuid() != 0:
            raise UsageError("the lab needs root (network namespaces, veth, iptables, mounts)")
        t0 = time.monotonic()
        with self.store.lock():
            st = self.store.load()
            if st is not None and st.phase == LabPhase.UP:
                if st.spec != spec:
                    logger.warning(
                        "lab {} is already up with other settings; run lab down to change them", self.name
                    )
                return UpResult(st, already_up=True, same_spec=st.spec == spec)
            if st is not None:
                logger.warning(
                    "lab {} has leftovers from an unfinished operation ({}); cleaning up", self.name, st.phase
                )
            teardown.down_locked(self.store, st)
            build.check_underlay_free(spec)
            st = build.new_state(spec)
            self.store.save(st)
            try:
                build.build(self.store, st)
            except BaseException as exc:
                logger.error("lab up failed: {}; tearing down", exc)
                st.phase = LabPhase.FAILED
                st.message = str(exc)
                self.store.save(st)
                try:
                    teardown.down_locked(self.store, st)
                except MigratorError as exc2:
                    logger.error("teardown after failed up also failed: {}", exc2)
                raise
            st.phase = LabPhase.UP
            self.store.save(st)
        return UpResult(st, already_up=False, seconds=time.monotonic() - t0)

    def down(self) -> DownResult:
        """Remove everything the lab made (also after a crash, or with an unreadable state)."""
        t0 = time.monotonic()
        with self.store.lock():
            try:
                st = self.store.load()
            except UsageError as exc:
                logger.warning("{}; removing by prefix {}", exc, self.prefix)
                st = None
            res = teardown.down_locked(self.store, st)
        self.store.lock_path.unlink(missing_ok=True)
        res.seconds = time.monotonic() - t0
        return res

    # -------------------------------------------------------------------------------------------- exec

    def exec_argv(self, target: str, argv: Sequence[str]) -> list[str]:
        return access.exec_argv(self.require(), target, argv)

    def exec(self, target: str, argv: Sequence[str], *, timeout: float = 30.0) -> sh.Result:
        return sh.run(self.exec_argv(target, argv), timeout=timeout, check=False)

    def netns_map(self, st: LabState | None = None) -> dict[str, str]:
        """Netns path for every exec target: pod keys, node names and ``outside``."""
        return access.netns_map(st or self.require())

    # ------------------------------------------------------------------------------------ control plane

    def label_node(self, name: str, labels: Mapping[str, str | None]) -> None:
        with self.store.lock():
            control.label_node(self.store, self.require(), name, labels)

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        with self.store.lock():
            control.set_schedulable(self.store, self.require(), name, schedulable)
        if schedulable:
            self.reconcile()

    def drain(
        self, name: str, *, timeout: float = 120.0, cancel: threading.Event | None = None
    ) -> tuple[list[str], list[str]]:
        """Cordon, evict the node's pods (DaemonSet pods are skipped) and reschedule them elsewhere.

        Returns (evicted pod keys, skipped pod keys). Replacements get new names and new IPs.
        """
        started = time.monotonic()
        with self.store.lock(timeout=timeout):
            st = self.require()
            return control.drain(self.store, st, name, timeout=timeout, started=started, cancel=cancel)

    def restart_pods(self, node: str) -> list[str]:
        """Recreate the node's non-hostNetwork pods on the same node through the node's current CNI config.

        Returns the keys of the new pods. Raises :class:`StepFailed` if some could not get a network.
        """
        with self.store.lock():
            return control.restart_pods(self.store, self.require(), node)

    def reconcile(self) -> list[str]:
        """Re-run the controllers once (DaemonSet agents; dead, Pending or Failed pods replaced)."""
        with self.store.lock():
            return control.reconcile(self.store, self.require())

    def apply_daemonset(
        self,
        agent: str,
        node_selector: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
    ) -> str:
        """Create or update the DaemonSet of ``agent`` (``flannel``, ``calico-node``, ``weave-net``,
        ``kube-proxy``), as ``kubectl apply`` would (see :func:`migrator.lab.agents.apply_daemonset`).
        Returns the DaemonSet key."""
        with self.store.lock():
            return control.apply_daemonset(self.store, self.require(), agent, node_selector, config)

    def delete_daemonset(self, key: str) -> list[str]:
        """Delete a DaemonSet (``namespace/name``) and its pods; the agents' leftovers stay on the nodes."""
        with self.store.lock():
            return agents.delete_daemonset(self.store, self.require(), key)

    # ------------------------------------------------------------------------------ policies and labels

    def apply(self, files: Sequence[str | Path], *, dry_run: bool = False) -> list[objects.Outcome]:
        """``lab apply -f``: NetworkPolicies, Namespaces and pod labels; all documents or none (see
        :mod:`migrator.lab.objects`); the policy agents reconcile before this returns. ``dry_run``: the
        outcomes, nothing changed."""
        with self.store.lock():
            return objects.apply_files(self.store, self.require(), files, dry_run=dry_run)

    def delete(self, files: Sequence[str | Path], *, dry_run: bool = False) -> list[objects.Outcome]:
        """``lab delete -f``: NetworkPolicies and (empty, non-system) Namespaces; all or none."""
        with self.store.lock():
            return objects.apply_files(self.store, self.require(), files, delete=True, dry_run=dry_run)

    def label(
        self, kind: str, key: str, changes: Mapping[str, str | None], *, dry_run: bool = False
    ) -> objects.Outcome:
        """``lab label pod NS/NAME k=v k-`` or ``lab label namespace NAME ...``; the agents follow."""
        with self.store.lock():
            return objects.label(self.store, self.require(), kind, key, changes, dry_run=dry_run)

    def reconcile_policies(self) -> dict[str, float]:
        """Run the policy agents once (milliseconds per node programmed)."""
        with self.store.lock():
            st = self.require()
            return netpol.reconcile(self.store, st)
