"""Benchmark: `lab up` of 8 nodes x 4 pods (target <= 20 s), `lab down` (<= 5 s), RSS of the lab (<= 1.5 GB).

Run as root:  PYTHONPATH=. python bench/lab_up.py [--runs 3] [--nodes 8] [--pods-per-node 4]
Prints every run and the medians. Uses the lab name 'tbench' under $MIGRATOR_HOME, else under a
temporary home of its own, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from loguru import logger

from migrator.lab import net, sh
from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.lab.state import ResourceKind

NAME = "tbench"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--pods-per-node", type=int, default=4)
    ap.add_argument("--app", default="bookinfo")
    ap.add_argument("--underlay", default="198.18.150.0/24")
    args = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    own_home = None
    if "MIGRATOR_HOME" not in os.environ:
        own_home = tempfile.mkdtemp(prefix="migrator-bench-")
        os.environ["MIGRATOR_HOME"] = own_home
    try:
        return _bench(args)
    finally:
        Lab(NAME).down()  # nothing, unless a run failed between up and down
        if own_home is not None:
            shutil.rmtree(own_home, ignore_errors=True)


def _bench(args: argparse.Namespace) -> int:
    name = NAME
    ups, downs, rss, procs, pods = [], [], [], [], []
    for run in range(1, args.runs + 1):
        lab = Lab(name)
        lab.down()  # leftovers of an interrupted run
        spec = LabSpec(
            name=name,
            nodes=args.nodes,
            pods_per_node=args.pods_per_node,
            app=args.app,
            underlay=args.underlay,
        )
        t0 = time.perf_counter()
        lab.up(spec)
        up_s = time.perf_counter() - t0
        st = lab.require()
        pids: set[int] = {r.pid for r in st.resources if r.kind == ResourceKind.PROCESS and r.pid}
        for r in st.resources:
            if r.kind == ResourceKind.NETNS:
                pids.update(net.netns_pids(r.name))
        total_kb = sum(sh.rss_kb(p) for p in pids)
        n_pods = sum(1 for p in st.pods.values() if not p.host_network)
        t0 = time.perf_counter()
        res = lab.down()
        down_s = time.perf_counter() - t0
        ups.append(up_s)
        downs.append(down_s)
        rss.append(total_kb / 1024)
        procs.append(len(pids))
        pods.append(n_pods)
        print(
            f"run {run}: up {up_s:5.2f}s  down {down_s:5.2f}s  rss {total_kb / 1024:7.1f} MB "
            f"({len(pids)} processes, {n_pods} pods)  leftovers={res.leftovers or 'none'}",
            flush=True,
        )
    med = statistics.median
    print(
        f"median over {args.runs} runs ({args.nodes} nodes x {args.pods_per_node} pods/node + {args.app}): "
        f"up {med(ups):.2f}s (target <= 20)  down {med(downs):.2f}s (target <= 5)  "
        f"rss {med(rss):.1f} MB (target <= 1536) over {med(procs):.0f} processes, {med(pods):.0f} pods"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
