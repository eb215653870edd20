"""Fixtures for the Ansible executor tests: a farm of real SSH nodes (see ``sshnodes.py``).

These executor-level tests keep the farm on purpose: they need *blank* nodes (they seed flannel-like
devices, routes and iptables chains, then tear them down with ``cni-teardown.yml``, which on a lab node
would collide with, or break, the lab's own flannel) and a private ``/etc`` (``secret.yml``, ``become``),
while a lab node shares the host's ``/etc`` except ``/etc/cni/net.d``. The same behaviours through the
plan engine on real lab nodes (success, a failing host, unreachable + retry, check mode, idempotency,
secrets) are tested in ``tests/actions/`` against a 4-node lab.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sshnodes import SshNodeFarm

from migrator.targets.ansible.executor import AnsibleRunnerExecutor


@pytest.fixture(scope="session")
def farm() -> Iterator[SshNodeFarm]:
    if os.geteuid() != 0:
        pytest.skip("needs root: builds network namespaces and runs sshd")
    # MIGRATOR_TEST_FARM="PREFIX:NET" (e.g. "spa:198.18.52"): another farm than a concurrent test run's
    prefix, _, net = os.environ.get("MIGRATOR_TEST_FARM", "ans:198.19.20").partition(":")
    with SshNodeFarm(3, prefix=prefix, net=net or "198.19.20") as nodes:
        yield nodes


@pytest.fixture(scope="session")
def executor(farm: SshNodeFarm, tmp_path_factory: pytest.TempPathFactory) -> AnsibleRunnerExecutor:
    cp = tmp_path_factory.mktemp("cp")
    return AnsibleRunnerExecutor(inventory=farm.inventory, connect_timeout=3, control_path_dir=cp)


@pytest.fixture
def hosts(farm: SshNodeFarm) -> tuple[str, ...]:
    return tuple(farm.nodes)
