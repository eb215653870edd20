"""Policy verification on the fake target: cases, classification, holes, breaks, prober errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from migrator.errors import PermanentError, UsageError
from migrator.policy.model import ContainerPort, Verdict
from migrator.policy.model import Protocol as L4
from migrator.ports import ProbeKind, ProbeProtocol, ProbeResult, Target
from migrator.probe.policy import (
    Observed,
    PolicyOptions,
    PolicyStatus,
    classify,
    judge_all,
    observed_of,
    policy_cases,
    policy_matrices,
    run_policy_verify,
)
from migrator.testing.fake import DenyMode, FakeCluster, FakeProber, TableModel, deny_into_y, y_denied

PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


def result(ok: bool, error: str | None) -> ProbeResult:
    return ProbeResult("x/a", "x/b:80/tcp", ProbeKind.POLICY, ok, 1.0 if ok else None, error)


@pytest.mark.parametrize(
    ("ok", "error", "observed"),
    [
        (True, None, Observed.ALLOW),
        (True, "flaky: timeout: after 0.5s", Observed.ALLOW),
        (False, "timeout: after 0.5s", Observed.DENY),
        (False, "refused: 10.244.1.2:80", Observed.DENY),
        (False, "reset: Connection reset by peer", Observed.DENY),
        (False, "unreachable: 10.244.1.2:80 No route to host", Observed.DENY),
        (False, "netns: no network namespace known for source x/a", Observed.ERROR),
        (False, "os-error: Too many open files", Observed.ERROR),
        (False, "saturated: 1024 probes in flight", Observed.ERROR),
        (False, "forbidden: no source namespace given", Observed.ERROR),
        (False, "http-status: 500 (expected 200)", Observed.ERROR),
        (False, None, Observed.ERROR),
        (False, "refusedish: x", Observed.ERROR),
    ],
)
def test_only_timeouts_and_rejects_are_an_observed_deny(
    ok: bool, error: str | None, observed: Observed
) -> None:
    assert observed_of(result(ok, error)) is observed


def test_classification_table() -> None:
    assert classify(Verdict.ALLOW, Observed.ALLOW) is PolicyStatus.OK
    assert classify(Verdict.DENY, Observed.DENY) is PolicyStatus.OK
    assert classify(Verdict.DENY, Observed.ALLOW) is PolicyStatus.HOLE
    assert classify(Verdict.ALLOW, Observed.DENY) is PolicyStatus.BREAK
    assert classify(Verdict.ALLOW, Observed.ERROR) is PolicyStatus.ERROR
    assert classify(Verdict.DENY, Observed.ERROR) is PolicyStatus.ERROR


def test_cases_cover_every_ordered_pair_and_port_self_excluded() -> None:
    cluster = FakeCluster.netpol()
    model = TableModel(deny_into_y)
    cases, inputs = policy_cases(cluster, model_factory=model)
    assert inputs.pods == 9
    assert len(cases) == 9 * 8 * 4
    assert all(c.source != c.dest for c in cases)
    assert {(c.source, c.dest) for c in cases} == {(s, d) for s in PODS for d in PODS if s != d}
    assert {(c.port, c.protocol, c.port_name) for c in cases} == {
        (80, L4.TCP, "serve-80-tcp"),
        (81, L4.TCP, "serve-81-tcp"),
        (80, L4.UDP, "serve-80-udp"),
        (81, L4.UDP, "serve-81-udp"),
    }
    pods = {p.key: p for p in cluster.list_pods()}
    for c in cases:
        assert c.target is not None
        assert c.target.kind is ProbeKind.POLICY
        assert c.target.host == pods[c.dest].ip and c.target.port == c.port
        assert c.target.protocol is (ProbeProtocol.UDP if c.protocol is L4.UDP else ProbeProtocol.TCP)
        assert c.target.dest == f"{c.dest}:{c.port}/{c.protocol.value.lower()}"
        assert c.expected is (Verdict.DENY if c.dest[0] == "y" and c.source[0] != "y" else Verdict.ALLOW)
    # the model saw every pod (with its declared ports) and was asked once per case
    assert model.built_with is not None and len(model.built_with[2]) == 9
    assert all(p.ports for p in model.built_with[2])
    assert len(model.asked) == len(cases)
    assert len({c.target.dest for c in cases if c.target}) == 9 * 4


def test_namespace_filter_host_network_and_unready_pods() -> None:
    cluster = FakeCluster.netpol()
    cluster.set_pod(replace(cluster.pods["x/c"], ready=False))
    cluster.set_pod(replace(cluster.pods["z/a"], host_network=True))
    cases, _ = policy_cases(
        cluster, PolicyOptions(namespaces=frozenset({"x", "z"})), model_factory=TableModel(deny_into_y)
    )
    endpoints = {c.source for c in cases} | {c.dest for c in cases}
    assert endpoints == {"x/a", "x/b", "z/b", "z/c"}
    assert len(cases) == 4 * 3 * 4


def test_sctp_ports_are_listed_unsupported_not_probed() -> None:
    cluster = FakeCluster.netpol()
    pod = cluster.pods["y/a"]
    cluster.set_pod(replace(pod, container_ports=(*pod.container_ports, ContainerPort(82, L4.SCTP, "sctp"))))
    target = Target("fake", cluster, prober=FakeProber(cluster, deny=y_denied))
    report = run_policy_verify(target, model_factory=TableModel(deny_into_y))
    assert report.passed, report.describe()
    assert len(report.unsupported) == 8 and {c.protocol for c in report.unsupported} == {L4.SCTP}
    assert report.summary.unsupported == 8 and report.summary.total == 9 * 8 * 4
    assert all(r.case.protocol is not L4.SCTP for r in report.results)
    assert report.to_dict()["unsupported"][0]["reason"] == "unsupported: no SCTP probe"


def test_enforcement_as_expected_passes() -> None:
    cluster = FakeCluster.netpol()
    prober = FakeProber(cluster, deny=y_denied)
    report = run_policy_verify(Target("fake", cluster, prober=prober), model_factory=TableModel(deny_into_y))
    s = report.summary
    assert report.passed and s.ok == s.total == 288
    assert s.expected_deny == 6 * 3 * 4 and s.holes == s.breaks == s.errors == 0
    assert prober.calls == [288]


@pytest.mark.parametrize("mode", list(DenyMode))
def test_holes_and_breaks_are_named_with_their_policies(mode: DenyMode) -> None:
    cluster = FakeCluster.netpol()

    def actual(key: tuple[str, str, int, str]) -> bool:
        src, dst, port, proto = key
        if (src, dst, port, proto) == ("x/a", "y/b", 81, "udp"):
            return False  # hole: the enforcer forgot UDP 81
        if (src, dst) == ("z/c", "x/b") and proto == "tcp":
            return True  # break: allowed traffic denied
        return y_denied(key)

    prober = FakeProber(cluster, deny=actual, mode=mode)
    report = run_policy_verify(Target("fake", cluster, prober=prober), model_factory=TableModel(deny_into_y))
    s = report.summary
    assert not report.passed
    assert (s.holes, s.breaks, s.errors) == (1, 2, 0)
    bad = {
        (r.case.source, r.case.dest, r.case.port, r.case.protocol.value, r.status) for r in report.mismatches
    }
    assert bad == {
        ("x/a", "y/b", 81, "UDP", PolicyStatus.HOLE),
        ("z/c", "x/b", 80, "TCP", PolicyStatus.BREAK),
        ("z/c", "x/b", 81, "TCP", PolicyStatus.BREAK),
    }
    hole = next(r for r in report.mismatches if r.status is PolicyStatus.HOLE)
    assert hole.describe() == (
        "hole: x/a -> y/b 81/udp: expected deny, observed allow (deciding: y/deny-other-ns)"
    )
    brk = next(r for r in report.mismatches if r.status is PolicyStatus.BREAK)
    code = "timeout" if mode is DenyMode.DROP else "refused"
    assert brk.observed is Observed.DENY and (brk.error or "").startswith(code)
    assert "no policy selects either pod" in brk.describe()


def test_prober_errors_are_never_counted_as_deny() -> None:
    cluster = FakeCluster.netpol()
    errors = {
        ("x/a", "y/a", 80, "tcp"): "os-error: Too many open files",  # expected deny
        ("x/a", "x/b", 80, "tcp"): "saturated: 9 probes in flight",  # expected allow
    }
    prober = FakeProber(cluster, deny=y_denied, errors=errors)
    report = run_policy_verify(Target("fake", cluster, prober=prober), model_factory=TableModel(deny_into_y))
    s = report.summary
    assert not report.passed
    assert (s.holes, s.breaks, s.errors, s.ok) == (0, 0, 2, 286)
    by_key = {
        (r.case.source, r.case.dest, r.case.port, r.case.protocol.value.lower()): r for r in report.results
    }
    for key in errors:
        assert by_key[key].observed is Observed.ERROR and by_key[key].status is PolicyStatus.ERROR
        assert by_key[key].to_dict()["observed"] == "error" and by_key[key].to_dict()["ok"] is False


def test_a_source_the_prober_cannot_reach_is_an_error_not_a_deny() -> None:
    cluster = FakeCluster.netpol()
    prober = FakeProber(cluster, deny=y_denied)
    real_probe = prober.probe

    def probe_without_x_a(targets, *, concurrency=256):  # type: ignore[no-untyped-def]
        # the lab prober's answer for a source it knows no namespace for
        return [
            r
            if r.source != "x/a"
            else replace(r, ok=False, latency_ms=None, error="netns: no network namespace")
            for r in real_probe(targets, concurrency=concurrency)
        ]

    prober.probe = probe_without_x_a  # type: ignore[method-assign]
    report = run_policy_verify(Target("fake", cluster, prober=prober), model_factory=TableModel(deny_into_y))
    assert report.summary.errors == 8 * 4 and report.summary.holes == report.summary.breaks == 0


def test_results_are_paired_with_their_probes_by_key() -> None:
    cluster = FakeCluster.netpol()
    cases, _ = policy_cases(cluster, model_factory=TableModel(deny_into_y))
    probes = [c.target for c in cases if c.target is not None]
    answers = FakeProber(cluster, deny=y_denied).probe(probes)
    in_order = judge_all(cases, answers)
    assert judge_all(cases, list(reversed(answers))) == in_order  # a prober may answer in any order
    assert all(r.ok for r in in_order)
    with pytest.raises(UsageError, match="no result for z/c -> z/b:81/udp"):
        judge_all(cases, answers[:-1])
    with pytest.raises(UsageError, match="two results for x/a -> x/b:80/tcp"):
        judge_all(cases, [answers[0], *answers])
    stray = replace(answers[0], dest="x/b:9999/tcp")
    with pytest.raises(UsageError, match="which was not probed"):
        judge_all(cases, [*answers, stray])


def test_matrices_are_truth_tables_per_port_and_protocol() -> None:
    cluster = FakeCluster.netpol()
    prober = FakeProber(
        cluster,
        deny=lambda k: y_denied(k) and k != ("x/a", "y/a", 80, "tcp"),
        errors={("z/c", "z/b", 81, "udp"): "os-error: boom"},
        blocked={("y/b", "y/c", 81, "tcp")},
    )
    report = run_policy_verify(Target("fake", cluster, prober=prober), model_factory=TableModel(deny_into_y))
    matrices = {(m["port"], m["protocol"]): m for m in policy_matrices(report.results, report.pods())}
    assert set(matrices) == {(80, "tcp"), (81, "tcp"), (80, "udp"), (81, "udp")}
    m = matrices[(80, "tcp")]
    assert m["pods"] == PODS
    assert m["rows"][0] == "-..HXX..."  # x/a: hole to y/a, denied to y/b y/c as expected
    assert m["rows"][3] == "...-....."  # y/a: allowed everywhere
    assert matrices[(81, "tcp")]["rows"][4] == "....-B..."
    assert matrices[(81, "udp")]["rows"][8][7] == "?"
    assert all(row[i] == "-" for mm in matrices.values() for i, row in enumerate(mm["rows"]))
    assert m["counts"] == {".": 54, "X": 17, "H": 1, "B": 0, "?": 0}


def test_bad_timeout_and_empty_matrix_are_usage_errors() -> None:
    cluster = FakeCluster.netpol()
    with pytest.raises(UsageError, match="timeout"):
        policy_cases(cluster, PolicyOptions(timeout=0), model_factory=TableModel(deny_into_y))
    target = Target("fake", cluster, prober=FakeProber(cluster))
    with pytest.raises(UsageError, match="empty"):
        run_policy_verify(
            target, PolicyOptions(namespaces=frozenset({"nope"})), model_factory=TableModel(deny_into_y)
        )
    with pytest.raises(UsageError, match="no prober"):
        run_policy_verify(Target("fake", cluster), model_factory=TableModel(deny_into_y))


def test_matrices_in_details_are_bounded_to_the_pods_of_a_mismatch() -> None:
    cluster = FakeCluster.netpol()
    for i in range(60):  # 69 pods: more than a side of 40
        cluster.set_pod(replace(cluster.pods["x/a"], name=f"extra-{i:02}", ip=f"10.244.9.{i + 10}"))
    cluster.set_pod(replace(cluster.pods["x/a"], container_ports=cluster.pods["x/a"].container_ports[:1]))
    prober = FakeProber(cluster, deny=y_denied, blocked={("x/extra-07", "z/b", 80, "tcp")})
    report = run_policy_verify(Target("fake", cluster, prober=prober), model_factory=TableModel(deny_into_y))
    assert report.summary.breaks == 1
    full = policy_matrices(report.results, report.pods())
    assert len(full[0]["pods"]) == 69 and not full[0]["filtered"]
    bounded = {(m["port"], m["protocol"]): m for m in report.details()["matrices"]}
    m = bounded[(80, "tcp")]
    assert m["filtered"] and not m["truncated"] and m["pods"] == ["x/extra-07", "z/b"]
    assert m["rows"] == ["-B", ".-"]
    assert m["counts"]["B"] == 1 and sum(m["counts"].values()) == 69 * 68
    assert bounded[(81, "udp")]["pods"] == [] and bounded[(81, "udp")]["counts"]["?"] == 0


def test_fake_cluster_keeps_namespaces_policies_and_ports_in_its_state_file(tmp_path: Path) -> None:
    state = tmp_path / "fake.json"
    cluster = FakeCluster.netpol(state_file=state)
    cluster.create_namespace("x", {"ns": "x", "team": "blue"})
    policy = cluster.apply_network_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "z"},
            "spec": {"podSelector": {}},
        }
    )
    again = FakeCluster(state_file=state)
    assert [p.key for p in again.list_network_policies()] == ["z/deny-all"] == [policy.key]
    assert again.list_network_policies("x") == []
    x = next(n for n in again.list_namespaces() if n.name == "x")
    assert x.labels == {"ns": "x", "team": "blue", "kubernetes.io/metadata.name": "x"}
    assert again.pods["y/b"].container_ports == cluster.pods["y/b"].container_ports
    assert len(again.pods["y/b"].container_ports) == 4
    again.delete_network_policy("z", "deny-all")
    assert FakeCluster(state_file=state).list_network_policies() == []
    with pytest.raises(UsageError, match="not found"):
        again.delete_network_policy("z", "deny-all")
    with pytest.raises(PermanentError, match="cannot be kept in a state file"):
        again.add_network_policy(policy)
    assert again.list_network_policies() == []  # refused before any change
