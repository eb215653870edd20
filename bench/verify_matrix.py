"""Benchmark: the full reachability matrix on 8 nodes x 4 pods, vs one ``ip netns exec SRC curl`` per pair.

Builds a throw-away namespace fabric (prefix ``pbtb``, 198.19.10.0/24 behind its own bridge namespace,
see ``tests/probe/pbt_fabric.py``), runs the full matrix ``--runs`` times through :class:`LabProber`
(one process, sockets opened inside each source namespace), then the naive way: sequentially, one
``ip netns exec SRC curl`` per pod pair, over all 1,024 pod pairs (``--naive-runs`` times), or over a
seeded sample extrapolated to 1,024 pairs with ``--naive-sample N`` (said so in the output).
The ratio compares the *full* matrix (pods, services, DNS, node-to-pod, NodePort) with the naive
*pod pairs only*, so it understates the gain.

    PYTHONPATH=. python bench/verify_matrix.py [--runs 7] [--naive-runs 1] [--naive-sample 0] [--json]
    PYTHONPATH=. python bench/verify_matrix.py --lab default   # a running lab
    PYTHONPATH=. python bench/verify_matrix.py --lab-up rbb --underlay 198.18.22.0/24 --naive-sample 200
        # brings up a real lab of --nodes x --pods-per-node (8 x 4 echo pods + bookinfo + DNS), runs the
        # same measurements on it, and always takes it down again
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "probe")]

from loguru import logger  # noqa: E402
from pbt_fabric import Fabric, rss_mb, session_prefix  # noqa: E402

from migrator.ports import ProbeKind, ProbeProtocol, ProbeTarget  # noqa: E402
from migrator.probe.analysis import is_flaky, summarize  # noqa: E402
from migrator.probe.matrix import MatrixOptions, build_matrix  # noqa: E402
from migrator.targets.lab.prober import LabProber  # noqa: E402

POD_KINDS = {ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE}


def naive(netns: dict[str, str], pairs: list[ProbeTarget]) -> tuple[float, int]:
    """Seconds for one sequential ``ip netns exec SRC curl`` per pair, and how many failed."""
    failed = 0
    started = time.perf_counter()
    for t in pairs:
        ns = os.path.basename(netns[t.source])
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "--max-time", "2", f"http://{t.host}:{t.port}{t.path}"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        failed += proc.stdout.strip() != "200"
    return time.perf_counter() - started, failed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--pods-per-node", type=int, default=4)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--naive-runs", type=int, default=1)
    ap.add_argument("--naive-sample", type=int, default=0, help="0: all pod pairs; N: sample and extrapolate")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lab", help="use the running lab NAME instead of a pbtb fabric")
    ap.add_argument(
        "--lab-up", metavar="NAME", help="bring up a real lab NAME for the run, then take it down"
    )
    ap.add_argument("--underlay", default="198.18.22.0/24", help="underlay /24 of --lab-up")
    args = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if os.geteuid() != 0:
        print("needs root (network namespaces)")
        return 2
    if (args.lab or args.lab_up) and importlib.util.find_spec("migrator.targets.lab.cluster") is None:
        print("--lab needs migrator.targets.lab.cluster (the lab adapter), which this checkout does not have")
        return 2

    fabric = Fabric(
        prefix=session_prefix("pbtb"), nodes=args.nodes, pods_per_node=args.pods_per_node, lifetime=900
    )
    out: dict[str, object] = {}
    real_lab = None
    try:
        t0 = time.perf_counter()
        if args.lab_up:
            from migrator.lab.lab import Lab  # noqa: PLC0415 - only for this mode
            from migrator.lab.spec import LabSpec  # noqa: PLC0415

            real_lab = Lab(args.lab_up)
            spec = LabSpec(
                name=args.lab_up, nodes=args.nodes, pods_per_node=args.pods_per_node, underlay=args.underlay
            )
            real_lab.up(spec)
            args.lab = args.lab_up
        if args.lab:
            target = importlib.import_module("migrator.targets.lab.cluster").open_lab_target(args.lab)
            cluster = target.cluster
            prober = target.prober
            assert isinstance(prober, LabProber)
            netns = prober.sources()
            out["fabric"] = (
                f"lab {args.lab}: {len(cluster.list_nodes())} nodes, {len(cluster.list_pods())} pods"
            )
        else:
            fabric.up()
            cluster, netns, prober = fabric.cluster, fabric.netns, LabProber(fabric.netns)
            out["fabric"] = f"pbtb fabric: {args.nodes} nodes x {args.pods_per_node} pods"
        out["fabric_setup_s"] = round(time.perf_counter() - t0, 2)
        targets = build_matrix(cluster, MatrixOptions(include_self=True, timeout=1.0))
        kinds = Counter(t.kind.value for t in targets)
        pod_pairs = [t for t in targets if t.kind in POD_KINDS]
        out["targets"] = len(targets)
        out["per_kind"] = dict(sorted(kinds.items()))
        out["pod_pairs"] = len(pod_pairs)

        rss_before = rss_mb()
        prober.probe(targets, concurrency=args.concurrency)  # warm-up: ARP caches, imports
        times = []
        cpu = []
        failures = []
        flaky = []
        for _ in range(args.runs):
            started = time.perf_counter()
            cpu0 = time.process_time()
            results = prober.probe(targets, concurrency=args.concurrency)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu0)
            failures.append(sum(not r.ok for r in results))
            flaky.append(sum(is_flaky(r) for r in results))
        summary = summarize(results)
        pod_times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            prober.probe(pod_pairs, concurrency=args.concurrency)
            pod_times.append(time.perf_counter() - started)
        out["pod_pairs_median_s"] = round(statistics.median(pod_times), 3)
        out["matrix_runs_s"] = [round(t, 3) for t in times]
        out["matrix_median_s"] = round(statistics.median(times), 3)
        out["prober_cpu_median_s"] = round(statistics.median(cpu), 3)
        out["loadavg_1m"] = float(Path("/proc/loadavg").read_text().split()[0])
        out["cpus"] = os.cpu_count()
        out["matrix_failures"] = failures
        out["matrix_flaky"] = flaky
        out["matrix_passed"] = summary.passed
        out["prober_rss_mb"] = round(rss_mb(), 1)
        out["prober_peak_rss_mb"] = round(rss_mb(field="VmHWM"), 1)
        out["rss_before_prober_mb"] = round(rss_before, 1)

        http_pairs = [t for t in pod_pairs if t.protocol is ProbeProtocol.HTTP]  # curl: HTTP pods only
        if args.naive_sample or len(http_pairs) < len(pod_pairs):
            rng = random.Random(0)
            sample = rng.sample(http_pairs, min(args.naive_sample or len(http_pairs), len(http_pairs)))
            mode = f"sample of {len(sample)} pod pairs, extrapolated to {len(pod_pairs)}"
        else:
            sample = pod_pairs
            mode = f"all {len(pod_pairs)} pod pairs, measured"
        naive_times = []
        naive_failed = 0
        for _ in range(max(1, args.naive_runs)):
            secs, naive_failed = naive(netns, sample)
            naive_times.append(secs * len(pod_pairs) / len(sample))
        out["naive_mode"] = mode
        out["naive_runs_s"] = [round(t, 3) for t in naive_times]
        out["naive_median_s"] = round(statistics.median(naive_times), 3)
        out["naive_failed"] = naive_failed
        out["naive_per_pair_ms"] = round(1000 * statistics.median(naive_times) / len(pod_pairs), 2)
        naive_med = statistics.median(naive_times)
        out["ratio_naive_pod_pairs_over_full_matrix"] = round(naive_med / statistics.median(times), 1)
        out["ratio_pod_pairs"] = round(naive_med / statistics.median(pod_times), 1)
        out["naive_full_matrix_extrapolated_s"] = round(
            statistics.median(naive_times) / len(pod_pairs) * len(targets), 1
        )
    finally:
        fabric.down()
        if real_lab is not None:
            res = real_lab.down()
            if res.leftovers:
                print(f"lab {args.lab_up}: leftovers after down: {res.leftovers}", file=sys.stderr)

    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['fabric']}, set up in {out['fabric_setup_s']} s")
        print(f"matrix: {out['targets']} probes ({out['pod_pairs']} pod pairs) {out['per_kind']}")
        print(
            f"full matrix: median {out['matrix_median_s']:.3f} s, {args.runs} runs {out['matrix_runs_s']}"
            f"  failures/run {out['matrix_failures']}, ok only on retry/run {out['matrix_flaky']}"
        )
        print(
            f"naive (ip netns exec SRC curl per pair, {out['naive_mode']}): "
            f"median {out['naive_median_s']:.3f} s ({out['naive_per_pair_ms']} ms/pair), "
            f"full matrix would take ~{out['naive_full_matrix_extrapolated_s']} s"
        )
        print(
            f"prober CPU per full run: median {out['prober_cpu_median_s']} s; "
            f"machine: {out['cpus']} CPUs, load average {out['loadavg_1m']} during the runs"
        )
        print(f"ours, pod pairs only: median {out['pod_pairs_median_s']:.3f} s")
        print(f"ratio, same {out['pod_pairs']} pod pairs: naive / ours = {out['ratio_pod_pairs']}x")
        print(
            f"ratio, naive pod pairs / ours full matrix ({out['targets']} probes): "
            f"{out['ratio_naive_pod_pairs_over_full_matrix']}x"
        )
        print(
            f"prober RSS: {out['prober_rss_mb']} MB now, peak {out['prober_peak_rss_mb']} MB "
            f"(one process; {out['rss_before_prober_mb']} MB before the first probe)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
