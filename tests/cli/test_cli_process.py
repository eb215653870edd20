"""The CLI as a subprocess: kill -9 then resume, SIGINT then rollback, locks, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import migrator_env, run_migrator, start_migrator

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "plans" / "examples" / "hello.yaml"

SLOW_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: slow}
spec:
  params:
    pause: {type: duration, default: 300ms}
  preflight:
    - {type: nodes.schedulable}
    - {type: demo.markers, absent: [first]}
  stages:
    - name: first
      steps:
        - {name: touch-first, action: demo.touch, args: {marker: first}}
    - name: nodes
      for_each: {nodes: {exclude_control_plane: true}, max_unavailable: 1}
      steps:
        - {name: cordon, action: node.cordon}
        - {name: wait, action: demo.sleep, args: {duration: "${{ params.pause }}"}, timeout: 5m}
        - {name: mark, action: demo.touch, args: {marker: "node-${{ node.name }}"}}
        - {name: uncordon, action: node.uncordon}
  verify:
    - {type: nodes.schedulable}
    - {type: demo.markers, present: [first, node-worker-1, node-worker-2, node-worker-3]}
"""


@pytest.fixture
def env(tmp_path: Path, migrator_home: Path) -> dict[str, str]:
    return migrator_env(migrator_home, MIGRATOR_FAKE_STATE=str(tmp_path / "fake.json"), NO_COLOR="1")


@pytest.fixture
def slow_plan(tmp_path: Path) -> Path:
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW_PLAN)
    return path


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_migrator(*args, env=env, timeout=timeout)


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return start_migrator(*args, env=env)


def journal(home: Path) -> tuple[str, list[dict[str, Any]]]:
    runs = sorted((home / "runs").glob("*/journal.jsonl")) if (home / "runs").exists() else []
    if not runs:
        return "", []
    events = []
    for line in runs[-1].read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            break
    return runs[-1].parent.name, events


def wait_for(home: Path, predicate: Any, timeout: float = 30) -> tuple[str, list[dict[str, Any]]]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        run_id, events = journal(home)
        if any(predicate(e) for e in events):
            return run_id, events
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting; journal: {journal(home)[1][-5:]}")


def fake_state(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "fake.json").read_text())
    return data


def markers(tmp_path: Path) -> set[str]:
    folder = tmp_path / "fake.markers"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_kill_9_mid_run_then_resume(
    env: dict[str, str], slow_plan: Path, tmp_path: Path, migrator_home: Path
) -> None:
    proc = start(env, "apply", str(slow_plan), "--yes", "--target", "fake", "--set", "pause=1s")
    try:
        run_id, _ = wait_for(
            migrator_home,
            lambda e: e["type"] == "step.start" and e.get("step") == "wait" and e.get("node") == "worker-2",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # worker-2 is cordoned: the kill left the target half-way
    nodes = {n["name"]: n for n in fake_state(tmp_path)["nodes"]}
    assert not nodes["worker-2"]["schedulable"]
    lock = migrator_home / "locks" / "fake.lock"
    assert json.loads(lock.read_text())["run_id"] == run_id  # a stale lock stays behind

    status = cli(env, "status", run_id[:17])
    assert status.returncode == 0, status.stderr
    assert "crashed" in status.stdout and f"migrator resume {run_id}" in status.stdout

    resumed = cli(env, "resume", run_id, "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "succeeded" in resumed.stderr
    assert all(n["schedulable"] for n in fake_state(tmp_path)["nodes"])
    assert markers(tmp_path) == {"first", "node-worker-1", "node-worker-2", "node-worker-3"}
    assert not lock.exists()
    _, events = journal(migrator_home)
    done = [e["key"] for e in events if e["type"] == "step.end" and e["outcome"] == "succeeded"]
    assert len(done) == len(set(done)) == 1 + 3 * 4
    runs = cli(env, "runs", "-o", "json")
    assert json.loads(runs.stdout)[0]["status"] == "succeeded"


def test_sigint_stops_rolls_back_and_exits_130(
    env: dict[str, str], slow_plan: Path, tmp_path: Path, migrator_home: Path
) -> None:
    proc = start(env, "apply", str(slow_plan), "--yes", "--target", "fake", "--set", "pause=60s")
    try:
        run_id, _ = wait_for(migrator_home, lambda e: e["type"] == "step.start" and e.get("step") == "wait")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 20
    assert "Traceback" not in err
    _, events = journal(migrator_home)
    assert [e["outcome"] for e in events if e["type"] == "rollback.end"] == ["succeeded"]
    assert events[-1]["type"] == "run.end" and events[-1]["status"] == "interrupted"
    assert all(n["schedulable"] for n in fake_state(tmp_path)["nodes"])
    assert markers(tmp_path) == set()
    assert not (migrator_home / "locks" / "fake.lock").exists()
    status = cli(env, "status", run_id, "-o", "json")
    assert json.loads(status.stdout)["status"] == "interrupted"


def test_apply_refuses_without_yes_and_without_a_tty(env: dict[str, str]) -> None:
    result = cli(env, "apply", str(HELLO), "--target", "fake")
    assert result.returncode == 2
    assert "--yes" in result.stderr and "Traceback" not in result.stderr


def test_hello_runs_fails_on_purpose_and_rolls_back(env: dict[str, str], migrator_home: Path) -> None:
    ok = cli(env, "apply", str(HELLO), "--yes", "--target", "fake", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "succeeded"
    # the markers of the first run are still on the fake target: the preflight refuses to start again
    again = cli(env, "apply", str(HELLO), "--yes", "--target", "fake")
    assert again.returncode == 1 and "failed-preflight" in again.stderr
    fresh = {**env, "MIGRATOR_FAKE_STATE": str(migrator_home.parent / "other.json")}
    failed = cli(fresh, "apply", str(HELLO), "--yes", "--target", "fake", "--set", "fail_at=node-worker-1")
    assert failed.returncode == 1, failed.stderr
    assert "failed-rolled-back" in failed.stderr
    assert "undo per-node/touch-node@worker-1" in failed.stdout  # plain lines when not a TTY


def test_lock_held_stale_and_force_unlock(env: dict[str, str], migrator_home: Path) -> None:
    locks = migrator_home / "locks"
    locks.mkdir(parents=True)
    (locks / "fake.lock").write_text(
        json.dumps(
            {
                "run_id": "20260101-000000-other-aaaa",
                "pid": os.getpid(),
                "host": os.uname().nodename,
                "started": "then",
            }
        )
    )
    held = cli(env, "apply", str(HELLO), "--yes", "--target", "fake")
    assert held.returncode == 2
    assert "locked by run 20260101-000000-other-aaaa" in held.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (locks / "fake.lock").write_text(
        json.dumps(
            {
                "run_id": "20260101-000000-other-aaaa",
                "pid": dead.pid,
                "host": os.uname().nodename,
                "started": "then",
            }
        )
    )
    stale = cli(env, "apply", str(HELLO), "--yes", "--target", "fake")
    assert stale.returncode == 2 and "stale lock" in stale.stderr
    assert "--force-unlock 20260101-000000-other-aaaa" in stale.stderr
    forced = cli(
        env, "apply", str(HELLO), "--yes", "--target", "fake", "--force-unlock", "20260101-000000-other-aaaa"
    )
    assert forced.returncode == 0, forced.stderr
    assert not (locks / "fake.lock").exists()


def test_bad_input_gets_one_line_and_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    for args in (
        ["status", "no-such-run"],
        ["resume", "nope"],
        ["apply", str(tmp_path / "missing.yaml"), "--yes"],
        ["apply", str(HELLO), "--yes", "--target", "mars"],
        ["plan", str(HELLO), "--target", "lab"],
        ["apply", str(HELLO), "--yes", "--target", "fake", "--set", "nope=1"],
    ):
        result = cli(env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("error: "), (args, result.stderr)


def test_plan_dry_run_json_and_text(env: dict[str, str], migrator_home: Path) -> None:
    data = cli(env, "plan", str(HELLO), "--target", "fake", "-o", "json")
    assert data.returncode == 0, data.stderr
    report = json.loads(data.stdout)
    per_node = next(s for s in report["stages"] if s["stage"] == "per-node")
    assert [[n["node"] for n in w["nodes"]] for w in per_node["waves"]] == [
        ["worker-1", "worker-2"],
        ["worker-3", "cp-1"],
    ]
    text = cli(env, "apply", str(HELLO), "--dry-run", "--target", "fake")
    assert text.returncode == 0
    assert "nothing will be changed" in text.stdout and "node-worker-3" in text.stdout
    assert not (migrator_home / "runs").exists() or not list((migrator_home / "runs").iterdir())


def test_validate_and_schema_are_registered(env: dict[str, str]) -> None:
    assert cli(env, "validate", str(HELLO)).returncode == 0
    schema = cli(env, "schema")
    assert schema.returncode == 0 and json.loads(schema.stdout)["type"] == "object"


def test_version_needs_no_command_and_the_cli_imports_what_a_command_needs(env: dict[str, str]) -> None:
    from migrator import __version__  # noqa: PLC0415

    res = cli(env, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"migrator {__version__}", res.stderr
    # start-up cost is the imports: the entry module pulls in neither the engine nor the plan models
    probe = (
        "import sys, migrator.cli.main; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('migrator.', 'pydantic')))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert "migrator.cli.main" in loaded
    heavy = {"migrator.engine.engine", "migrator.plan.models", "migrator.actions", "pydantic"}
    assert not heavy & set(loaded), sorted(heavy & set(loaded))


def test_rollback_command_undoes_a_finished_run(
    env: dict[str, str], migrator_home: Path, tmp_path: Path
) -> None:
    ok = cli(env, "apply", str(HELLO), "--yes", "--target", "fake", "-o", "json")
    run_id = json.loads(ok.stdout)["run_id"]
    assert markers(tmp_path)
    undo = cli(env, "rollback", run_id, "-o", "json", "--yes")
    assert undo.returncode == 0, undo.stderr
    assert json.loads(undo.stdout)["status"] == "rolled-back"
    assert markers(tmp_path) == set()
    again = cli(env, "rollback", run_id, "--yes")
    assert again.returncode == 2 and "nothing to roll back" in again.stderr


SECRET_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: secret}
spec:
  params:
    token: {type: string, default: "", secret: true}
  stages:
    - name: s
      steps:
        - {name: use, action: demo.touch, args: {marker: "tok-${{ params.token }}"}}
        - {name: boom, action: demo.fail}
"""


def test_secret_values_never_reach_the_run_folder(
    env: dict[str, str], tmp_path: Path, migrator_home: Path
) -> None:
    plan = tmp_path / "secret.yaml"
    plan.write_text(SECRET_PLAN)
    secret = "SuperSecret123value"
    result = cli(env, "-vv", "apply", str(plan), "--yes", "--target", "fake", "--set", f"token={secret}")
    assert result.returncode == 1, result.stderr
    assert secret not in result.stdout + result.stderr
    files = [p for p in migrator_home.rglob("*") if p.is_file()]
    assert any(p.name == "journal.jsonl" for p in files)
    for path in files:
        assert secret not in path.read_text(errors="replace"), path
    assert "tok-***" in next(p for p in files if p.name == "journal.jsonl").read_text()


def test_bad_cli_use_exits_2_without_traceback(env: dict[str, str]) -> None:
    for args in (["apply", str(HELLO), "--no-such-option"], ["no-such-command"], ["status"]):
        result = cli(env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr


SLOW_UNDO_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: slow-undo}
spec:
  stages:
    - name: s
      steps:
        - name: a
          action: demo.touch
          args: {marker: a}
        - name: b
          action: demo.touch
          args: {marker: b}
          undo: {action: demo.sleep, args: {duration: 3s}}
        - {name: long, action: demo.sleep, args: {duration: 60s}}
"""


def test_second_sigint_stops_the_rollback_needs_attention(
    env: dict[str, str], tmp_path: Path, migrator_home: Path
) -> None:
    plan = tmp_path / "slow-undo.yaml"
    plan.write_text(SLOW_UNDO_PLAN)
    proc = start(env, "apply", str(plan), "--yes", "--target", "fake")
    try:
        run_id, _ = wait_for(migrator_home, lambda e: e["type"] == "step.start" and e.get("step") == "long")
        proc.send_signal(signal.SIGINT)
        wait_for(migrator_home, lambda e: e["type"] == "undo.start" and e.get("step") == "b")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert f"migrator rollback {run_id}" in err
    _, events = journal(migrator_home)
    assert [e["outcome"] for e in events if e["type"] == "rollback.end"] == ["stopped"]
    # b's undo (a plain sleep) ran to its end, a safe point; a's undo did not start
    undone = [e["key"] for e in events if e["type"] == "undo.end" and e["outcome"] == "succeeded"]
    assert undone == ["s/long", "s/b"]
    assert "a" in markers(tmp_path)
    done = cli(env, "rollback", run_id, "--yes")
    assert done.returncode == 0, done.stderr
    assert "a" not in markers(tmp_path)


def test_verbose_and_debug_may_follow_the_command(env: dict[str, str]) -> None:
    result = cli(env, "plan", str(HELLO), "--target", "fake", "-o", "json", "-vv")
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    missing = cli(env, "status", "nope", "--debug")
    assert missing.returncode == 2 and "Traceback" in missing.stderr
