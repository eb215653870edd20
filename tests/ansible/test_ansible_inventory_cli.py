"""Inventory parsing, the inventory/cluster comparison, and ``migrator nodes ping``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshnodes import SshNodeFarm
from typer.testing import CliRunner

from migrator.cli.nodes import app
from migrator.errors import UsageError
from migrator.playbooks import compare_hosts, require_match
from migrator.targets.ansible.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["example.ini", "example.yaml"])
def test_example_inventories_parse(name: str) -> None:
    inv = load_inventory(ROOT / "inventory" / name)
    assert inv.hosts == ("cp-1", "worker-1", "worker-2", "worker-3")
    assert inv.group("control_plane") == ("cp-1",)
    assert set(inv.group("nodes")) == set(inv.hosts)
    assert inv.hostvars["worker-2"]["ansible_host"] == "10.0.0.22"
    assert inv.hostvars["worker-2"]["ansible_python_interpreter"] == "/usr/bin/python3"


def test_compare_hosts_lists_missing_and_extra() -> None:
    m = compare_hosts(["a", "b", "c"], ["b", "c", "d"])
    assert (m.missing, m.extra, m.ok) == (("d",), ("a",), False)
    assert "missing from the inventory: d" in m.describe() and "not cluster nodes: a" in m.describe()
    assert compare_hosts(["a"], ["a"]).ok
    require_match(["a"], ["a"])
    with pytest.raises(UsageError, match=r"missing.*d"):
        require_match(["a"], ["a", "d"])


def test_bad_inventory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_inventory(tmp_path / "nope.ini")
    bad = tmp_path / "bad.yaml"
    bad.write_text("all: [unclosed\n")
    with pytest.raises(UsageError, match="cannot parse"):
        load_inventory(bad)


@pytest.mark.lab
def test_nodes_ping_cli(farm: SshNodeFarm) -> None:
    runner = CliRunner()
    names = ",".join(farm.nodes)
    ok = runner.invoke(app, ["ping", "--inventory", str(farm.inventory), "--expect-nodes", names])
    assert ok.exit_code == 0, ok.output
    assert "all 3 node(s) reachable" in ok.output and "maps 1:1" in ok.output

    first, down = list(farm.nodes)[:2]
    farm.stop_sshd(down)
    try:
        res = runner.invoke(
            app, ["ping", "-i", str(farm.inventory), "--nodes", f"{first},{down}", "--timeout", "30"]
        )
    finally:
        farm.start_sshd(down)
    assert res.exit_code == 3, res.output
    assert "unreachable" in res.output and f"not reachable: {down}" in res.output

    bad = runner.invoke(app, ["ping", "-i", str(farm.inventory), "--nodes", "ghost"])
    assert bad.exit_code == 2 and "ghost" in bad.output
    mismatch = runner.invoke(app, ["ping", "-i", str(farm.inventory), "--expect-nodes", f"{first},other"])
    assert mismatch.exit_code == 3 and "missing from the inventory: other" in mismatch.output


@pytest.mark.lab
def test_nodes_ping_ctrl_c_cancels(farm: SshNodeFarm, tmp_path: Path) -> None:
    # a host whose address does not answer: the SSH connect would wait for its timeout
    inventory = tmp_path / "inv.ini"
    inventory.write_text(farm.inventory.read_text() + f"silent ansible_host={farm.net}.99\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from migrator.cli.nodes import app; app()",
            "ping",
            "-i",
            str(inventory),
            "--keep",
            str(tmp_path / "keep"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30  # until ansible-playbook is running (its first events are written)
    while not list((tmp_path / "keep").glob("artifacts/*/job_events/*.json")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(1)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "interrupted" in out and time.monotonic() - started < 5
