"""Scale benchmark of the ENGINE's dry run against a 5,000-node cluster (fake API server over HTTP).

``migrator.engine.dry_run`` of ``plans/flannel-to-calico.yaml`` with the kube target
(``migrator.adapters.kube.open_kube_target``) against ``migrator.adapters.kube_fake_server`` running in its
own process (127.0.0.1 only) with ``--nodes`` nodes, 3 of them control plane, ``--pods-per-node`` pods each.
Each measured run is a fresh client process; it prints wall time (target open + dry run) and peak RSS.

The plan is the real one, with ``calico_manifest`` pointing at a small Calico manifest (a CRD, calico-node's
ServiceAccount and DaemonSet) so that the install stage's server-side dry run has something to apply. No
inventory is given: ``cni.switch-node``'s preview would run its playbook in Ansible check mode over SSH on
each node (real nodes only, and minutes on 5,000 nodes); without an executor the preview says so in one
line per node and everything else (waves, drain and restart previews, server-side dry runs) is complete.

Two ways, interleaved, same server:

- snapshot: the kube target as ``open_kube_target`` builds it; the dry run enters its read snapshot, so
  nodes, pods and services are each one paginated list (``limit``/``continue``, 500 a page);
- naive: the same target without the snapshot: every per-node preview lists that node's pods
  (``fieldSelector=spec.nodeName=...``), one request per node and step. It is run once (``--naive-runs``)
  and cut at ``--naive-timeout`` seconds, which then gives a lower bound of the ratio.

Targets (snapshot): <= 2 s and <= 300 MB peak RSS. Usage::

    PYTHONPATH=. python bench/kube_plan_scale.py [--nodes 5000] [--pods-per-node 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 2.0
TARGET_RSS_MB = 300.0
PLAN = ROOT / "plans" / "flannel-to-calico.yaml"
CALICO_MANIFEST = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: felixconfigurations.crd.projectcalico.org}
spec:
  group: crd.projectcalico.org
  scope: Cluster
  names: {kind: FelixConfiguration, plural: felixconfigurations, singular: felixconfiguration}
  versions: [{name: v1, served: true, storage: true}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: calico-node, namespace: kube-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: calico-node, namespace: kube-system, labels: {k8s-app: calico-node}}
spec:
  selector: {matchLabels: {k8s-app: calico-node}}
  template:
    metadata: {labels: {k8s-app: calico-node}}
    spec:
      hostNetwork: true
      containers: [{name: calico-node, image: "docker.io/calico/node:v3.27.0"}]
"""


def client(args: argparse.Namespace) -> None:
    t_import = time.perf_counter()
    from kubernetes.client import (  # noqa: F401, PLC0415  (one-time module imports, measured apart)
        AppsV1Api,
        CoordinationV1Api,
        CoreV1Api,
        DiscoveryV1Api,
        PolicyV1Api,
    )

    from migrator.adapters.kube import open_kube_target  # noqa: PLC0415
    from migrator.engine import dry_run  # noqa: PLC0415
    from migrator.engine.planio import load_plan_file  # noqa: PLC0415

    import_seconds = time.perf_counter() - t_import
    source = load_plan_file(
        PLAN, {"max_unavailable": str(args.max_unavailable), "calico_manifest": args.manifest}
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    target = open_kube_target(None, kubeconfig=args.kubeconfig)
    if args.client == "naive":
        target.extras.pop("read_snapshot")
    report = dry_run(source, target, target_spec="kube")
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_before
    stage = next(s for s in report["stages"] if "waves" in s)
    install = next(s for s in report["stages"] if s["stage"] == "install-calico")
    server_dry_run = [
        line for line in install["steps"][0]["preview"] if isinstance(line, str) and "server dry run" in line
    ]
    waves = [[n["node"] for n in w["nodes"]] for w in stage["waves"]]
    evicts = sum(
        len(line.get("evicts", []))
        for w in stage["waves"]
        for n in w["nodes"]
        for step in n["steps"]
        for line in step["preview"]
        if isinstance(line, dict)
    )
    print(
        json.dumps(
            {
                "import_seconds": import_seconds,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mb": rss_before,
                "nodes": len(report["nodes"]),
                "waves": len(waves),
                "first_wave": waves[0],
                "last_wave": waves[-1],
                "evicts": evicts,
                "server_dry_run": server_dry_run,
                "digest": hash(json.dumps(report["stages"], sort_keys=True, default=str)),
            }
        )
    )


def run_client(
    mode: str, kubeconfig: str, manifest: str, max_unavailable: int, timeout: float
) -> dict[str, Any] | None:
    """One measured client process; ``None`` when it ran past ``timeout``."""
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--client",
                mode,
                "--kubeconfig",
                kubeconfig,
                "--manifest",
                manifest,
                "--max-unavailable",
                str(max_unavailable),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT), "MIGRATOR_INVENTORY": ""},
        )
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"{mode} client failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--naive-runs", type=int, default=None, help="default: --runs")
    parser.add_argument("--max-unavailable", type=int, default=1)
    parser.add_argument("--client", choices=["snapshot", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--naive-timeout", type=float, default=900.0)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="kube-plan-scale-"))
    kubeconfig = str(workdir / "kubeconfig")
    manifest = workdir / "calico.yaml"
    manifest.write_text(CALICO_MANIFEST)
    print(f"plan {PLAN.relative_to(ROOT)} (calico_manifest={manifest.name}, no inventory)")
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "kube_scale.py"),
            "--serve",
            "--nodes",
            str(args.nodes),
            "--pods-per-node",
            str(args.pods_per_node),
            "--kubeconfig",
            kubeconfig,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    watchdog = threading.Timer(1800, server.kill)  # never leave a server behind
    watchdog.start()
    results: dict[str, list[dict[str, Any]]] = {"snapshot": [], "naive": []}
    naive_cut = False
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the fake API server did not start")
        print(
            f"fake API server {url}: {args.nodes} nodes, {args.nodes * args.pods_per_node} pods "
            f"(built in {time.perf_counter() - t0:.1f}s)"
        )
        naive_runs = args.runs if args.naive_runs is None else args.naive_runs
        for i in range(max(args.runs, naive_runs)):
            if i < args.runs:
                got = run_client("snapshot", kubeconfig, str(manifest), args.max_unavailable, 900)
                if got is None:
                    raise RuntimeError("the snapshot dry run took more than 900 s")
                results["snapshot"].append(got)
                print(
                    f"  snapshot run {i + 1}: {got['seconds']:.2f}s (client CPU {got['cpu_seconds']:.2f}s),"
                    f" {got['rss_mb']:.0f} MB",
                    flush=True,
                )
            if i < naive_runs and not naive_cut:  # interleaved, so both see the same conditions
                t_naive = time.perf_counter()
                got = run_client("naive", kubeconfig, str(manifest), args.max_unavailable, args.naive_timeout)
                if got is None:
                    naive_cut = True
                    print(f"  naive run {i + 1}: cut after {time.perf_counter() - t_naive:.0f}s", flush=True)
                else:
                    results["naive"].append(got)
                    print(f"  naive run {i + 1}: {got['seconds']:.2f}s, {got['rss_mb']:.0f} MB", flush=True)
    finally:
        watchdog.cancel()
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)

    def med(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[mode])

    snap = results["snapshot"][0]
    if results["naive"]:
        assert snap["digest"] == results["naive"][0]["digest"], "both ways must render the same dry run"
    print(
        f"dry run: {snap['nodes']} nodes, {snap['waves']} waves of max_unavailable={args.max_unavailable}"
        f" (first {snap['first_wave']}, last {snap['last_wave']}), {snap['evicts']} pod evictions previewed"
    )
    print("install-calico, server-side dry run: " + "; ".join(snap["server_dry_run"]))
    print(f"{'':9} {'dry run s':>10} {'(min-max)':>15} {'client CPU s':>13} {'peak RSS MB':>12} {'runs':>5}")
    for mode in ("snapshot", "naive"):
        if not results[mode]:
            continue
        secs = [float(r["seconds"]) for r in results[mode]]
        print(
            f"{mode:9} {med(mode, 'seconds'):10.3f} {min(secs):7.3f}-{max(secs):7.3f} "
            f"{med(mode, 'cpu_seconds'):13.3f} {med(mode, 'rss_mb'):12.1f} {len(secs):5d}"
        )
    if naive_cut:
        print(
            f"naive / snapshot: time > {args.naive_timeout / med('snapshot', 'seconds'):.0f}x"
            f" (naive cut after {args.naive_timeout:.0f}s)"
        )
    elif results["naive"]:
        print(
            f"naive / snapshot: time {med('naive', 'seconds') / med('snapshot', 'seconds'):.1f}x, "
            f"peak RSS {med('naive', 'rss_mb') / med('snapshot', 'rss_mb'):.2f}x"
        )
    print(
        f"one-time imports per process: {med('snapshot', 'import_seconds'):.2f}s,"
        f" RSS after imports {med('snapshot', 'rss_before_mb'):.0f} MB"
    )
    ok_time = med("snapshot", "seconds") <= TARGET_SECONDS
    ok_rss = med("snapshot", "rss_mb") <= TARGET_RSS_MB
    secs, rss = med("snapshot", "seconds"), med("snapshot", "rss_mb")
    print(
        f"targets: dry run {secs:.2f}s <= {TARGET_SECONDS}s: {'ok' if ok_time else 'MISSED'};"
        f" peak RSS {rss:.0f} MB <= {TARGET_RSS_MB:.0f} MB: {'ok' if ok_rss else 'MISSED'}"
    )
    return 0 if ok_time and ok_rss else 1


if __name__ == "__main__":
    sys.exit(main())
