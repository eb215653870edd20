"""Game days without a lab (issue 7): the run-start preflight of steps, approval gates on a TTY, blast radius.

The preflight test registers a hook for the demo actions (``register_preflight``), runs a real engine on the
fake target and checks that the failing step of stage 2 stops the run before stage 1 changed anything. The
approval tests drive the real CLI in a subprocess, on a pseudo-terminal where a TTY is needed.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from migrator.actions import base as actions_base
from migrator.actions.context import StepContext
from migrator.actions.demo import Touch as DemoTouch
from migrator.engine import RunStatus, apply_plan, dry_run
from migrator.engine.planio import load_plan_file
from migrator.engine.requirements import dry_run_requirements
from migrator.errors import CheckFailed, ExitCode, PlanError, UnsupportedFeature
from migrator.faults.blast import resolve_targets
from migrator.plan.models import FaultTargets
from migrator.ports import Node
from migrator.testing.fake import fake_target

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def two_stage_plan(path: Path, *, approval: bool = False) -> Path:
    return write(
        path,
        {
            "apiVersion": "migrator/v1",
            "kind": "Plan",
            "metadata": {"name": "gd-two-stages"},
            "spec": {
                "rollback": "on-failure",
                "stages": [
                    {
                        "name": "first",
                        "approval": approval,
                        "steps": [{"action": "demo.touch", "args": {"marker": "a"}}],
                    },
                    {
                        "name": "second",
                        "approval": approval,
                        "for_each": {"nodes": {"exclude_control_plane": True}, "max_unavailable": 1},
                        "steps": [{"action": "demo.touch", "args": {"marker": "needs-${{ node.name }}"}}],
                    },
                ],
            },
        },
    )


def journal(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ step preflight


def test_a_failing_step_preflight_in_stage_2_stops_the_run_before_stage_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str | None, bool]] = []

    def needs_netem(action: Any, ctx: StepContext, args: Any) -> None:
        seen.append((ctx.stage, ctx.node.name if ctx.node else None, ctx.dry_run))
        if ctx.node is not None and ctx.node.name == "worker-2":
            raise UnsupportedFeature("netem", node="worker-2", hint="test: no sch_netem")

    actions_base.load_builtins()  # the built-in hooks register into the list this test then extends
    monkeypatch.setattr(
        actions_base, "_PREFLIGHT_HOOKS", [*actions_base._PREFLIGHT_HOOKS, (DemoTouch, needs_netem)]
    )
    target = fake_target()
    source = load_plan_file(two_stage_plan(tmp_path / "plan.yaml"))
    before = json.dumps(target.cluster.state(), sort_keys=True)  # type: ignore[attr-defined]

    result = apply_plan(source, target)

    assert result.status == RunStatus.FAILED_PREFLIGHT and result.exit_code == ExitCode.FAILED_ROLLED_BACK
    assert "kernel feature 'netem' is not available on node worker-2" in result.message
    assert "nothing was changed" in result.message
    # every planned step was checked (stage 1 once, stage 2 once per worker), all read-only
    assert ("first", None, True) in seen and {n for s, n, _ in seen if s == "second"} == {
        "worker-1",
        "worker-2",
        "worker-3",
    }
    assert all(dry for _s, _n, dry in seen)
    evs = journal(result.run_dir)
    types = [e["type"] for e in evs]
    assert "stage.start" not in types and "step.start" not in types  # stage 1 never ran
    req = next(e for e in evs if e["type"] == "preflight.requirements")
    assert req["outcome"] == "failed" and req["checked"] == 4
    assert [(f["stage"], f["node"], f["error_type"]) for f in req["failures"]] == [
        ("second", "worker-2", "UnsupportedFeature")
    ]
    assert not list(result.run_dir.rglob("a"))  # no marker of stage 1
    assert json.dumps(target.cluster.state(), sort_keys=True) == before  # type: ignore[attr-defined]
    # the same walk for the dry run reports it too
    dry = dry_run_requirements(source, target, run_id="dry-run", scratch=tmp_path / "scratch")
    assert not dry.ok and "worker-2" in dry.message()
    with pytest.raises(CheckFailed, match=r"preflight would fail, nothing would be changed: .*worker-2"):
        dry_run(source, target)  # the dry run (and the preview before the confirmation) says the same


def test_steps_without_a_preflight_are_not_walked(tmp_path: Path) -> None:
    target = fake_target()
    source = load_plan_file(two_stage_plan(tmp_path / "plan.yaml"))
    result = apply_plan(source, target)
    assert result.status == RunStatus.SUCCEEDED
    assert "preflight.requirements" not in {e["type"] for e in journal(result.run_dir)}
    assert dry_run(source, target)["requirements"] == {
        "outcome": "succeeded",
        "checked": 0,
        "failures": [],
        "skipped": [],
        "duration": 0.0,
    }


def test_fault_preflight_refuses_a_timeout_shorter_than_the_fault(tmp_path: Path) -> None:
    """The fault preflight's first check needs no node: a 10 min fault in a 1 min step cannot run."""
    plan = write(
        tmp_path / "short.yaml",
        {
            "apiVersion": "migrator/v1",
            "kind": "Plan",
            "metadata": {"name": "gd-short-timeout"},
            "spec": {
                "stages": [
                    {"name": "first", "steps": [{"action": "demo.touch", "args": {"marker": "a"}}]},
                    {
                        "name": "loss",
                        "steps": [
                            {
                                "action": "fault.loss",
                                "timeout": "1m",
                                "args": {
                                    "targets": {"names": ["worker-1"]},
                                    "percent": "10%",
                                    "duration": "10m",
                                },
                            }
                        ],
                    },
                ]
            },
        },
    )
    result = apply_plan(load_plan_file(plan), fake_target())
    assert result.status == RunStatus.FAILED_PREFLIGHT
    assert "timeout (60s) is shorter than the fault's duration (600s)" in result.message
    assert "step.start" not in {e["type"] for e in journal(result.run_dir)}


# ------------------------------------------------------------------------------------------ approval


def cli_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MIGRATOR_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }


def run_on_tty(args: list[str], answers: list[str], home: Path, timeout: float = 60.0) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, answering each ``[y/N]`` prompt in turn; (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: exec the CLI with the pty as its TTY
        os.execvpe(sys.executable, [sys.executable, "-m", "migrator.cli.main", *args], cli_env(home))
    out = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if pending and out.count(b"[y/N]") > len(answers) - len(pending):
                os.write(fd, (pending.pop(0) + "\n").encode())
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_approval_prompts_on_a_tty_and_a_refusal_stops_the_run(tmp_path: Path) -> None:
    plan = two_stage_plan(tmp_path / "plan.yaml", approval=True)
    # apply? yes; stage first? yes; stage second? no
    code, out = run_on_tty(["apply", str(plan), "-t", "fake"], ["y", "y", "n"], tmp_path)
    assert "Start stage 'first'?" in out and "Start stage 'second'?" in out, out
    assert code == int(ExitCode.FAILED_ROLLED_BACK), out
    assert "stage 'second' was not approved" in out


def test_approval_is_skipped_with_yes_and_refused_without_a_tty(tmp_path: Path) -> None:
    plan = two_stage_plan(tmp_path / "plan.yaml", approval=True)
    code, out = run_on_tty(["apply", str(plan), "-t", "fake", "--yes"], [], tmp_path)
    assert code == 0 and "[y/N]" not in out, out
    runs_before = sorted((tmp_path / "runs").iterdir())
    no_tty = subprocess.run(
        [sys.executable, "-m", "migrator.cli.main", "apply", str(plan), "-t", "fake"],
        env=cli_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert no_tty.returncode == int(ExitCode.INVALID_INPUT)
    assert "pass --yes" in no_tty.stdout + no_tty.stderr and "no TTY" in no_tty.stdout + no_tty.stderr
    assert sorted((tmp_path / "runs").iterdir()) == runs_before  # nothing ran


# -------------------------------------------------------------------------------------- blast radius


def nodes(workers: int = 8) -> list[Node]:
    out = [Node("cp1", "10.0.0.1", labels={"node-role.kubernetes.io/control-plane": ""})]
    out += [
        Node(f"w{i}", f"10.0.0.{i + 10}", labels={"zone": "a" if i % 2 else "b"})
        for i in range(1, workers + 1)
    ]
    return out


def test_blast_radius_percent_samples_without_replacement_seeded_and_capped() -> None:
    cluster = nodes()
    picks = {
        seed: [n.name for n in resolve_targets(cluster, FaultTargets(percent="25%", seed=seed))]
        for seed in range(20)
    }
    assert all(len(p) == 2 and len(set(p)) == 2 for p in picks.values())  # 25% of 8 workers, no node twice
    assert all("cp1" not in p for p in picks.values())  # control plane excluded by default
    assert picks[3] == [n.name for n in resolve_targets(cluster, FaultTargets(percent="25%", seed=3))]
    assert len({tuple(p) for p in picks.values()}) > 3  # the seed matters
    # labels then count; names; the 50% cap counts the whole cluster (9 nodes: at most 4)
    zone_a = [n.name for n in resolve_targets(cluster, FaultTargets(labels="zone=a", count=3, seed=1))]
    assert len(zone_a) == 3 and all(int(n[1:]) % 2 == 1 for n in zone_a)
    assert [n.name for n in resolve_targets(cluster, FaultTargets(names=["w2", "w5"]))] == ["w2", "w5"]
    assert len(resolve_targets(cluster, FaultTargets(count=4))) == 4
    with pytest.raises(PlanError, match=r"blast radius too large: 5 of 9 nodes, the cap is 50%"):
        resolve_targets(cluster, FaultTargets(count=5))
    assert len(resolve_targets(cluster, FaultTargets(count=5, max_share="60%"))) == 5
    with pytest.raises(PlanError, match="control-plane nodes are excluded"):
        resolve_targets(cluster, FaultTargets(names=["cp1"]))
    assert [
        n.name for n in resolve_targets(cluster, FaultTargets(names=["cp1"], allow_control_plane=True))
    ] == ["cp1"]


# ------------------------------------------------------------------- probe loop: no catch-up burst


def test_a_stalled_probe_loop_skips_the_missed_rounds_instead_of_bursting_them() -> None:
    """The early dip of gameday-packet-loss: after the prober's loop stalled (a loaded machine), it sent
    every missed round at once, and the burst timed out its own probes. Now the missed rounds are skipped."""
    import asyncio  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from migrator.probe import agent  # noqa: PLC0415

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    spec = agent.Spec.from_dict(
        {
            "source": "t",
            "dest": "d",
            "kind": "container",
            "host": "127.0.0.1",
            "port": port,
            "protocol": "tcp",
        }
    )
    sends: list[float] = []
    original = agent.Prober.run_one

    async def stalling(self: agent.Prober, s: agent.Spec) -> agent.Outcome:
        sends.append(time.monotonic())
        if len(sends) == 3:
            time.sleep(0.6)  # blocks the whole loop, as a starved process does
        return await original(self, s)

    out: list[agent.Outcome] = []
    stats: dict[str, int] = {}

    async def run() -> int:
        agent.Prober.run_one = stalling  # type: ignore[method-assign]
        try:
            return await agent.probe_continuously(
                [spec], rate_hz=20, max_duration=1.5, stop=threading.Event(), sink=out.append, stats=stats
            )
        finally:
            agent.Prober.run_one = original  # type: ignore[method-assign]

    try:
        sent = asyncio.run(run())
    finally:
        lsock.close()
    assert sent == len(out) == len(sends)
    assert 10 <= stats["skipped_rounds"] <= 13  # ~0.6 s of rounds at 20 Hz
    assert 15 <= sent <= 21  # 30 rounds planned, minus the skipped ones
    after_stall = [t for t in sends if t > sends[2] + 0.55]
    burst = [t for t in after_stall if t - after_stall[0] < 0.02]
    assert len(burst) <= 2  # one round at once at most (the one due now), not the ~12 missed ones
    gaps = [b - a for a, b in itertools.pairwise(after_stall[len(burst) - 1 :])]
    assert gaps and min(gaps[:4]) > 0.02  # then the 50 ms period again
    assert all(o.ok for o in out)
