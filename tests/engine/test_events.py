"""The typed journal events (migrator.runs.events): one parser for every journal ever written, the same
JSON lines as before they were typed; crash helpers (migrator.testing): a BaseException goes through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import make_plan, run, touch

from migrator.actions import demo
from migrator.engine import EngineOptions, resume_run
from migrator.engine.state import SagaState
from migrator.runs.events import (
    EVENT_TYPES,
    EventError,
    RunStatus,
    StageStart,
    StepEnd,
    StepOutcome,
    UndoEnd,
    UnknownEvent,
    parse_event,
)
from migrator.runs.journal import Journal, Scrubber, read_journal
from migrator.runs.rundir import list_runs
from migrator.testing.crash import SimulatedCrash, crash_after
from migrator.testing.fake import fake_target
from migrator.testing.kill_after import matches

DATA = Path(__file__).parents[1] / "report" / "data"
ROOT = Path(__file__).resolve().parents[2]


def recorded_lines() -> list[str]:
    return [ln for p in sorted(DATA.glob("*/journal.jsonl")) for ln in p.read_text().splitlines() if ln]


def test_every_recorded_event_parses_and_is_written_back_key_for_key() -> None:
    seen = set()
    for line in recorded_lines():
        event = parse_event(json.loads(line))
        assert not isinstance(event, UnknownEvent), line[:120]
        assert not event.extra, line[:120]
        assert json.dumps(event.to_json(), separators=(",", ":")) == line
        seen.add(event.type)
    assert len(seen) >= 20  # the recorded runs have most event types


def test_a_new_run_writes_the_same_lines_it_parses(tmp_path: Path) -> None:
    target = fake_target(markers_dir=tmp_path / "m")
    plan = make_plan(
        [
            {"name": "a", "steps": [touch("x")]},
            {
                "name": "n",
                "for_each": {"nodes": {"names": ["worker-1"]}},
                "steps": [touch("y", fail_when="y")],
            },
        ]
    )
    result = run(plan, target)
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    lines = (result.run_dir / "journal.jsonl").read_text().splitlines()
    kinds = {json.loads(ln)["type"] for ln in lines}
    assert {"step.end", "undo.start", "undo.end", "rollback.start", "rollback.end", "stage.start"} <= kinds
    for line in lines:
        assert json.dumps(parse_event(json.loads(line)).to_json(), separators=(",", ":")) == line


def test_old_journals_missing_optional_fields_and_with_unknown_ones_parse() -> None:
    end = parse_event({"seq": 3, "type": "undo.end", "key": "s/a", "outcome": "succeeded", "future": [1]})
    assert isinstance(end, UndoEnd)
    assert (end.ts, end.run_id, end.stage, end.attempts, end.skipped, end.error) == (
        "",
        "",
        "",
        None,
        False,
        None,
    )
    assert end.extra == {"future": [1]}
    assert end.to_json()["future"] == [1]  # kept and written back
    start = parse_event({"seq": 1, "type": "stage.start", "stage": "s"})
    assert isinstance(start, StageStart) and start.waves is None and start.stage_index == 0
    step = parse_event(
        {"seq": 2, "type": "step.end", "key": "s/a", "stage": "s", "step": "a", "outcome": "failed"}
    )
    assert isinstance(step, StepEnd) and step.outcome is StepOutcome.FAILED and step.outcome.bad
    assert "result" not in step.to_json()  # a failed step has no result, a succeeded one always has one
    unknown = parse_event({"seq": 4, "type": "tool.thing", "x": 1})
    assert isinstance(unknown, UnknownEvent) and unknown.type == "tool.thing"
    assert unknown.to_json() == {"seq": 4, "ts": "", "type": "tool.thing", "run_id": "", "x": 1}


def test_a_known_event_without_a_required_field_or_with_a_bad_value_is_an_error() -> None:
    with pytest.raises(EventError, match=r"journal event 7 \(run.end\) has no status"):
        parse_event({"seq": 7, "type": "run.end"})
    with pytest.raises(EventError, match="outcome 'sort-of' is not valid"):
        parse_event({"seq": 8, "type": "stage.end", "stage": "s", "outcome": "sort-of"})


def test_every_event_type_has_its_class() -> None:
    assert len(EVENT_TYPES) == 30
    assert all(name == cls.TYPE for name, cls in EVENT_TYPES.items())


def test_the_journal_writes_typed_events_masked_and_hands_back_the_clear_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl", "r1", scrub=Scrubber(["hunter2"]))
    seen: list[dict[str, Any]] = []
    journal.hooks.append(lambda e: seen.append(dict(e)))
    raw, written = journal.write(
        StepEnd(key="s/a", stage="s", step="a", outcome=StepOutcome.SUCCEEDED, result={"pw": "hunter2"})
    )
    journal.close()
    assert (
        isinstance(raw, StepEnd) and raw.result == {"pw": "hunter2"} and raw.seq == 1 and raw.run_id == "r1"
    )
    assert isinstance(written, StepEnd) and written.result == {"pw": "***"}
    assert "hunter2" not in (tmp_path / "j.jsonl").read_text()
    assert seen == [written.to_json()]


def test_a_simulated_crash_writes_nothing_after_its_event(tmp_path: Path) -> None:
    target = fake_target(markers_dir=tmp_path / "m")
    plan = make_plan([{"name": "a", "steps": [touch("x"), touch("y")]}])
    with pytest.raises(SimulatedCrash):
        run(plan, target, journal=crash_after(5))
    (rundir,) = list_runs()
    assert read_journal(rundir.journal).last_seq == 5
    assert SagaState.replay(read_journal(rundir.journal).events).status == RunStatus.RUNNING


class _Stopped(BaseException):
    """Not an Exception: neither a failure of the step nor of the run."""


def test_a_base_exception_in_a_wave_worker_goes_through_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = fake_target(markers_dir=tmp_path / "m")
    real = demo.Touch.do

    def do(self: demo.Touch, ctx: Any, args: Any) -> Any:
        if args.marker == "node-worker-2":
            raise _Stopped()
        return real(self, ctx, args)

    monkeypatch.setattr(demo.Touch, "do", do)
    plan = make_plan(
        [
            {
                "name": "n",
                "for_each": {"nodes": {"names": ["worker-1", "worker-2"]}, "max_unavailable": 2},
                "steps": [touch("node-${{ node.name }}", name="mark")],
            }
        ],
    )
    with pytest.raises(_Stopped):
        run(plan, target)
    (rundir,) = list_runs()
    kinds = [e["type"] for e in read_journal(rundir.journal).events]
    # no failure was recorded for it, no rollback, no end: as a crash leaves a run, to resume
    assert "run.end" not in kinds and "rollback.start" not in kinds and "wave.end" not in kinds
    monkeypatch.setattr(demo.Touch, "do", real)
    resumed = resume_run(rundir.run_id, target=target, options=EngineOptions(sleep=lambda s: None))
    assert resumed.status == RunStatus.SUCCEEDED, resumed.message


def test_kill_after_matches_a_step_key_or_a_check_name() -> None:
    assert matches("step.end a/b@n1", {"type": "step.end", "key": "a/b@n1"})
    assert matches("check.start baseline", {"type": "check.start", "check": "baseline"})
    assert not matches("step.end a/b@n1", {"type": "step.start", "key": "a/b@n1"})
    assert matches("run.start ", {"type": "run.start"})


def test_kill_after_sends_a_real_sigkill_right_after_the_event(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "MIGRATOR_HOME": str(home), "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    env.pop("MIGRATOR_FAKE_STATE", None)
    point = "step.end per-node/touch-node@worker-1"
    argv = [sys.executable, "-m", "migrator.testing.kill_after", point]
    argv += ["apply", str(ROOT / "plans/examples/hello.yaml"), "-t", "fake", "--yes"]
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (journal,) = (home / "runs").glob("*/journal.jsonl")
    evs = events_of(journal)
    assert (evs[-1]["type"], evs[-1]["key"]) == ("step.end", "per-node/touch-node@worker-1")


def events_of(journal: Path) -> list[dict[str, Any]]:
    return read_journal(journal).events
