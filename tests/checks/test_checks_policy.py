"""``reachability`` and ``continuous-probe`` with ``scope: policy``, in plans run by the engine on the fake
target (a FakeProber enforcing what the test says, so runs can have holes and breaks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from migrator.checks.probe import MonitorState, Segment, WaveTracker, pick_policy_pairs
from migrator.engine import EngineOptions, RunResult, apply_plan, source_from_plan
from migrator.engine.engine import RunStatus
from migrator.plan.models import ContinuousProbeCheck, Plan, ReachabilityCheck
from migrator.ports import ProbeKind, ProbeResult, Target
from migrator.probe import policy
from migrator.runs.journal import read_journal
from migrator.testing.fake import FakeCluster, FakeProber, TableModel, deny_into_y, y_denied

POLICY = ProbeKind.POLICY


@pytest.fixture(autouse=True)
def table_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[TableModel]:
    """The expectation: pods of y accept only pods of y (our own verdict source, not the real model)."""
    model = TableModel(deny_into_y)
    monkeypatch.setattr(policy, "default_model", model)
    yield model


def plan(stages: list[dict[str, Any]], **spec: Any) -> Plan:
    return Plan.model_validate(
        {
            "apiVersion": "migrator/v1",
            "kind": "Plan",
            "metadata": {"name": "policy"},
            "spec": {"stages": stages, **spec},
        }
    )


def apply(p: Plan, target: Target) -> RunResult:
    return apply_plan(
        source_from_plan(p), target, options=EngineOptions(sleep=lambda _s: None, monitor_interval=0.02)
    )


def events(result: RunResult) -> list[dict[str, Any]]:
    return read_journal(result.run_dir / "journal.jsonl").events


def check_ends(result: RunResult) -> list[dict[str, Any]]:
    return [e for e in events(result) if e["type"] == "check.end"]


def netpol_target(**prober_kw: Any) -> Target:
    cluster = FakeCluster.netpol()
    return Target("fake", cluster, prober=FakeProber(cluster, **prober_kw))


REACH = {"type": "reachability", "scope": "policy", "probe_timeout": "0.2s"}
SLEEP = {"name": "wait", "action": "demo.sleep", "args": {"duration": "0.1s"}}


def test_plan_models_accept_scope_policy_and_refuse_what_does_not_apply() -> None:
    check = ReachabilityCheck.model_validate({**REACH, "namespaces": ["x", "y"]})
    assert check.scope.value == "policy" and check.namespaces == ["x", "y"]
    with pytest.raises(ValidationError, match="kinds: not used with scope policy"):
        ReachabilityCheck.model_validate({**REACH, "kinds": ["dns"]})
    with pytest.raises(ValidationError, match="sample_per_source"):
        ReachabilityCheck.model_validate({**REACH, "sample_per_source": 2})
    with pytest.raises(ValidationError, match="namespaces: only with scope policy"):
        ReachabilityCheck.model_validate({"type": "reachability", "namespaces": ["x"]})
    with pytest.raises(ValidationError, match="nodeport: not used with scope policy"):
        ContinuousProbeCheck.model_validate(
            {"type": "continuous-probe", "scope": "policy", "nodeport": "web"}
        )
    with pytest.raises(ValidationError, match="namespaces: only with scope policy"):
        ContinuousProbeCheck.model_validate({"type": "continuous-probe", "namespaces": ["x"]})


def test_policy_check_in_preflight_and_verify_passes_when_enforced() -> None:
    target = netpol_target(deny=y_denied)
    result = apply(plan([{"name": "s", "steps": [SLEEP]}], preflight=[REACH], verify=[REACH]), target)
    assert result.status is RunStatus.SUCCEEDED, result.message
    ends = check_ends(result)
    assert len(ends) == 2 and all(e["ok"] for e in ends)
    details = ends[0]["details"]
    assert details["kind"] == "policy" and details["summary"]["total"] == 288
    assert details["summary"]["expected_deny"] == 72 and details["mismatches_count"] == 0
    assert [(m["port"], m["protocol"]) for m in details["matrices"]] == [
        (80, "tcp"),
        (80, "udp"),
        (81, "tcp"),
        (81, "udp"),
    ]
    full = json.loads(Path(details["results_file"]).read_text())
    assert len(full["results"]) == 288 and full["results"][0]["kind"] == "policy"


def test_a_hole_at_preflight_fails_the_run_before_any_change() -> None:
    target = netpol_target(deny=lambda k: y_denied(k) and k[:2] != ("z/a", "y/c"))
    result = apply(plan([{"name": "s", "steps": [SLEEP]}], preflight=[REACH]), target)
    assert result.status is not RunStatus.SUCCEEDED
    assert not any(e["type"] == "step.start" for e in events(result))
    end = check_ends(result)[0]
    assert end["ok"] is False
    assert end["details"]["summary"]["holes"] == 4 and end["details"]["summary"]["breaks"] == 0
    assert (
        "hole: z/a -> y/c 80/tcp: expected deny, observed allow (deciding: y/deny-other-ns)" in end["summary"]
    )


def test_a_prober_error_fails_the_check_and_is_not_a_deny() -> None:
    target = netpol_target(deny=y_denied, errors={("x/a", "y/a", 80, "tcp"): "os-error: EMFILE"})
    result = apply(plan([{"name": "s", "steps": [SLEEP], "verify": [REACH]}]), target)
    assert result.status is not RunStatus.SUCCEEDED
    end = check_ends(result)[0]
    s = end["details"]["summary"]
    assert (s["errors"], s["holes"], s["breaks"], s["ok"]) == (1, 0, 0, 287)
    assert end["details"]["mismatches"][0]["observed"] == "error"


def monitor(**kw: Any) -> dict[str, Any]:
    return {
        "type": "continuous-probe",
        "scope": "policy",
        "rate_hz": 5,
        "sample_pairs": 300,
        "probe_timeout": "0.1s",
        **kw,
    }


def test_policy_monitor_passes_a_stage_enforced_as_expected() -> None:
    target = netpol_target(deny=y_denied)
    stage = {
        "name": "s",
        "monitor": [monitor()],
        "steps": [{"name": "wait", "action": "demo.sleep", "args": {"duration": "1s"}}],
    }
    result = apply(plan([stage]), target)
    assert result.status is RunStatus.SUCCEEDED, result.message
    end = next(e for e in events(result) if e["type"] == "monitor.end")
    assert end["aborted"] is False
    (series,) = result.run_dir.rglob("s-continuous.json")
    details = json.loads(series.read_text())
    expected_deny = details["policy"].pop("expected_deny")
    expected_allow = details["policy"].pop("expected_allow")
    assert details["policy"] == {
        "holes": 0,
        "breaks": 0,
        "errors": 0,
        "pairs_with_holes": 0,
        "pairs_with_breaks": 0,
    }
    assert details["pairs_count"] == 288 and details["sent"] >= 288 and details["lost"] == 0
    # every probe was expected one way or the other, and the 288 cases held both verdicts
    assert expected_deny + expected_allow == details["sent"] and expected_deny > 0 and expected_allow > 0


def test_policy_monitor_aborts_the_stage_on_a_break() -> None:
    cluster = FakeCluster.netpol()
    prober = FakeProber(cluster, deny=y_denied)
    target = Target("fake", cluster, prober=prober)
    stage = {
        "name": "s",
        "monitor": [monitor()],
        "steps": [{"name": "long", "action": "demo.sleep", "args": {"duration": "30s"}}],
    }
    prober.blocked.add(("x/b", "z/c", 81, "udp"))  # allowed traffic denied from the start
    result = apply(plan([stage]), target)
    assert result.status is RunStatus.FAILED_ROLLED_BACK
    failed = next(e for e in events(result) if e["type"] == "monitor.failed")
    assert "x/b -> z/c:81/udp (policy): 0 holes, 1 breaks, 0 prober errors" in failed["error"]
    assert failed["details"]["policy"]["breaks"] >= 1 and failed["details"]["policy"]["holes"] == 0
    long_end = next(e for e in events(result) if e["type"] == "step.end" and e["step"] == "long")
    assert long_end["outcome"] == "cancelled"


class Replay:
    def __init__(self, results: list[ProbeResult]) -> None:
        self.results = results

    def snapshot(self) -> list[ProbeResult]:
        return sorted(self.results, key=lambda x: x.ts)

    def stop(self) -> list[ProbeResult]:
        return self.snapshot()


def test_monitor_accounting_counts_holes_breaks_and_errors(tmp_path: Path) -> None:
    cluster = FakeCluster.netpol()
    check = ContinuousProbeCheck.model_validate(monitor(sample_pairs=300))
    pairs, expected = pick_policy_pairs(cluster, check, frozenset())
    assert len(pairs) == 288 and all(p.kind is POLICY for p in pairs)
    by_dest = {(p.source, p.dest): p for p in pairs}
    allowed = by_dest[("x/a", "x/b:80/tcp")]
    denied = by_dest[("x/a", "y/b:80/udp")]
    start = 1_000_000_000.0

    def res(t: Any, ok: bool, error: str | None, ts: float) -> ProbeResult:
        return ProbeResult(t.source, t.dest, POLICY, ok, 1.0 if ok else None, error, ts)

    results = [
        res(allowed, True, None, start + 1),
        res(allowed, False, "refused: x", start + 2),  # break
        res(denied, False, "refused: x", start + 1),  # as expected
        res(denied, True, None, start + 2),  # hole
        res(denied, False, "saturated: 9 in flight", start + 3),  # prober error: never a deny
    ]
    state = MonitorState(check, "s", WaveTracker(tmp_path / "none.jsonl", "s"), start)
    seg = Segment(
        Replay(results), pairs, {}, start, start + 10, frozenset(), horizon=start, expected=expected
    )
    state.segments.append(seg)
    state.account(seg, float("inf"))
    a = state.pairs[(allowed.source, allowed.dest, POLICY)]
    d = state.pairs[(denied.source, denied.dest, POLICY)]
    assert (a.sent, a.lost, a.breaks, a.holes) == (2, 1, 1, 0)
    assert (d.sent, d.lost, d.holes, d.errors) == (3, 2, 1, 1)
    assert state.policy_totals() == {
        "holes": 1,
        "breaks": 1,
        "errors": 1,
        "expected_deny": 3,  # the denied pair's three probes
        "expected_allow": 2,
        "pairs_with_holes": 1,
        "pairs_with_breaks": 1,
    }
    breaches = state.breaches(final=True)
    assert len(breaches) == 2
    assert "x/a -> y/b:80/udp (policy): 1 holes, 0 breaks, 1 prober errors in 3 probes" in breaches[1]


def test_policy_monitor_leaves_out_the_wave_nodes() -> None:
    cluster = FakeCluster.netpol()
    check = ContinuousProbeCheck.model_validate(monitor())
    node = cluster.pods["x/a"].node
    on_node = {p.key for p in cluster.list_pods() if p.node == node}
    pairs, _ = pick_policy_pairs(cluster, check, frozenset({node}))
    assert pairs and not any(p.source in on_node or p.dest.rpartition(":")[0] in on_node for p in pairs)
    sampled, _ = pick_policy_pairs(cluster, check.model_copy(update={"sample_pairs": 10}), frozenset())
    again, _ = pick_policy_pairs(cluster, check.model_copy(update={"sample_pairs": 10}), frozenset())
    assert len(sampled) == 10 and sampled == again
