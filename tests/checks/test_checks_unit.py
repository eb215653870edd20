"""Unit tests of the checks' bookkeeping: bounded grids, waves from the journal, excused probes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.checks.probe import MonitorState, Segment, WaveTracker
from migrator.checks.reachability import compact_grid, parse_kinds
from migrator.errors import UsageError
from migrator.plan.models import ContinuousProbeCheck
from migrator.ports import ProbeKind, ProbeResult, ProbeTarget

CROSS = ProbeKind.POD_CROSS_NODE


def r(src: str, dst: str, ok: bool, ts: float = 0.0) -> ProbeResult:
    return ProbeResult(src, dst, CROSS, ok, 1.0 if ok else None, None if ok else "timeout: x", ts)


def test_grid_is_full_when_small_and_bounded_when_big() -> None:
    small = [r(f"s{i}", f"d{j}", not (i == 1 and j == 2)) for i in range(3) for j in range(4)]
    g = compact_grid(small, [CROSS])
    assert g is not None and g["rows"][1] == "1101" and not g["filtered"]
    big = [r(f"s{i:03}", f"d{j:03}", not (j == 7 and i % 2 == 0)) for i in range(100) for j in range(100)]
    g = compact_grid(big, [CROSS], max_side=40)
    assert g is not None
    assert g["filtered"] and g["truncated"]  # 50 failing sources: cut to 40
    assert g["dests"] == ["d007"] and len(g["sources"]) == 40 and set(g["rows"]) == {"0"}
    assert g["pairs"] == 10_000 and g["failed"] == 50
    assert compact_grid(big, [ProbeKind.DNS]) is None


def test_unknown_kind_is_a_clear_error() -> None:
    assert parse_kinds(["dns"]) == frozenset({ProbeKind.DNS})
    with pytest.raises(UsageError, match="valid kinds"):
        parse_kinds(["pod-to-pod"])


class FakeRun:
    """Our own ContinuousProbe port, replaying recorded results."""

    def __init__(self, results: list[ProbeResult]) -> None:
        self.results = results

    def snapshot(self) -> list[ProbeResult]:
        return sorted(self.results, key=lambda x: x.ts)

    def stop(self) -> list[ProbeResult]:
        return self.snapshot()


def _event(type_: str, ts: str, **kw: object) -> str:
    return json.dumps({"seq": 1, "ts": ts, "type": type_, "run_id": "x", **kw})


def test_losses_of_pairs_touching_a_wave_node_are_excused(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    # wave 0 on n2 from t=1000 to t=1010 (ISO times of those epoch seconds)
    journal.write_text(
        _event("wave.start", "2001-09-09T01:46:40.000Z", stage="s", wave=0, nodes=["n2"])
        + "\n"
        + _event("wave.end", "2001-09-09T01:46:50.000Z", stage="s", wave=0, outcome="succeeded")
        + "\n"
        + _event("wave.start", "2001-09-09T01:46:41.000Z", stage="other", wave=0, nodes=["n3"])
        + "\n"
    )
    start = 1_000_000_000.0
    tracker = WaveTracker(journal, "s")
    tracker.update(frozenset(), start + 20)
    assert tracker.to_list() == [{"wave": 0, "nodes": ["n2"], "start": start, "end": start + 10}]
    check = ContinuousProbeCheck(type="continuous-probe", max_loss="0%")
    state = MonitorState(check, "s", tracker, start - 5)
    results = [
        r("a", "b", False, start + 2),  # a on n1, b on n2: touches the wave, sent during it -> excused
        r("a", "b", True, start + 3),
        r("a", "c", True, start + 2),  # c on n3: never excused
        r("a", "c", False, start + 4),
        r("a", "b", False, start - 1),  # before the wave: lost
    ]
    touches = {("a", "b", CROSS): frozenset({"n1", "n2"}), ("a", "c", CROSS): frozenset({"n1", "n3"})}
    pairs = [ProbeTarget("a", "b", CROSS, "10.0.0.2", 80), ProbeTarget("a", "c", CROSS, "10.0.0.3", 80)]
    seg = Segment(FakeRun(results), pairs, touches, start - 5, start + 100, frozenset(), horizon=start - 5)
    state.segments.append(seg)
    state.account(seg, float("inf"))
    ab = state.pairs[("a", "b", CROSS)]
    ac = state.pairs[("a", "c", CROSS)]
    assert (ab.sent, ab.lost, ab.excused) == (1, 1, 2)
    assert (ac.sent, ac.lost, ac.excused) == (2, 1, 0)
    breaches = state.breaches(final=True)
    assert len(breaches) == 2 and all("loss" in b for b in breaches)
    series = state.timeseries()
    assert sum(b["excused"] for b in series) == 2 and sum(b["sent"] for b in series) == 3
    assert state.details(final=True)["lost"] == 2


def test_min_availability_aborts_after_a_window_below_it(tmp_path: Path) -> None:
    check = ContinuousProbeCheck(
        type="continuous-probe", max_loss="100%", min_availability="90%", abort_after="3s"
    )
    start = 1_000_000_000.0
    state = MonitorState(check, "s", WaveTracker(tmp_path / "none.jsonl", "s"), start)
    # seconds 0-4 fine, 5-7 answer 50%: three seconds under 90%
    results = [r("a", "b", not (5 <= i // 10 <= 7 and i % 2), start + i / 10) for i in range(80)]
    pairs = [ProbeTarget("a", "b", CROSS, "10.0.0.2", 80)]
    seg = Segment(FakeRun(results), pairs, {}, start, start + 100, frozenset(), horizon=start)
    state.segments.append(seg)
    state.account(seg, float("inf"))
    breaches = state.breaches(final=True)
    assert len(breaches) == 1 and "availability 50.0% < 90%" in breaches[0]
    healthy = MonitorState(check, "s", WaveTracker(tmp_path / "none.jsonl", "s"), start)
    ok_seg = Segment(FakeRun(results[:50]), pairs, {}, start, start + 100, frozenset(), horizon=start)
    healthy.account(ok_seg, float("inf"))
    assert healthy.breaches(final=True) == []
