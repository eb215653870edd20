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
        return migrator_env(self.home, NO_COLOR="1", PYTHONFAULTHANDLER="1")

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_migrator(*args, env=self.env(), timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_migrator(*args, env=self.env())

    def apply(self) -> subprocess.Popen[str]:
        return self.start("apply", str(self.plan), "--yes", "-t", self.target)

    def journal(self, run_id: str) -> list[dict[str, Any]]:
        """The events of run ``run_id`` up to the first line that does not parse."""
        path = self.home / "runs" / run_id / "journal.jsonl"
        events: list[dict[str, Any]] = []
        if not path.exists():
            return events
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                break
        return events

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        proc: subprocess.Popen[str],
        known: set[str],
        *,
        timeout: float = 120,
    ) -> tuple[str, list[dict[str, Any]]]:
        """Wait until the run that ``proc`` started (the one run folder not in ``known``; run ids made in
        the same second do not sort by time) has an event matching ``predicate``; fails at once, with its
        output, when ``proc`` ended first."""
        end = time.monotonic() + timeout
        new: set[str] = set()
        while time.monotonic() < end:
            new = _runs(self.home) - known
            assert len(new) <= 1, f"more than one new run: {sorted(new)}"
            if new:
                run_id = next(iter(new))
                events = self.journal(run_id)
                if any(predicate(e) for e in events):
                    return run_id, events
            if proc.poll() is not None:
                out, err = proc.communicate(timeout=30)
                raise AssertionError(
                    f"migrator exited {proc.returncode} first:\n{out[-2000:]}\n{err[-4000:]}"
                )
            time.sleep(0.05)
        tails = {r: self.journal(r)[-3:] for r in sorted(new)}
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: where it is stuck, in its stderr
            time.sleep(2)
            proc.kill()
        out, err = proc.communicate(timeout=30)
        raise AssertionError(
            f"timed out; new runs and their journal tails: {tails};"
            f" migrator exit {proc.returncode}:\n{out[-2000:]}\n{err[-6000:]}"
        )

    def schedulable(self) -> dict[str, bool]:
        code = (
            "import json; from migrator.targets.lab.cluster import open_lab_target;"
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


def _runs(home: Path) -> set[str]:
    """The run folders of ``home``."""
    folder = home / "runs"
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.exists() else set()


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
            lambda e: e["type"] == "step.start" and e.get("step") == "long", proc, before
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
    events = sig_lab.journal(run_id)
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
            lambda e: e["type"] == "step.start" and e.get("step") == "long", proc, before
        )
        proc.send_signal(signal.SIGINT)
        sig_lab.wait_for(lambda e: e["type"] == "undo.start" and e.get("step") == "settle", proc, before)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    command = f"migrator rollback {run_id}"
    assert command in err, err
    events = sig_lab.journal(run_id)
    assert [e["outcome"] for e in events if e["type"] == "rollback.end"] == ["stopped"]
    # settle's undo (a plain wait) ran to its end, a safe point; cordon's undo did not start: node2 is
    # still cordoned, and the state says so
    assert sig_lab.schedulable()["node2"] is False
    status = sig_lab.cli("status", run_id, "-o", "json")
    assert json.loads(status.stdout)["status"] == "needs-attention", status.stdout[:500]
    # following the printed command finishes the rollback
    args = re.search(r"migrator (rollback \S+)", err)
    assert args is not None
    done = sig_lab.cli(*args.group(1).split(), "--yes")  # off a TTY a rollback needs --yes
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
            lambda e: e["type"] == "step.start" and e.get("step") == "long", holder, before
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
    undo = sig_lab.cli("rollback", run_id, "--yes")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert all(sig_lab.schedulable().values()) and not sig_lab.lock().exists()
    # and a stale lock of a killed run can be taken by a new apply with --force-unlock
    again = sig_lab.apply()
    try:
        run2, _ = sig_lab.wait_for(
            lambda e: e["type"] == "step.start" and e.get("step") == "long", again, before | {run_id}
        )
        again.send_signal(signal.SIGKILL)
        again.communicate(timeout=30)
    finally:
        _stop(again)
    forced = sig_lab.start("apply", str(sig_lab.plan), "--yes", "-t", sig_lab.target, "--force-unlock", run2)
    try:
        run3, _ = sig_lab.wait_for(lambda e: e["type"] == "run.start", forced, before | {run_id, run2})
        assert run3 != run2
        assert json.loads(sig_lab.lock().read_text())["run_id"] == run3
        forced.send_signal(signal.SIGINT)
        _, err = forced.communicate(timeout=120)
    finally:
        _stop(forced)
    assert forced.returncode == 130, err
    # the new run rolled back only its own steps; node2 stays cordoned by the killed run until it is undone
    cleanup = sig_lab.cli("rollback", run2, "--yes")
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert all(sig_lab.schedulable().values()) and not sig_lab.lock().exists()
