"""Fixtures shared by the engine tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def ansible_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``ansible.playbook`` a known-but-unavailable action for one test (as in a partial build)."""
    from migrator.actions import base  # noqa: PLC0415

    base.load_builtins()
    monkeypatch.delitem(base._ACTIONS, "ansible.playbook")
    monkeypatch.setitem(base._UNAVAILABLE, "ansible.playbook", "switched off for this test")
