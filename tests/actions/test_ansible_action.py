"""``ansible.playbook`` and ``nodes.reachable`` in real runs of the engine, on a real lab over real SSH.

The plans are YAML files loaded like ``migrator apply`` loads them (params, ``--set`` overrides, secrets).
The test that stops a node's sshd is the last one of the module (the lab is torn down after it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.actions.context import CheckContext
from migrator.checks.base import get_check
from migrator.engine import EngineOptions, RunResult, apply_plan
from migrator.engine.dryrun import dry_run
from migrator.engine.planio import load_plan_file
from migrator.lab.lab import Lab
from migrator.plan.models import NodesReachableCheck
from migrator.ports import Target
from migrator.runs.journal import read_journal
from migrator.targets.ansible.executor import AnsibleRunnerExecutor

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PLAYBOOKS = Path(__file__).parent / "playbooks"
MARKER = "/var/lib/cni/migrator-ra-marker"
NODES = ("node1", "node2", "node3", "node4")
REPO = Path(__file__).resolve().parents[2]


def write_plan(tmp: Path, stages: list[dict[str, Any]], **spec: Any) -> Path:
    data = {
        "apiVersion": "migrator/v1",
        "kind": "Plan",
        "metadata": {"name": spec.pop("name", "ansible-test")},
        "spec": {"rollback": "on-failure", "stages": stages, **spec},
    }
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def marker_stage(*, wave: int = 4, retry: dict[str, Any] | None = None, **variables: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": "marker",
        "action": "ansible.playbook",
        "args": {
            "playbook": str(PLAYBOOKS / "marker.yml"),
            "vars": variables,
            "undo_playbook": str(PLAYBOOKS / "marker-absent.yml"),
        },
        "timeout": "120s",
    }
    if retry:
        step["retry"] = retry
    return {"name": "markers", "for_each": {"max_unavailable": wave}, "steps": [step]}


def apply(path: Path, target: Target, overrides: dict[str, str] | None = None) -> RunResult:
    return apply_plan(load_plan_file(path, overrides), target, options=EngineOptions(monitor_interval=0.5))


def journal(result: RunResult) -> list[dict[str, Any]]:
    return read_journal(result.run_dir / "journal.jsonl").events


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def task_events(events: list[dict[str, Any]], phase: str = "do") -> list[dict[str, Any]]:
    return [
        e["event"]
        for e in of_type(events, "step.event")
        if e["event"].get("event") == "task" and e["event"].get("phase") == phase
    ]


def node_files(lab: Lab, node: str) -> dict[str, str]:
    """The node's /var/lib/cni files with their content (the state the test playbooks touch)."""
    script = 'cd /var/lib/cni && for f in $(ls -A); do [ -f $f ] && echo "$f=$(cat $f)"; done; true'
    res = lab.exec(node, ["sh", "-c", script])
    return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)


def node_state(lab: Lab, node: str) -> dict[str, Any]:
    links = json.loads(lab.exec(node, ["ip", "-j", "link", "show"]).stdout)
    return {
        "files": node_files(lab, node),
        "links": sorted(link["ifname"] for link in links),
        "cni": lab.exec(node, ["sh", "-c", "cd /etc/cni/net.d && sha256sum * 2>/dev/null; true"]).stdout,
    }


def remove_markers(lab: Lab) -> None:
    for node in NODES:
        lab.exec(node, ["rm", "-f", MARKER, "/var/lib/cni/migrator-ra-secret"])


def check_ctx(target: Target, tmp: Path) -> CheckContext:
    return CheckContext(
        run_id="t", run_dir=tmp, artifacts_dir=tmp / "check", target=target, phase="preflight"
    )


# --------------------------------------------------------------------------------------------- tests


def test_playbook_runs_on_all_nodes_with_per_host_results_then_is_idempotent(
    lab: Lab, target: Target, tmp_path: Path
) -> None:
    remove_markers(lab)
    path = write_plan(tmp_path, [marker_stage(wave=2, marker_content="one")])
    first = apply(path, target)
    assert first.exit_code == 0, first.message
    for node in NODES:
        assert node_files(lab, node).get("migrator-ra-marker") == "one"
    events = journal(first)
    tasks = task_events(events)
    writes = {t["host"]: t["status"] for t in tasks if t["task"] == "Write the marker"}
    assert writes == dict.fromkeys(NODES, "changed")
    assert {t["host"] for t in tasks if t["task"] == "Fail on purpose"} == set(NODES)  # skipped
    ends = {e["node"]: e for e in of_type(events, "step.end")}
    assert set(ends) == set(NODES)
    for node, end in ends.items():
        assert end["outcome"] == "succeeded"
        assert end["result"]["hosts"][node]["changed"] == 1
        assert end["result"]["hosts"][node]["failed"] == 0
    # ansible-runner's private data dir is the step's artifacts folder inside the run folder
    assert list(first.run_dir.glob("steps/*/artifacts/*/job_events/*.json"))

    second = apply(path, target)  # idempotent: nothing changes the second time
    assert second.exit_code == 0, second.message
    ends = {e["node"]: e for e in of_type(journal(second), "step.end")}
    assert {node: end["result"]["changed"] for node, end in ends.items()} == dict.fromkeys(NODES, 0)
    assert {t["status"] for t in task_events(journal(second)) if t["task"] == "Write the marker"} == {"ok"}
    remove_markers(lab)


def test_failure_on_one_node_names_host_and_task_and_rolls_back(
    lab: Lab, target: Target, tmp_path: Path
) -> None:
    remove_markers(lab)
    path = write_plan(tmp_path, [marker_stage(wave=4, fail_on="node3")])
    result = apply(path, target)
    assert result.exit_code != 0
    events = journal(result)
    failed = [e for e in of_type(events, "step.end") if e["outcome"] == "failed"]
    assert [e["node"] for e in failed] == ["node3"]
    assert "node3" in failed[0]["error"] and "Fail on purpose" in failed[0]["error"]
    assert "failing on purpose on node3" in failed[0]["error"]
    assert failed[0]["error_type"] == "PlaybookFailed"
    summary = [e["event"] for e in of_type(events, "step.event") if e["event"].get("event") == "playbook"]
    node3 = next(s for s in summary if "node3" in s["hosts"])
    assert node3["hosts"]["node3"]["failed_task"] == "Fail on purpose"
    # rollback: the undo playbook ran on every node whose step started, and the markers are gone
    assert of_type(events, "rollback.start")
    undone = {t["host"] for t in task_events(events, "undo") if t["task"] == "Remove the marker"}
    assert undone == set(NODES)
    assert [e["outcome"] for e in of_type(events, "rollback.end")] == ["succeeded"]
    for node in NODES:
        assert "migrator-ra-marker" not in node_files(lab, node)


def test_dry_run_shows_check_mode_diff_and_changes_nothing(
    lab: Lab, target: Target, tmp_path: Path, home: Path
) -> None:
    remove_markers(lab)
    lab.exec("node2", ["sh", "-c", f"echo old > {MARKER}"])  # node2: a different content (a diff)
    try:
        path = write_plan(tmp_path, [marker_stage(wave=2, marker_content="new")])
        before = {n: node_state(lab, n) for n in NODES}
        report = dry_run(load_plan_file(path), target)
        after = {n: node_state(lab, n) for n in NODES}
        assert after == before
        lines: dict[str, list[str]] = {}
        for wave in report["stages"][0]["waves"]:
            for node in wave["nodes"]:
                lines[node["node"]] = [str(p) for p in node["steps"][0]["preview"]]
                assert "marker-absent.yml" in str(node["steps"][0]["undo"])
        assert set(lines) == set(NODES)
        text = "\n".join(lines["node2"])
        assert "node2: check mode: ok=1 changed=1" in text
        assert "node2 would change task 'Write the marker'" in text
        assert "-old" in text and "+new" in text
        assert "--check --diff" in text
        assert "+new" in "\n".join(lines["node1"])  # a new file: the whole content is added

        # the same through the CLI: `migrator plan` prints the check-mode diff, and changes nothing
        env = {**os.environ, "MIGRATOR_HOME": str(home), "PYTHONPATH": str(REPO), "COLUMNS": "250"}
        env["NO_COLOR"] = "1"
        argv = [sys.executable, "-m", "migrator.cli.main", "plan", str(path), "-t", f"lab:{lab.name}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "node2 would change task 'Write the marker'" in proc.stdout
        assert "-old" in proc.stdout and "+new" in proc.stdout
        assert "node2: check mode: ok=1 changed=1" in proc.stdout
        assert "undo:" in proc.stdout and "marker-absent.yml" in proc.stdout
        assert {n: node_state(lab, n) for n in NODES} == before
    finally:
        remove_markers(lab)


def test_dry_run_of_the_example_plan_and_apply(lab: Lab, target: Target) -> None:
    source = load_plan_file(REPO / "plans" / "examples" / "node-facts.yaml")
    report = dry_run(source, target)
    text = json.dumps(report)
    for node in NODES:
        assert f"{node}: nothing would change" in text
    result = apply_plan(source, target, options=EngineOptions())
    assert result.exit_code == 0, result.message
    events = journal(result)
    facts = [t for t in task_events(events) if t["task"] == "Node facts"]
    assert {t["host"] for t in facts} == set(NODES)
    assert all("migrator_node_facts" in t["facts"] for t in facts)
    assert [e["ok"] for e in of_type(events, "check.end") if e["phase"] == "preflight"] == [True]


def test_secret_vars_never_reach_the_run_folder(lab: Lab, target: Target, tmp_path: Path) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    step = {
        "name": "secret",
        "action": "ansible.playbook",
        "args": {
            "playbook": str(PLAYBOOKS / "secret.yml"),
            "vars": {"token": "${{ params.token }}"},
            "secret_vars": ["token"],
        },
        "no_undo": True,
    }
    params = {"token": {"type": "string", "secret": True, "default": ""}}
    path = write_plan(
        tmp_path, [{"name": "s", "for_each": {"max_unavailable": 2}, "steps": [step]}], params=params
    )
    try:
        result = apply(path, target, {"token": secret})
        assert result.exit_code == 0, result.message
        for node in NODES:  # the playbook did get the value
            assert lab.exec(node, ["cat", "/var/lib/cni/migrator-ra-secret"]).stdout.strip() == secret
        files = [p for p in result.run_dir.rglob("*") if p.is_file()]
        assert any("job_events" in str(p) for p in files)
        leaks = [p for p in files if secret.encode() in p.read_bytes()]
        assert leaks == []
        # the dry run with the same secret shows nothing of it either
        report = dry_run(load_plan_file(path, {"token": secret}), target)
        assert secret not in json.dumps(report)
    finally:
        remove_markers(lab)


def test_a_literal_in_secret_vars_is_refused(target: Target, tmp_path: Path) -> None:
    step = {
        "name": "literal",
        "action": "ansible.playbook",
        "args": {
            "playbook": str(PLAYBOOKS / "secret.yml"),
            "vars": {"token": "plain"},
            "secret_vars": ["token"],
        },
        "no_undo": True,
    }
    result = apply(write_plan(tmp_path, [{"name": "s", "steps": [step]}]), target)
    assert result.exit_code != 0
    ends = of_type(journal(result), "step.end")
    assert "secret_vars" in ends[0]["error"] and "secret: true" in ends[0]["error"]


def test_nodes_reachable_passes_then_names_missing_and_extra_hosts(
    lab: Lab, target: Target, tmp_path: Path
) -> None:
    checker = get_check("nodes.reachable")
    check = NodesReachableCheck(type="nodes.reachable")
    ok = checker.run(check_ctx(target, tmp_path), check)
    assert ok.ok, ok.summary
    assert ok.details["unreachable"] == [] and ok.details["missing"] == []

    assert target.inventory is not None
    text = target.inventory.read_text()
    node4 = next(line for line in text.splitlines() if line.startswith("node4 "))
    edited = text.replace(node4 + "\n", "").replace(
        "[workers]\n", "[workers]\nnode9 ansible_host=198.18.21.99\n"
    )
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(edited)
    other = Target(
        name=target.name,
        cluster=target.cluster,
        executor=AnsibleRunnerExecutor(inventory=inventory),
        inventory=inventory,
    )
    bad = checker.run(check_ctx(other, tmp_path / "2"), check)
    assert not bad.ok
    assert bad.details["missing"] == ["node4"] and bad.details["extra"] == ["node9"]
    assert "nodes missing from the inventory: node4" in bad.summary
    assert "inventory hosts that are not cluster nodes: node9" in bad.summary
    assert bad.details["unreachable"] == []  # node9 is not a cluster node: not pinged


def _stop_sshd(lab: Lab, node: str) -> None:
    """Kill the node's sshd (the lab state's pid) and its sessions, so that SSH masters die too."""
    pid = lab.require().nodes[node].sshd_pid
    assert pid is not None
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.update(int(c) for c in (task / "children").read_text().split())
    for child in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_unreachable_node_is_retried_then_fails_clearly_and_nodes_reachable_names_it(
    lab: Lab, target: Target, tmp_path: Path
) -> None:
    """Last test of the module: node4's sshd stays down until the lab is torn down."""
    remove_markers(lab)
    _stop_sshd(lab, "node4")
    retry = {"attempts": 3, "backoff": "1s"}
    path = write_plan(tmp_path, [marker_stage(wave=4, retry=retry)])
    result = apply(path, target)
    assert result.exit_code != 0
    events = journal(result)
    node4 = [e for e in of_type(events, "step.end") if e["node"] == "node4"]
    assert [e["outcome"] for e in node4] == ["retrying", "retrying", "failed"]
    assert all(e["error_type"] == "HostsUnreachable" for e in node4)
    assert "unreachable" in node4[-1]["error"] and "node4" in node4[-1]["error"]
    retries = [e for e in of_type(events, "step.retry") if e["key"].endswith("@node4")]
    assert len(retries) == 2
    others = {e["node"] for e in of_type(events, "step.end") if e["outcome"] == "succeeded"}
    assert others == {"node1", "node2", "node3"}

    # the dry run says node4 is unreachable instead of crashing
    report = dry_run(load_plan_file(path), target)
    assert "node4: UNREACHABLE in check mode" in json.dumps(report)

    bad = get_check("nodes.reachable").run(
        check_ctx(target, tmp_path / "c"), NodesReachableCheck(type="nodes.reachable")
    )
    assert not bad.ok
    assert bad.details["unreachable"] == ["node4"]
    assert bad.details["missing"] == [] and bad.details["extra"] == []
    assert "unreachable over SSH: node4" in bad.summary
