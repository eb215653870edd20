"""Plan commands: ``migrator validate PLAN...`` and ``migrator schema``.

Plain functions; ``migrator/cli/main.py`` registers them with typer, e.g.::

    @app.command("validate")
    def validate_cmd(plans: list[Path], set_: list[str] = typer.Option([], "--set")) -> None:
        raise typer.Exit(plan_cmds.validate(plans, plan_cmds.parse_sets(set_)))

    @app.command("schema")
    def schema_cmd() -> None:
        typer.echo(plan_cmds.schema())
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from migrator.errors import ExitCode, Location, PlanError, Problem
from migrator.plan.loader import load_plan, parse_set_options
from migrator.plan.schema import plan_json_schema


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """``--set a=1 --set b=x`` values -> mapping; raises :class:`PlanError` for an item without ``=``."""
    return parse_set_options(items)


def validate(
    paths: Sequence[Path],
    overrides: Mapping[str, str] | None = None,
    console: Console | None = None,
) -> int:
    """Validate each plan: print ``OK <path>`` or one line per problem (``file:line:col: field: message``).

    Returns 0 when every plan is valid, else 2 (:attr:`ExitCode.INVALID_INPUT`). ``overrides`` are the
    ``--set`` values, applied to every plan.
    """
    out = console or _console()
    status = ExitCode.OK
    if not paths:
        out.print("validate: give at least one plan file", markup=False)
        return int(ExitCode.INVALID_INPUT)
    for path in paths:
        try:
            load_plan(path, overrides)
        except PlanError as exc:
            status = ExitCode.INVALID_INPUT
            lines = [str(p) for p in exc.problems] or [f"{path}: {exc}"]
            for line in lines:
                out.print(line, markup=False, highlight=False)
        else:
            out.print(f"OK {path}", markup=False, highlight=False)
    return int(status)


def validate_report(
    paths: Sequence[Path], overrides: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """``validate -o json``: one object per plan, ``valid`` and its problems (file, line, column, field)."""
    report: list[dict[str, Any]] = []
    for path in paths:
        problems: list[dict[str, Any]] = []
        try:
            load_plan(path, overrides)
        except PlanError as exc:
            found = exc.problems or [Problem(Location(str(path)), "", str(exc))]
            problems = [
                {
                    "file": p.location.file,
                    "line": p.location.line,
                    "column": p.location.column,
                    "field": p.path,
                    "message": p.message,
                }
                for p in found
            ]
        report.append({"file": str(path), "valid": not problems, "problems": problems})
    return report


def schema() -> str:
    """The plan JSON Schema as indented JSON text (no trailing newline)."""
    return json.dumps(plan_json_schema(), indent=2, ensure_ascii=False)
