"""Checks, registered by the name the plan's ``type`` field uses.

Built in: ``demo.markers`` and ``nodes.schedulable``. ``reachability``, ``continuous-probe`` and
``nodes.reachable`` come from optional modules (``migrator.checks.reachability``,
``migrator.checks.nodes``) that :func:`load_builtins` imports when they exist.
"""

from __future__ import annotations

import importlib

from migrator.checks.base import (
    Checker,
    CheckResult,
    get_check,
    mark_unavailable,
    register_check,
    registered_checks,
    unavailable_checks,
)

__all__ = [
    "CheckResult",
    "Checker",
    "get_check",
    "load_builtins",
    "mark_unavailable",
    "register_check",
    "registered_checks",
    "unavailable_checks",
]

OPTIONAL_MODULES = ("migrator.checks.reachability", "migrator.checks.nodes", "migrator.checks.probe")

NOT_YET = {
    "reachability": "the probe engine is being built (issue 'Probes')",
    "continuous-probe": "the probe engine is being built (issue 'Probes')",
    "nodes.reachable": "the Ansible node executor is being built (issue 'Ansible actions')",
}

_loaded = False


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name, reason in NOT_YET.items():
        mark_unavailable(name, reason)
    importlib.import_module("migrator.checks.builtin")
    for module in OPTIONAL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
