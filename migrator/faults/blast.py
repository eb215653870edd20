"""Blast radius: which nodes a fault hits (names, labels, count or percent with seeded sampling).

The control plane is excluded unless ``allow_control_plane``; more than ``max_share`` of the cluster's
nodes is refused (:class:`~migrator.errors.PlanError`), as is an empty selection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from migrator.errors import PlanError
from migrator.plan.models import FaultTargets, NodeSelector
from migrator.plan.selection import select_nodes
from migrator.ports import Node


def resolve_targets(
    nodes: Sequence[Node], targets: FaultTargets, *, where: str = "", check_cap: bool = True
) -> list[Node]:
    """The nodes ``targets`` picks, sorted by name; raises when none match or the cap is exceeded."""
    selector = NodeSelector(
        names=targets.names,
        labels=targets.labels,
        exclude=list(targets.exclude),
        exclude_control_plane=not targets.allow_control_plane,
        count=targets.count,
        # a number would be read as percent points again: hand the fraction over as a percentage
        percent=None if targets.percent is None else f"{targets.percent * 100!r}%",
        seed=targets.seed,
    )
    chosen = select_nodes(nodes, selector, where=where)
    prefix = f"{where}: " if where else ""
    if not chosen:
        hint = "" if targets.allow_control_plane else " (control-plane nodes are excluded)"
        raise PlanError(f"{prefix}the fault's targets match no node{hint}")
    if check_cap:
        check_share(len(chosen), len(nodes), targets.max_share, where=where)
    return chosen


def check_share(faulted: int, total: int, max_share: float, *, where: str = "") -> None:
    """Refuse to fault more than ``max_share`` of ``total`` nodes."""
    cap = math.floor(total * max_share + 1e-9)
    if faulted > cap:
        prefix = f"{where}: " if where else ""
        raise PlanError(
            f"{prefix}blast radius too large: {faulted} of {total} nodes, the cap is {max_share:.0%}"
            f" ({cap} node(s)); raise targets.max_share to allow it"
        )
