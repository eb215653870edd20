"""Run reports: ``report.json``, ``report.md``, ``report.html`` and ``junit.xml`` in the run folder.

    report = build_report(run_dir)             # the data (migrator.report.model documents its shape)
    write_reports(run_dir)                      # all four files; returns their paths
    render(report, ReportFormat.HTML)           # one format as text

The engine writes them at the end of every run (apply, resume, rollback) through
:class:`migrator.report.observer.ReportObserver`; ``migrator report RUN`` re-renders them.
"""

from __future__ import annotations

from migrator.report.model import build_report, register_annotator
from migrator.report.render import FILENAMES, ReportFormat, render, write_reports

__all__ = ["FILENAMES", "ReportFormat", "build_report", "register_annotator", "render", "write_reports"]
