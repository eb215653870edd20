"""Step actions, registered by the name the plan's ``action`` field uses.

Built in: ``demo.touch``, ``demo.sleep``, ``demo.fail`` and the node actions ``node.cordon``,
``node.uncordon``, ``node.drain``, ``node.label``, ``node.restart-pods``. Other packages register more
(``ansible.playbook``, ``fault.*``, ``cni.*``): :func:`load_builtins` imports them on first use.
"""

from __future__ import annotations

from migrator.actions.base import (
    Action,
    get_action,
    load_builtins,
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
