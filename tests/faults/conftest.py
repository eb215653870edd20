"""Fixtures of the fault tests: one real 4-node lab (bookinfo) per test module, always torn down.

The lab is named ``<prefix><pid>`` (``$MIGRATOR_FAULT_TEST_LAB``, default ``rdt``) on the underlay
``$MIGRATOR_FAULT_TEST_UNDERLAY`` (default 198.18.24.0/24): one module's lab is down before the next one's is
up, so they share the underlay. ``MIGRATOR_HOME`` is one folder for the session so that the CLI subprocesses
see the lab.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.ports import Target
from migrator.targets.lab.cluster import open_lab_target

UNDERLAY = os.environ.get("MIGRATOR_FAULT_TEST_UNDERLAY", "198.18.24.0/24")
LAB_PREFIX = os.environ.get("MIGRATOR_FAULT_TEST_LAB", "rdt")
CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/bridge").exists()


@pytest.fixture(scope="session", autouse=True)
def migrator_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("faults-home")
    old = os.environ.get("MIGRATOR_HOME")
    os.environ["MIGRATOR_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MIGRATOR_HOME", None)
    else:
        os.environ["MIGRATOR_HOME"] = old


@pytest.fixture(scope="module")
def fault_lab(migrator_home: Path) -> Iterator[Lab]:
    if not CAN_BUILD_LAB:
        pytest.skip("needs root, iproute2 and containernetworking-plugins")
    name = f"{LAB_PREFIX}{os.getpid() % 1000}"
    lab = Lab(name)
    try:
        lab.up(LabSpec(name=name, nodes=4, pods_per_node=1, underlay=UNDERLAY))
        yield lab
    finally:
        try:
            target = open_lab_target(name)
            from migrator.cli.faults import clear_faults  # noqa: PLC0415

            clear_faults(target)  # no timer outlives the lab
        except Exception:
            pass
        res = lab.down()
        assert not res.leftovers, res.leftovers


@pytest.fixture(scope="module")
def lab_target(fault_lab: Lab) -> Target:
    return open_lab_target(fault_lab.name)
