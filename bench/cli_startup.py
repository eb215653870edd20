"""Benchmark: CLI start-up (issue 16: ``migrator --version`` and ``migrator validate PLAN`` <= 0.3 s).

Each command runs as a user runs it: a fresh ``python -m migrator.cli.main ...`` process, wall time from
spawn to exit. ``--before REF`` also runs commit REF's tree (``git archive``) in the same series,
alternating which goes first (on a shared machine only the ratio of the medians means something). Both
trees are copied to a temporary folder and byte-compiled first (an installed package has its ``.pyc``
files; ``--no-compile`` measures without them, as with ``PYTHONDONTWRITEBYTECODE=1`` and a fresh tree).

    PYTHONPATH=. python bench/cli_startup.py [--runs 15] [--before REF] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAN = "plans/flannel-to-calico.yaml"
COMMANDS: dict[str, list[str]] = {
    "--version": ["--version"],
    "validate": ["validate", PLAN],
    "--help": ["--help"],
    "import": [],  # python -c 'import migrator.cli.main'
}
TARGET_S = 0.3
FAILED: set[str] = set()
"""Commands that did not exit 0 (timed all the same; printed at the end)."""


def tree_of(ref: str | None, into: Path) -> Path:
    """This tree (``ref`` None: its tracked files as they are now) or commit ``ref`` in ``into``."""
    into.mkdir(parents=True)
    if ref is None:
        files = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=60
        ).stdout.split(b"\0")
        for name in (f.decode() for f in files if f):
            src = ROOT / name
            if src.is_file():
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into / name)
        return into
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref], capture_output=True, check=True, timeout=60
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into


def once(root: Path, args: list[str], home: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root), "MIGRATOR_HOME": str(home)}
    argv = (
        [sys.executable, "-c", "import migrator.cli.main"]
        if not args
        else [sys.executable, "-m", "migrator.cli.main", *args]
    )
    started = time.perf_counter()
    res = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False)
    seconds = time.perf_counter() - started
    if res.returncode != 0:
        what = " ".join(args) or "import"
        FAILED.add(f"{root.name}: `{what}` exits {res.returncode}: {res.stderr.strip()}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--before", metavar="REF", help="also run this commit's CLI, paired")
    ap.add_argument("--no-compile", action="store_true", help="no .pyc files (a fresh tree)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mcli-"))
    try:
        trees = {"this tree": tree_of(None, work / "after")}
        if a.before:
            trees[f"before ({a.before})"] = tree_of(a.before, work / "before")
        for root in trees.values():
            if not a.no_compile:
                subprocess.run(
                    [sys.executable, "-m", "compileall", "-q", "migrator"], cwd=root, check=True, timeout=300
                )
        env_note = "no .pyc" if a.no_compile else ".pyc compiled"
        print(f"{a.runs} runs each, {env_note}, load average {os.getloadavg()[0]:.2f}")
        times: dict[tuple[str, str], list[float]] = {}
        names = list(trees)
        for i in range(a.runs):
            order = names if i % 2 == 0 else names[::-1]
            for cmd, args in COMMANDS.items():
                for name in order:
                    times.setdefault((name, cmd), []).append(once(trees[name], args, work / "home"))
        ratio_head = "   before/after" if len(names) > 1 else ""
        print(f"{'command':12} " + " ".join(f"{n:>20}" for n in names) + ratio_head)
        for cmd in COMMANDS:
            meds = [statistics.median(times[(n, cmd)]) for n in names]
            ratio = f"   {meds[1] / meds[0]:.2f}x" if len(meds) > 1 else ""
            mark = (
                ""
                if cmd not in ("--version", "validate")
                else ("  (target <= 0.3 s: met)" if meds[0] <= TARGET_S else "  (target <= 0.3 s: not met)")
            )
            print(f"{cmd:12} " + " ".join(f"{m:>19.3f}s" for m in meds) + ratio + mark)
        for line in sorted(FAILED):
            print(f"note: {line}")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
