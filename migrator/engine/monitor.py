"""A stage's monitor: its ``monitor`` checks, started with the stage, run in rounds in a background thread
while the stage runs (every ``interval`` seconds, and at once when the engine says a wave ended:
:meth:`StageMonitor.wake`), concluded when it ends; a failure aborts the stage (its running steps are
cancelled).

The monitor knows the engine only through what it is given: ``emit`` for ``monitor.start``,
``monitor.failed`` and ``monitor.end``, ``run_check`` (:class:`MonitorCheck`: not journaled one by one, a
round every ``interval`` seconds would flood the journal) and ``wave_nodes`` (the nodes of the running
wave, for each round).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from loguru import logger

from migrator.errors import CheckFailed
from migrator.plan.models import CheckBase, Stage
from migrator.ports import Node
from migrator.runs.events import Event, MonitorEnd, MonitorFailed, MonitorStart


class MonitorCheck(Protocol):
    """One call (``call``: ``monitor_start``, ``run`` or ``monitor_stop``) of a monitor's check; raises
    CheckFailed when it does not hold."""

    def __call__(
        self, check: CheckBase, *, stage: str, call: str, store: dict[str, Any], nodes: Sequence[Node]
    ) -> None: ...


class StageMonitor:
    """Runs a stage's monitor checks in a background thread; a failure aborts the stage.

    :meth:`failure` is what the stage must raise once :attr:`abort` is set: the check's failure, or what
    ended the thread that was not an ``Exception`` (a ``BaseException`` is handed over to the engine's
    thread, never swallowed).
    """

    def __init__(
        self,
        stage: Stage,
        interval: float,
        *,
        emit: Callable[[Event], object],
        run_check: MonitorCheck,
        wave_nodes: Callable[[], tuple[Node, ...]],
    ) -> None:
        self.emit = emit
        self.run_check = run_check
        self.wave_nodes = wave_nodes
        self.stage = stage
        self.interval = interval
        self.abort = threading.Event()
        self.error: CheckFailed | None = None
        self.fatal: BaseException | None = None
        self.rounds = 0
        self.stores: list[dict[str, Any]] = [{} for _ in stage.monitor]
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"monitor-{stage.name}", daemon=True)

    def failure(self) -> BaseException | None:
        """What aborts the stage (``None`` while nothing did)."""
        if not self.abort.is_set():
            return None
        return self.fatal or self.error or CheckFailed("a monitor check failed")

    def start(self) -> None:
        self.emit(
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
        self.run_check(check, stage=self.stage.name, call=call, store=store, nodes=nodes)

    def _fail(self, check: CheckBase, exc: CheckFailed) -> None:
        self.error = exc
        self.abort.set()
        self.emit(
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
                self._wake.wait(self.interval)
                self._wake.clear()
                if self._stop.is_set():
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
                self._check(check, store, call="run", nodes=self.wave_nodes())
            except CheckFailed as exc:
                self._fail(check, exc)
                return False
        return True

    def wake(self) -> None:
        """Run the next round now (the engine calls it when a wave ends: the checks re-pick their pairs
        from the pods the wave moved, instead of up to ``interval`` later)."""
        self._wake.set()

    def stop(self) -> CheckFailed | None:
        """Stop the rounds, let each check conclude (``monitor_stop``); the first failure, if any."""
        if self._stopped:
            return None
        self._stopped = True
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        final: CheckFailed | None = None
        for check, store in zip(self.stage.monitor, self.stores, strict=True):
            try:
                self._check(check, store, call="monitor_stop")
            except CheckFailed as exc:
                if final is None and not self.abort.is_set():
                    final = exc
                    self.emit(
                        MonitorFailed(
                            stage=self.stage.name,
                            check=check.display_name,
                            error=str(exc),
                            details=exc.details,
                        )
                    )
        self.emit(
            MonitorEnd(
                stage=self.stage.name, rounds=self.rounds, aborted=self.abort.is_set() or final is not None
            )
        )
        return final
