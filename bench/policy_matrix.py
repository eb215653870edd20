"""Benchmark: the policy matrix of the netpol model (9 pods x 8 destinations x 2 ports x 2 protocols = 288
probes, allowed and denied) on a running lab, vs one ``ip netns exec SRC python3 <socket probe>`` per probe.

Needs a lab built with the netpol app (``migrator lab up --name NAME --app netpol``; with some
NetworkPolicies applied, so that denied pairs are probed too: ``migrator lab apply -f FILE``). Runs the
policy verification (:func:`migrator.probe.policy.run_policy_verify`, the code of ``migrator verify --scope
policy``) once to warm up, then ``--runs`` times (default 5) and prints the median; then the naive way on
a seeded sample of ``--naive-sample`` probes (default 40, sequential), extrapolated to the whole matrix and
said so. Both are measured in the same run; the ratio is naive / ours. Target: <= 1 s.

    PYTHONPATH=. python bench/policy_matrix.py --lab NAME [--runs 5] [--naive-sample 40] [--json]
    PYTHONPATH=. python bench/policy_matrix.py --fabric [--icmp-ratelimit]
        # no lab: the netpol model as throw-away namespaces (tests/probe/np_fabric.py, 198.18.41.0/24),
        # "pods of y accept only pods of y" enforced with iptables REJECT and expected by a rule-driven
        # verdict source (migrator.testing.fake.TableModel), always removed afterwards. --icmp-ratelimit
        # keeps the kernel's ICMP rate limit in the pod namespaces (UDP denies past its burst time out).
"""

from __future__ import annotations

import argparse
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

from migrator.errors import MigratorError  # noqa: E402
from migrator.ports import ProbeProtocol, ProbeTarget, Target  # noqa: E402
from migrator.probe.policy import (  # noqa: E402
    ModelFactory,
    PolicyOptions,
    PolicyReport,
    policy_cases,
    run_policy_verify,
)
from migrator.targets.lab.prober import LabProber  # noqa: E402

NAIVE_PROBE = """
import socket, sys
host, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
s.settimeout(timeout)
try:
    s.connect((host, port))
    if proto == "udp":
        s.send(b"migrator-probe\\n")
        s.recv(2048)
    print("allow")
except (TimeoutError, ConnectionRefusedError, ConnectionResetError, OSError):
    print("deny")
"""


def naive(netns: dict[str, str], sample: list[ProbeTarget]) -> tuple[float, Counter[str]]:
    """Seconds for one sequential ``ip netns exec SRC python3 -c PROBE`` per probe, and the answers."""
    answers: Counter[str] = Counter()
    started = time.perf_counter()
    for t in sample:
        ns = os.path.basename(netns[t.source])
        proto = "udp" if t.protocol is ProbeProtocol.UDP else "tcp"
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", NAIVE_PROBE, t.host, str(t.port), proto,
             str(t.timeout)],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        answers[proc.stdout.strip() or "error"] += 1
    return time.perf_counter() - started, answers


def summary_line(report: PolicyReport) -> str:
    s = report.summary
    return (
        f"{s.total} probes ({s.expected_allow} expected allow, {s.expected_deny} expected deny): "
        f"{s.ok} as expected, {s.holes} holes, {s.breaks} breaks, {s.errors} prober errors"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--lab", help="a running lab built with --app netpol")
    where.add_argument("--fabric", action="store_true", help="throw-away namespaces instead of a lab")
    ap.add_argument("--icmp-ratelimit", action="store_true", help="--fabric: keep the kernel's ICMP limit")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--naive-sample", type=int, default=40, help="probes of the naive way, extrapolated")
    ap.add_argument("--timeout", type=float, default=0.5, help="seconds per probe")
    ap.add_argument("--namespaces", default="x,y,z", help="the netpol model's namespaces")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if os.geteuid() != 0:
        print("needs root (network namespaces)")
        return 2
    if not args.fabric:
        from migrator.targets.open import open_target  # noqa: PLC0415

        try:
            target = open_target(f"lab:{args.lab}")
        except MigratorError as exc:
            print(f"cannot open lab {args.lab!r}: {exc}")
            return 2
        return measure(args, target, None, f"lab {args.lab}")
    from np_fabric import NetpolFabric  # noqa: PLC0415

    from migrator.testing.fake import TableModel, deny_into_y, y_denied  # noqa: PLC0415

    fabric = NetpolFabric(prefix=f"np-probe-b{os.getpid()}", icmp_ratelimit=args.icmp_ratelimit)
    try:
        fabric.up()
        fabric.enforce(y_denied)
        target = Target("np-fabric", fabric.cluster, prober=LabProber(fabric.netns))
        limit = "kernel default" if args.icmp_ratelimit else "0"
        return measure(args, target, TableModel(deny_into_y), f"np fabric (icmp_ratelimit {limit})")
    finally:
        fabric.down()


def measure(args: argparse.Namespace, target: Target, model: ModelFactory | None, where: str) -> int:
    options = PolicyOptions(namespaces=frozenset(args.namespaces.split(",")), timeout=args.timeout)
    out: dict[str, object] = {"where": where, "cpus": os.cpu_count()}
    cases, inputs = policy_cases(target.cluster, options, model_factory=model)
    probed = [c.target for c in cases if c.target is not None]
    out["pods"] = inputs.pods
    out["policies"] = list(inputs.policies)
    out["probes"] = len(probed)
    if inputs.pods != 9 or len(probed) != 288:
        print(
            f"warning: the netpol model has 9 pods and 288 probes; this lab has {inputs.pods} pods and "
            f"{len(probed)} probes"
        )

    warm = run_policy_verify(target, options, model_factory=model)  # ARP and conntrack warm, imports done
    times, reports = [], []
    for _ in range(max(1, args.runs)):
        started = time.perf_counter()
        reports.append(run_policy_verify(target, options, model_factory=model))
        times.append(time.perf_counter() - started)
    out["runs_s"] = [round(t, 3) for t in times]
    out["median_s"] = round(statistics.median(times), 3)
    out["probe_median_s"] = round(statistics.median(r.duration_s for r in reports), 3)
    out["warmup"] = summary_line(warm)
    out["last"] = summary_line(reports[-1])
    out["passed_every_run"] = all(r.passed for r in reports)

    prober = target.prober
    if not isinstance(prober, LabProber):
        print("the naive way needs the lab prober's namespaces")
        return 2
    netns = prober.sources()
    rng = random.Random(0)
    sample = rng.sample(probed, min(args.naive_sample, len(probed)))
    secs, answers = naive(netns, sample)
    naive_s = secs * len(probed) / len(sample)
    out["naive_mode"] = f"sample of {len(sample)} probes, sequential, extrapolated to {len(probed)}"
    out["naive_s"] = round(naive_s, 3)
    out["naive_per_probe_ms"] = round(1000 * secs / len(sample), 2)
    out["naive_answers"] = dict(answers)
    out["ratio_naive_over_ours"] = round(naive_s / statistics.median(times), 1)
    out["target_s"] = 1.0
    out["met"] = statistics.median(times) <= 1.0

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{where}: {out['pods']} pods, {out['probes']} probes, policies {out['policies'] or 'none'}")
    print(f"warm-up: {out['warmup']}")
    print(
        f"policy matrix (verify --scope policy): median {out['median_s']:.3f} s of {len(times)} runs "
        f"{out['runs_s']} (probing alone {out['probe_median_s']:.3f} s); last run: {out['last']}"
    )
    print(
        f"naive (ip netns exec SRC python3 socket probe, {out['naive_mode']}): {out['naive_s']:.3f} s "
        f"({out['naive_per_probe_ms']} ms/probe, answers {out['naive_answers']})"
    )
    print(
        f"ratio naive/ours: {out['ratio_naive_over_ours']}x; "
        f"target <= 1 s: {'met' if out['met'] else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
