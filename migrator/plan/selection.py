"""Node selection for ``for_each: nodes`` stages: select, sample, order, split into waves.

:func:`stage_waves` is the one way a stage's waves are computed: by the engine when the stage starts, by
the step requirements at run start and by the dry run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from migrator.errors import PlanError
from migrator.plan.models import ForEachNodes, NodeOrder, NodeSelector, Stage
from migrator.ports import Node


def select_nodes(nodes: Sequence[Node], selector: NodeSelector, *, where: str = "") -> list[Node]:
    """The nodes a selector picks (sorted by name), sampled by ``count``/``percent`` with ``seed``."""
    by_name = {n.name: n for n in nodes}
    prefix = f"{where}: " if where else ""
    if selector.names is not None:
        unknown = [n for n in selector.names if n not in by_name]
        if unknown:
            raise PlanError(f"{prefix}nodes {unknown} are not in the cluster (it has {sorted(by_name)})")
        chosen = [by_name[n] for n in selector.names]
    else:
        chosen = sorted(nodes, key=lambda n: n.name)
    if selector.labels is not None:
        chosen = [n for n in chosen if selector.labels.matches(dict(n.labels))]
    excluded = set(selector.exclude)
    chosen = [n for n in chosen if n.name not in excluded]
    if selector.exclude_control_plane:
        chosen = [n for n in chosen if not n.is_control_plane]
    chosen = sorted(chosen, key=lambda n: n.name)
    size: int | None = None
    if selector.count is not None:
        size = min(selector.count, len(chosen))
    elif selector.percent is not None:
        size = math.floor(len(chosen) * selector.percent)
        if selector.percent > 0 and chosen:
            size = max(1, size)
    if size is not None and size < len(chosen):
        picked = set(n.name for n in random.Random(selector.seed).sample(chosen, size))
        chosen = [n for n in chosen if n.name in picked]
    return chosen


def order_nodes(nodes: Sequence[Node], order: NodeOrder, listed: Sequence[str] | None = None) -> list[Node]:
    if order == NodeOrder.WORKERS_FIRST:
        workers = sorted((n for n in nodes if not n.is_control_plane), key=lambda n: n.name)
        cps = sorted((n for n in nodes if n.is_control_plane), key=lambda n: n.name)
        return workers + cps
    if order == NodeOrder.AS_LISTED and listed is not None:
        position = {name: i for i, name in enumerate(listed)}
        return sorted(nodes, key=lambda n: (position.get(n.name, len(position)), n.name))
    return sorted(nodes, key=lambda n: n.name)


def wave_size(max_unavailable: int | float, count: int) -> int:
    """``max_unavailable`` as a node count: an int, or a fraction of ``count`` rounded down, at least 1."""
    if isinstance(max_unavailable, bool):
        raise PlanError("max_unavailable must be a number or a percentage")
    if isinstance(max_unavailable, int):
        return max(1, max_unavailable)
    return max(1, math.floor(count * max_unavailable + 1e-9))


def split_waves(nodes: Sequence[Node], size: int) -> list[list[str]]:
    names = [n.name for n in nodes]
    return [names[i : i + size] for i in range(0, len(names), size)]


def resolve_waves(nodes: Sequence[Node], for_each: ForEachNodes, *, where: str = "") -> list[list[str]]:
    """Select, order and split: the waves of a ``for_each`` stage, as lists of node names."""
    chosen = select_nodes(nodes, for_each.nodes, where=where)
    ordered = order_nodes(chosen, for_each.order, for_each.nodes.names)
    return split_waves(ordered, wave_size(for_each.max_unavailable, len(ordered)))


@dataclass(frozen=True)
class StageWaves:
    """A ``for_each`` stage's waves (node names) and the nodes they hold."""

    waves: list[list[str]]
    nodes: dict[str, Node]
    """Every node of a wave, by name, in the order the cluster listed them."""


def stage_waves(nodes: Sequence[Node], stage: Stage, index: int) -> StageWaves:
    """The waves of ``stage`` (the ``index``-th of its plan, a ``for_each`` stage) on the cluster's
    ``nodes``; :class:`PlanError` naming the stage when its selector does not fit them."""
    if stage.for_each is None:
        raise ValueError(f"stage {stage.name!r} is not a for_each stage")
    waves = resolve_waves(nodes, stage.for_each, where=f"stages[{index}] ({stage.name})")
    chosen = {name for wave in waves for name in wave}
    return StageWaves(waves, {n.name: n for n in nodes if n.name in chosen})
