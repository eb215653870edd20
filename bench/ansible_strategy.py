"""Bench: Ansible's plain ``linear`` strategy against mitogen's ``mitogen_linear`` on lab nodes (issue 16).

Mitogen is not a dependency of migrator: this bench measures whether it would pay off with the pinned
ansible-core. Point ``--mitogen`` at a folder holding the ``mitogen`` package (e.g. ``pip install --target
DIR mitogen``; default: importable already). Brings up a 4-node lab, warms the SSH connections, then runs,
alternating the strategies (paired, interleaved; medians of ``--runs``), on one node:

- ``ping.yml`` (one Python module), and
- ``cni-switch-teardown.yml`` in check mode (the switch's module, with diffs),

each through ``AnsibleRunnerExecutor`` as migrator runs them, and prints the medians and the ratio
plain / mitogen. The lab is always torn down.
Run as root: ``PYTHONPATH=. python bench/ansible_strategy.py [--runs 7] [--name sp1] [--underlay ...]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from loguru import logger

from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.ports import PlaybookRequest
from migrator.targets.ansible.executor import AnsibleRunnerExecutor

TEARDOWN_VARS = {
    "links": ["flannel.1", "cni0"],
    "chain_prefixes": ["FLANNEL"],
    "cni_files": ["10-flannel.conflist"],
    "extra_files": ["/run/flannel/subnet.env"],
    "fail_at_node": "",
}


def mitogen_env(folder: Path | None) -> dict[str, str]:
    """The ``ANSIBLE_*`` settings that make ansible-playbook use ``mitogen_linear``."""
    if folder is not None:
        sys.path.insert(0, str(folder))
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or spec.origin is None:
        raise SystemExit("mitogen is not importable: pass --mitogen DIR (pip install --target DIR mitogen)")
    plugins = Path(spec.origin).parent / "plugins" / "strategy"
    env = {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}
    if folder is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return env


def timed(ex: AnsibleRunnerExecutor, request: PlaybookRequest, work: Path) -> float:
    started = time.perf_counter()
    ex.run_playbook(request, data_dir=work)
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--name", default="rsbench")
    ap.add_argument("--underlay", default="198.18.24.0/24")
    ap.add_argument("--mitogen", type=Path, default=None, help="folder holding the mitogen package")
    args = ap.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    env = mitogen_env(args.mitogen)
    os.environ.setdefault("MIGRATOR_HOME", tempfile.mkdtemp(prefix="migrator-bench-"))
    lab = Lab(args.name)
    lab.down()
    work = Path(tempfile.mkdtemp(prefix="strategy-bench-"))
    try:
        lab.up(LabSpec(name=args.name, nodes=4, underlay=args.underlay))
        inventory = Path(lab.require().inventory)
        executors = {
            "plain": AnsibleRunnerExecutor(inventory=inventory),
            "mitogen": AnsibleRunnerExecutor(inventory=inventory, envvars=env),
        }
        cases = {
            "ping": PlaybookRequest(playbook=Path("ping.yml"), hosts=("node2",)),
            "teardown --check": PlaybookRequest(
                playbook=Path("cni-switch-teardown.yml"),
                hosts=("node2",),
                extra_vars=TEARDOWN_VARS,
                check=True,
            ),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for strategy, ex in executors.items():  # warm up: SSH masters, mitogen's interpreter
            for case, request in cases.items():
                timed(ex, request, work / f"warm-{strategy}-{case.split()[0]}")
        for i in range(args.runs):
            order = list(executors) if i % 2 == 0 else list(reversed(executors))
            for strategy in order:
                for case, request in cases.items():
                    elapsed = timed(executors[strategy], request, work / f"{i}-{strategy}-{case.split()[0]}")
                    times.setdefault((case, strategy), []).append(elapsed)
        print(f"medians of {args.runs} runs, one node (ansible-playbook start-up included)")
        for case in cases:
            plain = statistics.median(times[(case, "plain")])
            mito = statistics.median(times[(case, "mitogen")])
            ratio = plain / mito
            print(f"{case:18s} plain {plain:6.2f} s   mitogen {mito:6.2f} s   plain/mitogen {ratio:5.2f}x")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
