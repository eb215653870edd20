"""The engine's own observer: :class:`JsonLogObserver` writes every event of a run as a JSON line through
loguru into ``runs/<id>/migrator.log.jsonl``; :func:`describe` is the one-line text of an event (the log
line's message, and the console's line in :mod:`migrator.cli.console`).

An observer is anything with ``on_event(event)`` and ``close()`` (:class:`migrator.engine.engine.Observer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from loguru import logger

from migrator.runs.rundir import RunDir

_LEVELS = {
    "run.end": "INFO",
    "step.end": "INFO",
    "undo.end": "INFO",
    "rollback.start": "WARNING",
    "monitor.failed": "WARNING",
    "warning": "WARNING",
    "run.error": "ERROR",
    "signal": "WARNING",
}


def describe(event: Mapping[str, Any]) -> str | None:
    """One line for a person; ``None`` for events not worth a line."""
    kind = str(event.get("type"))
    node = f" @{event['node']}" if event.get("node") else ""
    if kind == "run.start":
        return f"run {event.get('run_id')}: plan {event.get('plan')} on target {event.get('target')}"
    if kind == "run.resume":
        return f"run {event.get('run_id')}: {event.get('mode')} (pid {event.get('pid')})"
    if kind == "run.end":
        return f"run {event.get('status')}: {event.get('message')}"
    if kind == "preflight.start":
        return f"preflight: {len(event.get('checks') or [])} checks"
    if kind == "preflight.end":
        return f"preflight {event.get('outcome')}"
    if kind == "stage.start":
        waves = event.get("waves")
        extra = f" ({len(waves)} waves: {' | '.join(','.join(w) for w in waves)})" if waves else ""
        return f"stage {event.get('stage')}{extra}"
    if kind == "stage.end":
        err = f": {event['error']}" if event.get("error") else ""
        return f"stage {event.get('stage')} {event.get('outcome')}{err}"
    if kind == "wave.start":
        return f"  wave {int(event.get('wave', 0)) + 1}: {', '.join(event.get('nodes') or [])}"
    if kind == "wave.end":
        return f"  wave {int(event.get('wave', 0)) + 1} {event.get('outcome')}"
    if kind == "step.start":
        attempt = f" (attempt {event['attempt']})" if int(event.get("attempt", 1)) > 1 else ""
        return f"    {event.get('step')}{node}: {event.get('action')}{attempt}"
    if kind == "step.end":
        outcome = event.get("outcome")
        err = f": {event['error']}" if event.get("error") else ""
        return f"    {event.get('step')}{node} {outcome} in {event.get('duration', 0)}s{err}"
    if kind == "step.retry":
        return f"    {event.get('key')}: retry in {event.get('wait')}s"
    if kind == "check.end":
        mark = "ok" if event.get("ok") else "FAILED"
        return f"    check {event.get('check')} [{event.get('phase')}] {mark}: {event.get('summary')}"
    if kind == "monitor.failed":
        return f"  monitor {event.get('check')} aborts stage {event.get('stage')}: {event.get('error')}"
    if kind == "rollback.start":
        return f"rollback ({event.get('reason')}): {len(event.get('steps') or [])} steps to undo"
    if kind == "undo.start":
        return None if event.get("kind") == "none" else f"    undo {event.get('key')}"
    if kind == "undo.end":
        if event.get("skipped"):
            return f"    undo {event.get('key')}: nothing to undo (no_undo)"
        err = f": {event['error']}" if event.get("error") else ""
        return f"    undo {event.get('key')} {event.get('outcome')}{err}"
    if kind == "rollback.end":
        return f"rollback {event.get('outcome')}: {event.get('undone')} undone"
    if kind in ("warning", "run.error"):
        return f"{kind}: {event.get('message') or event.get('error')}"
    if kind == "journal.repaired":
        return f"journal repaired: {event.get('detail')}"
    return None


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

    def on_event(self, event: Mapping[str, Any]) -> None:
        level = _LEVELS.get(str(event.get("type")), "DEBUG")
        self.log.bind(event=dict(event)).log(level, describe(event) or str(event.get("type")))

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            logger.remove(self._sink)
