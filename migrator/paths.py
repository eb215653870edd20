"""Where migrator keeps its state: ``$MIGRATOR_HOME`` (default ``~/.local/state/migrator``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The state folder; created on first use."""
    raw = os.environ.get("MIGRATOR_HOME")
    base = Path(raw).expanduser() if raw else Path.home() / ".local" / "state" / "migrator"
    base.mkdir(parents=True, exist_ok=True)
    return base


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def labs_dir() -> Path:
    path = home() / "labs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def locks_dir() -> Path:
    path = home() / "locks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_root() -> Path:
    """The source checkout (holds ``playbooks/`` and ``plans/``)."""
    return Path(__file__).resolve().parent.parent


def playbooks_dir() -> Path:
    raw = os.environ.get("MIGRATOR_PLAYBOOKS")
    return Path(raw) if raw else project_root() / "playbooks"
