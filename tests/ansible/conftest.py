"""Fixtures for the Ansible executor tests: a farm of real SSH nodes (see ``sshnodes.py``).

The farm lives in ``sshnodes.py`` so that it can be swapped for the lab once the lab is merged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sshnodes import SshNodeFarm

from migrator.adapters.ansible import AnsibleRunnerExecutor


@pytest.fixture(scope="session")
def farm() -> Iterator[SshNodeFarm]:
    if os.geteuid() != 0:
        pytest.skip("needs root: builds network namespaces and runs sshd")
    with SshNodeFarm(3, prefix="ans", net="198.19.20") as nodes:
        yield nodes


@pytest.fixture(scope="session")
def executor(farm: SshNodeFarm, tmp_path_factory: pytest.TempPathFactory) -> AnsibleRunnerExecutor:
    cp = tmp_path_factory.mktemp("cp")
    return AnsibleRunnerExecutor(inventory=farm.inventory, connect_timeout=3, control_path_dir=cp)


@pytest.fixture
def hosts(farm: SshNodeFarm) -> tuple[str, ...]:
    return tuple(farm.nodes)
