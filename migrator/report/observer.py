"""``ReportObserver``: writes the run's reports when a run (apply, resume or rollback) ends.

It reacts to ``run.end`` only (the journal holds the whole run by then) and never lets a report error
change the run's outcome: failures are logged, not raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loguru import logger


class ReportObserver:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.written: list[Path] = []

    def on_event(self, event: Mapping[str, Any]) -> None:
        if event.get("type") != "run.end":
            return
        try:
            from migrator.report.render import write_reports  # noqa: PLC0415 - keep engine imports light

            self.written = write_reports(self.run_dir)
            logger.debug("reports of run {} written: {}", event.get("run_id"), [p.name for p in self.written])
        except Exception as exc:  # noqa: BLE001 - a report must never change how the run ended
            logger.opt(exception=True).warning(
                "run {}: cannot write its reports ({}: {}); `migrator report {}` may retry",
                event.get("run_id"),
                type(exc).__name__,
                exc,
                event.get("run_id"),
            )

    def close(self) -> None:
        return None
