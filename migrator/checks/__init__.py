"""Checks, registered by the name the plan's ``type`` field uses.

Built in: ``demo.markers`` and ``nodes.schedulable``. ``reachability``, ``continuous-probe`` and
``nodes.reachable`` come from optional modules (``migrator.checks.reachability``,
``migrator.checks.nodes``) that :func:`load_builtins` imports when they exist.
"""

from __future__ import annotations

from migrator.checks.base import (
    Checker,
    CheckResult,
    get_check,
    load_builtins,
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
