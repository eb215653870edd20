"""Benchmark: the expected policy matrix of 1,000 pods and 500 NetworkPolicies, vs the naive per-pair way.

A seeded random cluster (``tests/policy/random_model.py``: 1,000 pods in 20 namespaces, a few
host-network and IP-less ones; 500 policies mixing pod/namespace selectors with every operator, both in
one peer, ipBlocks with excepts, numeric ports, endPort ranges, named ports, protocol-only ports,
default-deny, Ingress/Egress/both) is parsed once (not timed). Then, ``--runs`` times each:

- ours: build :class:`PolicyModel` (every selector once, bitsets per policy and rule) and compute the
  whole matrix with ``matrix()`` for every probed (port, protocol) (5: 80, 443, 8080/TCP, 53, 81/UDP):
  5,000,000 cells;
- naive: the same model, one ``decide()`` per (source, destination, port, protocol), measured on a
  seeded sample of ``--naive-sample`` pairs per (port, protocol) and extrapolated to all 1,000,000 pairs
  (said so in the output); the sampled cells are checked against ``matrix()``.

Also the 9-pod netpol matrix of the e2e model (x, y, z by a, b, c; 2 ports x 2 protocols, every ordered
pair, with the deciding policies of every cell via ``decide()``), for each of the 48 upstream cases'
final set of policies; the median of the slowest case is reported.

Targets: 1,000 x 500 expected matrix <= 2 s (median); netpol 9-pod matrix <= 1 s. Usage::

    PYTHONPATH=. python bench/policy_model.py [--runs 5] [--naive-sample 20000] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from migrator.policy.model import (  # noqa: E402
    Namespace,
    NetworkPolicy,
    PolicyModel,
    PolicyPod,
    Protocol,
    Verdict,
)
from tests.policy.e2e_cases import CASES, Probe  # noqa: E402
from tests.policy.netpol_world import World  # noqa: E402
from tests.policy.random_model import PROBE_PORTS, make_world  # noqa: E402

TARGET_BIG_S = 2.0
TARGET_NETPOL_S = 1.0


def ours(
    policies: list[NetworkPolicy], namespaces: list[Namespace], pods: list[PolicyPod]
) -> tuple[float, int]:
    """Seconds to build the model and every matrix, and the number of allowed cells."""
    started = time.perf_counter()
    model = PolicyModel(policies, namespaces, pods)
    matrices = [model.matrix(port, proto) for port, proto in PROBE_PORTS]
    seconds = time.perf_counter() - started
    return seconds, sum(row.bit_count() for m in matrices for row in m.rows)


def naive(model: PolicyModel, sample: int, seed: int) -> tuple[float, int, int]:
    """Seconds for ``sample`` decide() calls per (port, protocol), the pairs done, and disagreements."""
    rnd = random.Random(seed)
    n = len(model.pods)
    pairs = [(rnd.randrange(n), rnd.randrange(n)) for _ in range(sample)]
    pods = model.pods
    verdicts: list[list[Verdict]] = []
    started = time.perf_counter()
    for port, proto in PROBE_PORTS:
        verdicts.append([model.decide(pods[i], pods[j], port, proto).verdict for i, j in pairs])
    seconds = time.perf_counter() - started
    wrong = 0
    for (port, proto), got in zip(PROBE_PORTS, verdicts, strict=True):
        rows = model.matrix(port, proto).rows
        wrong += sum(
            (rows[i] >> j & 1 == 1) != (v is Verdict.ALLOW) for (i, j), v in zip(pairs, got, strict=True)
        )
    return seconds, sample * len(PROBE_PORTS), wrong


def netpol_case_seconds(case_index: int) -> float:
    """The 9-pod matrix of one case's final policies: model, 4 matrices, a decision per cell."""
    world = World()
    for step in CASES[case_index].steps:
        if not isinstance(step, Probe):
            world.step(step)
    started = time.perf_counter()
    model = world.model()
    for port in (80, 81):
        for proto in (Protocol.TCP, Protocol.UDP):
            matrix = model.matrix(port, proto)
            for src, dst, _ in matrix.cells():
                matrix.decision(src, dst)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=500)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--naive-sample", type=int, default=20000, help="decide() pairs per (port, protocol)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    policies, namespaces, pods = make_world(args.seed, args.pods, args.policies, args.namespaces)
    gen_s = time.perf_counter() - t0
    cells = len(pods) ** 2 * len(PROBE_PORTS)

    our_runs: list[float] = []
    naive_runs: list[float] = []
    allowed = wrong = done = 0
    for run in range(args.runs):  # interleaved, so both see the same machine
        seconds, allowed = ours(policies, namespaces, pods)
        our_runs.append(seconds)
        model = PolicyModel(policies, namespaces, pods)
        n_s, done, bad = naive(model, args.naive_sample, args.seed + run)
        naive_runs.append(n_s / done * cells)
        wrong += bad
    netpol = [statistics.median(netpol_case_seconds(k) for _ in range(args.runs)) for k in range(len(CASES))]
    slowest = max(range(len(CASES)), key=lambda k: netpol[k])

    out = {
        "pods": len(pods),
        "policies": len(policies),
        "namespaces": len(namespaces),
        "port_protocols": [f"{p}/{proto.value}" for p, proto in PROBE_PORTS],
        "cells": cells,
        "allowed_cells": allowed,
        "generate_and_parse_s": round(gen_s, 3),
        "ours_median_s": round(statistics.median(our_runs), 3),
        "ours_runs_s": [round(s, 3) for s in our_runs],
        "naive_sample_pairs_per_run": done,
        "naive_extrapolated_median_s": round(statistics.median(naive_runs), 1),
        "naive_per_decide_us": round(statistics.median(naive_runs) / cells * 1e6, 2),
        "naive_disagreements": wrong,
        "ratio": round(statistics.median(naive_runs) / statistics.median(our_runs), 1),
        "netpol_9pod_slowest_case": CASES[slowest].title,
        "netpol_9pod_slowest_median_s": round(netpol[slowest], 4),
        "netpol_9pod_median_over_cases_s": round(statistics.median(netpol), 4),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    ok_big = statistics.median(our_runs) <= TARGET_BIG_S
    ok_netpol = netpol[slowest] <= TARGET_NETPOL_S
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"random cluster (seed {args.seed}): {out['pods']} pods, {out['policies']} policies, "
            f"{out['namespaces']} namespaces, generated and parsed in {out['generate_and_parse_s']} s"
        )
        print(
            f"matrix: {cells:,} cells ({len(pods)}x{len(pods)} x "
            f"{', '.join(f'{p}/{proto.value}' for p, proto in PROBE_PORTS)}), {allowed:,} allowed"
        )
        print(
            f"ours (PolicyModel + matrix() per port): median {out['ours_median_s']:.3f} s, "
            f"{args.runs} runs {out['ours_runs_s']}"
        )
        print(
            f"naive (decide() per pair, on a sample of {args.naive_sample:,} pairs per port, EXTRAPOLATED to "
            f"{cells:,} cells): median ~{out['naive_extrapolated_median_s']} s "
            f"({out['naive_per_decide_us']} us/decide); sampled cells disagreeing with matrix(): {wrong}"
        )
        print(f"ratio naive / ours: {out['ratio']}x")
        print(
            f"netpol 9-pod matrix (80, 81 x TCP, UDP, every ordered pair, deciding policies per cell): "
            f"slowest case median {netpol[slowest] * 1000:.2f} ms ({out['netpol_9pod_slowest_case']}), "
            f"median over the 48 cases {statistics.median(netpol) * 1000:.2f} ms"
        )
        print(f"machine: {out['cpus']} CPUs, load average {out['loadavg_1m']}")
        print(
            f"targets: 1,000x500 expected matrix {out['ours_median_s']:.2f}s <= {TARGET_BIG_S}s: "
            f"{'ok' if ok_big else 'MISSED'}; netpol 9-pod matrix {netpol[slowest]:.4f}s <= "
            f"{TARGET_NETPOL_S}s: {'ok' if ok_netpol else 'MISSED'}"
        )
    return 0 if ok_big and ok_netpol and wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
