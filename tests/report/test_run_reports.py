"""Reports rendered from recorded runs (``tests/report/data``), the engine hook, the CLI and the screenshot.

The fixtures are real run folders, trimmed with ``tests/report/trim_fixture.py``:

- ``hello-succeeded``: ``migrator apply plans/examples/hello.yaml -t fake --yes``;
- ``hello-rolled-back``: the same with ``--set fail_at=node-worker-1``;
- ``lab-verify-succeeded``: ``plans/examples/verify.yaml`` on a 4-node lab (reachability after every wave,
  two continuous-probe monitors); only the preflight's full results are kept, the other verifications
  fall back on the bounded grids of their details;
- ``lab-partition-rolled-back``: ``tests/report/plans/partition.yaml`` on a lab: node3 cut off from node2
  by a fault, the stage's verification fails, the run rolls back (full results of that verification kept).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from migrator.errors import UsageError
from migrator.report import FILENAMES, ReportFormat, build_report, render, write_reports
from migrator.report.model import all_steps

DATA = Path(__file__).parent / "data"
XSD = Path(__file__).parent / "junit.xsd"
ROOT = Path(__file__).resolve().parents[2]


def run_copy(name: str, home: Path) -> Path:
    """A copy of a fixture run under ``$MIGRATOR_HOME/runs/<run id>``."""
    src = DATA / name
    run_id = str(json.loads((src / "meta.json").read_text())["run_id"])
    dest = home / "runs" / run_id
    shutil.copytree(src, dest)
    return dest


@pytest.fixture
def hello_ok(migrator_home: Path) -> Path:
    return run_copy("hello-succeeded", migrator_home)


@pytest.fixture
def hello_failed(migrator_home: Path) -> Path:
    return run_copy("hello-rolled-back", migrator_home)


@pytest.fixture
def lab_ok(migrator_home: Path) -> Path:
    return run_copy("lab-verify-succeeded", migrator_home)


@pytest.fixture
def lab_failed(migrator_home: Path) -> Path:
    return run_copy("lab-partition-rolled-back", migrator_home)


# ------------------------------------------------------------------------------------- well-formed

VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "wbr", "source"}


class _Balance(HTMLParser):
    """Checks that every element is closed in order (the page is also parsed by a real browser below)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(page: str) -> _Balance:
    parser = _Balance()
    parser.feed(page)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert parser.stack == [], parser.stack
    assert page.startswith("<!DOCTYPE html>")
    # self-contained: no script, no external asset
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    # every inline SVG is well-formed XML
    svgs = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    for svg in svgs:
        ET.fromstring(svg)
    return parser


def junit_counts(xml: str) -> dict[str, dict[str, int]]:
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    out = {}
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        assert int(suite.get("tests", -1)) == len(cases)
        out[str(suite.get("name"))] = {
            "tests": len(cases),
            "failures": sum(1 for c in cases if c.find("failure") is not None),
            "errors": sum(1 for c in cases if c.find("error") is not None),
            "skipped": sum(1 for c in cases if c.find("skipped") is not None),
        }
        assert int(suite.get("failures", -1)) == out[str(suite.get("name"))]["failures"]
    assert int(root.get("tests", -1)) == sum(s["tests"] for s in out.values())
    return out


def validate_junit(xml: str, tmp_path: Path) -> None:
    xmlschema = pytest.importorskip("xmlschema", reason="xmlschema validates junit.xml against junit.xsd")
    path = tmp_path / "junit.xml"
    path.write_text(xml)
    xmlschema.XMLSchema(str(XSD)).validate(str(path))


# ----------------------------------------------------------------------------------------- hello


def test_succeeded_run_report(hello_ok: Path, tmp_path: Path) -> None:
    r = build_report(hello_ok)
    assert r["schema"] == "migrator.report/v1"
    assert r["status"] == "succeeded" and r["exit_code"] == 0
    assert r["verdict"]["level"] == "ok" and r["verdict"]["next"] == []
    assert [s["name"] for s in r["stages"]] == ["greet", "prepare", "per-node", "bye"]
    assert all(s["outcome"] == "succeeded" for s in r["stages"])
    per_node = r["stages"][2]
    assert [w["nodes"] for w in per_node["waves"]] == [["worker-1", "worker-2"], ["worker-3", "cp-1"]]
    assert [run["node"] for run in per_node["waves"][0]["node_runs"]] == ["worker-1", "worker-2"]
    steps = all_steps(r)
    assert len(steps) == 8 and {s["outcome"] for s in steps} == {"succeeded"}
    assert {s["key"] for s in steps} >= {"greet/touch-greet", "per-node/touch-node@cp-1", "bye/touch-bye"}
    assert r["rollback"] is None and r["failures"] == []
    assert len(r["checks"]) == 8 and all(c["ok"] for c in r["checks"])
    assert r["duration_s"] is not None and r["duration_s"] > 0

    counts = junit_counts(render(r, ReportFormat.JUNIT))
    assert counts["run"] == {"tests": 1, "failures": 0, "errors": 0, "skipped": 0}
    assert counts["checks"]["tests"] == 8 and counts["checks"]["failures"] == 0
    assert counts["steps"]["tests"] == 8 and counts["steps"]["failures"] == 0
    assert "rollback" not in counts
    validate_junit(render(r, ReportFormat.JUNIT), tmp_path)

    md = render(r, ReportFormat.MD)
    assert "Succeeded" in md and "| per-node |" in md.replace("| 3 | per-node |", "| per-node |")
    page = check_html(render(r, ReportFormat.HTML))
    text = " ".join(page.text)
    assert "Succeeded" in text and "stage per-node" in text and "worker-3" in text


def test_rolled_back_run_report(hello_failed: Path, tmp_path: Path) -> None:
    r = build_report(hello_failed)
    assert r["status"] == "failed-rolled-back" and r["exit_code"] == 1
    assert r["verdict"]["level"] == "warn" and "rolled back" in r["verdict"]["title"]
    outcomes = {s["name"]: s["outcome"] for s in r["stages"]}
    assert outcomes == {"greet": "succeeded", "prepare": "succeeded", "per-node": "failed", "bye": None}
    by_key = {s["key"]: s for s in all_steps(r)}
    failed = by_key["per-node/touch-node@worker-1"]
    assert failed["outcome"] == "failed" and "failing on purpose" in failed["error"]
    assert failed["error_type"] == "StepFailed"
    assert by_key["per-node/touch-node@worker-2"]["undo"]["outcome"] == "succeeded"
    assert by_key["greet/wait-a-moment"]["undo"]["skipped"] is True
    rb = r["rollback"]
    assert rb["outcome"] == "succeeded" and rb["undone"] == 5 and rb["reason"] == "failure"
    assert rb["steps"][0]["key"] == "per-node/touch-node@worker-2"
    assert [f["where"] for f in r["failures"]] == ["per-node/touch-node@worker-1"]
    post = [c for c in r["checks"] if c["phase"] == "post-rollback"]
    assert len(post) == 1 and post[0]["ok"]
    assert any(a["kind"] == "rollback" for a in r["annotations"])

    xml = render(r, ReportFormat.JUNIT)
    counts = junit_counts(xml)
    assert counts["run"]["failures"] == 1  # a failed run is red in CI even though every check passed
    assert counts["checks"]["failures"] == 0
    assert counts["steps"] == {"tests": 5, "failures": 1, "errors": 0, "skipped": 0}
    assert counts["rollback"]["tests"] == 5 and counts["rollback"]["failures"] == 0
    validate_junit(xml, tmp_path)

    md = render(r, ReportFormat.MD)
    assert "Failed — rolled back" in md and "per-node/touch-node@worker-1" in md
    assert "| bye | · not run |" in md
    page = check_html(render(r, ReportFormat.HTML))
    text = " ".join(page.text)
    assert "Failed — rolled back" in text and "stage bye (not run)" in text
    assert "failing on purpose at marker 'node-worker-1'" in text


def test_everything_is_escaped(hello_failed: Path, tmp_path: Path) -> None:
    """Plan names, step names and errors from the journal never become markup."""
    journal = hello_failed / "journal.jsonl"
    evil = "<script>alert(1)</script> & \"quotes\" 'x' | `tick`"
    lines = []
    for line in journal.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "step.end" and event.get("outcome") == "failed":
            event["error"] = evil
        if event["type"] == "run.start":
            event["plan"] = "<i>evil-plan</i>"
        lines.append(json.dumps(event))
    journal.write_text("\n".join(lines) + "\n")
    r = build_report(hello_failed)
    page = render(r, ReportFormat.HTML)
    parser = check_html(page)
    assert "<script>" not in page and "<i>evil-plan</i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert evil in " ".join(parser.text)  # shown as text, exactly
    md = render(r, ReportFormat.MD)
    assert "<script>" not in md and "&lt;script>" in md
    xml = render(r, ReportFormat.JUNIT)
    assert ET.fromstring(xml) is not None
    validate_junit(xml, tmp_path)


def test_torn_journal_and_unfinished_run(hello_ok: Path, tmp_path: Path) -> None:
    """A run killed mid-way (last line torn, no run.end) needs attention, with the exact next commands."""
    journal = hello_ok / "journal.jsonl"
    lines = journal.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"type":"wave.start"' in line)
    journal.write_text("\n".join(lines[: cut + 3]) + "\n" + lines[cut + 3][:25])
    (hello_ok / "state.json").unlink()
    r = build_report(hello_ok)
    assert r["status"] == "running"
    assert r["journal"]["torn"] and "torn" in r["journal"]["torn"]
    assert r["verdict"]["level"] == "running"
    assert f"migrator resume {r['run_id']}" in r["verdict"]["next"]
    assert any(s["outcome"] == "running" for s in all_steps(r))
    page = check_html(render(r, ReportFormat.HTML))
    assert f"$ migrator rollback {r['run_id']}" in " ".join(page.text)
    counts = junit_counts(render(r, ReportFormat.JUNIT))
    assert counts["steps"]["errors"] >= 1
    validate_junit(render(r, ReportFormat.JUNIT), tmp_path)


def test_needs_attention_verdict_names_the_next_command(hello_failed: Path) -> None:
    journal = hello_failed / "journal.jsonl"
    lines = []
    for line in journal.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "undo.end" and event["key"] == "prepare/touch-prepare":
            event.update(outcome="failed", error="permission denied")
        if event["type"] == "run.end":
            event.update(status="needs-attention", exit_code=3)
        lines.append(json.dumps(event))
    journal.write_text("\n".join(lines) + "\n")
    r = build_report(hello_failed)
    assert r["verdict"]["level"] == "bad" and r["exit_code"] == 3
    assert "prepare/touch-prepare" in r["verdict"]["text"]
    assert r["verdict"]["next"] == [f"migrator status {r['run_id']}", f"migrator rollback {r['run_id']}"]
    assert any(f["what"] == "undo" and "permission denied" in f["message"] for f in r["failures"])
    page = render(r, ReportFormat.HTML)
    assert 'class="verdict v-bad"' in page and f"$ migrator rollback {r['run_id']}" in page


# ------------------------------------------------------------------------------------------- lab


def test_lab_verification_heat_maps(lab_ok: Path, tmp_path: Path) -> None:
    r = build_report(lab_ok)
    assert r["status"] == "succeeded"
    reach = [c for c in r["checks"] if c["type"] == "reachability"]
    assert [c["phase"] for c in reach] == [
        "preflight",
        "wave-verify",
        "wave-verify",
        "wave-verify",
        "stage-verify",
        "verify",
    ]
    base = reach[0]["connectivity"]
    assert base["complete"] and base["passed"] and base["ok"] == base["total"] == 507
    titles = [g["title"] for g in base["grids"]]
    assert titles[0] == "Pod → pod"
    pods = base["grids"][0]
    # 15 pods on 4 nodes: rows grouped by node, every pair probed except a pod to itself
    assert len(pods["rows"]) == len(pods["cols"]) == 15
    groups = [row["group"] for row in pods["rows"]]
    assert groups == sorted(groups) and set(groups) == {"node1", "node2", "node3", "node4"}
    assert len(pods["cells"]) == 15 * 14 and pods["counts"] == {"ok": 210}
    # the later verifications' full results were trimmed: bounded grids from the details instead
    later = reach[1]["connectivity"]
    assert not later["complete"] and later["grids"] and later["passed"]
    assert sum(later["grids"][0]["counts"].values()) > 0
    monitors = [c for c in r["checks"] if c["type"] == "continuous-probe"]
    assert {c["name"] for c in monitors} == {"pods-off-wave", "productpage-nodeport"}
    for c in monitors:
        v = c["continuous"]
        assert c["ok"] and v["passed"] and v["lost"] == 0 and v["total_sent"] > 100
        assert v["timeline"]["total"] and len(v["waves"]) == 3
        assert v["excused"] > 0  # pairs touching the wave's node are set aside, and said so
    page = check_html(render(r, ReportFormat.HTML))
    assert page.tags["svg"] >= 2 + 3 * 6  # timeline, loss charts, three grids per verification
    validate_junit(render(r, ReportFormat.JUNIT), tmp_path)
    counts = junit_counts(render(r, ReportFormat.JUNIT))
    assert counts["checks"]["tests"] == len(r["checks"]) == 10 and counts["checks"]["failures"] == 0


def test_lab_partition_report(lab_failed: Path, tmp_path: Path) -> None:
    r = build_report(lab_failed)
    assert r["status"] == "failed-rolled-back" and r["verdict"]["level"] == "warn"
    cut = next(c for c in r["checks"] if c["name"] == "after-cut")
    v = cut["connectivity"]
    assert cut["ok"] is False and v["complete"] and v["passed"] is False
    assert v["has_baseline"] and v["failing_total"] == 108
    assert {f["status"] for f in v["failing"]} == {"regressed"}
    pods = next(g for g in v["grids"] if g["title"] == "Pod → pod")
    rows = [row["label"] for row in pods["rows"]]
    cols = [col["label"] for col in pods["cols"]]
    cells = {(rows[i], cols[j]): s for i, j, s in pods["cells"]}
    group_of = {row["label"]: row["group"] for row in pods["rows"]}
    # the partition: every pod pair between node2 and node3 failed, both ways, and only regressions
    cross = [(a, b) for (a, b) in cells if {group_of[a], group_of[b]} == {"node2", "node3"}]
    assert cross and all(cells[k] == "regressed" for k in cross)
    inside = [(a, b) for (a, b) in cells if group_of[a] == group_of[b] == "node1"]
    assert inside and all(cells[k] == "ok" for k in inside)
    # the fault's window is an annotation pair, and the rollback is marked
    kinds = [a["kind"] for a in r["annotations"]]
    assert "fault-on" in kinds and "fault-off" in kinds and "rollback" in kinds
    mon = next(c for c in r["checks"] if c["type"] == "continuous-probe")
    assert mon["continuous"]["lost"] > 0 and mon["continuous"]["longest_outage_ms"] > 1000
    assert any(b[2] > 0 for b in mon["continuous"]["timeline"]["total"])
    page = render(r, ReportFormat.HTML)
    check_html(page)
    assert "partition on node3" in page  # the shaded fault window on the timeline
    assert page.count('fill="#cf222e"><title>') >= 60  # red heat-map cells (and loss bars)
    xml = render(r, ReportFormat.JUNIT)
    validate_junit(xml, tmp_path)
    counts = junit_counts(xml)
    assert counts["checks"]["failures"] == 1 and counts["run"]["failures"] == 1
    # the partition's undo, and the sleep's (nothing to undo, passes)
    assert counts["rollback"] == {"tests": 2, "failures": 0, "errors": 0, "skipped": 0}


def test_details_missing_degrade_gracefully(lab_failed: Path) -> None:
    """Without artifacts and details, the report still renders: counts when known, no heat map."""
    shutil.rmtree(lab_failed / "checks")
    journal = lab_failed / "journal.jsonl"
    lines = []
    for line in journal.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "check.end" and event["check"] == "baseline":
            event["details"] = None
        if event["type"] == "check.end" and event["check"] == "after-cut":
            event["details"].pop("grids")
        lines.append(json.dumps(event))
    journal.write_text("\n".join(lines) + "\n")
    r = build_report(lab_failed)
    base = [c for c in r["checks"] if c["name"] == "baseline"]
    assert base and all(c["connectivity"] is None for c in base)
    cut = next(c for c in r["checks"] if c["name"] == "after-cut")["connectivity"]
    assert not cut["complete"] and cut["failing_total"] == 108 and cut["kinds"]
    mon = next(c for c in r["checks"] if c["type"] == "continuous-probe")
    assert mon["continuous"] is None  # a passing monitor leaves only its file, now gone
    check_html(render(r, ReportFormat.HTML))


# ----------------------------------------------------------------------------------- CLI and hook


def test_cli_report_formats(lab_failed: Path, tmp_path: Path) -> None:
    from migrator.cli.main import app  # noqa: PLC0415

    runner = CliRunner()
    run_id = lab_failed.name
    result = runner.invoke(app, ["report", run_id[:20]])
    assert result.exit_code == 0, result.output
    for name in FILENAMES.values():
        assert (lab_failed / name).stat().st_size > 0
        assert str(lab_failed / name) in result.output
    out = runner.invoke(app, ["report", run_id, "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["run_id"] == run_id
    out = runner.invoke(app, ["report", run_id, "--format", "md"])
    assert out.exit_code == 0 and out.stdout.startswith("## ⚠️ Failed — rolled back")
    out = runner.invoke(app, ["report", run_id, "-f", "junit"])
    assert out.exit_code == 0 and junit_counts(out.stdout)["checks"]["failures"] == 1
    target = tmp_path / "page.html"
    out = runner.invoke(app, ["report", str(lab_failed), "--write", str(target)])
    assert out.exit_code == 0 and check_html(target.read_text())
    out = runner.invoke(app, ["report", run_id, "-o", "json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["run_id"] == run_id
    written = tmp_path / "r.txt"
    out = runner.invoke(app, ["report", run_id, "-o", "text", "-w", str(written)])
    assert out.exit_code == 0 and written.read_text().startswith("## ⚠️ Failed — rolled back")
    out = runner.invoke(app, ["report", "no-such-run"])
    assert isinstance(out.exception, UsageError)  # exit code 2 through migrator.cli.main.run


def test_engine_writes_reports_at_every_run_end(migrator_home: Path, target: Any) -> None:
    from migrator.engine import apply_plan, load_plan_file, rollback_run  # noqa: PLC0415

    source = load_plan_file(ROOT / "plans/examples/hello.yaml", {})
    result = apply_plan(source, target)
    assert str(result.status) == "succeeded"
    paths = [result.run_dir / name for name in FILENAMES.values()]
    assert all(p.stat().st_size > 0 for p in paths)
    assert json.loads(paths[0].read_text())["status"] == "succeeded"
    again = rollback_run(result.run_id, target=target)
    assert str(again.status) == "rolled-back"
    report = json.loads(paths[0].read_text())
    assert report["status"] == "rolled-back" and report["verdict"]["title"] == "Rolled back"
    assert [s["mode"] for s in report["sessions"]] == ["apply", "rollback"]


def test_a_report_error_never_changes_the_run(
    migrator_home: Path, target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from migrator.engine import apply_plan, load_plan_file  # noqa: PLC0415

    render_module = importlib.import_module("migrator.report.render")

    def broken(run_dir: Path, report: Any = None) -> list[Path]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(render_module, "write_reports", broken)
    result = apply_plan(load_plan_file(ROOT / "plans/examples/hello.yaml", {}), target)
    assert str(result.status) == "succeeded"
    assert not (result.run_dir / "report.html").exists()
    assert write_reports(result.run_dir) is not None  # `migrator report RUN` can still make them


def test_fault_annotations_extension_point(hello_ok: Path) -> None:
    """A fault injector's step.events (on/off) become a shaded window on the timeline."""
    journal = hello_ok / "journal.jsonl"
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    at = next(
        i for i, ev in enumerate(events) if ev["type"] == "step.end" and ev["key"] == "greet/wait-a-moment"
    )
    base = dict(events[at - 1], type="step.event", key="greet/wait-a-moment")
    for k in ("outcome", "result", "duration", "prepared"):
        base.pop(k, None)
    on = dict(
        base,
        event={"event": "fault", "fault": {"id": "f1", "kind": "loss", "phase": "on", "nodes": ["cp-1"]}},
    )
    off = dict(
        base,
        event={"event": "fault", "fault": {"id": "f1", "kind": "loss", "phase": "off", "nodes": ["cp-1"]}},
    )
    events[at:at] = [on, off]
    for seq, ev in enumerate(events, start=1):
        ev["seq"] = seq
    journal.write_text("\n".join(json.dumps(ev) for ev in events) + "\n")
    r = build_report(hello_ok)
    faults = [a for a in r["annotations"] if a["kind"].startswith("fault")]
    assert [a["kind"] for a in faults] == ["fault-on", "fault-off"]
    assert faults[0]["label"] == "loss on cp-1" and faults[0]["group"] == "f1"
    page = render(r, ReportFormat.HTML)
    check_html(page)
    assert "⚡ loss on cp-1" in page


# ------------------------------------------------------------------------------------- screenshot


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium for the screenshot")
@pytest.mark.parametrize("fixture", ["hello-rolled-back", "lab-partition-rolled-back"])
def test_screenshot(fixture: str, migrator_home: Path, tmp_path: Path) -> None:
    run = run_copy(fixture, migrator_home)
    write_reports(run)
    png = tmp_path / "report.png"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/screenshot-report.sh"), str(run / "report.html"), str(png), "1400,1800"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 1800)
    assert len(data) > 40_000  # a real page, not a blank one


def test_heat_map_of_48_pods_is_grouped_by_node() -> None:
    """40+ pods stay readable: rows and columns grouped by node, node bands, bounded size and fonts."""
    from migrator.report.connectivity import reachability_view  # noqa: PLC0415
    from migrator.report.html import heatmap_svg  # noqa: PLC0415

    nodes = [f"worker-{i:02d}" for i in range(1, 9)]
    pods = [(f"prod/frontend-{n}-{j}", nodes[n]) for n in range(8) for j in range(6)]
    results: list[dict[str, Any]] = [
        {"source": node, "dest": p, "kind": "node-to-pod", "ok": True, "latency_ms": 1.0} for p, node in pods
    ]
    cut = {"worker-03", "worker-06"}
    for s, sn in pods:
        for d, dn in pods:
            if s != d:
                bad = {sn, dn} == cut
                kind = "pod-same-node" if sn == dn else "pod-cross-node"
                results.append(
                    {
                        "source": s,
                        "dest": d,
                        "kind": kind,
                        "ok": not bad,
                        "latency_ms": 1.0,
                        "error": "x" * bad,
                    }
                )
    view = reachability_view({"results": results, "summary": {"kinds": [], "failures": []}}, None)
    assert view is not None
    grid = view["grids"][0]
    assert [r["group"] for r in grid["rows"]][::6] == nodes
    assert grid["counts"] == {"ok": 48 * 47 - 2 * 36, "failed": 2 * 36}
    svg = heatmap_svg(grid)
    root = ET.fromstring(svg)
    assert int(root.get("width", 0)) < 1000 and int(root.get("height", 0)) < 1000
    texts = [t for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert {t.text for t in texts} >= set(nodes)  # the node bands are labelled
    assert min(float(t.get("font-size", 0)) for t in texts) >= 8.5


def test_monitor_abort_report(migrator_home: Path, tmp_path: Path) -> None:
    """A continuous probe over its loss budget aborts the stage: the monitor's failure, its loss over time,
    the cancelled step (listed once with the monitor's message), the rollback."""
    run = run_copy("lab-monitor-abort", migrator_home)
    r = build_report(run)
    assert r["status"] == "failed-rolled-back"
    mon = next(c for c in r["checks"] if c["phase"] == "monitor")
    assert mon["type"] == "continuous-probe" and mon["ok"] is False
    v = mon["continuous"]
    assert v["passed"] is False and v["breaches"] and v["lost"] > 0
    assert v["timeline"] and any(b[2] > 0 for b in v["timeline"]["total"])
    assert r["stages"][0]["monitor"]["failed"] == ["cross-node"]
    hold = next(s for s in all_steps(r) if s["step"] == "hold")
    assert hold["outcome"] in ("cancelled", "failed")
    assert len(r["failures"]) == 1 and r["failures"][0]["what"] == "monitor"
    assert r["failures"][0]["also"] == ["step cut/hold"]
    assert {a["kind"] for a in r["annotations"]} >= {"monitor-failed", "rollback", "fault-on", "fault-off"}
    page = render(r, ReportFormat.HTML)
    check_html(page)
    assert "monitor cross-node" in page and "also: step cut/hold" in page
    xml = render(r, ReportFormat.JUNIT)
    validate_junit(xml, tmp_path)
    assert junit_counts(xml)["checks"]["failures"] == 1


@pytest.mark.parametrize(
    "fixture",
    [
        "hello-succeeded",
        "hello-rolled-back",
        "lab-verify-succeeded",
        "lab-partition-rolled-back",
        "lab-monitor-abort",
    ],
)
def test_report_json_matches_its_schema(fixture: str, migrator_home: Path) -> None:
    """``report.json`` keeps the documented shape (``migrator/report/report.schema.json``)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "migrator/report/report.schema.json").read_text())
    run = run_copy(fixture, migrator_home)
    write_reports(run)
    jsonschema.validate(json.loads((run / "report.json").read_text()), schema)


def test_bounded_grids_are_grouped_by_node_too(lab_ok: Path) -> None:
    r = build_report(lab_ok)
    later = [c["connectivity"] for c in r["checks"] if c["phase"] == "wave-verify"]
    assert later and all(not v["complete"] for v in later)
    groups = {row["group"] for row in later[0]["grids"][0]["rows"]}
    assert groups >= {"node1", "node3"} and "other" not in groups


def test_a_recorded_run_cut_short_resumes_and_its_report_shows_both_sessions(
    hello_ok: Path, target: Any, markers: Path
) -> None:
    """An old run folder (written before the journal events were typed) still resumes: cut its journal
    as a kill -9 would have, put back what its done steps did, resume; nothing done runs again."""
    from migrator.engine import resume_run  # noqa: PLC0415

    journal = hello_ok / "journal.jsonl"
    lines = journal.read_text().splitlines()[:30]
    journal.write_text("\n".join(lines) + "\n")
    done = [json.loads(ln) for ln in lines]
    done = [e for e in done if e["type"] == "step.end" and e["outcome"] == "succeeded"]
    markers.mkdir(parents=True, exist_ok=True)
    for e in done:
        if isinstance(e.get("result"), dict) and e["result"].get("marker"):
            (markers / e["result"]["marker"]).touch()
    result = resume_run(hello_ok.name, target=target, force=True)  # another in-memory cluster
    assert str(result.status) == "succeeded", result.message
    after = [json.loads(ln) for ln in journal.read_text().splitlines()]
    assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
    assert after[30]["type"] == "run.resume"
    again = {e["key"] for e in after[30:] if e["type"] == "step.start"}
    assert again and not again & {e["key"] for e in done}
    report = json.loads((hello_ok / "report.json").read_text())
    assert [s["mode"] for s in report["sessions"]] == ["apply", "resume"]
    assert report["status"] == "succeeded"
