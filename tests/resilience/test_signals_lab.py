"""Signals and concurrency on a real lab (issue 8), migrator as a subprocess:

- SIGINT once: stop at the next safe point, roll back per policy, exit 130, run ``interrupted``;
- SIGINT twice: the rollback stops at a safe point, exit 3, the run needs attention and the message gives
  the exact command to continue; following it finishes the rollback cleanly;
- two applies against the same lab: the second is refused with the holder's run id (exit 2); when the
  holder is killed with SIGKILL its lock is stale, refused without ``--force-unlock RUN`` and taken with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import migrator_env, run_migrator, start_migrator

ROOT = Path(__file__).resolve().parents[2]
UNDERLAY = "198.18.45.0/24"
CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/bridge").exists()

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not CAN_BUILD_LAB, reason="needs root, iproute2 and CNI plugins"),
]

# node2 then node3, one at a time: cordon (undo: uncordon), a step whose undo takes 4 s (the rollback's
# window for the second SIGINT), then a long wait (the window for the first)
PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: sigint-lab}
spec:
  rollback: on-failure
  stages:
    - name: nodes
      for_each: {nodes: {names: [node2, node3]}, order: as-listed, max_unavailable: 1}
      steps:
        - {name: cordon, action: node.cordon}
        - name: settle
          action: demo.sleep
          args: {duration: 0s}
          undo: {action: demo.sleep, args: {duration: 4s}}
        - {name: long, action: demo.sleep, args: {duration: 120s}, timeout: 5m}
"""


@dataclass
class SigLab:
    name: str
    home: Path
    plan: Path

    @property
    def target(self) -> str:
        return f"lab:{self.name}"

    def env(self) -> dict[str, str]:
        return migrator_env(self.home, NO_COLOR="1")

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_migrator(*args, env=self.env(), timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_migrator(*args, env=self.env())

    def apply(self) -> subprocess.Popen[str]:
        return self.start("apply", str(self.plan), "--yes", "-t", self.target)

    def journal(self, run_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        runs = self.home / "runs"
        folders = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []
        if run_id is not None:
            folders = [p for p in folders if p.name == run_id]
        if not folders or not (folders[-1] / "journal.jsonl").exists():
            return "", []
        events = []
        for line in (folders[-1] / "journal.jsonl").read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                break
        return folders[-1].name, events

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = 120
    ) -> tuple[str, list[dict[str, Any]]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            run_id, events = self.journal()
            if len(list((self.home / "runs").glob("*"))) > after and any(predicate(e) for e in events):
                return run_id, events
            time.sleep(0.05)
        raise AssertionError(f"timed out; journal tail: {self.journal()[1][-5:]}")

    def schedulable(self) -> dict[str, bool]:
        code = (
            "import json; from migrator.adapters.lab import open_lab_target;"
            f" t = open_lab_target({self.name!r});"
            " print(json.dumps({n.name: n.schedulable for n in t.cluster.list_nodes()}))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        data: dict[str, bool] = json.loads(proc.stdout)
        return data

    def lock(self) -> Path:
        return self.home / "locks" / f"lab_{self.name}.lock"


def _runs(home: Path) -> int:
    folder = home / "runs"
    return len(list(folder.iterdir())) if folder.exists() else 0


@pytest.fixture(scope="module")
def sig_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigLab]:
    home = tmp_path_factory.mktemp("signals-home")
    plan = home / "sigint-lab.yaml"
    plan.write_text(PLAN)
    lab = SigLab(name=f"bs{os.getpid() % 100}", home=home, plan=plan)
    try:
        up = lab.cli("lab", "up", "--name", lab.name, "--underlay", UNDERLAY, "--app", "none")
        assert up.returncode == 0, up.stdout + up.stderr
        yield lab
    finally:
        down = lab.cli("lab", "down", "--name", lab.name)
        assert down.returncode == 0, down.stdout + down.stderr
        left = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False
        )
        assert f"m{lab.name}-" not in left.stdout


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=30)


def test_sigint_once_rolls_back_and_exits_130(sig_lab: SigLab) -> None:
    before = _runs(sig_lab.home)
    proc = sig_lab.apply()
    try:
        run_id, _ = sig_lab.wait_for(
            lambda e: e["type"] == "step.start" and e.get("step") == "long", after=before
        )
        assert sig_lab.schedulable()["node2"] is False  # a real change is in flight
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 60
    assert "Traceback" not in err
    assert "stopping at the next safe point" in err
    _, events = sig_lab.journal(run_id)
    assert [e["outcome"] for e in events if e["type"] == "rollback.end"] == ["succeeded"]
    assert events[-1]["type"] == "run.end" and events[-1]["status"] == "interrupted"
    assert all(sig_lab.schedulable().values())
    assert not sig_lab.lock().exists()
    status = sig_lab.cli("status", run_id, "-o", "json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "interrupted"


def test_sigint_twice_stops_the_rollback_needs_attention_then_rollback_finishes(sig_lab: SigLab) -> None:
    before = _runs(sig_lab.home)
    proc = sig_lab.apply()
    try:
        run_id, _ = sig_lab.wait_for(
            lambda e: e["type"] == "step.start" and e.get("step") == "long", after=before
        )
        proc.send_signal(signal.SIGINT)
        sig_lab.wait_for(lambda e: e["type"] == "undo.start" and e.get("step") == "settle", after=before)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    command = f"migrator rollback {run_id}"
    assert command in err, err
    _, events = sig_lab.journal(run_id)
    assert [e["outcome"] for e in events if e["type"] == "rollback.end"] == ["stopped"]
    # settle's undo (a plain wait) ran to its end, a safe point; cordon's undo did not start: node2 is
    # still cordoned, and the state says so
    assert sig_lab.schedulable()["node2"] is False
    status = sig_lab.cli("status", run_id, "-o", "json")
    assert json.loads(status.stdout)["status"] == "needs-attention", status.stdout[:500]
    # following the printed command finishes the rollback
    args = re.search(r"migrator (rollback \S+)", err)
    assert args is not None
    done = sig_lab.cli(*args.group(1).split())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolled-back" in done.stderr
    assert all(sig_lab.schedulable().values())
    assert not sig_lab.lock().exists()


def test_second_apply_is_refused_then_a_killed_holders_lock_is_taken_with_force_unlock(
    sig_lab: SigLab,
) -> None:
    before = _runs(sig_lab.home)
    holder = sig_lab.apply()
    try:
        run_id, _ = sig_lab.wait_for(
            lambda e: e["type"] == "step.start" and e.get("step") == "long", after=before
        )
        second = sig_lab.cli("apply", str(sig_lab.plan), "--yes", "-t", sig_lab.target)
        assert second.returncode == 2, second.stderr
        assert f"locked by run {run_id}" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    finally:
        _stop(holder)
    assert json.loads(sig_lab.lock().read_text())["run_id"] == run_id
    stale = sig_lab.cli("apply", str(sig_lab.plan), "--yes", "-t", sig_lab.target)
    assert stale.returncode == 2, stale.stderr
    assert "stale lock" in stale.stderr and f"--force-unlock {run_id}" in stale.stderr
    wrong = sig_lab.cli(
        "apply", str(sig_lab.plan), "--yes", "-t", sig_lab.target, "--force-unlock", "other-run"
    )
    assert wrong.returncode == 2 and run_id in wrong.stderr
    # take the lock over: first undo what the killed run did (its own lock is taken back by its rollback)
    undo = sig_lab.cli("rollback", run_id)
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert all(sig_lab.schedulable().values()) and not sig_lab.lock().exists()
    # and a stale lock of a killed run can be taken by a new apply with --force-unlock
    again = sig_lab.apply()
    try:
        run2, _ = sig_lab.wait_for(
            lambda e: e["type"] == "step.start" and e.get("step") == "long", after=before + 1
        )
        again.send_signal(signal.SIGKILL)
        again.communicate(timeout=30)
    finally:
        _stop(again)
    forced = sig_lab.start("apply", str(sig_lab.plan), "--yes", "-t", sig_lab.target, "--force-unlock", run2)
    try:
        run3, _ = sig_lab.wait_for(lambda e: e["type"] == "run.start", after=before + 2)
        assert run3 != run2
        assert json.loads(sig_lab.lock().read_text())["run_id"] == run3
        forced.send_signal(signal.SIGINT)
        _, err = forced.communicate(timeout=120)
    finally:
        _stop(forced)
    assert forced.returncode == 130, err
    # the new run rolled back only its own steps; node2 stays cordoned by the killed run until it is undone
    cleanup = sig_lab.cli("rollback", run2)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert all(sig_lab.schedulable().values()) and not sig_lab.lock().exists()
