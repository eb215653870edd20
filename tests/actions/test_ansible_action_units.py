"""Units of the ``ansible.playbook`` action that need no lab: secret var detection, summaries, previews."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.actions.ansible import AnsiblePlaybook, host_summary, secret_names
from migrator.actions.base import get_action
from migrator.actions.context import StepContext
from migrator.checks.base import get_check
from migrator.errors import PlanError
from migrator.plan.models import AnsiblePlaybookArgs
from migrator.ports import HostResult, PlaybookResult, RunnerStatus, Target
from migrator.runs.journal import Scrubber


def ctx(tmp_path: Path, secrets: tuple[str, ...] = ()) -> StepContext:
    target = Target(name="none", cluster=None)  # type: ignore[arg-type]  # never used by these units
    return StepContext(
        run_id="r", run_dir=tmp_path, artifacts_dir=tmp_path / "a", target=target, scrub=Scrubber(secrets)
    )


def test_registered_under_the_plan_names() -> None:
    assert isinstance(get_action("ansible.playbook"), AnsiblePlaybook)
    assert get_check("nodes.reachable").name == "nodes.reachable"


def test_secret_names_from_secret_params_and_secret_vars(tmp_path: Path) -> None:
    c = ctx(tmp_path, ("hunter2",))
    values = {"token": "hunter2", "url": "https://u:hunter2@x", "plain": "a", "n": 3}
    assert secret_names(c, values, []) == {"token", "url"}
    assert secret_names(c, values, ["token"]) == {"token", "url"}
    assert secret_names(c, values, ["missing"]) == {"token", "url"}
    with pytest.raises(PlanError, match="'plain' is listed in secret_vars"):
        secret_names(c, values, ["plain"])


def test_host_summary_and_undo_preview(tmp_path: Path) -> None:
    result = PlaybookResult(
        status=RunnerStatus.FAILED,
        hosts={
            "b": HostResult(host="b", ok=1, failed=1, failed_task="T", message="boom"),
            "a": HostResult(host="a", ok=2, changed=1),
        },
    )
    summary = host_summary(result)
    assert list(summary) == ["a", "b"]
    assert summary["a"] == {"ok": 2, "changed": 1, "failed": 0, "skipped": 0, "unreachable": False}
    assert summary["b"]["failed_task"] == "T" and summary["b"]["message"] == "boom"
    action = AnsiblePlaybook()
    c = ctx(tmp_path)
    assert action.undo_preview(c, AnsiblePlaybookArgs(playbook="x.yml")) == [
        "nothing to undo (no undo_playbook)"
    ]
    with_undo = AnsiblePlaybookArgs(playbook="x.yml", undo_playbook="y.yml", undo_vars={"k": 1})
    assert "y.yml" in str(action.undo_preview(c, with_undo))


def test_preview_without_an_executor_says_so(tmp_path: Path) -> None:
    lines = AnsiblePlaybook().preview(ctx(tmp_path), AnsiblePlaybookArgs(playbook="ping.yml"))
    assert len(lines) == 1 and "has no node executor" in str(lines[0])
