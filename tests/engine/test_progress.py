"""Live progress (issue 17): wave k of n, elapsed, ETA and the probes a monitor lost so far, on a TTY's
live tree and as plain lines when piped; the monitor's counts reach the observers without being journaled."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import events, make_plan, run, touch

from migrator.cli.console import PlainObserver, Progress, RichObserver
from migrator.engine import RunStatus
from migrator.engine import engine as engine_mod
from migrator.ports import Target
from migrator.runs.events import MonitorProgress, StageStart, WaveEnd, WaveStart
from migrator.testing.fake import FakeCluster, FakeProber


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


WAVES = (("worker-1",), ("worker-2",), ("worker-3",), ("cp-1",))


def test_progress_line_counts_waves_and_estimates_the_rest() -> None:
    clock = Clock()
    p = Progress(clock)
    p.fold(StageStart(stage="nodes", waves=WAVES))
    p.fold(WaveStart(stage="nodes", wave=0, nodes=WAVES[0]))
    assert p.line() == "stage nodes · wave 1/4 · 0s elapsed"  # no ETA before a wave ended
    clock.now += 3
    p.fold(WaveEnd(stage="nodes", wave=0, outcome="succeeded", duration=3.0))
    p.fold(WaveStart(stage="nodes", wave=1, nodes=WAVES[1]))
    clock.now += 1
    p.fold(WaveEnd(stage="nodes", wave=1, outcome="succeeded", duration=1.0))
    p.fold(MonitorProgress(stage="nodes", check="pods-outside-wave", sent=480, lost=2, excused=7))
    # 2 waves of 4 done, 2 s each on average: about 4 s to go
    assert p.line() == "stage nodes · wave 2/4 · 4s elapsed · ETA ~4s · probes 480, 2 lost"
    p.fold(StageStart(stage="verify-all", waves=None))
    assert p.line().startswith("stage verify-all · ") and "wave" not in p.line() and "probes" not in p.line()


def test_plain_observer_prints_a_progress_line_after_each_wave() -> None:
    buf = io.StringIO()
    obs = PlainObserver(buf)
    ts = "2026-12-07T10:00:00.000Z"
    obs.on_event(StageStart(stage="nodes", waves=WAVES, ts=ts))
    obs.on_event(WaveStart(stage="nodes", wave=0, nodes=WAVES[0], ts=ts))
    obs.on_event(MonitorProgress(stage="nodes", check="probe", sent=100, lost=0, ts=ts))
    obs.on_event(WaveEnd(stage="nodes", wave=0, outcome="succeeded", duration=2.0, ts=ts))
    lines = buf.getvalue().splitlines()
    assert "monitor probe: 100 probes, 0 lost so far" in lines[2]
    assert lines[-1].split("progress: ")[1].startswith("stage nodes · wave 1/4 · ")
    assert lines[-1].endswith("ETA ~6s · probes 100, 0 lost")


def test_rich_observer_shows_the_progress_line() -> None:
    from rich.console import Console  # noqa: PLC0415

    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    obs = RichObserver(console)
    obs.on_event(StageStart(stage="nodes", waves=WAVES, ts="2026-12-07T10:00:00.000Z"))
    obs.on_event(WaveStart(stage="nodes", wave=2, nodes=WAVES[2], ts="2026-12-07T10:00:00.000Z"))
    console.print(obs._render())
    obs.close()
    assert "wave 3/4" in console.file.getvalue()  # type: ignore[attr-defined]


def test_the_engine_hands_monitor_counts_to_observers_not_to_the_journal(
    markers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_mod, "PROGRESS_EVERY_S", 0.0)
    cluster = FakeCluster.with_nodes(4)
    target = Target(name="fake", cluster=cluster, markers_dir=markers, prober=FakeProber(cluster))
    seen: list[Any] = []

    class Collect:
        def on_event(self, event: Any) -> None:
            seen.append(event)

        def close(self) -> None:
            return None

    stage = {
        "name": "nodes",
        "for_each": {"nodes": {}, "max_unavailable": 1},
        "steps": [
            touch("node-${{ node.name }}", name="mark"),
            {"name": "wait", "action": "demo.sleep", "args": {"duration": "300ms"}},
        ],
        "monitor": [
            {"type": "continuous-probe", "rate_hz": 20, "scope": "cross-node", "exclude_wave_nodes": True}
        ],
    }
    plan = make_plan([stage])
    result = run(plan, target, observers=lambda rundir: [Collect()], sleep=None, monitor_interval=0.1)
    assert result.status == RunStatus.SUCCEEDED, result.message
    progress = [e for e in seen if isinstance(e, MonitorProgress)]
    assert progress, "no MonitorProgress reached the observer"
    assert progress[-1].sent > 0 and progress[-1].lost == 0 and progress[-1].stage == "nodes"
    assert all(e.run_id == result.run_id and e.ts for e in progress)
    assert sorted(e.sent for e in progress) == [e.sent for e in progress]  # counts only grow
    assert not [e for e in events(result) if e["type"] == "monitor.progress"], "progress was journaled"
