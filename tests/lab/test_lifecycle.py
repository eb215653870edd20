"""Lab lifecycle: down leaves nothing, up is idempotent, down works after up was killed midway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrator.errors import UsageError
from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.lab.state import lab_dir
from tests.lab.conftest import host_traces, unique_lab

pytestmark = pytest.mark.lab


def _wait_gone(name: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    traces = host_traces(name, lab_dir(name))
    while traces and time.monotonic() < deadline:
        time.sleep(0.1)
        traces = host_traces(name, lab_dir(name))
    return traces


def test_down_leaves_nothing(migrator_home: Path) -> None:
    name, underlay = unique_lab("d")
    lab = Lab(name)
    try:
        lab.up(LabSpec(name=name, nodes=2, pods_per_node=1, underlay=underlay))
        before = host_traces(name, lab_dir(name))
        assert any(t.startswith("netns ") for t in before)
        assert any(t.startswith("link ") for t in before)
        assert any(t.startswith("process ") for t in before)
    finally:
        res = lab.down()
    assert res.existed and not res.leftovers
    assert res.seconds < 5.0
    assert _wait_gone(name) == []
    # the host keeps no route to the lab's underlay, pod or service ranges
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, timeout=10, check=False).stdout
    assert underlay not in routes and "10.244." not in routes and "10.96." not in routes
    # down is idempotent
    assert not Lab(name).down().leftovers


def test_host_only_has_the_underlay_route(lab: Lab) -> None:
    st = lab.require()
    routes = subprocess.run(
        ["ip", "-j", "route", "show", "dev", st.host_veth],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert [r["dst"] for r in json.loads(routes.stdout)] == [st.spec.underlay]
    all_routes = subprocess.run(
        ["ip", "route"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    assert "10.244." not in all_routes and "10.96." not in all_routes


UP_SCRIPT = """
import sys
from migrator.errors import UsageError
from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
Lab(sys.argv[1]).up(LabSpec(name=sys.argv[1], nodes=3, pods_per_node=2, underlay=sys.argv[2]))
"""


@pytest.mark.parametrize("stage", ["holders", "pods"])
def test_down_after_up_killed_midway(migrator_home: Path, stage: str) -> None:
    name, underlay = unique_lab("k")
    state_path = lab_dir(name) / "state.json"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", UP_SCRIPT, name, underlay], env=env)
    killed_in = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                st = json.loads(state_path.read_text())
            except (OSError, ValueError):
                time.sleep(0.005)
                continue
            res = st.get("resources", [])
            hit = (
                any(r["kind"] == "process" and r["name"].startswith("holder:") and r.get("pid") for r in res)
                if stage == "holders"
                else any(r["kind"] == "netns" and "-p-" in r["name"] for r in res)
            )
            if hit and st["phase"] == "creating":
                proc.send_signal(signal.SIGKILL)
                killed_in = st["phase"]
                break
            time.sleep(0.002)
        proc.wait(10)
        assert killed_in == "creating", "lab up finished before it could be killed"
        assert host_traces(name, lab_dir(name)) != []  # it did leave things behind
        if stage == "pods":  # up again over the wreckage: it cleans up and builds a working lab
            lab = Lab(name)
            assert not lab.up(LabSpec(name=name, nodes=3, pods_per_node=2, underlay=underlay)).already_up
            st = lab.require()
            assert all(p.phase == "Running" for p in st.pods.values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        res = Lab(name).down()
    assert res.existed
    assert _wait_gone(name) == []


def test_down_with_unreadable_state_removes_by_prefix(migrator_home: Path) -> None:
    name, underlay = unique_lab("u")
    lab = Lab(name)
    try:
        lab.up(LabSpec(name=name, nodes=1, pods_per_node=1, app="none", underlay=underlay))
        (lab_dir(name) / "state.json").write_text("{not json")
        with pytest.raises(UsageError):
            lab.require()
    finally:
        lab.down()
    assert _wait_gone(name) == []


def test_a_lab_under_root_home_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default MIGRATOR_HOME is under /root, which every node replaces with its own home: the lab's
    folder must stay visible inside the nodes (sshd's config, the control-plane endpoint's script, bird's
    config). The rest of the suite runs with homes under /tmp, which never showed it."""
    home = Path("/root/.cache") / f"migrator-test-home-{os.getpid()}"
    monkeypatch.setenv("MIGRATOR_HOME", str(home))
    name, underlay = unique_lab("r")
    lab = Lab(name)
    try:
        st = lab.up(LabSpec(name=name, nodes=2, pods_per_node=0, underlay=underlay)).state
        assert st.apiserver  # sshd and the control-plane endpoint started inside node1's namespaces

        def node2(*argv: str) -> list[str]:
            cmd = lab.exec_argv("node2", list(argv))
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout.split()

        assert "inventory.ini" in node2("ls", st.dir)  # the lab folder is seen from inside the node
        assert node2("ls", "-A", "/root") == [".cache"]  # in the node's own /root: only the way to it
    finally:
        res = lab.down()
        subprocess.run(["rm", "-rf", str(home)], check=False, timeout=30)
    assert not res.leftovers
