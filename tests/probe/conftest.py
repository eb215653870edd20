"""Fixtures for probe tests: a namespace fabric (prefix ``pbt<PID>``, 198.19.10.0/24), always torn down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from pbt_fabric import Fabric, session_prefix


def _can_build() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "iptables", "dnsmasq"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="session")
def fabric() -> Iterator[Fabric]:
    reason = _can_build()
    if reason:
        pytest.skip(reason)
    fab = Fabric(prefix=session_prefix("pbt"), nodes=3, pods_per_node=2, lifetime=900)
    try:
        fab.up()
        yield fab
    finally:
        fab.down()
