"""Crash safety: a simulated kill -9 after EVERY journal event, then resume (or rollback)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import SleepRecorder, events, make_plan, marker_names, of_type, touch

from migrator.engine import (
    EngineOptions,
    RunControl,
    RunStatus,
    apply_plan,
    load_plan_file,
    resume_run,
    rollback_run,
    source_from_plan,
)
from migrator.engine.lock import lock_path
from migrator.errors import PermanentError, UsageError
from migrator.plan.models import Plan
from migrator.ports import Target
from migrator.runs.events import Event, RollbackStart
from migrator.runs.journal import read_journal
from migrator.runs.rundir import list_runs
from migrator.testing.crash import SimulatedCrash, crash_after
from migrator.testing.fake import FakeCluster


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated crash keeps the page cache, so fsync adds nothing here but time (real kills: tests/cli)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def crash_plan(fail: bool = False) -> Plan:
    return make_plan(
        [
            {
                "name": "prep",
                "steps": [
                    touch("prep"),
                    {"name": "pause", "action": "demo.sleep", "args": {"duration": "1ms"}, "no_undo": True},
                ],
            },
            {
                "name": "nodes",
                "for_each": {"nodes": {"exclude_control_plane": True}, "max_unavailable": 2},
                "steps": [
                    {"name": "cordon", "action": "node.cordon"},
                    {"name": "label", "action": "node.label", "args": {"labels": {"cni": "calico"}}},
                    touch("node-${{ node.name }}", name="mark", fail_when="node-worker-3" if fail else ""),
                    {"name": "uncordon", "action": "node.uncordon"},
                ],
                "verify": [{"type": "demo.markers", "present": ["prep"]}],
            },
            {"name": "end", "steps": [touch("end")]},
        ],
        preflight=[{"type": "nodes.schedulable"}, {"type": "demo.markers", "absent": ["prep", "end"]}],
        verify=[{"type": "nodes.schedulable"}],
    )


def new_target(tmp: Path) -> Target:
    mdir = tmp / "markers"
    mdir.mkdir(parents=True, exist_ok=True)
    return Target(name="fake", cluster=FakeCluster.with_nodes(4), markers_dir=mdir)


def options(**kw: Any) -> EngineOptions:
    return EngineOptions(sleep=SleepRecorder(), monitor_interval=0.01, **kw)


def snapshot(target: Target) -> dict[str, Any]:
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    return {"cluster": cluster.state(), "markers": sorted(marker_names(target.markers_dir))}


def _reference(fail: bool) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Run once without a crash (in a scratch home): number of events, end state, start state."""
    old = os.environ.get("MIGRATOR_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MIGRATOR_HOME"] = str(Path(tmp) / "home")
        try:
            target = new_target(Path(tmp))
            start = snapshot(target)
            result = apply_plan(source_from_plan(crash_plan(fail)), target, options=options())
            expected = RunStatus.FAILED_ROLLED_BACK if fail else RunStatus.SUCCEEDED
            assert result.status == expected, result.message
            return len(events(result)), snapshot(target), start
        finally:
            if old is None:
                os.environ.pop("MIGRATOR_HOME", None)
            else:
                os.environ["MIGRATOR_HOME"] = old


TOTAL_OK, END_OK, START = _reference(fail=False)
TOTAL_FAIL, END_FAIL, _ = _reference(fail=True)


def _crash(target: Target, plan: Plan, after: int) -> str:
    with pytest.raises(SimulatedCrash):
        apply_plan(source_from_plan(plan), target, options=options(journal=crash_after(after)))
    (run,) = list_runs()
    assert read_journal(run.journal).last_seq == after
    return run.run_id


def _assert_each_step_done_once(run_id: str) -> None:
    (run,) = [r for r in list_runs() if r.run_id == run_id]
    evs = read_journal(run.journal).events
    done: dict[str, int] = {}
    for e in of_type(evs, "step.end"):
        if e["outcome"] == "succeeded":
            done[e["key"]] = done.get(e["key"], 0) + 1
    assert done and all(n == 1 for n in done.values()), done
    assert evs[-1]["type"] == "run.end"


@pytest.mark.parametrize("after", range(1, TOTAL_OK))
def test_resume_after_crash_at_every_event(tmp_path: Path, after: int) -> None:
    target = new_target(tmp_path)
    run_id = _crash(target, crash_plan(), after)
    result = resume_run(run_id, target=target, options=options())
    assert result.status == RunStatus.SUCCEEDED, result.message
    assert snapshot(target) == END_OK
    _assert_each_step_done_once(run_id)
    assert not lock_path("fake").exists()


@pytest.mark.parametrize("after", range(1, TOTAL_FAIL))
def test_resume_of_a_failing_run_after_crash_at_every_event(tmp_path: Path, after: int) -> None:
    target = new_target(tmp_path)
    run_id = _crash(target, crash_plan(fail=True), after)
    result = resume_run(run_id, target=target, options=options())
    assert result.status == RunStatus.FAILED_ROLLED_BACK, result.message
    assert snapshot(target) == END_FAIL == START
    # once a rollback started, nothing runs forward again
    (run,) = list_runs()
    kinds = [e["type"] for e in read_journal(run.journal).events]
    first_rollback = kinds.index("rollback.start")
    assert "step.start" not in kinds[first_rollback:]


@pytest.mark.parametrize("after", range(2, TOTAL_OK, 3))
def test_rollback_after_crash_restores_the_start(tmp_path: Path, after: int) -> None:
    target = new_target(tmp_path)
    run_id = _crash(target, crash_plan(), after)
    result = rollback_run(run_id, target=target, options=options())
    assert result.status == RunStatus.ROLLED_BACK, result.message
    assert snapshot(target) == START


def test_resume_uses_the_recorded_waves(tmp_path: Path) -> None:
    target = new_target(tmp_path)
    plan = crash_plan()
    # crash right after the for_each stage recorded its waves
    probe = apply_plan(source_from_plan(plan), new_target(tmp_path / "probe"), options=options())
    stage_seq = next(e["seq"] for e in events(probe) if e["type"] == "stage.start" and e["stage"] == "nodes")
    for run in list_runs():
        shutil.rmtree(run.path)
    run_id = _crash(target, plan, stage_seq)
    # the cluster changes before the resume: a new worker appears; the run keeps its recorded waves
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    extra = FakeCluster.with_nodes(5).nodes["worker-4"]
    cluster.nodes["worker-4"] = extra
    result = resume_run(run_id, target=target, options=options())
    assert result.status == RunStatus.SUCCEEDED
    (run,) = [r for r in list_runs() if r.run_id == run_id]
    keys = {e["key"] for e in read_journal(run.journal).events if e["type"] == "step.end"}
    assert not any("worker-4" in k for k in keys)


def test_resume_refuses_a_finished_run(target: Target) -> None:
    result = apply_plan(
        source_from_plan(make_plan([{"name": "s", "steps": [touch("a")]}])), target, options=options()
    )
    assert result.status == RunStatus.SUCCEEDED
    with pytest.raises(UsageError, match="already finished"):
        resume_run(result.run_id[:20], target=target)


def test_resume_after_a_torn_last_line(tmp_path: Path) -> None:
    target = new_target(tmp_path)
    run_id = _crash(target, crash_plan(), 12)
    (run,) = list_runs()
    with open(run.journal, "ab") as fh:
        fh.write(b'{"seq": 13, "ts": "2026-11-26T10:00:00Z", "type": "step.st')
    result = resume_run(run_id, target=target, options=options())
    assert result.status == RunStatus.SUCCEEDED
    evs = read_journal(run.journal).events
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert any(e["type"] == "journal.repaired" for e in evs)
    assert snapshot(target) == END_OK


def test_resume_refuses_a_changed_plan_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: p}\nspec:\n  stages:\n"
        "    - name: s\n      steps:\n        - {name: a, action: demo.touch, args: {marker: a}}\n"
        "        - {name: b, action: demo.touch, args: {marker: b}}\n"
    )
    target = new_target(tmp_path)
    with pytest.raises(SimulatedCrash):
        apply_plan(load_plan_file(path), target, options=options(journal=crash_after(8)))
    (run,) = list_runs()
    path.write_text(path.read_text() + "# changed\n")
    with pytest.raises(UsageError, match="changed since run"):
        resume_run(run.run_id, target=target, options=options())
    result = resume_run(run.run_id, target=target, options=options(), force=True)
    assert result.status == RunStatus.SUCCEEDED
    assert marker_names(target.markers_dir) == {"a", "b"}


def test_resume_refuses_another_cluster(tmp_path: Path) -> None:
    target = new_target(tmp_path)
    run_id = _crash(target, crash_plan(), 10)
    with pytest.raises(UsageError, match="not the cluster"):
        resume_run(run_id, target=new_target(tmp_path / "other"), options=options())


def test_resume_of_an_interrupted_run_starts_again_and_finishes(tmp_path: Path) -> None:
    target = new_target(tmp_path)
    plan = make_plan(
        [{"name": "s", "steps": [touch("a"), touch("b")]}],
        preflight=[{"type": "demo.markers", "absent": ["a"]}],
    )
    control = RunControl()
    control.cancel.set()  # interrupted at the first safe point
    first = apply_plan(source_from_plan(plan), target, control=control, options=options())
    assert first.status == RunStatus.INTERRUPTED
    result = resume_run(first.run_id, target=target, options=options())
    assert result.status == RunStatus.SUCCEEDED, result.message
    assert marker_names(target.markers_dir) == {"a", "b"}


class InjectOnRollback:
    """An observer that breaks the next uncordon once the rollback starts."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def on_event(self, event: Event) -> None:
        if isinstance(event, RollbackStart):
            self.cluster.inject("set_schedulable", "worker-1", PermanentError("api down"), times=1)

    def close(self) -> None:
        return None


def test_resume_of_a_needs_attention_run_continues_its_rollback(tmp_path: Path) -> None:
    target = new_target(tmp_path)
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    plan = make_plan(
        [
            {
                "name": "n",
                "for_each": {"nodes": {"names": ["worker-1"]}},
                "steps": [{"name": "cordon", "action": "node.cordon"}, touch("x", fail_when="x")],
            }
        ],
        preflight=[{"type": "nodes.schedulable"}],
    )
    first = apply_plan(
        source_from_plan(plan),
        target,
        options=options(),
        observers=lambda rundir: [InjectOnRollback(cluster)],
    )
    assert first.status == RunStatus.NEEDS_ATTENTION
    assert not cluster.get_node("worker-1").schedulable
    result = resume_run(first.run_id, target=target, options=options())
    assert result.status == RunStatus.FAILED_ROLLED_BACK, result.message
    assert cluster.get_node("worker-1").schedulable
    (run,) = list_runs()
    evs = read_journal(run.journal).events
    assert [e["type"] for e in evs].count("step.start") == 2  # nothing ran forward again


def test_resume_after_a_failure_without_rollback_retries_the_failed_step(tmp_path: Path) -> None:
    target = new_target(tmp_path)
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    cluster.inject("set_schedulable", "worker-2", PermanentError("webhook down"), times=1)
    plan = make_plan(
        [
            {
                "name": "n",
                "for_each": {"nodes": {"exclude_control_plane": True}},
                "steps": [
                    {"name": "cordon", "action": "node.cordon"},
                    {"name": "uncordon", "action": "node.uncordon"},
                ],
            }
        ],
        rollback="never",
    )
    first = apply_plan(source_from_plan(plan), target, options=options())
    assert first.status == RunStatus.FAILED_NOT_ROLLED_BACK
    result = resume_run(first.run_id, target=target, options=options())  # the operator fixed the webhook
    assert result.status == RunStatus.SUCCEEDED, result.message
    (run,) = list_runs()
    evs = read_journal(run.journal).events
    starts = [e["key"] for e in evs if e["type"] == "step.start"]
    assert starts.count("n/cordon@worker-1") == 1  # completed steps are not run again
    assert starts.count("n/cordon@worker-2") == 2
    assert all(n.schedulable for n in cluster.list_nodes())


def test_resume_refuses_new_values_for_ordinary_parameters(tmp_path: Path) -> None:
    target = new_target(tmp_path)
    run_id = _crash(target, crash_plan(), 10)
    with pytest.raises(UsageError, match="parameters it started with"):
        resume_run(run_id, target=target, options=options(), overrides={"pause": "1s"})


def test_resume_of_a_run_with_a_secret_asks_for_it_again(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(
        "apiVersion: migrator/v1\nkind: Plan\nmetadata: {name: p}\nspec:\n"
        "  params:\n    token: {type: string, default: '', secret: true}\n  stages:\n"
        "    - name: s\n      steps:\n"
        "        - {name: a, action: demo.touch, args: {marker: 'a-${{ params.token }}'}}\n"
        "        - {name: b, action: demo.touch, args: {marker: b}}\n"
    )
    target = new_target(tmp_path)
    with pytest.raises(SimulatedCrash):
        source = load_plan_file(path, {"token": "t0ps3cret"})
        apply_plan(source, target, options=options(journal=crash_after(8)))
    (run,) = list_runs()
    assert "t0ps3cret" not in run.journal.read_text()
    with pytest.raises(UsageError, match="give them again with --set"):
        resume_run(run.run_id, target=target, options=options())
    result = resume_run(run.run_id, target=target, options=options(), overrides={"token": "t0ps3cret"})
    assert result.status == RunStatus.SUCCEEDED, result.message
    assert marker_names(target.markers_dir) == {"a-t0ps3cret", "b"}
    for file in run.path.rglob("*"):
        if file.is_file():
            assert "t0ps3cret" not in file.read_text(errors="replace"), file
