"""The game-day section of reports (``steady_state``), on recorded lab runs (``tests/report/data``).

- ``lab-gameday-early-dip``: ``plans/gameday-packet-loss.yaml --set duration=30s`` before the probe-loop fix:
  availability dipped to ~95.7% *before* the loss was in place (the monitor aborted 3 s after the fault
  went on, on seconds 1-5 of the stage);
- ``lab-gameday-packet-loss``: the same plan after the fix: 100% before the fault; 30% loss on node3 then
  breaks the hypothesis (~94% during the fault: kube-proxy still sends half of productpage's connections to
  the replica on the lossy worker);
- ``lab-gameday-refused``: a plan with a real change (node.label) in stage 1 and ``fault.delay`` in stage 2
  on the lab's kernel without netem: the run-start preflight refuses it before stage 1;
- ``lab-gameday-held``: ``tests/report/plans/gameday-held.yaml``: 20% loss on node3, the pods elsewhere
  keep their steady state.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from migrator.report import ReportFormat, build_report, render
from migrator.report.steadystate import HELD, NOT_HELD, NOT_JUDGED

DATA = Path(__file__).parent / "data"
XSD = Path(__file__).parent / "junit.xsd"
ROOT = Path(__file__).resolve().parents[2]


def report_of(name: str, tmp_path: Path) -> dict[str, Any]:
    dest = tmp_path / name
    shutil.copytree(DATA / name, dest)
    return build_report(dest)


def suite(junit: str, name: str) -> ET.Element | None:
    return next((s for s in ET.fromstring(junit).iter("testsuite") if s.get("name") == name), None)


def test_the_early_dip_is_a_breach_during_the_stage_before_the_fault(tmp_path: Path) -> None:
    r = report_of("lab-gameday-early-dip", tmp_path)
    ss = r["steady_state"]
    assert ss["held"] is False and ss["verdict"] == NOT_HELD
    b = ss["breach"]
    assert (b["phase"], b["check"], b["stage"], b["kind"]) == (
        "during",
        "productpage-availability",
        "packet-loss",
        "availability",
    )
    assert (b["value"], b["threshold"], b["window_s"]) == (97.3, 99.0, 5)
    assert "availability 97.3% < 99% for 5s" in ss["reason"] and "at +15.7s" in ss["reason"]
    (mon,) = ss["during"]
    assert mon["availability"]["before_fault"] < 99.5  # the dip the fix removes (95.7%)
    assert mon["probes"]["before_fault"] > 1000
    assert mon["threshold"] == {"min_availability": "99%", "abort_after": "5s", "max_loss": "10%"}
    (fault,) = ss["faults"]
    assert fault["kind"] == "loss" and fault["nodes"] == ["node3"] and fault["mechanism"] == ["iptables"]
    assert fault["clean"] is True and fault["drift"] == {"node3": []}
    assert fault["evidence"] == {}  # the abort cancelled the step before its readback
    assert any("-p tcp" in c and "--dport 22" in c for c in fault["commands"]["node3"])  # SSH path kept
    what = [t["what"] for t in ss["timeline"]]
    assert what == ["fault-on", "breach", "fault-off"]
    assert [t["offset_s"] for t in ss["timeline"]] == sorted(t["offset_s"] for t in ss["timeline"])


def test_after_the_fix_availability_before_the_fault_is_full(tmp_path: Path) -> None:
    ss = report_of("lab-gameday-packet-loss", tmp_path)["steady_state"]
    (mon,) = ss["during"]
    assert mon["availability"]["before_fault"] >= 99.5 and mon["probes"]["before_fault"] > 1000
    assert mon["availability"]["during_fault"] < 99.0  # the hypothesis fails during the fault, for real
    assert ss["held"] is False and ss["breach"]["phase"] == "during"
    assert ss["breach"]["kind"] == "availability" and ss["breach"]["value"] < ss["breach"]["threshold"]
    (fault,) = ss["faults"]
    readback = "\n".join(line for lines in fault["evidence"]["node3"].values() for line in lines)
    assert f"MGR-F-{fault['id']}" in readback and "statistic" in readback  # iptables state after install
    assert fault["clean"] is True and fault["on"] < fault["off"]


def test_a_refused_fault_is_not_judged_and_the_requirements_are_in_the_report(tmp_path: Path) -> None:
    r = report_of("lab-gameday-refused", tmp_path)
    assert r["status"] == "failed-preflight" and r["exit_code"] == 1
    req = r["preflight"]["requirements"]
    assert req["outcome"] == "failed" and req["checked"] == 1
    assert req["failures"][0]["node"] == "node3" and req["failures"][0]["error_type"] == "UnsupportedFeature"
    assert [s["outcome"] for s in r["stages"]] == [None, None]  # no stage started
    assert any(f["what"] == "preflight" and "netem" in f["message"] for f in r["failures"])
    ss = r["steady_state"]
    assert ss["held"] is None and ss["verdict"] == NOT_JUDGED
    assert "netem" in ss["reason"] and "node3" in ss["reason"]
    assert ss["faults"][0]["refused"] and ss["timeline"][0]["what"] == "fault-refused"


def test_a_held_game_day(tmp_path: Path) -> None:
    r = report_of("lab-gameday-held", tmp_path)
    ss = r["steady_state"]
    assert r["status"] == "succeeded"
    assert ss["held"] is True and ss["verdict"] == HELD and ss["breach"] is None
    assert ss["before"]["ok"] and ss["after"]["ok"] and ss["after"]["checks"]
    (mon,) = ss["during"]
    assert mon["ok"] and mon["availability"]["during_fault"] >= 95.0
    (fault,) = ss["faults"]
    assert fault["clean"] is True and fault["on"] < fault["off"]
    junit = render(r, ReportFormat.JUNIT)
    gd = suite(junit, "steady-state")
    assert gd is not None and gd.get("failures") == "0" and gd.get("skipped") == "0"


@pytest.mark.parametrize("name", ["lab-gameday-early-dip", "lab-gameday-refused", "lab-gameday-held"])
def test_renderers_show_the_verdict(name: str, tmp_path: Path) -> None:
    r = report_of(name, tmp_path)
    ss = r["steady_state"]
    md = render(r, ReportFormat.MD)
    assert "### Steady state" in md and ss["verdict"] in md
    html = render(r, ReportFormat.HTML)
    assert "id='steady-state'" in html and ss["verdict"] in html
    junit = render(r, ReportFormat.JUNIT)
    gd = suite(junit, "steady-state")
    assert gd is not None
    case = next(c for c in gd.iter("testcase") if c.get("name") == "hypothesis")
    expect = {True: None, False: "failure", None: "skipped"}[ss["held"]]
    assert [child.tag for child in case if child.tag in ("failure", "skipped")] == (
        [expect] if expect else []
    )
    root = ET.fromstring(junit)
    assert int(root.get("tests", -1)) == sum(int(s.get("tests", 0)) for s in root.iter("testsuite"))
    xmlschema = pytest.importorskip("xmlschema")
    path = tmp_path / "junit.xml"
    path.write_text(junit)
    xmlschema.XMLSchema(str(XSD)).validate(str(path))
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(
        json.loads(json.dumps(r)), json.loads((ROOT / "migrator/report/report.schema.json").read_text())
    )


def test_other_runs_have_no_steady_state_section(tmp_path: Path) -> None:
    r = report_of("hello-succeeded", tmp_path)
    assert r["steady_state"] is None
    assert suite(render(r, ReportFormat.JUNIT), "steady-state") is None
    assert "Steady state" not in render(r, ReportFormat.MD)
