"""The migrator CLI as a subprocess, for tests: ``python -m migrator.cli.main ARGS`` with this source tree
first on ``PYTHONPATH``, always with a timeout, stdin closed, never raising on a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIGRATOR = (sys.executable, "-m", "migrator.cli.main")


def migrator_env(home: Path | None = None, *, drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment with this tree first on ``PYTHONPATH``, ``MIGRATOR_HOME=home`` (when
    given), the variables ``drop`` removed and ``extra`` set (e.g. ``NO_COLOR="1"``)."""
    dropped = set(drop)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if home is not None:
        env["MIGRATOR_HOME"] = str(home)
    env.update(extra)
    return env


def run_migrator(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 180.0, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end; stdout and stderr captured as text. ``env``: :func:`migrator_env` if not
    given."""
    return subprocess.run(
        [*MIGRATOR, *args],
        env=dict(env) if env is not None else migrator_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def start_migrator(
    *args: str,
    env: Mapping[str, str] | None = None,
    merge_stderr: bool = False,
    new_session: bool = False,
    cwd: Path = ROOT,
) -> subprocess.Popen[str]:
    """Start the CLI (the caller waits with a timeout, or kills it): stdout piped, stderr piped too or
    merged into stdout; ``new_session`` puts it in a session (and process group) of its own."""
    return subprocess.Popen(
        [*MIGRATOR, *args],
        env=dict(env) if env is not None else migrator_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        start_new_session=new_session,
    )
