"""Benchmark: the other live migrations to Calico on a 4-node lab with bookinfo, the netpol model and the
policies of plans/policies/continuity.yaml (issue 15: <= 60 s end to end for each, 0 lost pod probes
outside the wave, >= 99.5% NodePort availability, 0 policy holes, 0 breaks), beside flannel -> Calico
on the same kind of lab in the same run (the reference: the wire-compatible swap the others build on).

Run as root:  PYTHONPATH=. python bench/cni_migrations.py [--runs 1] [--underlay 198.18.22.0/24]
Each run brings up a fresh lab per plan (name 'cmbench'), applies the plan through the CLI (as a user
does), reads the run's journal and continuous-probe reports, and tears the lab down. Prints every run,
then the medians and each plan's ratio to flannel -> Calico.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, CniKind, LabSpec

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "plans" / "policies" / "continuity.yaml"
PLANS = {  # name: (source CNI of the lab, plan)
    "flannel": (CniKind.FLANNEL, ROOT / "plans" / "flannel-to-calico.yaml"),
    "canal": (CniKind.CANAL, ROOT / "plans" / "canal-to-calico.yaml"),
    "weave": (CniKind.WEAVE, ROOT / "plans" / "weave-to-calico.yaml"),
}
TARGET_S = 60.0


@dataclass
class Outcome:
    plan: str
    rc: int
    seconds: float
    per_node: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    lost: int = 0
    nodeport_sent: int = 0
    nodeport_lost: int = 0
    holes: int = 0
    breaks: int = 0
    policy_probes: int = 0

    @property
    def nodeport_pct(self) -> float | None:
        if not self.nodeport_sent:
            return None
        return 100.0 * (self.nodeport_sent - self.nodeport_lost) / self.nodeport_sent


def _cli(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MIGRATOR_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "migrator.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _read_run(out: Outcome, run_dir: Path) -> None:
    for line in (run_dir / "journal.jsonl").read_text().splitlines():
        event = json.loads(line)
        inner = event.get("event") if isinstance(event.get("event"), dict) else event
        if isinstance(inner, dict) and inner.get("event") == "cni.node-switched":
            out.per_node[str(inner["node"])] = float(inner["seconds"])
    for report in run_dir.glob("checks/monitor-*/*-continuous.json"):
        data = json.loads(report.read_text())
        for pair in data.get("pairs", []):
            if pair["kind"] == "nodeport":
                out.nodeport_sent += pair["sent"]
                out.nodeport_lost += pair["lost"]
            elif pair["kind"] == "policy":
                out.policy_probes += pair["sent"]
                out.holes += pair.get("holes", 0)
                out.breaks += pair.get("breaks", 0)
            else:
                out.sent += pair["sent"]
                out.lost += pair["lost"]


def run_plan(home: Path, lab: str, plan: str) -> Outcome:
    started = time.monotonic()
    res = _cli(home, "apply", str(PLANS[plan][1]), "-t", f"lab:{lab}", "--yes")
    out = Outcome(plan, res.returncode, time.monotonic() - started)
    runs = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    _read_run(out, runs[-1])
    if res.returncode != 0:
        logger.warning("{} exited {}: {}", plan, res.returncode, (res.stdout + res.stderr)[-800:])
    return out


def one(home: Path, name: str, plan: str, underlay: str) -> Outcome:
    cni, _ = PLANS[plan]
    lab = Lab(name)
    lab.down()
    try:
        apps = (AppKind.BOOKINFO, AppKind.NETPOL)
        lab.up(LabSpec(name=name, nodes=4, cni=cni, app=apps, underlay=underlay))
        applied = _cli(home, "lab", "apply", "--name", name, "-f", str(POLICIES), timeout=120)
        if applied.returncode != 0:
            raise SystemExit(f"lab apply failed: {applied.stderr}")
        return run_plan(home, name, plan)
    finally:
        lab.down()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--underlay", default="198.18.22.0/24")
    ap.add_argument("--plans", default="flannel,canal,weave", help="comma-separated: flannel, canal, weave")
    args = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    home = Path(os.environ.get("MIGRATOR_HOME") or tempfile.mkdtemp(prefix="migrator-bench-"))
    os.environ["MIGRATOR_HOME"] = str(home)
    plans = [p for p in args.plans.split(",") if p]
    results: dict[str, list[Outcome]] = {p: [] for p in plans}
    for run in range(1, args.runs + 1):
        for plan in plans:  # the plans alternate within a run: machine noise hits them alike
            o = one(home, "cmbench", plan, args.underlay)
            results[plan].append(o)
            nodes = " ".join(f"{k}={v:.1f}s" for k, v in sorted(o.per_node.items()))
            np_pct = f"{o.nodeport_pct:.2f}%" if o.nodeport_pct is not None else "n/a"
            print(
                f"run {run} {plan:8s} exit={o.rc} total={o.seconds:.1f}s per-node: {nodes} | pod probes lost "
                f"{o.lost}/{o.sent}, NodePort {np_pct}, policy probes {o.policy_probes}: {o.holes} holes, "
                f"{o.breaks} breaks"
            )
    print("\nmedians      total    per-node switch   ratio to flannel   target <= 60 s")
    ref = statistics.median(o.seconds for o in results["flannel"]) if results.get("flannel") else None
    for plan, outs in results.items():
        total = statistics.median(o.seconds for o in outs)
        switches = [v for o in outs for v in o.per_node.values()]
        switch = f"{statistics.median(switches):6.2f}s" if switches else "   n/a"
        ratio = f"{total / ref:5.2f}x" if ref else "  n/a"
        ok = "met" if total <= TARGET_S and all(o.rc == 0 for o in outs) else "NOT met"
        print(f"{plan:10s} {total:7.1f}s   {switch}           {ratio}             {ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
