"""The conventions every ``migrator`` command follows (one place, so they cannot drift apart):

- ``-o/--output text|json`` (``--json`` is a hidden alias of ``-o json`` where it existed before);
- ``-t/--target TARGET`` where a target is involved, default ``$MIGRATOR_TARGET`` or ``lab``;
- ``--yes`` and ``--dry-run`` on every command that changes a cluster: :func:`confirm_change` shows the
  preview and asks on a TTY, and refuses (exit 2) without ``--yes`` when there is no TTY to ask on;
- whole lines when piped: :func:`console` gives a wide console off a TTY, so nothing is cut at a fixed
  column (on a TTY rich wraps at the terminal's width);
- flags show no value placeholder in ``--help`` (:func:`plain_flags`).

JSON outputs carry ``"schema": "migrator.<command>/v1"`` where they are objects
(:data:`JSON_SCHEMA_VERSION`); ``docs/cli.md`` documents them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console

from migrator.errors import UsageError

JSON_SCHEMA_VERSION = "v1"
# off a TTY a line is never cut: wide enough for any line we print (tables size to their content)
PIPE_WIDTH = 100_000


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json")]
JsonAliasOpt = Annotated[bool, typer.Option("--json", hidden=True, help="Same as -o json")]
TargetOpt = Annotated[
    str,
    typer.Option(
        "--target", "-t", help="lab, kube or fake (optionally KIND:NAME); default $MIGRATOR_TARGET or lab"
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing")]


def console(*, stderr: bool = False) -> Console:
    """A console that wraps at the terminal's width on a TTY and never cuts a line when piped."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def default_target(spec: str = "") -> str:
    return spec or os.environ.get("MIGRATOR_TARGET", "lab")


def output_of(output: Output, as_json: bool = False) -> Output:
    """``-o`` with the hidden ``--json`` alias folded in."""
    return Output.JSON if as_json else output


def schema_tag(command: str) -> str:
    """The ``schema`` field of a command's JSON object: ``migrator.<command>/v1``."""
    return f"migrator.{command}/{JSON_SCHEMA_VERSION}"


def confirm_change(
    question: str,
    *,
    yes: bool,
    what: str,
    preview: Callable[[], None],
    interactive: bool | None = None,
) -> bool:
    """Before a change: True to go on. With ``--yes``: at once. On a TTY: the preview, then ``question``.
    Off a TTY without ``--yes``: :class:`UsageError` (exit 2), naming ``what`` changes."""
    if yes:
        return True
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise UsageError(
            f"{what} changes the target: pass --yes to confirm, or --dry-run to see what it would do"
            " (there is no TTY to ask on)"
        )
    preview()
    return bool(typer.confirm(question, default=False))


def plain_flags(command: Any) -> Any:
    """Flags (``--yes``, ``-v`` counts) show no ``<bool>`` or ``<int>`` in ``--help``; walks groups."""
    seen: set[int] = set()
    stack = [command]
    while stack:
        cmd = stack.pop()
        if id(cmd) in seen:
            continue
        seen.add(id(cmd))
        params = list(getattr(cmd, "params", []))
        if hasattr(cmd, "get_help_option"):
            params.append(cmd.get_help_option(typer.Context(cmd)))  # created once, then cached
        for param in params:
            if param is None:
                continue
            if (getattr(param, "is_flag", False) or getattr(param, "count", False)) and param.metavar is None:
                param.metavar = ""
        stack.extend(getattr(cmd, "commands", {}).values())
    return command
