"""``migrator report RUN [-o text|json|md|html|junit] [--write FILE]``: re-render a run's reports.

Without ``-o`` and ``--write``, writes all four files (``report.json``, ``report.md``, ``report.html``,
``junit.xml``) into the run folder again and prints their paths. With ``-o``, prints that format (or
writes it to ``--write FILE``); ``--write`` alone picks the format from the file's extension
(``--format``/``-f`` is a hidden alias of ``-o``). ``RUN`` is a run
id, a unique prefix of one, or the path of a run folder.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from migrator.errors import UsageError
from migrator.fsutil import atomic_write_text
from migrator.report import FILENAMES, ReportFormat, build_report, render, write_reports
from migrator.runs.rundir import find_run

app = typer.Typer(
    name="report",
    help="Re-render a run's reports (json, md, html, junit) from its run folder.",
    invoke_without_command=True,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # options may follow RUN (a group would otherwise take them for a sub-command)
    context_settings={"allow_interspersed_args": True},
)

_BY_SUFFIX = {
    ".json": ReportFormat.JSON,
    ".md": ReportFormat.MD,
    ".html": ReportFormat.HTML,
    ".htm": ReportFormat.HTML,
    ".xml": ReportFormat.JUNIT,
}


def run_folder(ref: str) -> Path:
    """A run folder from a run id, a unique id prefix, or a path."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "journal.jsonl").is_file():
            raise UsageError(f"{path} is not a run folder (no journal.jsonl)")
        return path
    return find_run(ref).path


class ReportOutput(StrEnum):
    """``-o``: the format to print; ``text`` is the Markdown summary."""

    TEXT = "text"
    JSON = "json"
    MD = "md"
    HTML = "html"
    JUNIT = "junit"

    @property
    def report_format(self) -> ReportFormat:
        return ReportFormat.MD if self is ReportOutput.TEXT else ReportFormat(self.value)


@app.callback()
def report(
    run: Annotated[str, typer.Argument(help="Run id, unique prefix, or run folder")],
    output: Annotated[
        ReportOutput | None,
        typer.Option(
            "--output", "-o", help="Print this format (text = md) instead of writing all four files"
        ),
    ] = None,
    fmt: Annotated[
        ReportOutput | None, typer.Option("--format", "-f", hidden=True, help="Same as -o")
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option("--write", "-w", help="Write to this file (the format from -o or the file's extension)"),
    ] = None,
) -> None:
    """Re-render the reports of RUN from its journal (all four files into the run folder by default)."""
    folder = run_folder(run)
    chosen = output or fmt
    if chosen is None and write is None:
        for path in write_reports(folder):
            typer.echo(str(path))
        return
    if chosen is None:
        assert write is not None
        found = _BY_SUFFIX.get(write.suffix.lower())
        if found is None:
            raise UsageError(f"--write {write}: give -o (one of {', '.join(f.value for f in ReportFormat)})")
        chosen = ReportOutput(found.value)
    text = render(build_report(folder), chosen.report_format)
    if write is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(write, text)
        typer.echo(str(write))


__all__ = ["FILENAMES", "app", "report", "run_folder"]
