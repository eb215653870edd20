"""A playbook dies with the migrator that started it (``migrator_deadman`` callback plugin).

ansible-runner starts ``ansible-playbook`` with SIGHUP ignored: without the plugin a playbook whose
migrator was killed with ``kill -9`` waits for its running task (here a 43 s sleep on the node) and goes on
until it next writes to its dead terminal. The bench kill series found one such orphan ansible-playbook, still
running 15 s after the kill. Real SSH nodes (the farm), migrator's executor in a child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sshnodes import SshNodeFarm

from migrator.lab import sh
from migrator.targets.ansible.executor import CALLBACKS_DIR, DEADMAN_PARENT_ENV

ROOT = Path(__file__).resolve().parents[2]
SLEEP = Path(__file__).parent / "playbooks" / "sleep.yml"
SECONDS = "43.21"  # a duration no one else sleeps: finds the remote sleep on this machine
RUNNER = """
import sys
from pathlib import Path
from migrator.targets.ansible.executor import AnsibleRunnerExecutor
from migrator.ports import PlaybookRequest
inventory, cp, playbook, host, seconds, data = sys.argv[1:]
executor = AnsibleRunnerExecutor(inventory=Path(inventory), connect_timeout=3, control_path_dir=Path(cp))
executor.run_playbook(
    PlaybookRequest(playbook=Path(playbook), hosts=(host,), extra_vars={"seconds": seconds}),
    data_dir=Path(data),
)
"""


def processes(needle: str) -> list[int]:
    """Live processes (not zombies) whose command line contains ``needle``."""
    return [pid for pid, cmd in sh.cmdlines().items() if needle in cmd and sh.alive(pid)]


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def wait(predicate: object, timeout: float) -> float | None:
    """Seconds until ``predicate()`` is true, or None after ``timeout``."""
    assert callable(predicate)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def test_the_plugin_and_the_executor_agree_on_the_parent_variable() -> None:
    text = (CALLBACKS_DIR / "migrator_deadman.py").read_text()
    assert f'PARENT_ENV = "{DEADMAN_PARENT_ENV}"' in text


def test_a_killed_migrator_takes_its_playbook_with_it(farm: SshNodeFarm, tmp_path: Path) -> None:
    host = sorted(farm.nodes)[0]
    data = tmp_path / "data"
    args = [str(farm.inventory), str(tmp_path / "cp"), str(SLEEP), host, SECONDS, str(data)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, *args], env=env, stdin=subprocess.DEVNULL)
    try:
        # the playbook runs (its data dir names it) and its task sleeps on the node
        assert wait(lambda: processes(f"sleep {SECONDS}"), 60) is not None, "the remote task never started"
        playbooks = [p for p in processes("ansible-playbook") if parent(p) == proc.pid]
        assert playbooks, "no ansible-playbook started by the executor"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        gone = wait(lambda: not any(sh.alive(p) for p in playbooks), 5)
        assert gone is not None, f"ansible-playbook {playbooks} outlived the killed migrator by 5 s"
        # (the task already running on the node runs to its end: without a terminal on the node nothing
        # signals it when its client goes; our playbooks are idempotent, a resume may run it again)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in processes(f"sleep {SECONDS}") + processes(str(data)):
            os.kill(pid, signal.SIGKILL)
