"""Scale benchmark of the Kubernetes target: list a 5,000-node cluster and plan its waves.

A fake API server (``migrator.testing.kube_server``, 127.0.0.1 only) runs in its own process with
``--nodes`` nodes and ``--pods-per-node`` pods each. Each measured run is a fresh client process that
builds a ``KubeCluster`` through a kubeconfig, lists nodes and pods, and computes the workers-first waves of
``--max-unavailable`` nodes (control-plane nodes last, one at a time) with the evictable pods of each node,
as a dry run would. It prints the wall time and the client's peak RSS (medians over ``--runs``) for:

- paginated: ``KubeCluster`` (list calls with ``limit``/``continue``, 500 a page);
- naive: one unpaginated list of nodes, then one GET per node, and one unpaginated list of pods.

Targets: paginated ≤ 2 s and ≤ 300 MB. Usage::

    PYTHONPATH=. python bench/kube_scale.py [--nodes 5000] [--pods-per-node 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 2.0
TARGET_RSS_MB = 300.0


# --------------------------------------------------------------------------------------------- client


def compute_waves(nodes, max_unavailable: str) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Workers first in waves of ``max_unavailable`` (a count or a percentage), control plane last, one
    at a time."""
    workers = sorted(n.name for n in nodes if not n.is_control_plane)
    control = sorted(n.name for n in nodes if n.is_control_plane)
    if max_unavailable.endswith("%"):
        size = max(1, math.floor(len(nodes) * float(max_unavailable[:-1]) / 100))
    else:
        size = max(1, int(max_unavailable))
    waves = [workers[i : i + size] for i in range(0, len(workers), size)]
    waves += [[name] for name in control]
    return waves


def client(args: argparse.Namespace) -> None:
    t_import = time.perf_counter()
    from kubernetes.client import CoreV1Api  # noqa: F401, PLC0415  (one-time validator compile)

    from migrator.targets.kube import KubeCluster  # noqa: PLC0415
    from migrator.targets.kube.drain import PodDisposition, classify_pod  # noqa: PLC0415
    from migrator.targets.kube.types import to_node  # noqa: PLC0415

    import_seconds = time.perf_counter() - t_import
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    cluster = KubeCluster(kubeconfig=args.kubeconfig, page_size=500)
    api = cluster.api
    if args.client == "paginated":
        nodes = cluster.list_nodes()
        requests = math.ceil(len(nodes) / 500)
    else:
        listed = api.call("list nodes", api.core.list_node)["items"]
        nodes = [
            to_node(api.call(f"read node {o['metadata']['name']}", api.core.read_node, o["metadata"]["name"]))
            for o in listed
        ]
        requests = 1 + len(listed)
    waves = compute_waves(nodes, args.max_unavailable)
    plan_seconds = time.perf_counter() - start
    rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the dry run's drain preview: every node's evictable pods
    if args.client == "paginated":
        pods = cluster.list_pod_objects()
        requests += math.ceil(len(pods) / 500)
    else:
        pods = api.call("list pods", api.core.list_pod_for_all_namespaces)["items"]
        requests += 1
    evictable: dict[str, int] = {}
    for pod in pods:
        if classify_pod(pod, delete_emptydir_data=False, force=False) is PodDisposition.EVICT:
            node = pod["spec"]["nodeName"]
            evictable[node] = evictable.get(node, 0) + 1
    total_seconds = time.perf_counter() - start
    cluster.close()
    print(
        json.dumps(
            {
                "import_seconds": import_seconds,
                "seconds": plan_seconds,
                "total_seconds": total_seconds,
                "rss_plan_mb": rss_plan,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mb": rss_before,
                "nodes": len(nodes),
                "pods": len(pods),
                "evictable": sum(evictable.values()),
                "waves": len(waves),
                "first_wave": waves[0][:3],
                "last_wave": waves[-1],
                "requests": requests,
                "wave_digest": hash(tuple(tuple(w) for w in waves)),
            }
        )
    )


# ----------------------------------------------------------------------------------------------- main


def run_client(mode: str, kubeconfig: str, max_unavailable: str) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client",
            mode,
            "--kubeconfig",
            kubeconfig,
            "--max-unavailable",
            max_unavailable,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={  # bytecode cached as an installed package has it (this machine sets PYTHONDONTWRITEBYTECODE)
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONHASHSEED": "0",
            "PYTHONPATH": str(ROOT),
            "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "migrator-bench-pycache"),
        },
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} client failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-unavailable", default="5%")
    parser.add_argument("--client", choices=["paginated", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args)
        return 0

    from migrator.testing.kube_server import FakeClusterProcess  # noqa: PLC0415 - not in the clients

    workdir = Path(tempfile.mkdtemp(prefix="kube-scale-"))
    kubeconfig = str(workdir / "kubeconfig")
    results: dict[str, list[dict[str, object]]] = {"paginated": [], "naive": []}
    with FakeClusterProcess(
        args.nodes, Path(kubeconfig), pods_per_node=args.pods_per_node, lifetime=900
    ) as server:
        print(
            f"fake API server {server.url}: {args.nodes} nodes, {args.nodes * args.pods_per_node} pods "
            f"(built in {server.build_seconds:.1f}s)"
        )
        for _ in range(args.runs):
            for mode in ("paginated", "naive"):  # interleaved, so both see the same conditions
                results[mode].append(run_client(mode, kubeconfig, args.max_unavailable))

    def med(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[mode])  # type: ignore[arg-type]

    page, naive = results["paginated"][0], results["naive"][0]
    assert page["wave_digest"] == naive["wave_digest"], "both ways must plan the same waves"
    print(
        f"plan: {page['nodes']} nodes, {page['pods']} pods ({page['evictable']} to evict), "
        f"{page['waves']} waves of max_unavailable={args.max_unavailable}; first wave starts "
        f"{page['first_wave']}, last wave {page['last_wave']}"
    )
    print(
        f"{'':10} {'nodes+waves s':>14} {'(min-max)':>13} {'+pods s':>8} {'RSS plan MB':>12} "
        f"{'RSS peak MB':>12} {'requests':>9}"
    )
    for mode in ("paginated", "naive"):
        secs = [float(r["seconds"]) for r in results[mode]]  # type: ignore[arg-type]
        print(
            f"{mode:10} {med(mode, 'seconds'):14.3f} {min(secs):6.3f}-{max(secs):6.3f} "
            f"{med(mode, 'total_seconds'):8.3f} {med(mode, 'rss_plan_mb'):12.1f} {med(mode, 'rss_mb'):12.1f} "
            f"{int(results[mode][0]['requests']):9d}"
        )  # type: ignore[call-overload]
    ratio = med("naive", "seconds") / med("paginated", "seconds")
    print(
        f"naive / paginated: nodes+waves time {ratio:.1f}x, with pods "
        f"{med('naive', 'total_seconds') / med('paginated', 'total_seconds'):.1f}x, peak RSS "
        f"{med('naive', 'rss_mb') / med('paginated', 'rss_mb'):.2f}x"
    )
    print(
        f"one-time client import per process (kubernetes CoreV1Api validators + migrator): "
        f"{med('paginated', 'import_seconds'):.2f}s, "
        f"RSS after imports {med('paginated', 'rss_before_mb'):.0f} MB"
    )
    ok_time = med("paginated", "seconds") <= TARGET_SECONDS
    ok_rss = med("paginated", "rss_mb") <= TARGET_RSS_MB
    print(
        f"targets: nodes+waves {med('paginated', 'seconds'):.2f}s <= {TARGET_SECONDS}s: "
        f"{'ok' if ok_time else 'MISSED'}; "
        f"peak RSS {med('paginated', 'rss_mb'):.0f} MB <= {TARGET_RSS_MB:.0f} MB: "
        f"{'ok' if ok_rss else 'MISSED'}"
    )
    return 0 if ok_time and ok_rss else 1


if __name__ == "__main__":
    sys.exit(main())
