"""``migrator verify`` core and CLI glue on the pbt fabric."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from pbt_fabric import POD_PORT, Fabric
from rich.console import Console
from typer.testing import CliRunner

from migrator.cli import verify as verify_cli
from migrator.errors import CheckFailed, UsageError
from migrator.ports import ProbeKind, ProbeResult, ProbeTarget, Target
from migrator.probe.matrix import MatrixOptions, find_dns_server
from migrator.probe.suite import (
    load_results,
    monitor_verdict,
    require_no_breach,
    require_reachable,
    run_verify,
    start_monitor,
)
from migrator.targets.lab.prober import LabProber

pytestmark = pytest.mark.lab


@pytest.fixture
def target(fabric: Fabric) -> Target:
    return Target(
        name="pbt", cluster=fabric.cluster, prober=LabProber(fabric.netns, dns_server=fabric.dns_ip)
    )


def render(target: Target, **kw: object) -> tuple[int, str]:
    buf = io.StringIO()
    code = verify_cli.verify_target(target, console=Console(file=buf, width=160, color_system=None), **kw)  # type: ignore[arg-type]
    return code, buf.getvalue()


def test_verify_text_healthy(target: Target) -> None:
    code, text = render(target)
    assert code == 0
    assert "PASSED" in text and "Pod to pod" in text and "✗" not in text
    for kind in set(ProbeKind) - {ProbeKind.POLICY}:  # policy: only with --scope policy
        assert kind.value in text


def test_verify_json_and_baseline(fabric: Fabric, target: Target, tmp_path: Path) -> None:
    victim = "default/web-2-1"
    ns = fabric.pod_ns[victim]
    rule = (
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        str(POD_PORT),
        "-s",
        fabric.pod("default/web-0-1").ip or "",
        "-j",
        "REJECT",
    )
    base = tmp_path / "baseline.json"
    fabric.iptables(ns, "-I", *rule)
    try:
        code, text = render(target, options=MatrixOptions(timeout=0.5), save=base)
        assert code == 1 and "FAILED" in text and "default/web-0-1 -> default/web-2-1" in text
        with pytest.raises(CheckFailed, match=r"pod-cross-node: 23/24 ok"):
            require_reachable(run_verify(target, options=MatrixOptions(timeout=0.5)))
        assert len(load_results(base)) > 50
        # the same broken pair again, compared with the baseline: never worked, not blamed
        code, text = render(target, options=MatrixOptions(timeout=0.5), baseline=base)
        assert code == 0 and "[never worked]" in text
        buf = io.StringIO()
        code = verify_cli.verify_target(
            target,
            output=verify_cli.OutputFormat.JSON,
            baseline=base,
            console=Console(file=buf, width=100000, color_system=None),
        )
        data = json.loads(buf.getvalue())
        assert code == 0 and data["passed"] is True
        assert [(r["source"], r["dest"]) for r in data["summary"]["never_worked"]] == [
            ("default/web-0-1", victim)
        ]
    finally:
        fabric.iptables(ns, "-D", *rule)
    # healed: the pair recovered, still passing
    report = run_verify(target, baseline=load_results(base))
    assert report.passed and [r.dest for r in report.summary.recovered] == [victim]


def test_cli_command(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_cli, "open_target", lambda spec: target)
    res = CliRunner().invoke(verify_cli.app, ["--target", "lab", "-o", "json", "--scope", "services"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {k["kind"] for k in data["summary"]["kinds"]} == {"service-ip", "service-dns", "nodeport", "dns"}


def test_cli_without_lab_adapter() -> None:
    res = CliRunner().invoke(verify_cli.app, ["--target", "kube"])
    assert res.exit_code == 2
    with pytest.raises(UsageError):
        verify_cli.open_target("nope")


def test_monitor_helpers(fabric: Fabric, target: Target) -> None:
    assert target.prober is not None
    pod = fabric.pod("default/web-1-1")
    pairs = [
        ProbeTarget("default/web-0-0", pod.key, ProbeKind.POD_CROSS_NODE, pod.ip or "", POD_PORT, timeout=0.3)
    ]
    run = start_monitor(target.prober, pairs, rate_hz=20, max_duration=10)
    time.sleep(0.5)
    assert monitor_verdict(run.snapshot(), rate_hz=20, max_loss_pct=0).passed
    verdict = monitor_verdict(run.stop(), rate_hz=20, max_loss_pct=0)
    assert verdict.passed and 8 <= verdict.total_sent <= 13
    require_no_breach(verdict)


def test_continuous_refuses_unbounded_memory(target: Target) -> None:
    assert target.prober is not None
    t = ProbeTarget("default/web-0-0", "x", ProbeKind.POD_CROSS_NODE, "198.19.10.64", POD_PORT)
    with pytest.raises(UsageError):
        target.prober.start_continuous([t] * 100, rate_hz=100, max_duration=3600)


def test_lab_prober_dns_defaults_to_cluster_dns(fabric: Fabric) -> None:
    dns = find_dns_server(fabric.cluster.list_services())
    tgt = Target(name="pbt", cluster=fabric.cluster, prober=LabProber(fabric.netns, dns_server=dns))
    assert isinstance(tgt.prober, LabProber)
    assert tgt.prober.options.dns_server == fabric.dns_ip


def test_lab_prober_refreshes_mapping(fabric: Fabric) -> None:
    calls: list[int] = []

    def fresh() -> dict[str, str]:
        calls.append(1)
        return dict(fabric.netns)

    prober = LabProber({}, refresh=fresh)
    pod = fabric.pod("default/web-1-0")
    t = ProbeTarget("default/web-0-0", pod.key, ProbeKind.POD_CROSS_NODE, pod.ip or "", POD_PORT)
    assert prober.probe([t])[0].ok and prober.probe([t])[0].ok
    assert len(calls) == 2


def test_render_grid_big_shows_only_failures() -> None:
    results = [
        ProbeResult(f"s{i}", f"d{j}", ProbeKind.POD_CROSS_NODE, not (i == 3 and j == 70), 1.0, None)
        for i in range(5)
        for j in range(100)
    ]
    buf = io.StringIO()
    grid = verify_cli.render_grid("t", results, [ProbeKind.POD_CROSS_NODE])
    assert grid is not None
    Console(file=buf, width=200, color_system=None).print(grid)
    text = buf.getvalue()
    assert "1 of 500 pairs failed" in text and "0=d70" in text and "s3" in text and "s1" not in text
    ok = verify_cli.render_grid("t", [r for r in results if r.ok], [ProbeKind.POD_CROSS_NODE])
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(ok)
    assert "all 499 pairs ok" in buf.getvalue()
