"""``migrator report RUN [--format md|html|json|junit] [-o FILE]``: re-render a run's reports.

Without ``--format`` and ``-o``, writes all four files (``report.json``, ``report.md``, ``report.html``,
``junit.xml``) into the run folder again and prints their paths. With ``--format``, prints that format
(or writes it to ``-o FILE``); ``-o`` alone picks the format from the file's extension. ``RUN`` is a run
id, a unique prefix of one, or the path of a run folder.
"""

from __future__ import annotations

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


@app.callback()
def report(
    run: Annotated[str, typer.Argument(help="Run id, unique prefix, or run folder")],
    fmt: Annotated[
        ReportFormat | None, typer.Option("--format", "-f", help="Print (or write to -o) only this format")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
) -> None:
    """Re-render the reports of RUN from its journal (all four files into the run folder by default)."""
    folder = run_folder(run)
    if fmt is None and output is None:
        for path in write_reports(folder):
            typer.echo(str(path))
        return
    if fmt is None:
        assert output is not None
        fmt = _BY_SUFFIX.get(output.suffix.lower())
        if fmt is None:
            raise UsageError(
                f"-o {output}: give --format (one of {', '.join(f.value for f in ReportFormat)})"
            )
    text = render(build_report(folder), fmt)
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        typer.echo(str(output))


__all__ = ["FILENAMES", "app", "report", "run_folder"]
