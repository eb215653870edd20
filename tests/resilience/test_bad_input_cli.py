"""Bad input everywhere (issue 8), end to end: the table of :mod:`bench.bad_inputs`, each case a real
``python -m migrator.cli.main`` process. Every case exits with README's code, prints no traceback and ONE
``error: ...`` line on stderr naming the file, field, key, node or run id (and the fix where there is
one). The unreachable node is an inventory host in the test lab's own underlay that no node has."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bad_inputs import Case, Context, cases, check, fake_kube, fuzz, lab_context, make_files, run_cli
from tests.clihelp import migrator_env, run_migrator

ROOT = Path(__file__).resolve().parents[2]
UNDERLAY = "198.18.45.0/24"
CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/bridge").exists()


def _migrator(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_migrator(*args, env=migrator_env(home, NO_COLOR="1"), timeout=timeout)


@pytest.fixture(scope="module")
def bad_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path] | None]:
    """A small lab (2 nodes, no app) for the unreachable-node case; ``None`` where no lab can be built."""
    if not CAN_BUILD_LAB:
        yield None
        return
    home = tmp_path_factory.mktemp("bad-input-home")
    name = f"bi{os.getpid() % 100}"
    try:
        up = _migrator(
            home, "lab", "up", "--name", name, "--underlay", UNDERLAY, "--nodes", "2", "--app", "none"
        )
        assert up.returncode == 0, up.stdout + up.stderr
        yield name, home
    finally:
        down = _migrator(home, "lab", "down", "--name", name)
        assert down.returncode == 0, down.stdout + down.stderr
        left = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False
        )
        assert f"m{name}-" not in left.stdout


def test_every_bad_input_gets_one_actionable_line_and_its_exit_code(
    tmp_path: Path, bad_lab: tuple[str, Path] | None
) -> None:
    ctx = Context(tmp=tmp_path, home=tmp_path / "home")
    if bad_lab is not None:
        lab_context(ctx, bad_lab[0], bad_lab[1])
    try:
        make_files(ctx)
        with fake_kube(ctx):
            outcomes = run_cli(ctx, workers=4)
    finally:
        ctx.cleanup()
    names = [o.case.name for o in outcomes]
    assert len(names) == len(set(names)) >= 40
    assert ("ping-unreachable-node" in names) == (bad_lab is not None)
    failures = [f"{o.case.name}: {'; '.join(o.problems)}" for o in outcomes if not o.ok]
    assert not failures, "\n".join(failures)


def test_the_table_names_are_stable(tmp_path: Path) -> None:
    """bench/resilience.py reports these names; each case names what it expects to see."""
    table = cases(Context(tmp=tmp_path, home=tmp_path / "home", kubeconfig=tmp_path / "kc"))
    assert all(c.expect for c in table)
    wanted = {
        "unknown-command",
        "set-without-equals",
        "plan-missing",
        "plan-is-a-directory",
        "plan-unreadable-permissions",
        "lab-not-up",
        "resume-no-such-run",
        "rollback-no-such-run",
        "report-no-such-run",
        "status-no-such-run",
        "kubeconfig-malformed",
        "kubeconfig-unknown-context",
        "inventory-malformed",
        "ssh-key-mode-0644",
        "ssh-key-missing",
    }
    assert wanted <= {c.name for c in table}


def test_bench_fuzz_pass_is_bounded_and_clean() -> None:
    stats = fuzz(45)
    assert stats["tried"] >= 45 and not stats["failures"], stats["failures"]
    assert stats["passed"] == stats["tried"] and stats["max_load_s"] < 1.0


UNREACHABLE_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: unreachable}
spec:
  stages:
    - name: facts
      for_each: {nodes: {names: [node1, node2]}, max_unavailable: 2}
      steps:
        - {name: facts, action: ansible.playbook, args: {playbook: node-facts.yml}, no_undo: true}
"""


def test_a_node_whose_sshd_is_stopped_gets_one_line_and_exit_3(
    tmp_path: Path, bad_lab: tuple[str, Path] | None
) -> None:
    """Last in this module: it stops node2's sshd for good (the lab is torn down right after)."""
    if bad_lab is None:
        pytest.skip("needs a lab")
    name, home = bad_lab
    state = json.loads((home / "labs" / name / "state.json").read_text())
    pid = int(state["nodes"]["node2"]["sshd_pid"])
    assert b"sshd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    inventory = home / "labs" / name / "inventory.ini"
    case = Case(
        "ping-sshd-stopped",
        ("nodes", "ping", "-i", str(inventory), "--nodes", "node2", "--timeout", "60"),
        code=3,
        lines=2,
        expect=("node2", "Connection refused", "is sshd running"),
    )
    outcome = check(case, Context(tmp=tmp_path, home=home))
    assert outcome.ok, outcome.problems
    # a run that needs the node fails, names it and the reason, and rolls back: exit 1
    plan = tmp_path / "unreachable.yaml"
    plan.write_text(UNREACHABLE_PLAN)
    run = _migrator(home, "apply", str(plan), "-t", f"lab:{name}", "--yes")
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    status = run.stderr.strip().splitlines()[0]
    assert status.startswith("failed-rolled-back:") and "unreachable: node2" in status
    assert "Connection refused" in status


RESUME_PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: keyed}
spec:
  stages:
    - name: s
      steps:
        - {name: wait, action: demo.sleep, args: {duration: 10ms}}
"""


def test_rollback_of_a_run_whose_ssh_key_went_bad_is_refused_with_the_fix(tmp_path: Path) -> None:
    """resume/rollback check the run's inventory keys first: exit 2 naming the key, nothing undone."""
    from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, add_nodes  # noqa: PLC0415

    key = tmp_path / "ssh" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("not a real key\n")
    key.chmod(0o600)
    inventory = tmp_path / "inventory.ini"
    hosts = "\n".join(f"{n} ansible_host=127.0.0.{i + 1}" for i, n in enumerate(("cp1", "w1", "w2", "w3")))
    inventory.write_text(f"[k8s]\n{hosts}\n\n[all:vars]\nansible_ssh_private_key_file={key}\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(RESUME_PLAN)
    home = tmp_path / "home"
    server = FakeApiServer(FakeKubeApi())
    add_nodes(server.api)
    with server:
        config = server.write_kubeconfig(tmp_path / "kubeconfig", context="keyed")
        common = ("--kubeconfig", str(config), "--inventory", str(inventory))
        done = _migrator(home, *common, "apply", str(plan), "-t", "kube:keyed", "--yes", "-o", "json")
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["run_id"]
        key.chmod(0o644)
        refused = _migrator(home, *common, "rollback", run_id, "--yes")
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and f"chmod 600 {key}" in lines[0] and "Traceback" not in refused.stderr
        key.chmod(0o600)
        undone = _migrator(home, *common, "rollback", run_id, "--yes")
        assert undone.returncode == 0, undone.stderr
