"""Fixtures for the ``ansible.playbook`` action and ``nodes.reachable`` tests: a real 4-node lab.

The lab (``ra<random>`` on 198.18.21.0/24, the underlay given to this work) is brought up once per module
and always torn down, also when a test fails. Runs and the lab state live in a private MIGRATOR_HOME.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, LabSpec
from migrator.ports import Target
from migrator.targets.lab.cluster import open_lab_target

UNDERLAY = "198.18.21.0/24"
CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/bridge").exists()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("ra-home")
    old = os.environ.get("MIGRATOR_HOME")
    os.environ["MIGRATOR_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MIGRATOR_HOME", None)
    else:
        os.environ["MIGRATOR_HOME"] = old


@pytest.fixture(scope="module")
def lab(home: Path) -> Iterator[Lab]:
    """A 4-node flannel lab without the demo app (node1 is the control plane)."""
    if not CAN_BUILD_LAB:
        pytest.skip("needs root, iproute2 and containernetworking-plugins")
    name = f"ra{random.randrange(100, 999)}"
    the_lab = Lab(name)
    try:
        the_lab.up(LabSpec(name=name, nodes=4, pods_per_node=0, app=AppKind.NONE, underlay=UNDERLAY))
        yield the_lab
    finally:
        res = the_lab.down()
        assert not res.leftovers, res.leftovers


@pytest.fixture(scope="module")
def target(lab: Lab) -> Target:
    return open_lab_target(lab.name)
