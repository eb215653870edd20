"""The engine's own observer: :class:`JsonLogObserver` writes every event of a run as a JSON line through
loguru into ``runs/<id>/migrator.log.jsonl``; :func:`describe` is the one-line text of an event (the log
line's message, and the console's line in :mod:`migrator.cli.console`).

An observer is anything with ``on_event(event)`` and ``close()`` (:class:`migrator.engine.engine.Observer`).
"""

from __future__ import annotations

import contextlib

from loguru import logger

from migrator.runs.events import (
    CheckEnd,
    Event,
    JournalRepaired,
    MonitorFailed,
    MonitorProgress,
    PreflightEnd,
    PreflightStart,
    RollbackEnd,
    RollbackStart,
    RunEnd,
    RunError,
    RunResume,
    RunStart,
    RunWarning,
    Signal,
    StageEnd,
    StageStart,
    StepEnd,
    StepRetry,
    StepStart,
    UndoEnd,
    UndoStart,
    WaveEnd,
    WaveStart,
)
from migrator.runs.rundir import RunDir

_LEVELS: dict[type[Event], str] = {
    RunEnd: "INFO",
    StepEnd: "INFO",
    UndoEnd: "INFO",
    RollbackStart: "WARNING",
    MonitorFailed: "WARNING",
    RunWarning: "WARNING",
    RunError: "ERROR",
    Signal: "WARNING",
}


def describe(event: Event) -> str | None:
    """One line for a person; ``None`` for events not worth a line."""
    for lines in (_run_line, _progress_line, _saga_line):
        line = lines(event)
        if line is not None:
            return line
    return None


def _run_line(event: Event) -> str | None:
    match event:
        case RunStart():
            return f"run {event.run_id}: plan {event.plan} on target {event.target}"
        case RunResume():
            return f"run {event.run_id}: {event.mode} (pid {event.pid})"
        case RunEnd():
            return f"run {event.status}: {event.message}"
        case RunWarning():
            return f"warning: {event.message}"
        case RunError():
            return f"run.error: {event.error}"
        case JournalRepaired():
            return f"journal repaired: {event.detail}"
        case PreflightStart():
            return f"preflight: {len(event.checks)} checks"
        case PreflightEnd():
            return f"preflight {event.outcome}"
    return None


def _progress_line(event: Event) -> str | None:
    match event:
        case StageStart():
            waves = event.waves
            extra = f" ({len(waves)} waves: {' | '.join(','.join(w) for w in waves)})" if waves else ""
            return f"stage {event.stage}{extra}"
        case StageEnd():
            return f"stage {event.stage} {event.outcome}{_error(event.error)}"
        case WaveStart():
            return f"  wave {event.wave + 1}: {', '.join(event.nodes)}"
        case WaveEnd():
            return f"  wave {event.wave + 1} {event.outcome}"
        case StepStart():
            attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            return f"    {event.step}{_at(event.node)}: {event.action}{attempt}"
        case StepEnd():
            duration = event.duration if event.duration is not None else 0
            return f"    {event.step}{_at(event.node)} {event.outcome} in {duration}s{_error(event.error)}"
        case StepRetry():
            return f"    {event.key}: retry in {event.wait}s"
        case CheckEnd():
            mark = "ok" if event.ok else "FAILED"
            return f"    check {event.check} [{event.phase}] {mark}: {event.summary}"
        case MonitorFailed():
            return f"  monitor {event.check} aborts stage {event.stage}: {event.error}"
        case MonitorProgress():
            excused = f" ({event.excused} excused: on the wave's nodes)" if event.excused else ""
            return f"  monitor {event.check}: {event.sent} probes, {event.lost} lost so far{excused}"
    return None


def _saga_line(event: Event) -> str | None:
    match event:
        case RollbackStart():
            return f"rollback ({event.reason}): {len(event.steps)} steps to undo"
        case UndoStart() if event.kind != "none":
            return f"    undo {event.key}"
        case UndoEnd() if event.skipped:
            return f"    undo {event.key}: nothing to undo (no_undo)"
        case UndoEnd():
            return f"    undo {event.key} {event.outcome}{_error(event.error)}"
        case RollbackEnd():
            return f"rollback {event.outcome}: {event.undone} undone"
    return None


def _at(node: str | None) -> str:
    return f" @{node}" if node else ""


def _error(error: str | None) -> str:
    return f": {error}" if error else ""


class JsonLogObserver:
    """Every event as one JSON line (loguru ``serialize``) in ``runs/<id>/migrator.log.jsonl``."""

    def __init__(self, rundir: RunDir) -> None:
        self.run_id = rundir.run_id
        run_id = self.run_id
        self._sink = logger.add(
            rundir.log_file,
            serialize=True,
            level="DEBUG",
            enqueue=False,
            filter=lambda record: record["extra"].get("run_id") == run_id,
        )
        self.log = logger.bind(run_id=run_id)

    def on_event(self, event: Event) -> None:
        level = _LEVELS.get(type(event), "DEBUG")
        self.log.bind(event=event.to_json()).log(level, describe(event) or event.type)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            logger.remove(self._sink)
