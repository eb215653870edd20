"""Fixtures for the plan-check tests: one real 4-node lab per module, always torn down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/bridge").exists()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CAN_BUILD_LAB:
        return
    skip = pytest.mark.skip(reason="needs root, iproute2 and containernetworking-plugins")
    for item in items:
        if "lab" in item.keywords and "tests/checks" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def migrator_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One MIGRATOR_HOME for the session: the module's lab and its runs live there."""
    home = tmp_path_factory.mktemp("checks-home")
    old = os.environ.get("MIGRATOR_HOME")
    os.environ["MIGRATOR_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MIGRATOR_HOME", None)
    else:
        os.environ["MIGRATOR_HOME"] = old
