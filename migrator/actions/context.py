"""What actions and checks get from the engine: :class:`StepContext` and :class:`CheckContext`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migrator.errors import PermanentError, PlanError, StepTimeout
from migrator.ports import Cluster, Node, Target

PreviewLine = str | dict[str, Any]
"""One line of a preview: a sentence, or a dict such as ``{"command": "kubectl cordon w1"}``."""


class Cancelled(PermanentError):
    """An action stopped because its cancel event was set (interrupt, monitor abort or timeout)."""


def _no_emit(event: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class WaveSpan:
    """One wave of a stage as the engine runs it, on the clock of the probes' ``ts`` (``time.time()`` of
    this process): ``start`` is taken before the wave's first step (and before its ``wave.start`` event),
    ``end`` once its steps and verify checks are done (``None`` while it runs)."""

    index: int
    nodes: frozenset[str]
    start: float
    end: float | None = None


class WaveLog:
    """The waves of every stage of a run, recorded by the engine as they start and end (thread-safe).

    A stage's monitor reads it at every round and at its end (:attr:`CheckContext.waves`), so what it
    knows of the waves is never behind what the steps do."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: dict[str, dict[int, WaveSpan]] = {}

    def begin(self, stage: str, index: int, nodes: Iterable[str], *, at: float | None = None) -> None:
        span = WaveSpan(index, frozenset(nodes), time.time() if at is None else at)
        with self._lock:
            self._spans.setdefault(stage, {})[index] = span

    def end(self, stage: str, index: int, *, at: float | None = None) -> None:
        with self._lock:
            span = self._spans.get(stage, {}).get(index)
            if span is not None and span.end is None:
                self._spans[stage][index] = replace(span, end=time.time() if at is None else at)

    def of(self, stage: str | None) -> tuple[WaveSpan, ...]:
        """The waves of ``stage`` so far, in order."""
        with self._lock:
            spans = self._spans.get(stage or "", {})
            return tuple(spans[i] for i in sorted(spans))


def _no_scrub(value: Any) -> Any:
    return value


@dataclass
class StepContext:
    """Everything an action may use. Actions talk to the target only through ``target``'s ports.

    ``cancel`` is set when the step must stop (timeout, interrupt, monitor abort): long actions check
    it (or call :meth:`sleep` / :meth:`check_cancelled`) and stop early. ``deadline`` is a
    ``time.monotonic()`` value. ``prepared`` is what the action's ``prepare`` returned before the first
    attempt (recorded in the journal, so it is the state *before* the step even after a crash).
    """

    run_id: str
    run_dir: Path
    artifacts_dir: Path
    target: Target
    node: Node | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float = float("inf")
    dry_run: bool = False
    emit: Callable[[Mapping[str, Any]], None] = _no_emit
    scrub: Callable[[Any], Any] = _no_scrub
    stage: str = ""
    step: str = ""
    attempt: int = 1
    prepared: Any = None
    undoing: bool = False
    timeout: float | None = None

    @property
    def cluster(self) -> Cluster:
        return self.target.cluster

    def require_node(self) -> Node:
        if self.node is None:
            raise PlanError(
                f"step {self.step!r} of stage {self.stage!r} needs a node: use it in a for_each stage"
            )
        return self.node

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def check_cancelled(self) -> None:
        """Raise if the step must stop: :class:`StepTimeout` after the deadline, else :class:`Cancelled`."""
        if time.monotonic() >= self.deadline:
            limit = f" after {self.timeout:g}s" if self.timeout is not None else ""
            node = self.node.name if self.node else None
            raise StepTimeout(f"step {self.step!r} timed out{limit}", node=node)
        if self.cancel.is_set():
            raise Cancelled(f"step {self.step!r} was cancelled")

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise as soon as the step is cancelled or its deadline passes."""
        end = time.monotonic() + seconds
        while True:
            self.check_cancelled()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.cancel.wait(max(0.001, min(left, 0.5, self.remaining())))

    def artifacts(self) -> Path:
        """The step's artifacts folder, created on first use."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return self.artifacts_dir


@dataclass
class CheckContext:
    """What a check gets. ``phase`` is ``preflight``, ``wave-verify``, ``stage-verify``, ``verify``,
    ``monitor`` or ``post-rollback``; ``nodes`` are the nodes of the current wave (for a monitor: the
    wave running when the round started; empty elsewhere). ``waves``: the engine's record of the run's
    waves (``None`` outside the engine: a monitor then reads them from the run's journal)."""

    run_id: str
    run_dir: Path
    artifacts_dir: Path
    target: Target
    phase: str
    params: Mapping[str, Any] = field(default_factory=dict)
    stage: str | None = None
    nodes: tuple[Node, ...] = ()
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float = float("inf")
    dry_run: bool = False
    emit: Callable[[Mapping[str, Any]], None] = _no_emit
    scrub: Callable[[Any], Any] = _no_scrub
    store: dict[str, Any] = field(default_factory=dict)
    """Shared by the calls of one monitor (``monitor_start``, each ``run``, ``monitor_stop``)."""
    waves: WaveLog | None = None

    @property
    def cluster(self) -> Cluster:
        return self.target.cluster

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def artifacts(self) -> Path:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return self.artifacts_dir


def markers_dir(run_dir: Path, target: Target) -> Path:
    """Where the demo actions keep their marker files: ``target.markers_dir`` or the run folder."""
    path = target.markers_dir or run_dir / "markers"
    path.mkdir(parents=True, exist_ok=True)
    return path
