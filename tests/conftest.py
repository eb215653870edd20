"""Shared fixtures: an isolated ``MIGRATOR_HOME`` for every test, fake targets and plan builders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.ports import Target
from migrator.testing.fake import FakeCluster


@pytest.fixture(autouse=True)
def migrator_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own state folder; nothing touches ~/.local/state/migrator."""
    home = tmp_path / "home"
    monkeypatch.setenv("MIGRATOR_HOME", str(home))
    monkeypatch.delenv("MIGRATOR_FAKE_STATE", raising=False)
    yield home


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def target(markers: Path) -> Target:
    """A fake target with 1 control plane and 3 workers; demo markers live in ``markers``."""
    return Target(name="fake", cluster=FakeCluster.with_nodes(4), markers_dir=markers)
