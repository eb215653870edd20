"""Run reports of plans with ``scope: policy`` checks (fake target): the policy matrix in every format."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.engine import EngineOptions, apply_plan, source_from_plan
from migrator.plan.models import Plan
from migrator.ports import Target
from migrator.probe import policy
from migrator.report import build_report, render, write_reports
from migrator.report.render import ReportFormat
from migrator.testing.fake import FakeCluster, FakeProber, TableModel, deny_into_y, y_denied

ROOT = Path(__file__).resolve().parents[2]
REACH = {"type": "reachability", "name": "netpol", "scope": "policy", "probe_timeout": "0.2s"}


@pytest.fixture(autouse=True)
def table_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(policy, "default_model", TableModel(deny_into_y))
    yield


def run_plan(deny: Any, *, monitor: bool = False) -> Path:
    cluster = FakeCluster.netpol()
    target = Target("fake", cluster, prober=FakeProber(cluster, deny=deny))
    stage: dict[str, Any] = {
        "name": "s",
        "steps": [{"name": "w", "action": "demo.sleep", "args": {"duration": "0.3s"}}],
    }
    if monitor:
        stage["monitor"] = [
            {
                "type": "continuous-probe",
                "name": "watch",
                "scope": "policy",
                "rate_hz": 5,
                "probe_timeout": "0.1s",
            }
        ]
    plan = Plan.model_validate(
        {
            "apiVersion": "migrator/v1",
            "kind": "Plan",
            "metadata": {"name": "netpol"},
            "spec": {"stages": [stage], "verify": [REACH]},
        }
    )
    result = apply_plan(
        source_from_plan(plan), target, options=EngineOptions(sleep=lambda _s: None, monitor_interval=0.02)
    )
    return result.run_dir


def hole(key: tuple[str, str, int, str]) -> bool:
    return y_denied(key) and key[:2] != ("x/c", "y/a")


def test_report_json_has_the_policy_matrix_and_matches_the_schema() -> None:
    run = run_plan(hole)
    report = build_report(run)
    (check,) = [c for c in report["checks"] if c["name"] == "netpol"]
    assert check["ok"] is False and check["connectivity"] is None
    v = check["policy"]
    assert v["passed"] is False
    assert v["summary"]["holes"] == 4 and v["summary"]["breaks"] == 0 and v["summary"]["total"] == 288
    assert [(m["port"], m["protocol"]) for m in v["matrices"]] == [
        (80, "tcp"),
        (80, "udp"),
        (81, "tcp"),
        (81, "udp"),
    ]
    x_c = v["matrices"][0]["rows"][2]
    assert x_c == "..-HXX..."
    assert {(x["source"], x["dest"], x["status"]) for x in v["mismatches"]} == {("x/c", "y/a", "hole")}
    assert v["mismatches"][0]["policies"] == ["y/deny-other-ns"]
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "migrator/report/report.schema.json").read_text())
    write_reports(run)
    jsonschema.validate(json.loads((run / "report.json").read_text()), schema)


def test_markdown_html_and_junit_show_the_matrix_and_the_mismatches() -> None:
    run = run_plan(hole)
    report = build_report(run)
    md = render(report, ReportFormat.MD)
    assert "policy: 284/288 probes as expected (72 expected denied), 4 holes, 0 breaks, 0 prober errors" in md
    assert "- **hole** `x/c` → `y/a` 80/tcp: expected deny, observed allow; deciding: y/deny-other-ns" in md
    html = render(report, ReportFormat.HTML)
    assert "<h2 id='policy'>NetworkPolicy (1 verification: expected vs observed)</h2>" in html
    assert "title='x/c → y/a: HOLE: expected deny, allowed'>H</td>" in html
    assert html.count("<figure style='margin:0'><figcaption><b>") >= 4
    junit = render(report, ReportFormat.JUNIT)
    root = ET.fromstring(junit)
    case = next(c for c in root.iter("testcase") if c.get("name") == "netpol")
    failure = case.find("failure")
    assert failure is not None and "4 holes" in (failure.get("message") or "")
    out = case.find("system-out")
    assert out is not None and out.text is not None
    assert "80/tcp (rows: source, columns: destination)" in out.text
    assert out.text.splitlines()[2].split() == ["x/a", "-", ".", ".", "X", "X", "X", ".", ".", "."]


def test_markdown_rows_are_aligned_truth_tables() -> None:
    report = build_report(run_plan(y_denied))
    md = render(report, ReportFormat.MD)
    block = md.split("80/tcp (rows: source, columns: destination):\n\n```\n", 1)[1].split("```", 1)[0]
    rows = [line.split() for line in block.splitlines()]
    assert rows[0] == [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    assert rows[1] == ["x/a", "-", ".", ".", "X", "X", "X", ".", ".", "."]
    assert rows[4] == ["y/a", ".", ".", ".", "-", ".", ".", ".", ".", "."]
    assert len(rows) == 10


def test_a_policy_monitor_reports_its_hole_and_break_counts() -> None:
    report = build_report(run_plan(y_denied, monitor=True))
    (watch,) = [c for c in report["checks"] if c["name"] == "watch"]
    assert watch["continuous"]["policy"]["holes"] == 0 and watch["continuous"]["policy"]["breaks"] == 0
    md = render(report, ReportFormat.MD)
    assert "policy: 0 holes, 0 breaks, 0 prober errors" in md
