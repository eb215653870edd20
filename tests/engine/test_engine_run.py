"""Engine runs on the fake target: success, failures, rollback policies, retries, timeouts, monitors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from engine_helpers import (
    SleepRecorder,
    events,
    make_plan,
    marker_names,
    of_type,
    run,
    state_json,
    touch,
    when,
)

from migrator.actions.context import CheckContext
from migrator.checks import Checker, CheckResult
from migrator.checks import base as checks_base
from migrator.engine import EngineOptions, RunControl, RunStatus, apply_plan, rollback_run, source_from_plan
from migrator.engine.lock import lock_path
from migrator.errors import ExitCode, PlanError, TemporaryError
from migrator.plan.models import NodesSchedulableCheck
from migrator.ports import Target
from migrator.testing.fake import FakeCluster


def per_node_stage(name: str = "nodes", max_unavailable: object = 2, **kw: object) -> dict[str, object]:
    steps = kw.pop("steps", None) or [
        {"name": "cordon", "action": "node.cordon"},
        touch("node-${{ node.name }}", name="mark", fail_when=kw.pop("fail_when", "")),
        {"name": "uncordon", "action": "node.uncordon"},
    ]
    return {
        "name": name,
        "for_each": {
            "nodes": kw.pop("nodes", {}),
            "order": "workers-first",
            "max_unavailable": max_unavailable,
        },
        "steps": steps,
        **kw,
    }


def test_success_runs_every_stage_and_releases_the_lock(target: Target, markers: Path) -> None:
    plan = make_plan(
        [{"name": "first", "steps": [touch("a")]}, per_node_stage()],
        preflight=[{"type": "demo.markers", "absent": ["a"]}, {"type": "nodes.schedulable"}],
        verify=[{"type": "demo.markers", "present": ["a"]}, {"type": "nodes.schedulable"}],
    )
    result = run(plan, target)
    assert result.status == RunStatus.SUCCEEDED
    assert result.exit_code == ExitCode.OK
    assert marker_names(markers) == {
        "a",
        "node-worker-1",
        "node-worker-2",
        "node-worker-3",
        "node-cp-1",
    }
    evs = events(result)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert evs[0]["type"] == "run.start" and evs[-1]["type"] == "run.end"
    assert evs[-1]["status"] == "succeeded"
    assert of_type(evs, "stage.start")[1]["waves"] == [["worker-1", "worker-2"], ["worker-3", "cp-1"]]
    assert len([e for e in of_type(evs, "step.end") if e["outcome"] == "succeeded"]) == 1 + 3 * 4
    assert state_json(result)["status"] == "succeeded"
    assert (result.run_dir / "plan.yaml").exists() and (result.run_dir / "meta.json").exists()
    assert (result.run_dir / "migrator.log.jsonl").read_text().count("\n") >= len(evs)
    assert not lock_path("fake").exists()
    assert all(n.schedulable for n in target.cluster.list_nodes())


def test_failure_mid_wave_rolls_back_in_reverse_order(target: Target, markers: Path) -> None:
    before = target.cluster.state()  # type: ignore[attr-defined]
    plan = make_plan(
        [{"name": "first", "steps": [touch("a")]}, per_node_stage(fail_when="node-worker-2")],
        preflight=[{"type": "nodes.schedulable"}, {"type": "demo.markers", "absent": ["a"]}],
    )
    result = run(plan, target)
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    assert result.exit_code == ExitCode.FAILED_ROLLED_BACK
    assert "node-worker-2" in result.message
    evs = events(result)
    # the rollback stack is every step that ended (succeeded, or failed) in journal order
    pushed = [e["key"] for e in of_type(evs, "step.end") if e["outcome"] in ("succeeded", "failed")]
    undone = [e["key"] for e in of_type(evs, "undo.start")]
    assert undone == list(reversed(pushed))
    assert undone[-1] == "first/touch-a"
    assert "nodes/mark@worker-2" in undone  # the failed (in-flight) step is undone too
    assert not any(k.endswith("@worker-3") for k in undone)  # wave 2 never started
    assert of_type(evs, "rollback.end")[0]["outcome"] == "succeeded"
    post = [e for e in of_type(evs, "check.end") if e["phase"] == "post-rollback"]
    assert post and all(e["ok"] for e in post)
    assert target.cluster.state() == before  # type: ignore[attr-defined]
    assert marker_names(markers) == set()


def test_failing_undo_needs_attention_exit_3(target: Target) -> None:
    plan = make_plan([{"name": "s", "steps": [touch("a", fail_undo=True), touch("b", fail_when="b")]}])
    result = run(plan, target)
    assert result.status == RunStatus.NEEDS_ATTENTION
    assert result.exit_code == ExitCode.NEEDS_ATTENTION == 3
    assert f"migrator rollback {result.run_id}" in result.message
    evs = events(result)
    assert of_type(evs, "rollback.end")[0]["outcome"] == "failed"
    assert of_type(evs, "undo.end")[-1]["outcome"] == "failed"


def test_post_rollback_verification_failure_needs_attention(target: Target) -> None:
    # a step without compensation leaves a marker the preflight forbids: the post-rollback check sees it
    plan = make_plan(
        [{"name": "s", "steps": [touch("stray", no_undo=True), touch("b", fail_when="b")]}],
        preflight=[{"type": "demo.markers", "absent": ["stray"]}],
    )
    result = run(plan, target)
    assert result.status == RunStatus.NEEDS_ATTENTION
    assert result.exit_code == 3
    assert "post-rollback verification failed" in result.message


def test_retries_with_backoff_without_sleeping(target: Target) -> None:
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    cluster.inject("set_schedulable", "worker-1", TemporaryError("api busy", delay=0.5), times=2)
    recorder = SleepRecorder()
    plan = make_plan(
        [
            per_node_stage(
                max_unavailable=1,
                nodes={"names": ["worker-1"]},
                steps=[{"action": "node.cordon", "retry": {"attempts": 3, "backoff": "1s", "multiplier": 3}}],
            )
        ]
    )
    started = time.monotonic()
    result = run(plan, target, sleep=recorder)
    assert time.monotonic() - started < 5
    assert result.status == RunStatus.SUCCEEDED
    assert recorder.waits == [1.0, 3.0]  # backoff 1s * 3**n; the error's 0.5s delay is a minimum only
    evs = events(result)
    ends = [(e["attempt"], e["outcome"]) for e in of_type(evs, "step.end")]
    assert ends == [(1, "retrying"), (2, "retrying"), (3, "succeeded")]
    assert [e["wait"] for e in of_type(evs, "step.retry")] == [1.0, 3.0]


def test_temporary_error_delay_is_a_minimum_wait(target: Target) -> None:
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    cluster.inject("set_schedulable", "worker-1", TemporaryError("throttled", delay=7), times=1)
    recorder = SleepRecorder()
    plan = make_plan(
        [
            per_node_stage(
                nodes={"names": ["worker-1"]},
                steps=[{"action": "node.cordon", "retry": {"attempts": 2, "backoff": "1s"}}],
            )
        ]
    )
    assert run(plan, target, sleep=recorder).status == RunStatus.SUCCEEDED
    assert recorder.waits == [7.0]


def test_retries_exhausted_fail_the_step(target: Target) -> None:
    recorder = SleepRecorder()
    plan = make_plan(
        [
            {
                "name": "s",
                "steps": [
                    {
                        "action": "demo.fail",
                        "args": {"temporary": True},
                        "retry": {"attempts": 3, "backoff": "2s", "max_backoff": "3s"},
                    }
                ],
            }
        ]
    )
    result = run(plan, target, sleep=recorder)
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    assert recorder.waits == [2.0, 3.0]  # capped by max_backoff
    outcomes = [e["outcome"] for e in of_type(events(result), "step.end")]
    assert outcomes == ["retrying", "retrying", "failed"]


def test_permanent_errors_are_not_retried(target: Target) -> None:
    recorder = SleepRecorder()
    plan = make_plan([{"name": "s", "steps": [{"action": "demo.fail", "retry": {"attempts": 5}}]}])
    result = run(plan, target, sleep=recorder)
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    assert recorder.waits == []
    assert len(of_type(events(result), "step.start")) == 1


def test_timeout_cancels_the_step(target: Target) -> None:
    plan = make_plan(
        [
            {
                "name": "s",
                "steps": [
                    touch("a"),
                    {"action": "demo.sleep", "args": {"duration": "60s"}, "timeout": "200ms"},
                ],
            }
        ]
    )
    started = time.monotonic()
    result = run(plan, target)
    assert time.monotonic() - started < 5
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    end = of_type(events(result), "step.end")[-1]
    assert end["outcome"] == "timeout" and end["error_type"] == "StepTimeout"
    assert "timed out after 0.2s" in result.message


def test_monitor_failure_aborts_the_stage(target: Target, markers: Path) -> None:
    plan = make_plan(
        [
            {
                "name": "watched",
                "monitor": [{"type": "demo.markers", "name": "no-alarm", "absent": ["alarm"]}],
                "steps": [touch("a"), {"name": "long", "action": "demo.sleep", "args": {"duration": "60s"}}],
            }
        ]
    )
    # the alarm goes off while the long step runs
    started = time.monotonic()
    result = run(
        plan, target, monitor_interval=0.01, observers=when("step.start", "long", (markers / "alarm").touch)
    )
    assert time.monotonic() - started < 10
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    evs = events(result)
    assert of_type(evs, "monitor.failed")[0]["check"] == "no-alarm"
    assert "no-alarm" in result.message
    long_end = [e for e in of_type(evs, "step.end") if e["step"] == "long"]
    assert long_end[0]["outcome"] == "cancelled"
    assert [e["key"] for e in of_type(evs, "undo.start")] == ["watched/long", "watched/touch-a"]


def test_rollback_never_leaves_changes_and_says_so(target: Target, markers: Path) -> None:
    plan = make_plan([{"name": "s", "steps": [touch("a"), touch("b", fail_when="b")]}], rollback="never")
    result = run(plan, target)
    assert result.status == RunStatus.FAILED_NOT_ROLLED_BACK
    assert result.exit_code == ExitCode.FAILED_ROLLED_BACK
    assert "NOT rolled back" in result.message
    assert not of_type(events(result), "undo.start")
    assert "a" in marker_names(markers)
    # the operator decides: undo it now
    undo = rollback_run(result.run_id, target=target)
    assert undo.status == RunStatus.ROLLED_BACK and undo.exit_code == ExitCode.OK
    assert marker_names(markers) == set()


def test_rollback_always_restores_after_success(target: Target, markers: Path) -> None:
    plan = make_plan(
        [{"name": "s", "steps": [touch("a")]}, per_node_stage()],
        rollback="always",
        preflight=[{"type": "nodes.schedulable"}],
    )
    result = run(plan, target)
    assert result.status == RunStatus.SUCCEEDED
    assert "rollback: always" in result.message
    assert marker_names(markers) == set()


def test_on_failure_continue_records_and_goes_on(target: Target, markers: Path) -> None:
    plan = make_plan(
        [
            {"name": "optional", "on_failure": "continue", "steps": [touch("x"), touch("y", fail_when="y")]},
            {"name": "main", "steps": [touch("z")]},
        ]
    )
    result = run(plan, target)
    assert result.status == RunStatus.SUCCEEDED
    assert "optional" in result.message
    evs = events(result)
    assert [e["outcome"] for e in of_type(evs, "stage.end")] == ["failed-continued", "succeeded"]
    # the failed stage is compensated as a whole, then the run goes on
    assert marker_names(markers) == {"z"}
    assert [e["key"] for e in of_type(evs, "undo.start")] == ["optional/touch-y", "optional/touch-x"]


def test_preflight_failure_changes_nothing(target: Target, markers: Path) -> None:
    (markers / "a").touch()
    plan = make_plan(
        [{"name": "s", "steps": [touch("b")]}], preflight=[{"type": "demo.markers", "absent": ["a"]}]
    )
    result = run(plan, target)
    assert result.status == RunStatus.FAILED_PREFLIGHT
    assert result.exit_code == ExitCode.FAILED_ROLLED_BACK
    assert not of_type(events(result), "step.start")
    assert marker_names(markers) == {"a"}


def test_unavailable_action_is_refused_before_anything(target: Target, ansible_unavailable: None) -> None:
    plan = make_plan(
        [{"name": "s", "steps": [{"action": "ansible.playbook", "args": {"playbook": "x.yml"}}]}]
    )
    with pytest.raises(PlanError, match=r"action 'ansible\.playbook' is not available yet"):
        run(plan, target)
    assert not any((Path.cwd() / "x").glob("*"))


def test_node_action_outside_for_each_is_refused(target: Target) -> None:
    plan = make_plan([{"name": "s", "steps": [{"action": "node.cordon"}]}])
    with pytest.raises(PlanError, match="needs a node"):
        run(plan, target)


def test_explicit_undo_step_replaces_the_actions_undo(target: Target, markers: Path) -> None:
    plan = make_plan(
        [
            {
                "name": "s",
                "steps": [
                    {
                        "action": "demo.touch",
                        "args": {"marker": "a"},
                        "undo": {"action": "demo.touch", "args": {"marker": "undone-a"}},
                    },
                    touch("b", fail_when="b", no_undo=True),
                ],
            }
        ]
    )
    result = run(plan, target)
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    assert marker_names(markers) == {"a", "undone-a"}
    kinds = {e["key"]: e["kind"] for e in of_type(events(result), "undo.start")}
    assert kinds == {"s/demo.touch": "step:demo.touch", "s/touch-b": "none"}


def test_secrets_are_scrubbed_from_the_run_folder(target: Target) -> None:
    secret = "s3cr3t-t0ken-value"
    plan = make_plan([{"name": "s", "steps": [touch(secret), touch("b", fail_when="b")]}])
    result = run(plan, target, secrets=(secret,), params={"token": secret})
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    for path in result.run_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert "***" in (result.run_dir / "journal.jsonl").read_text()


def test_interrupt_rolls_back_and_a_second_one_stops_the_rollback(target: Target, markers: Path) -> None:
    plan = make_plan(
        [
            {
                "name": "s",
                "steps": [
                    touch("a"),
                    touch("b"),
                    {"name": "long", "action": "demo.sleep", "args": {"duration": "60s"}},
                ],
            }
        ]
    )
    # once: stop at the next safe point (the running sleep is cancelled), roll back, interrupted (130)
    control = RunControl()
    result = apply_plan(
        source_from_plan(plan),
        target,
        control=control,
        options=EngineOptions(sleep=SleepRecorder()),
        observers=when("step.start", "long", control.cancel.set),
    )
    assert result.status == RunStatus.INTERRUPTED and result.exit_code == ExitCode.INTERRUPTED
    evs = events(result)
    assert of_type(evs, "signal")[0]["action"] == "cancel"
    assert of_type(evs, "rollback.end")[0]["outcome"] == "succeeded"
    assert marker_names(markers) == set()

    # twice: the rollback stops at its first safe point; needs attention, with the command to go on
    control = RunControl()
    control.stop_rollback.set()
    result = apply_plan(
        source_from_plan(plan),
        target,
        control=control,
        options=EngineOptions(sleep=SleepRecorder()),
        observers=when("step.start", "long", control.cancel.set),
    )
    assert result.status == RunStatus.NEEDS_ATTENTION and result.exit_code == 3
    assert f"migrator rollback {result.run_id}" in result.message
    assert of_type(events(result), "rollback.end")[0]["outcome"] == "stopped"
    assert marker_names(markers) == {"a", "b"}
    done = rollback_run(result.run_id, target=target)
    assert done.status == RunStatus.ROLLED_BACK
    assert marker_names(markers) == set()


def test_an_interrupt_between_retries_still_undoes_the_half_done_attempt(target: Target) -> None:
    cluster = target.cluster
    assert isinstance(cluster, FakeCluster)
    control = RunControl()

    def sleep_and_interrupt(seconds: float) -> None:
        control.cancel.set()  # the operator hits Ctrl-C while the engine waits to retry

    cluster.inject("drain_node", "worker-1", TemporaryError("eviction blocked"), times=5)
    plan = make_plan(
        [
            per_node_stage(
                nodes={"names": ["worker-1"]}, steps=[{"action": "node.drain", "retry": {"attempts": 3}}]
            )
        ]
    )
    result = apply_plan(
        source_from_plan(plan), target, control=control, options=EngineOptions(sleep=sleep_and_interrupt)
    )
    assert result.status == RunStatus.INTERRUPTED
    assert [e["key"] for e in of_type(events(result), "undo.start")] == ["nodes/node.drain@worker-1"]
    assert cluster.get_node("worker-1").schedulable  # the cordon of the half-done drain was undone


def test_on_failure_continue_in_a_for_each_stage_skips_its_later_waves(target: Target, markers: Path) -> None:
    plan = make_plan(
        [
            per_node_stage(
                name="nodes",
                max_unavailable=1,
                on_failure="continue",
                fail_when="node-worker-2",
                nodes={"exclude_control_plane": True},
            ),
            {"name": "after", "steps": [touch("after")]},
        ]
    )
    result = run(plan, target)
    assert result.status == RunStatus.SUCCEEDED
    assert marker_names(markers) == {"after"}
    evs = events(result)
    assert [e["wave"] for e in of_type(evs, "wave.start")] == [0, 1]  # wave 3 (worker-3) never started
    # the failed stage was compensated as a whole: every node is schedulable again
    assert all(n.schedulable for n in target.cluster.list_nodes())


def test_stage_approval_is_asked_and_a_refusal_rolls_back(target: Target, markers: Path) -> None:
    asked: list[str] = []

    def approve(stage: str) -> bool:
        asked.append(stage)
        return stage != "risky"

    plan = make_plan(
        [
            {"name": "safe", "approval": True, "steps": [touch("a")]},
            {"name": "risky", "approval": True, "steps": [touch("b")]},
        ]
    )
    result = run(plan, target, approve=approve)
    assert asked == ["safe", "risky"]
    assert result.status == RunStatus.FAILED_ROLLED_BACK
    assert "not approved" in result.message
    assert marker_names(markers) == set()


def test_sampled_waves_are_recorded_at_stage_start(target: Target) -> None:
    plan = make_plan(
        [
            per_node_stage(
                max_unavailable="50%", nodes={"percent": "67%", "seed": 3, "exclude_control_plane": True}
            )
        ]
    )
    result = run(plan, target)
    assert result.status == RunStatus.SUCCEEDED
    waves = of_type(events(result), "stage.start")[0]["waves"]
    assert sum(len(w) for w in waves) == 2 and all(len(w) == 1 for w in waves)
    again = run(plan, target)
    assert of_type(events(again), "stage.start")[0]["waves"] == waves  # the same seed, the same nodes


class LifecycleCheck(Checker[NodesSchedulableCheck]):
    """A stand-in for a continuous probe: started once, sampled each round, concluded at the end."""

    def __init__(self, final_ok: bool) -> None:
        self.final_ok = final_ok
        self.calls: list[str] = []
        self.nodes_seen: set[str] = set()

    def monitor_start(self, ctx: CheckContext, check: NodesSchedulableCheck) -> None:
        ctx.store["started"] = True
        self.calls.append("start")

    def run(self, ctx: CheckContext, check: NodesSchedulableCheck) -> CheckResult:
        assert ctx.store.get("started")
        self.nodes_seen.update(n.name for n in ctx.nodes)
        if "run" not in self.calls:
            self.calls.append("run")
        return CheckResult(True, "fine")

    def monitor_stop(self, ctx: CheckContext, check: NodesSchedulableCheck) -> CheckResult | None:
        self.calls.append("stop")
        return CheckResult(self.final_ok, "loss 0%" if self.final_ok else "loss 12% over the stage")


@pytest.mark.parametrize("final_ok", [True, False])
def test_monitor_lifecycle_and_a_failing_conclusion(
    target: Target, monkeypatch: pytest.MonkeyPatch, final_ok: bool
) -> None:
    check = LifecycleCheck(final_ok)
    monkeypatch.setitem(checks_base._CHECKS, "nodes.schedulable", check)
    plan = make_plan(
        [
            per_node_stage(
                max_unavailable=1,
                nodes={"names": ["worker-1", "worker-2"]},
                steps=[{"action": "demo.sleep", "args": {"duration": "100ms"}}],
                monitor=[{"type": "nodes.schedulable", "name": "probe"}],
            )
        ]
    )
    result = run(plan, target, monitor_interval=0.01)
    assert check.calls == ["start", "run", "stop"]
    assert check.nodes_seen <= {"worker-1", "worker-2"} and check.nodes_seen
    if final_ok:
        assert result.status == RunStatus.SUCCEEDED
    else:
        assert result.status == RunStatus.FAILED_ROLLED_BACK
        assert "loss 12% over the stage" in result.message


class WaveRecordCheck(LifecycleCheck):
    """Records, at every round, what the engine's wave record says (ctx.waves)."""

    def __init__(self) -> None:
        super().__init__(True)
        self.seen: list[tuple[tuple[int, tuple[str, ...], bool], ...]] = []

    def run(self, ctx: CheckContext, check: NodesSchedulableCheck) -> CheckResult:
        assert ctx.waves is not None
        spans = ctx.waves.of(ctx.stage)
        self.seen.append(tuple((w.index, tuple(sorted(w.nodes)), w.end is not None) for w in spans))
        return CheckResult(True, "fine")


def test_a_wave_end_wakes_the_monitor_and_its_checks_see_the_engine_wave_record(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = WaveRecordCheck()
    checks_base.CHECKS.load()  # the registry loads lazily: it would register the real check over ours
    monkeypatch.setitem(checks_base._CHECKS, "nodes.schedulable", check)
    plan = make_plan(
        [
            per_node_stage(
                max_unavailable=1,
                nodes={"names": ["worker-1", "worker-2"]},
                steps=[{"action": "demo.sleep", "args": {"duration": "200ms"}}],
                monitor=[{"type": "nodes.schedulable", "name": "probe"}],
            )
        ]
    )
    started = time.monotonic()
    result = run(plan, target, monitor_interval=60.0)  # no round would come from the interval
    assert result.status == RunStatus.SUCCEEDED
    assert time.monotonic() - started < 30
    # the first round at the start, the next when the first wave ended (the second takes 200 ms more;
    # the round after the last wave may lose the race with the stage's end)
    first_ended = [s for s in check.seen if s and s[0][2]]
    assert first_ended, check.seen
    assert {s[0][1] for s in first_ended} <= {("worker-1",), ("worker-2",)}
