"""Unit tests of the event mapping, on ansible-runner events recorded from real runs (``data/*.json``).

Re-record with ``PYTHONPATH=. python tests/ansible/record_events.py`` (root).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from migrator.errors import Interrupted, StepFailed, StepTimeout, TemporaryError
from migrator.playbooks import (
    HostsUnreachable,
    PlaybookFailed,
    PlaybookInterrupted,
    PlaybookTimeout,
    error_for,
    preview,
    render_diff,
)
from migrator.ports import HostResult, PlaybookResult, RunnerStatus
from migrator.targets.ansible.events import REDACTED, SecretScrubber, host_results, task_event

DATA = Path(__file__).parent / "data"


@cache
def recorded(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return doc


def result_of(name: str) -> PlaybookResult:
    doc = recorded(name)
    return PlaybookResult(status=RunnerStatus(doc["status"]), hosts=host_results(doc["events"], doc["hosts"]))


def forwarded(name: str) -> list[dict[str, Any]]:
    return [e for e in (task_event(ev) for ev in recorded(name)["events"]) if e is not None]


def test_ok_run_maps_to_ok_hosts_and_no_error() -> None:
    result = result_of("ping_ok")
    assert result.status is RunnerStatus.SUCCESSFUL
    assert result.hosts == {h: HostResult(host=h, ok=1) for h in ("ans-n1", "ans-n2", "ans-n3")}
    assert error_for(result, playbook="ping.yml") is None
    events = forwarded("ping_ok")
    assert len(events) == 3 and {e["status"] for e in events} == {"ok"}
    assert set(events[0]) == {
        "event",
        "host",
        "task",
        "action",
        "play",
        "status",
        "ignored",
        "msg",
        "diff",
        "facts",
        "duration",
        "created",
    }
    json.dumps(events)


def test_failed_task_names_host_task_and_message() -> None:
    result = result_of("fail_one")
    bad = result.hosts["ans-n2"]
    assert bad.failed == 1 and bad.failed_task == "Fail on purpose"
    assert bad.message == "failing on purpose on ans-n2"
    for good in ("ans-n1", "ans-n3"):  # their ignored failure does not count
        assert result.hosts[good].failed == 0 and result.hosts[good].failed_task is None
    err = error_for(result, playbook="fail-on-purpose.yml")
    assert isinstance(err, PlaybookFailed) and isinstance(err, StepFailed)
    assert err.node == "ans-n2" and err.detail == "failing on purpose on ans-n2"
    assert "ans-n2: task 'Fail on purpose': failing on purpose on ans-n2" in str(err)
    assert err.result is result
    statuses = {(e["host"], e["task"]): (e["status"], e["ignored"]) for e in forwarded("fail_one")}
    assert statuses[("ans-n2", "Fail on purpose")] == ("failed", False)
    assert statuses[("ans-n1", "Fail on purpose")] == ("skipped", False)
    assert statuses[("ans-n1", "Ignored failure")] == ("failed", True)


def test_rescued_failure_does_not_count_and_loop_item_failure_is_named() -> None:
    result = result_of("rescue_loop")
    assert result.hosts["ans-n1"].failed == 0 and result.hosts["ans-n1"].failed_task is None
    n3 = result.hosts["ans-n3"]
    assert n3.failed == 1 and n3.failed_task == "Loop with a failing item"
    assert n3.message is not None and n3.message.startswith("item 'ans-n3'")
    err = error_for(result, playbook="rescue.yml")
    assert isinstance(err, StepFailed) and err.node == "ans-n3"


def test_unreachable_host_is_a_temporary_error() -> None:
    result = result_of("unreachable")
    assert result.hosts["ans-n3"].unreachable and result.hosts["ans-n3"].failed == 0
    assert result.hosts["ans-n1"].ok == 1
    err = error_for(result, playbook="ping.yml")
    assert isinstance(err, HostsUnreachable) and isinstance(err, TemporaryError)
    assert err.hosts == ("ans-n3",) and "198.19.20.13" in str(err) and err.delay > 0
    assert [e["status"] for e in forwarded("unreachable") if e["host"] == "ans-n3"] == ["unreachable"]


def test_failed_and_unreachable_together_is_a_step_failure() -> None:
    hosts = {
        "a": HostResult(host="a", failed=1, failed_task="t", message="boom"),
        "b": HostResult(host="b", unreachable=True, failed_task="t", message="refused"),
    }
    err = error_for(PlaybookResult(status=RunnerStatus.FAILED, hosts=hosts), playbook="p.yml")
    assert isinstance(err, PlaybookFailed) and err.node == "a" and "b: unreachable: refused" in str(err)


def test_check_mode_diff_is_forwarded_and_kept_per_host() -> None:
    result = result_of("check_diff")
    for host in ("ans-n1", "ans-n2"):
        h = result.hosts[host]
        assert h.changed == 1 and h.skipped == 1
        (diff,) = h.diffs
        assert diff["task"] == "Install the CNI config file"
        assert diff["after_header"] == "/etc/cni/net.d/10-calico.conflist"
        assert "k8s-pod-network" in diff["after"]
    changed = [e for e in forwarded("check_diff") if e["status"] == "changed"]
    assert len(changed) == 2 and all(e["diff"] for e in changed)


def test_node_facts_are_forwarded() -> None:
    (event,) = forwarded("node_facts")
    facts = event["facts"]["migrator_node_facts"]
    assert {"cni", "interfaces", "routes", "iptables", "flannel_subnet_env"} <= set(facts)
    assert "eth0" in {i["name"] for i in facts["interfaces"]}


def test_timeout_without_stats_and_cancel() -> None:
    result = result_of("timeout")
    assert result.status is RunnerStatus.TIMEOUT
    assert result.hosts["ans-n1"] == HostResult(host="ans-n1")
    err = error_for(result, playbook="sleep.yml", timeout=2)
    assert isinstance(err, PlaybookTimeout) and isinstance(err, StepTimeout) and "after 2s" in str(err)
    canceled = error_for(PlaybookResult(status=RunnerStatus.CANCELED, hosts={}), playbook="x.yml")
    assert isinstance(canceled, PlaybookInterrupted) and isinstance(canceled, Interrupted)


def test_failed_run_without_host_to_blame_uses_output_tail() -> None:
    err = error_for(
        PlaybookResult(status=RunnerStatus.FAILED, hosts={"a": HostResult(host="a")}),
        playbook="bad.yml",
        output_tail="ERROR! a syntax error",
    )
    assert isinstance(err, PlaybookFailed) and "syntax error" in str(err)


@pytest.mark.parametrize("name", ["ping_ok", "fail_one", "rescue_loop", "check_diff", "unreachable"])
def test_scrubber_removes_a_value_everywhere(name: str) -> None:
    events = json.loads(json.dumps(recorded(name)["events"]))
    scrubber = SecretScrubber(["ans-n2"])  # pretend the host name were a secret
    for event in events:
        scrubber.scrub_in_place(event)
    text = json.dumps(events)
    assert "ans-n2" not in text and REDACTED in text
    assert "ans-n2" not in json.dumps([task_event(e, scrubber) for e in recorded(name)["events"]])


def test_scrubber_edge_cases() -> None:
    s = SecretScrubber(["abc", "abcdef", "", None, 1234])
    assert s.text("x abcdef y abc 1234") == f"x {REDACTED} y {REDACTED} {REDACTED}"
    assert s.scrub({"abc": ["abc", 1, None]}) == {REDACTED: [REDACTED, 1, None]}
    assert not SecretScrubber([])
    nested = SecretScrubber([{"user": "admin-x", "tokens": ["t0k3n", True]}])
    assert nested.text("admin-x:t0k3n True") == f"{REDACTED}:{REDACTED} True"


def test_preview_renders_check_mode_diffs_per_host() -> None:
    blocks = preview(result_of("check_diff"))
    assert set(blocks) == {"ans-n1", "ans-n2"}
    (block,) = blocks["ans-n1"]
    assert block.startswith("task 'Install the CNI config file':")
    assert "+++ /etc/cni/net.d/10-calico.conflist" in block and '+  "name": "k8s-pod-network"' in block
    assert preview(result_of("ping_ok")) == {h: [] for h in ("ans-n1", "ans-n2", "ans-n3")}
    assert preview(result_of("unreachable"))["ans-n3"][0].startswith("unreachable: task 'Ping'")


def test_render_diff_shapes() -> None:
    assert render_diff({"prepared": "--- a\n+++ b\n"}) == "--- a\n+++ b"
    text = render_diff(
        {
            "before": {"path": "/x", "state": "file"},
            "after": {"path": "/x", "state": "absent"},
            "before_header": "/x",
        }
    )
    assert "-state: file" in text and "+state: absent" in text and "+++ /x" in text
