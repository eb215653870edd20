"""Step actions, registered by the name the plan's ``action`` field uses.

Built in: ``demo.touch``, ``demo.sleep``, ``demo.fail`` and the node actions ``node.cordon``,
``node.uncordon``, ``node.drain``, ``node.label``, ``node.restart-pods``. Other packages register more
(``migrator.actions.ansible`` for ``ansible.playbook``): :func:`load_builtins` imports them when present.
"""

from __future__ import annotations

import importlib

from migrator.actions.base import (
    Action,
    get_action,
    mark_unavailable,
    register_action,
    registered_actions,
    unavailable_actions,
)
from migrator.actions.context import Cancelled, CheckContext, PreviewLine, StepContext

__all__ = [
    "Action",
    "Cancelled",
    "CheckContext",
    "PreviewLine",
    "StepContext",
    "get_action",
    "load_builtins",
    "mark_unavailable",
    "register_action",
    "registered_actions",
    "unavailable_actions",
]

# modules that register actions when they exist; each may be missing while others build it
OPTIONAL_MODULES = ("migrator.actions.ansible", "migrator.actions.faults")

NOT_YET = {
    "ansible.playbook": "the Ansible node executor is being built (issue 'Ansible actions')",
}

_loaded = False


def load_builtins() -> None:
    """Register the built-in actions and the optional ones that are installed. Idempotent."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name, reason in NOT_YET.items():
        mark_unavailable(name, reason)
    importlib.import_module("migrator.actions.demo")
    importlib.import_module("migrator.actions.node")
    for module in OPTIONAL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
