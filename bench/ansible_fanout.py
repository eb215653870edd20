"""Fan-out bench of the Ansible node executor: a trivial playbook on 1 node vs 8 nodes.

Builds an 8-node SSH farm (network namespaces ``ans-n1..8`` on 198.19.20.0/24, real sshd), warms the SSH
ControlMaster connections up, then times ``AnsibleRunnerExecutor.run_playbook`` (forks = number of hosts)
on 1 and on 8 nodes, alternating, and prints the medians and the ratio. Two playbooks:

- ``trivial.yml``: one ``raw`` task (SSH exec only): the executor's own fan-out cost;
- ``ping.yml``: one Python module (``ping``): adds Ansible's module start-up (~0.14 s of CPU) on each
  node. In this lab every "node" shares the controller's CPUs, so that part serializes on the host's cores;
  on a real cluster it runs on each node's own CPU.

Target: 8 nodes <= 1.5 x 1 node. Run as root: ``PYTHONPATH=. python bench/ansible_fanout.py [--runs 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "ansible"))

from loguru import logger  # noqa: E402
from sshnodes import SshNodeFarm  # noqa: E402

from migrator.adapters.ansible import AnsibleRunnerExecutor  # noqa: E402
from migrator.ports import PlaybookRequest  # noqa: E402

TARGET = 1.5


def timed(ex: AnsibleRunnerExecutor, playbook: Path, hosts: tuple[str, ...], work: Path, tag: str) -> float:
    started = time.perf_counter()
    ex.run_playbook(PlaybookRequest(playbook=playbook, hosts=hosts, forks=len(hosts)), data_dir=work / tag)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case (>= 3)")
    parser.add_argument("--nodes", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, sshd)")
        return 2
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    runs = max(3, args.runs)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"host: {os.cpu_count()} CPUs, load average {load}; {args.nodes} nodes; {runs} runs per case; "
        f"target ratio <= {TARGET}"
    )
    ok = True
    with SshNodeFarm(args.nodes) as farm, tempfile.TemporaryDirectory(prefix="bench-ans-") as tmp:
        work = Path(tmp)
        all_hosts = tuple(farm.nodes)
        ex = AnsibleRunnerExecutor(inventory=farm.inventory, control_path_dir=work / "cp")
        ex.inventory_hosts()
        for name, playbook in (
            ("trivial.yml (raw)", HERE / "playbooks" / "trivial.yml"),
            ("ping.yml (module)", Path("ping.yml")),
        ):
            timed(ex, playbook, all_hosts, work, "warmup")  # SSH masters up, caches warm
            one: list[float] = []
            many: list[float] = []
            for i in range(runs):
                one.append(timed(ex, playbook, all_hosts[:1], work, f"{name[:4]}-1-{i}"))
                many.append(timed(ex, playbook, all_hosts, work, f"{name[:4]}-n-{i}"))
            m1, mn = statistics.median(one), statistics.median(many)
            ratio = mn / m1
            verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
            print(
                f"{name:20s} 1 node: median {m1:.2f}s  {len(all_hosts)} nodes: median {mn:.2f}s  "
                f"ratio {ratio:.2f}  {verdict}"
            )
            print(
                f"{'':20s} best-of: 1 node {min(one):.2f}s, {len(all_hosts)} nodes {min(many):.2f}s, "
                f"ratio {min(many) / min(one):.2f} (less sensitive to other load on the host)"
            )
            print(
                f"{'':20s} runs 1: {' '.join(f'{t:.2f}' for t in one)} | "
                f"runs {len(all_hosts)}: {' '.join(f'{t:.2f}' for t in many)}"
            )
            if name.startswith("trivial"):
                ok = ok and ratio <= TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
