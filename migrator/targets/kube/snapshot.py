"""The read snapshot of a dry run: one paginated list per resource, taken on first use, serves every read
until the block ends (a per-node preview then costs no request); any write drops it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from loguru import logger

from migrator.errors import MigratorError
from migrator.ports import Node, Pod, Service
from migrator.targets.kube.api import Obj

T = TypeVar("T")


class ReadSnapshot:
    """What a read snapshot serves from (each part filled lazily, once, under its own lock)."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self._parts: dict[str, Any] = {}
        self._services: dict[str | None, list[Service]] = {}

    def memo(self, key: str, load: Callable[[], T]) -> T:
        """``load()`` once for this snapshot under ``key``."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._parts:
                self._parts[key] = load()
            value: T = self._parts[key]
            return value

    def node_objects(self, load: Callable[[], list[Obj]]) -> list[Obj]:
        return self.memo("node_objs", load)

    def daemonsets(self, load: Callable[[], list[Obj]]) -> list[Obj]:
        return self.memo("daemonsets", load)

    def nodes(self, load: Callable[[], list[Node]]) -> dict[str, Node]:
        return self.memo("nodes", lambda: {n.name: n for n in load()})

    def pods(self, load: Callable[[], list[Pod]]) -> dict[str, list[Pod]]:
        """Pods by node name."""

        def by_node() -> dict[str, list[Pod]]:
            out: dict[str, list[Pod]] = {}
            for pod in load():
                out.setdefault(pod.node, []).append(pod)
            return out

        return self.memo("pods", by_node)

    def services(self, namespace: str | None, load: Callable[[], list[Service]]) -> list[Service]:
        with self._guard:
            lock = self._locks.setdefault("services", threading.Lock())
        with lock:
            if namespace not in self._services:
                self._services[namespace] = load()
            return list(self._services[namespace])


class Snapshots:
    """The snapshot a cluster's reads are served from now (``current``, ``None`` outside a snapshot)."""

    def __init__(self) -> None:
        self.current: ReadSnapshot | None = None

    def invalidate(self) -> None:
        """A write: what the snapshot holds may be stale."""
        if self.current is not None:
            self.current.clear()

    @contextlib.contextmanager
    def session(self, prefetch: Mapping[str, Callable[[], object]], join_timeout: float) -> Iterator[None]:
        """A snapshot for the block; ``prefetch`` reads run at once, each in a thread (the API server
        encodes one list while we decode the other)."""
        previous = self.current
        self.current = ReadSnapshot()
        threads: list[threading.Thread] = []
        for what, fetch in prefetch.items():
            thread = threading.Thread(
                target=_prefetch, args=(what, fetch), name=f"prefetch-{what}", daemon=True
            )
            thread.start()
            threads.append(thread)
        try:
            yield
        finally:
            for thread in threads:
                thread.join(join_timeout)
            self.current = previous


def _prefetch(what: str, fetch: Callable[[], object]) -> None:
    try:
        fetch()
    except MigratorError as exc:  # the caller's own read raises it again
        logger.debug("prefetch of {} failed: {}", what, exc)
