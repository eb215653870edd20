"""``python -m migrator.testing.kill_after 'TYPE KEY' [migrator arguments...]``: run the ``migrator`` CLI
and have it send itself ``SIGKILL`` right after the first journal event of type ``TYPE`` whose ``key`` (a
step key) or ``check`` (a check name) is ``KEY`` is on disk: a real ``kill -9`` at an exact boundary
(``bench/kill_series.py``, ``tests/resilience``). ``KEY`` may be empty (``'run.start '``).

The kill happens in a process-wide journal hook (:func:`migrator.runs.journal.add_write_hook`), under the
journal's lock right after the ``fsync``: no other event can follow it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migrator.runs.journal import add_write_hook


def matches(point: str, event: Mapping[str, Any]) -> bool:
    """``point`` (``"TYPE KEY"``) names this event."""
    what = event.get("key") or event.get("check") or ""
    return point == f"{event.get('type')} {what}"


def kill_hook(point: str) -> Callable[[Mapping[str, Any]], None]:
    def hook(event: Mapping[str, Any]) -> None:
        if matches(point, event):
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write("usage: python -m migrator.testing.kill_after 'TYPE KEY' [migrator arguments...]\n")
        sys.exit(2)
    add_write_hook(kill_hook(args[0]))
    from migrator.cli.main import run  # noqa: PLC0415 - after the hook is in place

    sys.argv = ["migrator", *args[1:]]
    run(args[1:])


if __name__ == "__main__":
    main()
