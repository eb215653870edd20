"""The run lock on a cluster: a ``coordination.k8s.io/v1`` Lease.

The Lease records the run id (annotation ``migrator.io/run-id``), the holder (``holderIdentity``), the
acquire and renew times and the lease duration. A second run gets :class:`~migrator.errors.LockHeld`
naming the holder's run id; a lease not renewed within its duration is expired and can be taken over
(optimistic concurrency through ``resourceVersion``, so two takers cannot both win).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from kubernetes import client as k8s
from loguru import logger

from migrator.errors import LockHeld, MigratorError
from migrator.targets.kube.api import KubeApi, KubeConflict, KubeNotFound, Obj

RUN_ID_ANNOTATION = "migrator.io/run-id"
PURPOSE_ANNOTATION = "migrator.io/purpose"


def _fmt(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class LeaseHolder:
    run_id: str
    holder: str
    renewed: datetime | None
    duration: float

    @property
    def expires(self) -> datetime | None:
        return self.renewed + timedelta(seconds=self.duration) if self.renewed else None

    def expired(self, now: datetime | None = None) -> bool:
        expires = self.expires
        return expires is None or (now or datetime.now(UTC)) >= expires


class LeaseLock:
    """Acquire, renew and release the run lock; a context manager that renews in the background."""

    def __init__(
        self,
        api: KubeApi,
        run_id: str,
        *,
        namespace: str = "kube-system",
        name: str = "migrator-run-lock",
        duration: float = 60.0,
        holder: str | None = None,
        purpose: str = "migrator run",
    ) -> None:
        self.api = api
        self.run_id = run_id
        self.namespace = namespace
        self.name = name
        self.duration = duration
        self.holder = holder or f"{socket.gethostname()}/{os.getpid()}"
        self.purpose = purpose
        self._rv: str | None = None
        self._stop = threading.Event()
        self.lost = threading.Event()  # set when the background renewer finds another run holds the lock
        self.on_lost: list[Callable[[str], None]] = []  # called once with the reason when it is lost
        self._renewer: threading.Thread | None = None

    @property
    def what(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _read(self) -> Obj | None:
        try:
            return self.api.read(
                f"read {self.what}", self.api.coordination.read_namespaced_lease, self.name, self.namespace
            )
        except KubeNotFound:
            return None

    @staticmethod
    def holder_of(lease: Obj) -> LeaseHolder:
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        return LeaseHolder(
            run_id=str((meta.get("annotations") or {}).get(RUN_ID_ANNOTATION) or ""),
            holder=str(spec.get("holderIdentity") or ""),
            renewed=_parse(spec.get("renewTime") or spec.get("acquireTime")),
            duration=float(spec.get("leaseDurationSeconds") or 0),
        )

    def current(self) -> LeaseHolder | None:
        """Who holds the lock now (``None`` when nobody, or the lease expired or was released)."""
        lease = self._read()
        if lease is None:
            return None
        holder = self.holder_of(lease)
        return None if not holder.holder or holder.expired() else holder

    def _body(self, *, acquire: datetime, transitions: int, rv: str | None) -> Any:
        now = datetime.now(UTC)
        meta: Obj = {
            "name": self.name,
            "namespace": self.namespace,
            "annotations": {RUN_ID_ANNOTATION: self.run_id, PURPOSE_ANNOTATION: self.purpose},
            "labels": {"app.kubernetes.io/managed-by": "migrator"},
        }
        if rv:
            meta["resourceVersion"] = rv
        return k8s.V1Lease.from_dict(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": meta,
                "spec": {
                    "holderIdentity": f"{self.holder} run {self.run_id}",
                    "leaseDurationSeconds": max(int(self.duration + 0.999), 1),
                    "acquireTime": _fmt(acquire),
                    "renewTime": _fmt(now),
                    "leaseTransitions": transitions,
                },
            }
        )

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockHeld` naming the run that holds it."""
        lease = self._read()
        if lease is None:
            try:
                created = self.api.call(
                    f"create {self.what}",
                    self.api.coordination.create_namespaced_lease,
                    self.namespace,
                    self._body(acquire=datetime.now(UTC), transitions=0, rv=None),
                )
            except KubeConflict as exc:
                lease = self._read()
                if lease is None:
                    raise
                raise self._held(lease) from exc
            self._rv = str(created["metadata"]["resourceVersion"])
            logger.info("run {} acquired the lock {}", self.run_id, self.what)
            return
        holder = self.holder_of(lease)
        ours = holder.run_id == self.run_id
        if not ours and holder.holder and not holder.expired():
            raise self._held(lease)
        transitions = int((lease.get("spec") or {}).get("leaseTransitions") or 0) + (0 if ours else 1)
        acquired = (_parse((lease.get("spec") or {}).get("acquireTime")) if ours else None) or datetime.now(
            UTC
        )
        try:
            replaced = self.api.call(
                f"take over {self.what}",
                self.api.coordination.replace_namespaced_lease,
                self.name,
                self.namespace,
                self._body(
                    acquire=acquired, transitions=transitions, rv=str(lease["metadata"]["resourceVersion"])
                ),
            )
        except KubeConflict as exc:
            latest = self._read()
            raise self._held(latest or lease) from exc
        self._rv = str(replaced["metadata"]["resourceVersion"])
        if not ours:
            logger.warning(
                "run {} took over the expired lock {} from run {} ({})",
                self.run_id,
                self.what,
                holder.run_id or "?",
                holder.holder or "?",
            )

    def _held(self, lease: Obj) -> LockHeld:
        holder = self.holder_of(lease)
        expires = holder.expires
        when = f", expires at {_fmt(expires)} unless renewed" if expires else ""
        return LockHeld(
            f"the cluster is locked by migrator run {holder.run_id or '?'} (holder {holder.holder}"
            f"{when}; {self.what})",
            holder_run_id=holder.run_id,
        )

    def renew(self) -> None:
        """Extend the lease; :class:`LockHeld` if another run took it meanwhile."""
        lease = self._read()
        if lease is None or self.holder_of(lease).run_id != self.run_id:
            if lease is None:
                self.acquire()
                return
            raise self._held(lease)
        self.acquire()

    def release(self) -> None:
        """Delete the lease if this run holds it (idempotent)."""
        self.stop_renewing()
        lease = self._read()
        if lease is None or self.holder_of(lease).run_id != self.run_id:
            return
        body = k8s.V1DeleteOptions.from_dict(
            {"preconditions": {"resourceVersion": str(lease["metadata"]["resourceVersion"])}}
        )
        try:
            self.api.call(
                f"release {self.what}",
                self.api.coordination.delete_namespaced_lease,
                self.name,
                self.namespace,
                body=body,
            )
        except (KubeNotFound, KubeConflict):
            return
        logger.info("run {} released the lock {}", self.run_id, self.what)

    def start_renewing(self, interval: float | None = None) -> None:
        """Renew every ``interval`` (default a third of the duration) in a daemon thread."""
        if self._renewer is not None:
            return
        period = interval or max(self.duration / 3, 0.5)
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    self.renew()
                except LockHeld as err:
                    logger.error("run {} lost the lock {}: {}", self.run_id, self.what, err)
                    self.lost.set()
                    for callback in self.on_lost:
                        try:
                            callback(str(err))
                        except Exception:  # noqa: BLE001 - a callback never kills the renewer's report
                            logger.exception("lost-lock callback failed")
                    return
                except MigratorError as err:  # the API server may come back before the lease expires
                    logger.warning("could not renew the lock {}: {}", self.what, err)

        self._renewer = threading.Thread(target=loop, name=f"lease-renew-{self.name}", daemon=True)
        self._renewer.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)
        self._renewer = None

    def __enter__(self) -> LeaseLock:
        self.acquire()
        self.start_renewing()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
