"""``cni-switch-teardown.yml`` against real sshd nodes: the whole node side of a switch in ONE run (one
teardown task, then a wait on the controller for migrator's signal file, then the blocking config removed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sshnodes import SshNodeFarm
from test_ansible_executor import node_state, seed_flannel, unseed

from migrator.playbooks import PlaybookFailed
from migrator.ports import PlaybookRequest, PlaybookResult
from migrator.targets.ansible.executor import AnsibleRunnerExecutor

pytestmark = [pytest.mark.lab, pytest.mark.slow]

BLOCKING = "/etc/cni/net.d/00-migrator-blocking.conflist"
FLANNEL_VARS: dict[str, Any] = {
    "links": ["flannel.1", "cni0"],
    "chain_prefixes": ["FLANNEL"],
    "cni_files": ["10-flannel.conflist"],
    "extra_files": ["/run/flannel/subnet.env"],
    "fail_at_node": "",
}


def exists(farm: SshNodeFarm, node: str, path: str) -> bool:
    return farm.node_exec(node, ["sh", "-c", f"test -e {path} && echo yes || echo no"]).strip() == "yes"


def start(
    executor: AnsibleRunnerExecutor, node: str, extra: dict[str, Any], data_dir: Path
) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            request = PlaybookRequest(
                playbook=Path("cni-switch-teardown.yml"), hosts=(node,), extra_vars=extra
            )
            box["result"] = executor.run_playbook(request, data_dir=data_dir)
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, box


def wait_for(path: Path, thread: threading.Thread, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"the playbook never waited for the signal ({path}.waiting missing)"


@pytest.fixture
def node(farm: SshNodeFarm, hosts: tuple[str, ...]) -> Any:
    name = hosts[0]
    seed_flannel(farm, name)
    farm.node_exec(
        name, ["sh", "-c", "mkdir -p /run/flannel; echo FLANNEL_MTU=1450 > /run/flannel/subnet.env"]
    )
    try:
        yield name
    finally:
        unseed(farm, name)
        farm.node_exec(name, ["rm", "-f", BLOCKING, "/run/flannel/subnet.env"])


def test_check_mode_previews_every_part_and_changes_nothing(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, node: str, tmp_path: Path
) -> None:
    before = node_state(farm, node)
    extra = {**FLANNEL_VARS, "switch_signal": str(tmp_path / "sig")}
    preview = executor.run_playbook(
        PlaybookRequest(
            playbook=Path("cni-switch-teardown.yml"), hosts=(node,), extra_vars=extra, check=True
        ),
        data_dir=tmp_path / "check",
    )
    assert node_state(farm, node) == before and exists(farm, node, "/run/flannel/subnet.env")
    headers = [d.get("before_header") for d in preview.hosts[node].diffs]
    assert headers == [
        BLOCKING,
        "links",
        "iptables chains and jump rules",
        "/etc/cni/net.d/10-flannel.conflist",
        "/run/flannel/subnet.env",
    ]
    chains = next(
        d for d in preview.hosts[node].diffs if d.get("before_header") == "iptables chains and jump rules"
    )
    assert "chain FLANNEL-FWD" in chains["before"] and "chain FLANNEL-POSTRTG" in chains["before"]
    assert "KUBE-FORWARD" not in chains["before"]
    assert not (tmp_path / "sig.waiting").exists()  # check mode waits for no signal


def test_one_run_teardown_then_signal_go_unblocks(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, node: str, tmp_path: Path
) -> None:
    signal = tmp_path / "sig"
    thread, box = start(executor, node, {**FLANNEL_VARS, "switch_signal": str(signal)}, tmp_path / "run")
    wait_for(Path(f"{signal}.waiting"), thread)
    # the node is between two CNIs: blocked, nothing of flannel left, the run still waiting
    state = node_state(farm, node)
    assert exists(farm, node, BLOCKING) and thread.is_alive()
    assert not {"flannel.1", "cni0"} & set(state["links"])
    assert not any("FLANNEL" in line for line in state["iptables"])
    assert any("KUBE-FORWARD" in line for line in state["iptables"])
    assert not exists(farm, node, "/etc/cni/net.d/10-flannel.conflist")
    assert not exists(farm, node, "/run/flannel/subnet.env")
    signal.write_text("go\n")
    thread.join(60)
    assert not thread.is_alive() and "error" not in box, box
    result: PlaybookResult = box["result"]
    assert result.hosts[node].changed == 2  # the teardown task and the unblock
    assert not exists(farm, node, BLOCKING)
    # idempotent: again, nothing to tear down (the blocking config comes and goes)
    signal.unlink()
    thread, box = start(executor, node, {**FLANNEL_VARS, "switch_signal": str(signal)}, tmp_path / "again")
    wait_for(Path(f"{signal}.waiting"), thread)
    signal.write_text("go\n")
    thread.join(60)
    diffs = box["result"].hosts[node].diffs
    assert [d.get("before_header") for d in diffs] == [BLOCKING]
    assert not exists(farm, node, BLOCKING)


def test_abort_keeps_the_node_blocked_and_fail_at_node_fails_after_blocking(
    farm: SshNodeFarm, executor: AnsibleRunnerExecutor, node: str, tmp_path: Path
) -> None:
    signal = tmp_path / "sig"
    thread, box = start(executor, node, {**FLANNEL_VARS, "switch_signal": str(signal)}, tmp_path / "abort")
    wait_for(Path(f"{signal}.waiting"), thread)
    signal.write_text("abort\n")
    thread.join(60)
    assert "error" not in box, box
    assert exists(farm, node, BLOCKING)  # abort: no pod gets wired, the rollback takes it from there

    farm.node_exec(node, ["rm", "-f", BLOCKING])
    unseed(farm, node)
    seed_flannel(farm, node)
    failing = {**FLANNEL_VARS, "fail_at_node": node, "switch_signal": str(tmp_path / "sig2")}
    thread, box = start(executor, node, failing, tmp_path / "fail")
    thread.join(60)
    err = box.get("error")
    assert isinstance(err, PlaybookFailed) and "failure injected on" in str(err), box
    assert exists(farm, node, BLOCKING) and exists(farm, node, "/etc/cni/net.d/10-flannel.conflist")
    assert not (tmp_path / "sig2.waiting").exists()
