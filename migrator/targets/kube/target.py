"""``open_kube_target``: the full ``--target kube[:CONTEXT]`` target.

- ``cluster``: :class:`KubeCluster` (kubeconfig from the argument, ``$KUBECONFIG``, ``~/.kube/config`` or
  the in-cluster service account; context from ``kube:CONTEXT``, the argument or
  ``$MIGRATOR_KUBE_CONTEXT``).
- ``executor``: :class:`~migrator.targets.ansible.executor.AnsibleRunnerExecutor` on the inventory given as
  ``inventory`` or ``$MIGRATOR_INVENTORY`` (host names must equal node names); ``None`` without one, and
  ``no_executor`` says how to give one (a plan with node work then fails at that step, saying so).
- ``prober``: :class:`~migrator.targets.kube.prober.KubeProber` (image ``$MIGRATOR_PROBE_IMAGE`` or
  ``python:3.12-alpine``; ``$MIGRATOR_PROBE_OUTSIDE``: ``host-network``, the default, or ``off``, where
  NodePort probes from outside come from), deployed on first use.
- ``cni``: :class:`~migrator.targets.kube.cni.KubeCniOps` on the cluster (the CNI migration's port).
- ``run_lock``: run id -> :class:`KubeRunLock`, the engine's run lock for this target (a Lease);
  ``read_snapshot``: the context manager the engine's dry run enters (one paginated list per resource
  instead of one request per node); ``apiserver_endpoint``: the kubeconfig's server when it is an IPv4
  address (what ``fault.apiserver`` cuts by default).
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from migrator.errors import LockHeld, MigratorError, UsageError
from migrator.ports import NodeExecutor, Target
from migrator.targets.kube.cluster import KubeCluster
from migrator.targets.kube.cni import KubeCniOps
from migrator.targets.kube.lock import LeaseLock
from migrator.targets.kube.prober import DEFAULT_IMAGE, KubeProber, OutsideMode

INVENTORY_ENV = "MIGRATOR_INVENTORY"
CONTEXT_ENV = "MIGRATOR_KUBE_CONTEXT"
PROBE_IMAGE_ENV = "MIGRATOR_PROBE_IMAGE"
PROBE_OUTSIDE_ENV = "MIGRATOR_PROBE_OUTSIDE"  # host-network (default) or off: where NodePort probes come from
NO_INVENTORY = (
    "the kube target has no node executor: give an Ansible inventory whose host names are the node names"
    f" with --inventory FILE (or ${INVENTORY_ENV}) for plans with node work (ansible.playbook steps)"
)


class KubeRunLock:
    """The engine's run lock on a cluster: a renewed :class:`LeaseLock`; releasing it ends the run's
    session on the cluster (the probe namespace is removed)."""

    def __init__(self, lease: LeaseLock, *, on_release: list[object] | None = None) -> None:
        self.lease = lease
        self.run_id = lease.run_id
        self.on_release = list(on_release or [])
        self.held = False

    @property
    def lost(self) -> bool:
        """Another run took the lease over (the renewer could not renew it)."""
        return self.lease.lost.is_set()

    def watch_lost(self, stop: Callable[[str], None]) -> None:
        """Call ``stop(reason)`` if another run takes the Lease over while this run holds it (the engine
        then stops at its next safe point without rolling back: the cluster is someone else's now)."""
        self.lease.on_lost.append(stop)

    def acquire(self, *, force_unlock: str | None = None) -> None:
        try:
            self.lease.acquire()
        except LockHeld as exc:
            if force_unlock is None or force_unlock != exc.holder_run_id:
                raise
            logger.warning("taking over the cluster lock of run {} (--force-unlock)", exc.holder_run_id)
            self.lease.api.call(
                f"delete {self.lease.what}",
                self.lease.api.coordination.delete_namespaced_lease,
                self.lease.name,
                self.lease.namespace,
            )
            self.lease.acquire()
        self.held = True
        self.lease.start_renewing()

    def release(self) -> None:
        if not self.held:
            return
        try:
            for hook in self.on_release:
                try:
                    hook()  # type: ignore[operator]
                except MigratorError as exc:
                    logger.warning("run {}: cleanup at the end of the run failed: {}", self.run_id, exc)
        finally:
            self.lease.release()
            self.held = False


def apiserver_endpoint(server_url: str) -> str | None:
    """``ip:port`` of the API server from the kubeconfig's server URL, or None when its host is a DNS
    name (iptables rules need an address; ``fault.apiserver`` then falls back to the control-plane
    nodes on port 6443, or takes ``args.endpoint``)."""
    parsed = urllib.parse.urlsplit(server_url)
    try:
        ip = ipaddress.ip_address(parsed.hostname or "")
    except ValueError:
        return None
    if ip.version != 4:
        return None
    try:
        port = parsed.port
    except ValueError:
        return None
    return f"{ip}:{port or (443 if parsed.scheme != 'http' else 80)}"


def open_kube_target(
    context: str | None = None,
    *,
    kubeconfig: str | None = None,
    inventory: str | Path | None = None,
    probe_image: str | None = None,
    cluster: KubeCluster | None = None,
    lease_duration: float = 60.0,
    name: str = "kube",
) -> Target:
    """The ``--target kube[:CONTEXT]`` target (see the module docstring)."""
    if cluster is None:
        cluster = KubeCluster(
            kubeconfig=kubeconfig or os.environ.get("KUBECONFIG") or None,
            context=context or os.environ.get(CONTEXT_ENV) or None,
        )
    inventory = inventory or os.environ.get(INVENTORY_ENV) or None
    executor: NodeExecutor | None = None
    inventory_path = Path(inventory).expanduser() if inventory else None
    if inventory_path is not None:
        from migrator.targets.ansible.executor import AnsibleRunnerExecutor  # noqa: PLC0415 - optional, heavy

        executor = AnsibleRunnerExecutor(inventory=inventory_path)
    outside_text = os.environ.get(PROBE_OUTSIDE_ENV) or OutsideMode.HOST_NETWORK.value
    try:
        outside = OutsideMode(outside_text)
    except ValueError:
        choices = ", ".join(m.value for m in OutsideMode)
        raise UsageError(f"${PROBE_OUTSIDE_ENV} is {outside_text!r}: one of {choices}") from None
    prober = KubeProber(
        cluster, image=probe_image or os.environ.get(PROBE_IMAGE_ENV) or DEFAULT_IMAGE, outside=outside
    )

    def run_lock(run_id: str) -> KubeRunLock:
        def cleanup_probe() -> None:
            prober.cleanup()

        lease = cluster.lock(run_id, duration=lease_duration)
        return KubeRunLock(lease, on_release=[cleanup_probe])

    return Target(
        name=name,
        cluster=cluster,
        executor=executor,
        prober=prober,
        cni=KubeCniOps(cluster),
        inventory=inventory_path,
        no_executor=NO_INVENTORY if executor is None else None,
        apiserver_endpoint=apiserver_endpoint(cluster.api.host),
        run_lock=run_lock,
        read_snapshot=cluster.read_snapshot,
    )
