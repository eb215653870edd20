"""How people see a run on a terminal: the engine only emits events; these render them.

- :class:`RichObserver`: a live tree (stage / wave / node) with spinners on running steps, for a TTY.
- :class:`PlainObserver`: one line per event, for pipes, CI and ``NO_COLOR``.
- :func:`console_observer` picks the rich or the plain one.
- :func:`dry_run_tree`: a dry run's report as a tree.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from migrator.engine.observers import describe
from migrator.runs.events import (
    CheckEnd,
    Event,
    MonitorFailed,
    MonitorProgress,
    RollbackEnd,
    RollbackStart,
    RunEnd,
    RunResume,
    RunStart,
    StageEnd,
    StageStart,
    StepEnd,
    StepStart,
    UndoEnd,
    WaveEnd,
    WaveStart,
)


class Progress:
    """Where a run is, for a person: the stage, wave k of n, elapsed time, an ETA from the waves done so
    far (mean wave duration x waves left in the stage), the probes the monitor lost so far."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started: float | None = None
        self.stage = ""
        self.waves_total = 0
        self.wave = 0  # 1-based, the wave running or last started
        self.wave_durations: list[float] = []
        self.monitor: dict[str, tuple[int, int]] = {}  # check -> (sent, lost)

    def fold(self, event: Event) -> None:
        if self.started is None:
            self.started = self.clock()
        match event:
            case StageStart():
                self.stage, self.wave, self.wave_durations = event.stage, 0, []
                self.waves_total = len(event.waves or ())
                self.monitor = {}
            case WaveStart():
                self.wave = event.wave + 1
            case WaveEnd() if event.duration is not None:
                self.wave_durations.append(float(event.duration))
            case MonitorProgress():
                self.monitor[event.check] = (event.sent, event.lost)

    def eta_s(self) -> float | None:
        if not self.wave_durations or not self.waves_total:
            return None
        left = self.waves_total - len(self.wave_durations)
        return max(0.0, left) * (sum(self.wave_durations) / len(self.wave_durations))

    def line(self) -> str:
        """``stage S · wave 2/4 · 12s elapsed · ETA ~9s · probes 480, 0 lost`` (the known parts)."""
        parts = [f"stage {self.stage}"] if self.stage else []
        if self.waves_total:
            parts.append(f"wave {max(self.wave, 1)}/{self.waves_total}")
        if self.started is not None:
            parts.append(f"{self.clock() - self.started:.0f}s elapsed")
        eta = self.eta_s()
        if eta is not None:
            parts.append(f"ETA ~{eta:.0f}s")
        if self.monitor:
            sent = sum(v[0] for v in self.monitor.values())
            lost = sum(v[1] for v in self.monitor.values())
            parts.append(f"probes {sent}, {lost} lost")
        return " · ".join(parts)


class PlainObserver:
    """One line per interesting event on ``stream`` (stdout by default); after each wave of a stage, a
    progress line (wave k/n, elapsed, ETA, probes lost so far)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.progress = Progress()

    def on_event(self, event: Event) -> None:
        with self._lock:
            self.progress.fold(event)
        line = describe(event)
        if line is None:
            return
        ts = event.ts[11:19]
        with self._lock:
            self.stream.write(f"{ts} {line}\n")
            if isinstance(event, WaveEnd) and self.progress.waves_total:
                self.stream.write(f"{ts}   progress: {self.progress.line()}\n")
            self.stream.flush()

    def close(self) -> None:
        return None


_ICONS = {
    "succeeded": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "failed-continued": "[yellow]![/]",
    "timeout": "[red]⏱[/]",
    "cancelled": "[yellow]⊘[/]",
    "retrying": "[yellow]↻[/]",
}


class RichObserver:
    """A live tree: stages, their waves and nodes, a spinner on each running step; a log of undos."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._lock = threading.Lock()
        self.title = "migrator"
        self.stages: dict[str, dict[str, Any]] = {}
        self.footer: list[str] = []
        self.status = ""
        self.progress = Progress()  # before Live, which renders once when it is made
        self._live = Live(
            get_renderable=self._render, console=self.console, refresh_per_second=8, transient=False
        )
        self._started = False

    def on_event(self, event: Event) -> None:
        with self._lock:
            if not self._started:
                self._live.start()
                self._started = True
            self.progress.fold(event)
            self._fold(event)

    def _fold(self, event: Event) -> None:
        match event:
            case RunStart():
                self.title = f"run {event.run_id}" + (f" · {event.plan}" if event.plan else "")
            case RunResume():
                self.title = f"run {event.run_id}"
            case StageStart():
                self.stages[event.stage] = {"status": "running", "waves": {}, "steps": {}}
            case StageEnd():
                self.stages.setdefault(event.stage, {"waves": {}, "steps": {}})["status"] = str(event.outcome)
            case WaveStart():
                st = self.stages.setdefault(event.stage, {"waves": {}, "steps": {}, "status": "running"})
                st["waves"][event.wave] = {"status": "running", "nodes": {n: "" for n in event.nodes}}
            case WaveEnd():
                waves: dict[int, dict[str, Any]] = self.stages.get(event.stage, {}).get("waves", {})
                if event.wave in waves:
                    waves[event.wave]["status"] = str(event.outcome)
            case StepStart() | StepEnd():
                self._step(event)
            case CheckEnd() if event.ok:
                pass
            case RollbackStart() | UndoEnd() | RollbackEnd() | MonitorFailed() | CheckEnd():
                self._footer(event)
            case RunEnd():
                self.status = f"{event.status}: {event.message}"

    def _footer(self, event: Event) -> None:
        line = describe(event)
        if line:
            self.footer.append(line.strip())
            self.footer = self.footer[-12:]

    def _step(self, event: StepStart | StepEnd) -> None:
        view = self.stages.get(event.stage)
        if view is None:
            return
        started = isinstance(event, StepStart)
        outcome = "" if isinstance(event, StepStart) else str(event.outcome)
        if event.node is None:
            view["steps"][event.step] = "running" if started else outcome
            return
        text = event.step if started else f"{event.step} {outcome}"
        for wave in view["waves"].values():
            if event.node in wave["nodes"]:
                wave["nodes"][event.node] = ("running:" if started else "") + text

    def _render(self) -> RenderableType:
        with self._lock:
            tree = Tree(Text(self.title, style="bold"))
            if not self.status and self.progress.stage:
                tree.add(Text(self.progress.line(), style="cyan"))
            for name, st in self.stages.items():
                branch = tree.add(_status_label(str(st.get("status")), f"stage {name}"))
                for step, sstatus in st["steps"].items():
                    branch.add(_status_label(sstatus, step))
                for index, wave in sorted(st["waves"].items()):
                    wbranch = branch.add(_status_label(str(wave["status"]), f"wave {index + 1}"))
                    for node, text in wave["nodes"].items():
                        if str(text).startswith("running:"):
                            wbranch.add(Spinner("dots", text=Text(f"{node}: {text[8:]}")))
                        else:
                            wbranch.add(Text(f"{node}: {text}"))
            parts: list[RenderableType] = [tree]
            if self.footer:
                table = Table.grid()
                for line in self.footer:
                    table.add_row(Text(line))
                parts.append(table)
            if self.status:
                parts.append(Text(self.status, style="bold"))
            return Group(*parts)

    def close(self) -> None:
        with self._lock:
            started = self._started
        if started:
            self._live.refresh()
            self._live.stop()


def _status_label(status: str, text: str) -> RenderableType:
    """A spinner while running, else the outcome's icon."""
    if status == "running":
        return Spinner("dots", text=Text(text))
    return Text.from_markup(f"{_ICONS.get(status, '·')} {text}")


def console_observer(stream: TextIO | None = None) -> RichObserver | PlainObserver:
    """The rich live tree when the stream is a TTY and ``NO_COLOR`` is unset; plain lines otherwise."""
    out = stream or sys.stdout
    if out.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb":
        return RichObserver(Console(file=out))
    return PlainObserver(out)


# -------------------------------------------------------------------------------------- dry runs


def dry_run_tree(report: Mapping[str, Any]) -> Tree:
    """A rich tree of a dry-run report (:func:`migrator.engine.dryrun.dry_run`)."""
    root = Tree(
        Text(
            f"dry run: plan {report['plan']} on target {report['target']}"
            f" (rollback: {report['rollback']}); nothing will be changed",
            style="bold",
        )
    )
    if report.get("params"):
        root.add(Text(f"params: {report['params']}"))
    _checks(root, "preflight", report.get("preflight") or [])
    for stage in report["stages"]:
        extra = ""
        if "for_each" in stage:
            extra = (
                f" for each node, order {stage['for_each']['order']}, max_unavailable"
                f" {stage['for_each']['max_unavailable']}"
            )
        branch = root.add(
            Text(f"stage {stage['stage']}{extra} (on_failure: {stage['on_failure']})", style="bold")
        )
        _checks(branch, "monitor", stage.get("monitor") or [])
        for step in stage.get("steps") or []:
            _step(branch, step)
        for wave in stage.get("waves") or []:
            wbranch = branch.add(
                Text(f"wave {wave['wave'] + 1}: {', '.join(n['node'] for n in wave['nodes'])}")
            )
            for node in wave["nodes"]:
                cp = " (control plane)" if node.get("control_plane") else ""
                nbranch = wbranch.add(Text(f"node {node['node']} {node['address']}{cp}"))
                for step in node["steps"]:
                    _step(nbranch, step)
        if "waves" in stage and not stage["waves"]:
            branch.add(Text("no node selected", style="yellow"))
        _checks(branch, "verify", stage.get("verify") or [])
    _checks(root, "verify", report.get("verify") or [])
    return root


def _step(parent: Tree, step: Mapping[str, Any]) -> None:
    branch = parent.add(Text(f"{step['step']}: {step['action']} {step['args']}"))
    for line in step.get("preview") or []:
        branch.add(Text(str(line) if not isinstance(line, Mapping) else _line(line), style="cyan"))
    undo = step.get("undo")
    if isinstance(undo, list):
        undo = "; ".join(_line(u) if isinstance(u, Mapping) else str(u) for u in undo)
    elif isinstance(undo, Mapping):
        undo = f"{undo.get('action')} {undo.get('args')}"
    if undo:
        branch.add(Text(f"undo: {undo}", style="dim"))


def _line(line: Mapping[str, Any]) -> str:
    if "command" in line:
        rest = {k: v for k, v in line.items() if k not in ("command", "node")}
        return f"$ {line['command']}" + (f"  {rest}" if rest else "")
    return str(dict(line))


def _checks(parent: Tree, phase: str, checks: list[Mapping[str, Any]]) -> None:
    if not checks:
        return
    branch = parent.add(Text(f"{phase} checks", style="magenta"))
    for check in checks:
        preview = "; ".join(str(p) for p in check.get("preview") or [])
        branch.add(Text(f"{check['check']} ({check['type']}): {preview}"))
