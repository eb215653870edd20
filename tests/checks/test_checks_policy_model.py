"""A plan's ``scope: policy`` check with the real policy model over a NetworkPolicy applied to the fake
cluster (validated as the API server would), enforced by the fake prober as the policy says, then not."""

from __future__ import annotations

from typing import Any

import pytest

from migrator.engine import EngineOptions, apply_plan, source_from_plan
from migrator.engine.engine import RunStatus
from migrator.errors import UsageError
from migrator.plan.models import Plan
from migrator.policy.model import PolicyError
from migrator.ports import Target
from migrator.runs.journal import read_journal
from migrator.testing.fake import FakeCluster, FakeProber, y_denied

ONLY_Y_INTO_Y = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "only-same-namespace", "namespace": "y"},
    "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
}


def run(deny: Any) -> tuple[RunStatus, dict[str, Any]]:
    cluster = FakeCluster.netpol()
    cluster.apply_network_policy(ONLY_Y_INTO_Y, where="test")
    target = Target("fake", cluster, prober=FakeProber(cluster, deny=deny))
    plan = Plan.model_validate(
        {
            "apiVersion": "migrator/v1",
            "kind": "Plan",
            "metadata": {"name": "policy-model"},
            "spec": {
                "preflight": [{"type": "reachability", "scope": "policy"}],
                "stages": [
                    {
                        "name": "s",
                        "steps": [{"name": "w", "action": "demo.sleep", "args": {"duration": "0.1s"}}],
                    }
                ],
            },
        }
    )
    result = apply_plan(source_from_plan(plan), target, options=EngineOptions(sleep=lambda _s: None))
    events = read_journal(result.run_dir / "journal.jsonl").events
    return result.status, next(e for e in events if e["type"] == "check.end")


def test_enforced_as_the_policy_says() -> None:
    status, end = run(y_denied)
    assert status is RunStatus.SUCCEEDED and end["ok"]
    d = end["details"]
    assert d["policies"] == ["y/only-same-namespace"]
    assert d["summary"]["expected_deny"] == 72 and d["summary"]["ok"] == 288


def test_an_enforcer_that_ignores_the_policy_has_72_holes() -> None:
    status, end = run(lambda _key: False)
    assert status is not RunStatus.SUCCEEDED and not end["ok"]
    d = end["details"]
    assert d["summary"]["holes"] == 72 and d["summary"]["breaks"] == 0
    assert {tuple(m["policies"]) for m in d["mismatches"]} == {("y/only-same-namespace",)}


def test_the_fake_cluster_refuses_an_invalid_policy_naming_the_field() -> None:
    bad = {**ONLY_Y_INTO_Y, "spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}}
    with pytest.raises(PolicyError, match=r"spec\.ingress\[0\]\.ports\[0\]\.protocol"):
        FakeCluster.netpol().apply_network_policy(bad, where="bad.yaml")
    missing_ns = {**ONLY_Y_INTO_Y, "metadata": {"name": "p", "namespace": "nope"}}
    with pytest.raises(UsageError, match="namespaces 'nope' not found"):
        FakeCluster.netpol().apply_network_policy(missing_ns)
