"""``ReportObserver``: writes the run's reports when a run (apply, resume or rollback) ends.

It reacts to ``run.end`` only (the journal holds the whole run by then) and never lets a report error
change the run's outcome: failures are logged, not raised.
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger

from migrator.runs.events import Event, RunEnd


class ReportObserver:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.written: list[Path] = []

    def on_event(self, event: Event) -> None:
        if not isinstance(event, RunEnd):
            return
        try:
            from migrator.report.render import write_reports  # noqa: PLC0415 - keep engine imports light

            self.written = write_reports(self.run_dir)
            logger.debug("reports of run {} written: {}", event.run_id, [p.name for p in self.written])
        except Exception as exc:  # noqa: BLE001 - a report must never change how the run ended
            logger.opt(exception=True).warning(
                "run {}: cannot write its reports ({}: {}); `migrator report {}` may retry",
                event.run_id,
                type(exc).__name__,
                exc,
                event.run_id,
            )

    def close(self) -> None:
        return None
