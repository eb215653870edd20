"""Render a report in one format, or write all four files into the run folder."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from migrator.fsutil import atomic_write_text
from migrator.report.html import render_html
from migrator.report.junit import render_junit
from migrator.report.markdown import render_markdown
from migrator.report.model import build_report


class ReportFormat(StrEnum):
    JSON = "json"
    MD = "md"
    HTML = "html"
    JUNIT = "junit"


FILENAMES: dict[ReportFormat, str] = {
    ReportFormat.JSON: "report.json",
    ReportFormat.MD: "report.md",
    ReportFormat.HTML: "report.html",
    ReportFormat.JUNIT: "junit.xml",
}


def render(report: Mapping[str, Any], fmt: ReportFormat) -> str:
    """One format of ``report`` (what :func:`migrator.report.model.build_report` returns) as text."""
    if fmt is ReportFormat.JSON:
        import json  # noqa: PLC0415

        return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"
    if fmt is ReportFormat.MD:
        return render_markdown(report)
    if fmt is ReportFormat.HTML:
        return render_html(report)
    return render_junit(report)


def write_reports(run_dir: Path, report: Mapping[str, Any] | None = None) -> list[Path]:
    """Build the report of ``run_dir`` (unless given) and write every format there, atomically."""
    data = report if report is not None else build_report(run_dir)
    written = []
    for fmt, name in FILENAMES.items():
        path = run_dir / name
        atomic_write_text(path, render(data, fmt))
        written.append(path)
    return written
