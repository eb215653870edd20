"""Fan-out bench of the Ansible node executor on **lab** nodes: a trivial playbook on 1 node vs 8 nodes.

Brings up a lab of 8 nodes (``rabench`` on 198.18.21.0/24 by default; node1 is the control plane, all 8 are
inventory hosts reached over real SSH), warms the SSH ControlMaster connections up, then times
``AnsibleRunnerExecutor.run_playbook`` on 1 node and on 8 nodes with forks = 8, alternating, and prints the
medians and the ratio. The naive way, 8 nodes one after the other (forks = 1), is measured in the same run
for comparison. Two playbooks:

- ``trivial.yml``: one ``raw`` task (SSH exec only): the executor's own fan-out cost;
- ``ping.yml``: one Python module (``ping``): adds Ansible's module start-up (~0.14 s of CPU) on each
  node. In the lab every node shares the controller's CPUs, so that part serializes on the host's cores;
  on a real cluster it runs on each node's own CPU.

Target: 8 nodes <= 1.5 x 1 node (trivial playbook). The lab is always torn down.
Run as root: ``PYTHONPATH=. python bench/ansible_fanout.py [--runs 5] [--name rabench] [--underlay ...]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from loguru import logger

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, LabSpec
from migrator.ports import PlaybookRequest
from migrator.targets.ansible.executor import AnsibleRunnerExecutor

HERE = Path(__file__).resolve().parent
TARGET = 1.5


CPU: dict[str, list[float]] = {}
"""Controller CPU seconds (user + sys of the ansible-playbook processes) per case, to explain the ratio."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    ex: AnsibleRunnerExecutor, playbook: Path, hosts: tuple[str, ...], work: Path, tag: str, forks: int = 0
) -> float:
    cpu = _children_cpu()
    started = time.perf_counter()
    request = PlaybookRequest(playbook=playbook, hosts=hosts, forks=forks or len(hosts))
    ex.run_playbook(request, data_dir=work / tag)
    elapsed = time.perf_counter() - started
    CPU.setdefault(f"{playbook.name}/{len(hosts)}/{forks or len(hosts)}", []).append(_children_cpu() - cpu)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case (>= 3)")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--name", default="rabench", help="lab name (torn down at the end)")
    parser.add_argument("--underlay", default="198.18.21.0/24")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab: network namespaces, sshd)")
        return 2
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    runs = max(3, args.runs)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"host: {os.cpu_count()} CPUs, load average {load}; {args.nodes} nodes; {runs} runs per case; "
        f"target ratio <= {TARGET}"
    )
    ok = False
    lab = Lab(args.name)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ans-") as tmp:
            started = time.perf_counter()
            lab.up(
                LabSpec(
                    name=args.name,
                    nodes=args.nodes,
                    pods_per_node=0,
                    app=AppKind.NONE,
                    underlay=args.underlay,
                )
            )
            print(f"lab {args.name} up in {time.perf_counter() - started:.1f}s")
            ok = _bench(lab, Path(tmp), runs)
    finally:
        res = lab.down()
        if res.leftovers:
            print(f"lab {args.name} leftovers: {res.leftovers}")
    return 0 if ok else 1


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


def _bench(lab: Lab, work: Path, runs: int) -> bool:
    ok = True
    st = lab.require()
    all_hosts = tuple(sorted(st.nodes, key=lambda n: st.nodes[n].index))
    n = len(all_hosts)
    ex = AnsibleRunnerExecutor(inventory=Path(st.inventory), control_path_dir=work / "cp")
    ex.inventory_hosts()
    for name, playbook in (
        ("trivial.yml (raw)", HERE / "playbooks" / "trivial.yml"),
        ("ping.yml (module)", Path("ping.yml")),
    ):
        timed(ex, playbook, all_hosts, work, "warmup")  # SSH masters up, caches warm
        one: list[float] = []
        many: list[float] = []
        naive: list[float] = []
        for i in range(runs):
            one.append(timed(ex, playbook, all_hosts[:1], work, f"{name[:4]}-1-{i}"))
            many.append(timed(ex, playbook, all_hosts, work, f"{name[:4]}-n-{i}"))
            naive.append(timed(ex, playbook, all_hosts, work, f"{name[:4]}-s-{i}", forks=1))
        m1, mn, ms = statistics.median(one), statistics.median(many), statistics.median(naive)
        ratio = mn / m1
        verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
        print(
            f"{name:20s} 1 node: median {m1:.2f}s  {n} nodes (forks={n}): median {mn:.2f}s  "
            f"ratio {ratio:.2f}  {verdict}"
        )
        print(
            f"{'':20s} naive, {n} nodes one by one (forks=1): median {ms:.2f}s, ratio {ms / m1:.2f}; "
            f"fan-out is {ms / mn:.1f}x faster"
        )
        print(
            f"{'':20s} best-of: 1 node {min(one):.2f}s, {n} nodes {min(many):.2f}s, "
            f"ratio {min(many) / min(one):.2f} (less sensitive to other load on the host)"
        )
        print(f"{'':20s} runs 1: {_fmt(one)} | runs {n}: {_fmt(many)} | naive: {_fmt(naive)}")
        cpu1 = statistics.median(CPU[f"{playbook.name}/1/1"])
        cpun = statistics.median(CPU[f"{playbook.name}/{n}/{n}"])
        print(
            f"{'':20s} controller CPU (median user+sys of ansible-playbook): 1 node {cpu1:.2f}s, "
            f"{n} nodes {cpun:.2f}s on {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )
        if name.startswith("trivial"):
            ok = ok and ratio <= TARGET
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
