"""Benchmark: live flannel -> Calico migration of a 4-node bookinfo lab (target <= 60 s end to end), with
the per-node switch time, against the naive plan that swaps every node at once, in the same run.

Run as root:  PYTHONPATH=. python bench/migration.py [--runs 1] [--underlay 198.18.23.0/24]
Each run brings up a fresh lab (name 'rcbench'), applies the plan through the CLI (as a user does), reads
the run's journal and continuous-probe reports, and tears the lab down. Prints every run, then the medians:
duration, per-node time, probes lost and the longest outage window of both plans, and their ratios.
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
from migrator.lab.spec import AppKind, LabSpec

ROOT = Path(__file__).resolve().parents[1]
PLANS = {
    "careful": ROOT / "plans" / "flannel-to-calico.yaml",
    "naive": ROOT / "plans" / "naive-flannel-to-calico.yaml",
}


@dataclass
class Outcome:
    plan: str
    rc: int
    seconds: float
    per_node: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    lost: int = 0
    outage_ms: float = 0.0
    nodeport_availability: float | None = None


def run_plan(home: Path, lab: str, plan: str) -> Outcome:
    env = {**os.environ, "MIGRATOR_HOME": str(home), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "migrator.cli.main", "apply", str(PLANS[plan]), "-t", f"lab:{lab}", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = Outcome(plan, res.returncode, time.monotonic() - started)
    runs = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    run_dir = runs[-1]
    for line in (run_dir / "journal.jsonl").read_text().splitlines():
        event = json.loads(line)
        inner = event.get("event") if isinstance(event.get("event"), dict) else event
        if isinstance(inner, dict) and inner.get("event") == "cni.node-switched":
            out.per_node[str(inner["node"])] = float(inner["seconds"])
    np_sent = np_lost = 0
    for report in run_dir.glob("checks/monitor-*/*-continuous.json"):
        data = json.loads(report.read_text())
        for pair in data.get("pairs", []):
            if pair["kind"] == "nodeport":
                np_sent += pair["sent"]
                np_lost += pair["lost"]
            else:
                out.sent += pair["sent"]
                out.lost += pair["lost"]
            out.outage_ms = max(out.outage_ms, float(pair.get("longest_outage_ms") or 0.0))
    if np_sent:
        out.nodeport_availability = 100.0 * (np_sent - np_lost) / np_sent
    if res.returncode != 0:
        logger.warning("{} exited {}: {}", plan, res.returncode, (res.stdout + res.stderr)[-800:])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--underlay", default="198.18.23.0/24")
    args = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    home = Path(os.environ.get("MIGRATOR_HOME") or tempfile.mkdtemp(prefix="migrator-bench-"))
    os.environ["MIGRATOR_HOME"] = str(home)
    results: dict[str, list[Outcome]] = {"careful": [], "naive": []}
    name = "rcbench"
    for run in range(1, args.runs + 1):
        for plan in ("careful", "naive"):
            lab = Lab(name)
            lab.down()
            try:
                lab.up(LabSpec(name=name, nodes=4, app=AppKind.BOOKINFO, underlay=args.underlay))
                o = run_plan(home, name, plan)
            finally:
                lab.down()
            results[plan].append(o)
            nodes = " ".join(f"{k}={v:.1f}s" for k, v in sorted(o.per_node.items()))
            avail = f"{o.nodeport_availability:.2f}%" if o.nodeport_availability is not None else "n/a"
            print(
                f"run {run} {plan:8s} exit={o.rc} total={o.seconds:.1f}s per-node: {nodes} | pod probes lost "
                f"{o.lost}/{o.sent}, longest outage {o.outage_ms:.0f} ms, productpage NodePort {avail}"
            )

    def med(plan: str, attr: str) -> float:
        return statistics.median(float(getattr(o, attr)) for o in results[plan])

    print("\nmedians                 careful     naive")
    for attr, unit in (("seconds", "s"), ("lost", ""), ("outage_ms", "ms")):
        c, n = med("careful", attr), med("naive", attr)
        print(f"{attr:22s} {c:9.1f}{unit:2s} {n:9.1f}{unit:2s}")
    per_node = [v for o in results["careful"] for v in o.per_node.values()]
    if per_node:
        print(f"careful per-node switch median {statistics.median(per_node):.1f}s (of {len(per_node)})")
    c_out, n_out = med("careful", "outage_ms"), med("naive", "outage_ms")
    c_loss = med("careful", "lost") / max(1.0, med("careful", "seconds"))
    print(
        f"ratio naive/careful: duration {med('naive', 'seconds') / med('careful', 'seconds'):.2f}x, "
        f"lost probes {med('naive', 'lost'):.0f} vs {med('careful', 'lost'):.0f}, "
        f"outage {n_out:.0f} ms vs {c_out:.0f} ms (careful loss rate {c_loss:.2f}/s)"
    )
    print(f"target: careful end to end <= 60 s: {'met' if med('careful', 'seconds') <= 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
