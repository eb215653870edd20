from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.errors import UsageError
from migrator.ports import ProbeKind, ProbeResult
from migrator.probe.analysis import (
    PairStatus,
    check_continuous,
    continuous_stats,
    grid,
    loss_timeline,
    result_from_dict,
    result_to_dict,
    summarize,
)
from migrator.probe.suite import load_baseline, load_results, save_results

K = ProbeKind.POD_CROSS_NODE


def r(src: str, dst: str, ok: bool, kind: ProbeKind = K, ts: float = 0.0) -> ProbeResult:
    return ProbeResult(src, dst, kind, ok, 1.0 if ok else None, None if ok else "timeout", ts)


def test_summary_thresholds() -> None:
    results = [r("a", f"d{i}", i < 9) for i in range(10)] + [r("a", "s", True, ProbeKind.SERVICE_IP)]
    s = summarize(results)
    k = s.kind(K)
    assert k is not None and k.total == 10 and k.ok == 9 and k.pass_pct == pytest.approx(90.0)
    assert not s.passed
    assert summarize(results, threshold=90.0).passed
    assert summarize(results, threshold={K: 85.0}).passed
    assert [f.dest for f in s.failures] == ["d9"]
    assert s.statuses[("a", "d9", K)] is PairStatus.FAILED
    assert s.to_dict()["kinds"][0]["kind"] == K.value


def test_baseline_never_worked_not_blamed() -> None:
    baseline = [r("a", "b", True), r("a", "c", False), r("a", "d", False)]
    now = [r("a", "b", True), r("a", "c", False), r("a", "d", True), r("a", "e", True)]
    s = summarize(now, baseline=baseline)
    assert s.passed  # c never worked: reported, not counted
    assert [x.dest for x in s.never_worked] == ["c"]
    assert [x.dest for x in s.recovered] == ["d"]
    assert s.missing_from_baseline == 1
    k = s.kind(K)
    assert k is not None and k.never_worked == 1 and k.counted == 3 and k.pass_pct == 100.0
    broken = summarize([r("a", "b", False), r("a", "c", False)], baseline=baseline)
    assert not broken.passed
    assert [x.dest for x in broken.regressions] == ["b"]


def test_repeated_pair_fails_if_any_attempt_fails() -> None:
    s = summarize([r("a", "b", True), r("a", "b", False), r("a", "b", True)])
    assert not s.passed


def test_continuous_stats_and_outage() -> None:
    period = 0.05
    oks = [True] * 10 + [False] * 4 + [True] * 5 + [False] + [True] * 5 + [False] * 2
    results = [r("a", "b", ok, ts=100 + i * period) for i, ok in enumerate(oks)]
    results += [r("c", "d", True, ts=100 + i * period) for i in range(20)]
    stats = {(p.source, p.dest): p for p in continuous_stats(results, period_s=period)}
    ab = stats[("a", "b")]
    assert ab.sent == 27 and ab.lost == 7 and ab.outages == 3
    assert ab.longest_outage_ms == pytest.approx(200.0, abs=0.01)  # 4 lost probes -> 4 periods
    assert ab.loss_pct == pytest.approx(100 * 7 / 27)
    assert stats[("c", "d")].lost == 0 and stats[("c", "d")].longest_outage_ms == 0
    v = check_continuous(list(stats.values()), max_loss_pct=0.0)
    assert not v.passed and len(v.breaches) == 1 and "a -> b" in v.breaches[0]
    assert check_continuous(list(stats.values()), max_loss_pct=30, max_outage_ms=250).passed
    assert not check_continuous(list(stats.values()), max_outage_ms=150).passed
    assert v.to_dict()["longest_outage_ms"] == pytest.approx(200.0, abs=0.01)


def test_open_outage_counts_to_end() -> None:
    results = [r("a", "b", True, ts=0.0), r("a", "b", False, ts=0.1), r("a", "b", False, ts=0.2)]
    (p,) = continuous_stats(results, period_s=0.1)
    assert p.longest_outage_ms == pytest.approx(200.0)


def test_timeline_grid_and_json() -> None:
    results = [r("a", "b", i % 2 == 0, ts=10 + i * 0.25) for i in range(8)]
    buckets = loss_timeline(results, bucket_s=1.0)
    assert [(b.sent, b.lost) for b in buckets] == [(4, 2), (4, 2)]
    g = grid([r("a", "b", True), r("a", "c", False), r("b", "a", True, ProbeKind.SERVICE_IP)], kinds=[K])
    assert (
        g.sources == ("a",)
        and g.dests == ("b", "c")
        and g.cell("a", "c") is False
        and g.cell("b", "a") is None
    )
    assert result_from_dict(result_to_dict(results[1])) == results[1]


def test_flaky_counted_but_ok() -> None:
    flaky = ProbeResult("a", "b", K, True, 2.0, "flaky: timeout: after 1s", 0.0)
    s = summarize([flaky, r("a", "c", True)])
    k = s.kind(K)
    assert s.passed and k is not None and k.flaky == 1 and k.ok == 2


def test_baseline_matched_by_workload_after_pod_restart() -> None:
    ident = {
        "ns/a-1": "ns/Deployment/a",
        "ns/a-2": "ns/Deployment/a",
        "ns/b-1": "ns/Deployment/b",
        "ns/b-2": "ns/Deployment/b",
        "ns/c-1": "ns/Deployment/c",
        "ns/c-9": "ns/Deployment/c",
        "ns/c-2": "ns/Deployment/c",
    }
    baseline = [r("ns/a-1", "ns/b-1", False), r("ns/a-1", "ns/c-1", False), r("ns/a-1", "ns/c-9", True)]
    now = [r("ns/a-2", "ns/b-2", False), r("ns/a-2", "ns/c-2", False)]
    s = summarize(now, baseline=baseline, identity=ident)
    # a->b never worked (all baseline pairs of those workloads failed); a->c was mixed: blamed as usual
    assert s.statuses[("ns/a-2", "ns/b-2", K)] is PairStatus.NEVER_WORKED
    assert s.statuses[("ns/a-2", "ns/c-2", K)] is PairStatus.FAILED
    assert not s.passed
    without = summarize(now, baseline=baseline)
    assert without.statuses[("ns/a-2", "ns/b-2", K)] is PairStatus.FAILED


def test_baseline_file_round_trip(tmp_path: Path) -> None:
    results = [r("ns/a-1", "ns/b-1", False), r("ns/a-1", "ns/b-2", True)]
    path = tmp_path / "baseline.json"
    save_results(path, results, {"ns/a-1": "ns/Deployment/a"})
    base = load_baseline(path)
    assert list(base.results) == results and base.identities == {"ns/a-1": "ns/Deployment/a"}
    assert load_results(path) == results
    path.write_text(json.dumps([result_to_dict(x) for x in results]))  # a bare list still loads
    assert load_results(path) == results
    path.write_text("{not json")
    with pytest.raises(UsageError):
        load_baseline(path)
