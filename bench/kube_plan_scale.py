"""Scale benchmark of the ENGINE's dry run against 1,000- and 5,000-node clusters (fake API server, HTTP).

``migrator.engine.dry_run`` of ``plans/flannel-to-calico.yaml`` with the kube target
(``migrator.targets.kube.open_kube_target``) against a fake flannel cluster served by
``migrator.testing.kube_server`` in its own process (127.0.0.1 only): ``--nodes`` nodes, 3 of them
control plane, ``--pods-per-node`` pods each. Each measured run is a fresh client process; it prints

- dry run: wall time of target open + ``dry_run`` (the whole preview as data: every stage, wave, node and
  step with its args, preview and undo);
- + JSON: the same plus rendering the report to the JSON observer's text (``json.dumps`` as
  ``migrator plan -o json`` does, without writing it to a terminal);
- the client's CPU time (dry run + JSON) and its peak RSS (after the JSON text exists), and the fake
  server's CPU time over the client process (a bound of what the dry run asked of it). On a loaded
  machine (the load average is printed with every run) the wall times grow with the run queue; the CPU
  times much less.

The plan is the real one, with ``calico_manifest`` pointing at a small Calico manifest so that the install
stage's server-side dry run has something to apply. No inventory is given: ``cni.switch-node``'s preview
would run its playbook in Ansible check mode over SSH on each node (real nodes only); without an executor
the preview says so in one line per node, and everything else is complete.

Ways, interleaved run by run on the same server (all with the kube target's read snapshot: nodes, pods and
services are each one paginated list):

- shared: the engine as it is: each step compiled once (``RuntimeTemplate``) and rendered once per
  stage unless its templates use ``node.*``; its args, retry and undo dumped once; previews per node;
- baseline (``--baseline DIR``, none by default): the shared way of another source tree, e.g.
  ``git archive <commit> | tar -x -C DIR``, to measure a change before/after in one series;
- shared-gc: the same with the cyclic garbage collector running during the dry run (as before);
- per-node (naive): the engine's dry run as it was before (its per-step view, kept below verbatim, and
  the garbage collector running): every step rendered by a walk of the whole model, its args, retry and
  undo dumped and a fresh context event made for every node - 5 steps x 5,000 nodes = 25,000 renders;
- no-snapshot (``--no-snapshot-runs``, 0 by default: minutes at 5,000 nodes): the target without its read
  snapshot, so every per-node preview lists that node's pods (one request per node and step); cut at
  ``--naive-timeout`` seconds, which then gives a lower bound of the ratio.

Every way must produce the same report (a digest of its stages is compared). Targets at 5,000 nodes
(shared): dry run <= 2 s and peak RSS <= 300 MB. Usage::

    PYTHONPATH=. python bench/kube_plan_scale.py [--nodes 1000 5000] [--runs 5] [--pods-per-node 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 2.0
TARGET_RSS_MB = 300.0
TARGET_NODES = 5000
PLAN = ROOT / "plans" / "flannel-to-calico.yaml"
MODES = ("shared", "baseline", "shared-gc", "per-node", "no-snapshot")


def keep_gc_running() -> None:
    """The dry run without its pause of the cyclic garbage collector, as before."""
    import contextlib  # noqa: PLC0415

    from migrator.engine import dryrun  # noqa: PLC0415

    dryrun._gc_paused = contextlib.nullcontext  # type: ignore[assignment]


def use_per_node_views() -> None:
    """The naive way: the dry run's step view as it was before it was shared per stage."""
    from migrator.actions import StepContext, get_action  # noqa: PLC0415
    from migrator.engine import dryrun  # noqa: PLC0415
    from migrator.engine.planio import render_step, runtime_context  # noqa: PLC0415
    from migrator.ports import Node  # noqa: PLC0415

    class PerNodeViews(dryrun._StepViews):  # the bench swaps in the old way
        def view(self, node: Node | None) -> dict[str, Any]:
            step, env = self.step, self.env
            rendered = render_step(step, runtime_context(env.run_id, node))
            action_name = str(getattr(rendered, "action", ""))
            action = get_action(action_name)
            args = getattr(rendered, "args", None)
            ctx = StepContext(
                run_id=env.run_id,
                run_dir=env.scratch,
                artifacts_dir=env.scratch,
                target=env.target,
                node=node,
                params=env.params,
                dry_run=True,
                step=step.display_name,
                scrub=env.scrub,
            )
            view: dict[str, Any] = {
                "step": step.display_name,
                "action": action_name,
                "args": args.model_dump(mode="json") if args is not None else None,
                "timeout": step.timeout,
                "retry": step.retry.model_dump(mode="json"),
                "preview": action.preview(ctx, args),
            }
            if step.no_undo:
                view["undo"] = "none (no_undo)"
            elif rendered.undo is not None:
                view["undo"] = {
                    "action": getattr(rendered.undo, "action", ""),
                    "args": dryrun._dump_args(getattr(rendered.undo, "args", None)),
                }
            else:
                view["undo"] = action.undo_preview(ctx, args) or f"{action_name} undo"
            return view

    dryrun._StepViews = PerNodeViews  # type: ignore[misc]


def client(args: argparse.Namespace) -> None:
    t_import = time.perf_counter()
    from kubernetes.client import (  # noqa: F401, PLC0415  (one-time module imports, measured apart)
        AppsV1Api,
        CoordinationV1Api,
        CoreV1Api,
        DiscoveryV1Api,
        PolicyV1Api,
    )

    from migrator.engine import dry_run  # noqa: PLC0415
    from migrator.engine.planio import load_plan_file  # noqa: PLC0415
    from migrator.targets.kube import open_kube_target  # noqa: PLC0415

    import_seconds = time.perf_counter() - t_import
    if args.client in ("shared-gc", "per-node"):
        keep_gc_running()
    if args.client == "per-node":
        use_per_node_views()
    source = load_plan_file(
        PLAN, {"max_unavailable": str(args.max_unavailable), "calico_manifest": args.manifest}
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    target = open_kube_target(None, kubeconfig=args.kubeconfig)
    if args.client == "no-snapshot":
        target.read_snapshot = None
    report = dry_run(source, target, target_spec="kube")
    seconds = time.perf_counter() - start
    text = json.dumps(report, default=str)  # what the JSON output renders
    json_seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_before
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    stages = json.dumps(report["stages"], sort_keys=True, default=str).encode()
    print(
        json.dumps(
            {
                "import_seconds": import_seconds,
                "seconds": seconds,
                "json_seconds": json_seconds,
                "json_mb": len(text) / 1e6,
                "cpu_seconds": cpu_seconds,
                "rss_mb": rss,
                "rss_before_mb": rss_before,
                "nodes": len(report["nodes"]),
                "waves": len(waves),
                "node_views": sum(len(w) for w in waves),
                "step_views": sum(len(n["steps"]) for w in stage["waves"] for n in w["nodes"]),
                "first_wave": waves[0],
                "last_wave": waves[-1],
                "evicts": evicts,
                "server_dry_run": server_dry_run,
                "digest": hashlib.sha256(stages).hexdigest(),
            }
        )
    )


def run_client(
    mode: str,
    kubeconfig: str,
    manifest: str,
    max_unavailable: int,
    timeout: float,
    baseline: Path | None = None,
) -> dict[str, Any] | None:
    """One measured client process; ``None`` when it ran past ``timeout``. ``baseline`` mode: the shared
    way of another source tree (its own copy of this bench), e.g. ``git archive`` of an earlier commit."""
    root = baseline if mode == "baseline" and baseline is not None else ROOT
    try:
        out = subprocess.run(
            [
                sys.executable,
                str(root / "bench" / Path(__file__).name),
                "--client",
                "shared" if mode == "baseline" else mode,
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
            env=client_env(root),
        )
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"{mode} client failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def client_env(root: Path = ROOT) -> dict[str, str]:
    """As an installed package runs: with compiled bytecode (cached outside the source tree, since
    this machine sets PYTHONDONTWRITEBYTECODE), no inventory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cache = Path(tempfile.gettempdir()) / "migrator-bench-pycache"
    env.update(
        PYTHONHASHSEED="0", PYTHONPATH=str(root), MIGRATOR_INVENTORY="", PYTHONPYCACHEPREFIX=str(cache)
    )
    return env


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f}"


def measure(nodes: int, args: argparse.Namespace, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    """All the runs of every way against one fake cluster of ``nodes`` nodes; prints them as they come."""
    from migrator.testing.kube_server import (  # noqa: PLC0415 - not in the clients
        FakeClusterProcess,
        write_calico_manifest,
    )

    kubeconfig = workdir / f"kubeconfig-{nodes}"
    manifest = str(write_calico_manifest(workdir / "calico.yaml"))
    runs = {
        "shared": args.runs,
        "baseline": args.runs if args.baseline else 0,
        "shared-gc": args.naive_runs,
        "per-node": args.naive_runs,
        "no-snapshot": args.no_snapshot_runs,
    }
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    cut: set[str] = set()
    with FakeClusterProcess(nodes, kubeconfig, pods_per_node=args.pods_per_node) as server:
        print(
            f"\n== {nodes} nodes: fake API server {server.url}, {nodes * args.pods_per_node} pods"
            f" (built in {server.build_seconds:.1f}s), load average {load()}"
        )
        for mode in MODES:  # unmeasured: the first run of a process writes the bytecode cache
            if runs[mode] and mode != "no-snapshot":
                run_client(
                    mode, str(kubeconfig), manifest, args.max_unavailable, args.naive_timeout, args.baseline
                )
        for i in range(max(runs.values())):
            for mode in MODES:  # interleaved, so every way sees the same conditions
                if i >= runs[mode] or mode in cut:
                    continue
                timeout = 900.0 if mode in ("shared", "baseline") else args.naive_timeout
                started, server_cpu = time.perf_counter(), server.cpu_seconds()
                got = run_client(
                    mode, str(kubeconfig), manifest, args.max_unavailable, timeout, args.baseline
                )
                if got is None:
                    cut.add(mode)
                    print(f"  {mode} run {i + 1}: cut after {time.perf_counter() - started:.0f}s", flush=True)
                    continue
                after = server.cpu_seconds()  # the whole client process's requests (a bound)
                got["server_cpu_seconds"] = after - server_cpu if after is not None and server_cpu else 0.0
                results[mode].append(got)
                print(
                    f"  {mode} run {i + 1}: dry run {got['seconds']:.2f}s, + JSON {got['json_seconds']:.2f}s"
                    f" (client CPU {got['cpu_seconds']:.2f}s, server CPU {got['server_cpu_seconds']:.2f}s),"
                    f" {got['rss_mb']:.0f} MB, load {load()}",
                    flush=True,
                )
    print(f"   load average after: {load()}")
    return results


def report(nodes: int, results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> bool:
    """Print the medians of one cluster size; whether the targets are met (at TARGET_NODES)."""

    def med(mode: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[mode])

    shared = results["shared"][0]
    for mode in MODES[1:]:
        if results[mode]:
            assert results[mode][0]["digest"] == shared["digest"], f"{mode} rendered another dry run"
    print(
        f"-- {nodes} nodes: {shared['waves']} waves of max_unavailable={args.max_unavailable}"
        f" (first {shared['first_wave']}, last {shared['last_wave']}), {shared['step_views']} step views,"
        f" {shared['evicts']} pod evictions previewed, JSON {shared['json_mb']:.1f} MB;"
        " every way gave the same report"
    )
    print("   install-calico, server-side dry run: " + "; ".join(shared["server_dry_run"]))
    print(
        f"   {'':12} {'dry run s':>9} {'(min-max)':>13} {'+ JSON s':>9} {'client CPU s':>13}"
        f" {'server CPU s':>13} {'peak RSS MB':>12} {'runs':>5}"
    )
    for mode in MODES:
        if not results[mode]:
            continue
        secs = [float(r["seconds"]) for r in results[mode]]
        print(
            f"   {mode:12} {med(mode, 'seconds'):9.2f} {min(secs):6.2f}-{max(secs):6.2f}"
            f" {med(mode, 'json_seconds'):9.2f} {med(mode, 'cpu_seconds'):13.2f}"
            f" {med(mode, 'server_cpu_seconds'):13.2f} {med(mode, 'rss_mb'):12.0f} {len(secs):5d}"
        )
    for mode in MODES[1:]:
        if results[mode]:
            print(
                f"   {mode} / shared: dry run {med(mode, 'seconds') / med('shared', 'seconds'):.2f}x,"
                f" client CPU {med(mode, 'cpu_seconds') / med('shared', 'cpu_seconds'):.2f}x,"
                f" peak RSS {med(mode, 'rss_mb') / med('shared', 'rss_mb'):.2f}x"
            )
        elif mode == "no-snapshot" and args.no_snapshot_runs:
            print(f"   no-snapshot / shared: > {args.naive_timeout / med('shared', 'seconds'):.0f}x (cut)")
    print(
        f"   one-time imports per process (measured apart): {med('shared', 'import_seconds'):.2f}s,"
        f" RSS after imports {med('shared', 'rss_before_mb'):.0f} MB"
    )
    if nodes != TARGET_NODES:
        return True
    dry, rss = med("shared", "seconds"), med("shared", "rss_mb")
    ok_time, ok_rss = dry <= TARGET_SECONDS, rss <= TARGET_RSS_MB
    print(
        f"   targets at {TARGET_NODES} nodes: dry run {dry:.2f}s <= {TARGET_SECONDS}s:"
        f" {'ok' if ok_time else 'MISSED'} (+ JSON {med('shared', 'json_seconds'):.2f}s);"
        f" peak RSS {rss:.0f} MB <= {TARGET_RSS_MB:.0f} MB: {'ok' if ok_rss else 'MISSED'}"
    )
    return ok_time and ok_rss


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, TARGET_NODES])
    parser.add_argument("--pods-per-node", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--naive-runs", type=int, default=None, help="per-node runs (default: --runs)")
    parser.add_argument("--no-snapshot-runs", type=int, default=0)
    parser.add_argument("--naive-timeout", type=float, default=900.0)
    parser.add_argument("--max-unavailable", type=int, default=1)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another source tree (e.g. git archive of an earlier commit): its shared way, interleaved",
    )
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args)
        return 0
    if args.naive_runs is None:
        args.naive_runs = args.runs
    workdir = Path(tempfile.mkdtemp(prefix="kube-plan-scale-"))
    print(
        f"plan {PLAN.relative_to(ROOT)} (calico_manifest=calico.yaml, no inventory), {os.cpu_count()} CPUs,"
        f" load average {load()}; medians of {args.runs} runs (per-node: {args.naive_runs})"
    )
    ok = True
    for nodes in args.nodes:
        results = measure(nodes, args, workdir)
        ok = report(nodes, results, args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
