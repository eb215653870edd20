"""A stage's monitor: its ``monitor`` checks, started with the stage, run in rounds in a background thread
while the stage runs, concluded when it ends; a failure aborts the stage (its running steps are cancelled).

The monitor knows the engine only through :class:`MonitorHost` (what it calls back): it emits
``monitor.start``/``monitor.failed``/``monitor.end`` and runs each check through the host's
``run_check`` (not journaled one by one: a round every ``interval`` seconds would flood the journal).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from loguru import logger

from migrator.checks import CheckResult
from migrator.errors import CheckFailed
from migrator.plan.models import CheckBase, Stage
from migrator.ports import Node
from migrator.runs.events import CheckPhase, Event, MonitorEnd, MonitorFailed, MonitorStart


class MonitorHost(Protocol):
    """What a monitor needs of the engine."""

    @property
    def wave_nodes(self) -> tuple[Node, ...]: ...

    def emit(self, event: Event) -> Event: ...

    def run_check(
        self,
        check: CheckBase,
        *,
        phase: CheckPhase,
        stage: str | None = None,
        nodes: Sequence[Node] = (),
        journal: bool = True,
        call: str = "run",
        store: dict[str, Any] | None = None,
    ) -> CheckResult: ...


class StageMonitor:
    """Runs a stage's monitor checks in a background thread; a failure aborts the stage.

    :meth:`failure` is what the stage must raise once :attr:`abort` is set: the check's failure, or what
    ended the thread that was not an ``Exception`` (a ``BaseException`` is handed over to the engine's
    thread, never swallowed).
    """

    def __init__(self, host: MonitorHost, stage: Stage, interval: float) -> None:
        self.host = host
        self.stage = stage
        self.interval = interval
        self.abort = threading.Event()
        self.error: CheckFailed | None = None
        self.fatal: BaseException | None = None
        self.rounds = 0
        self.stores: list[dict[str, Any]] = [{} for _ in stage.monitor]
        self._stop = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"monitor-{stage.name}", daemon=True)

    def failure(self) -> BaseException | None:
        """What aborts the stage (``None`` while nothing did)."""
        if not self.abort.is_set():
            return None
        return self.fatal or self.error or CheckFailed("a monitor check failed")

    def start(self) -> None:
        self.host.emit(
            MonitorStart(stage=self.stage.name, checks=tuple(c.display_name for c in self.stage.monitor))
        )
        for check, store in zip(self.stage.monitor, self.stores, strict=True):
            try:
                self._check(check, store, call="monitor_start")
            except CheckFailed as exc:
                self._fail(check, exc)
                return
        self._thread.start()

    def _check(
        self, check: CheckBase, store: dict[str, Any], *, call: str, nodes: Sequence[Node] = ()
    ) -> None:
        self.host.run_check(
            check,
            phase=CheckPhase.MONITOR,
            stage=self.stage.name,
            nodes=nodes,
            journal=False,
            call=call,
            store=store,
        )

    def _fail(self, check: CheckBase, exc: CheckFailed) -> None:
        self.error = exc
        self.abort.set()
        self.host.emit(
            MonitorFailed(
                stage=self.stage.name, check=check.display_name, error=str(exc), details=exc.details
            )
        )

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._round():
                    return
                self.rounds += 1
                if self._stop.wait(self.interval):
                    return
        except Exception as exc:  # noqa: BLE001 - a bug in a check must not kill the run silently
            self.error = CheckFailed(f"monitor of stage {self.stage.name!r} crashed: {exc}")
            self.abort.set()
            logger.exception("monitor crashed")
        except BaseException as exc:  # noqa: BLE001 - handed over to the engine's thread (failure())
            self.fatal = exc
            self.abort.set()

    def _round(self) -> bool:
        """One round of every check; ``False`` when the monitor is to stop (asked to, or a check failed)."""
        for check, store in zip(self.stage.monitor, self.stores, strict=True):
            if self._stop.is_set():
                return False
            try:
                self._check(check, store, call="run", nodes=self.host.wave_nodes)
            except CheckFailed as exc:
                self._fail(check, exc)
                return False
        return True

    def stop(self) -> CheckFailed | None:
        """Stop the rounds, let each check conclude (``monitor_stop``); the first failure, if any."""
        if self._stopped:
            return None
        self._stopped = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        final: CheckFailed | None = None
        for check, store in zip(self.stage.monitor, self.stores, strict=True):
            try:
                self._check(check, store, call="monitor_stop")
            except CheckFailed as exc:
                if final is None and not self.abort.is_set():
                    final = exc
                    self.host.emit(
                        MonitorFailed(
                            stage=self.stage.name,
                            check=check.display_name,
                            error=str(exc),
                            details=exc.details,
                        )
                    )
        self.host.emit(
            MonitorEnd(
                stage=self.stage.name, rounds=self.rounds, aborted=self.abort.is_set() or final is not None
            )
        )
        return final
