"""The resilience compass of issue 8, read off one command: "kills survived", "bad inputs tried" and
"leftovers found".

Run as root::

    PYTHONPATH=. python bench/resilience.py                  # kill sample of 2 (seeded), bad inputs, scan
    PYTHONPATH=. python bench/resilience.py --sample 8 --seed 7
    PYTHONPATH=. python bench/resilience.py --full           # the whole kill series (hours on 2 CPUs)
    PYTHONPATH=. python bench/resilience.py --kills-from results.jsonl   # figures of an earlier series

- kills survived: :mod:`bench.kill_series` (``kill -9`` of a real ``migrator apply`` of
  flannel-to-calico on a 4-node lab, then resume or rollback, then the consistency checks);
- bad inputs tried: :mod:`bench.bad_inputs` (``run() -> dict`` with ``tried``, ``passed``, ``failures``);
- leftovers found: after everything, :func:`scan_leftovers` looks for anything the labs and runs left on
  the machine: network namespaces, host interfaces, host routes and iptables/nftables rules of the labs,
  processes (sshd, dnsmasq, bird, pod servers, fault timers, migrator or ansible processes of the runs),
  ``/etc/netns`` folders, lab folders and lock files under the ``MIGRATOR_HOME`` of the runs, fault
  records under ``/run/migrator``.

Prints a table and exits 1 if a kill was not survived, a bad input failed, or a leftover was found.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAULT_MARK = re.compile(r"migrator-fault-(timer|flap)-[0-9a-f]+")


@dataclass
class Scope:
    """What belongs to the runs being checked: lab kernel-object prefixes (``m`` + lab name), the
    ``MIGRATOR_HOME`` folders, and the lab underlays (``198.18.41.``)."""

    prefixes: Sequence[str]
    homes: Sequence[Path] = ()
    underlays: Sequence[str] = ()
    host_fault_dir: Path = Path("/run/migrator/faults")
    tmp_globs: Sequence[str] = ()  # scratch folders of the runs (bench/bad_inputs.py: migrator-bad-inputs-*)
    ignore_pids: set[int] = field(default_factory=set)


def _run(argv: Sequence[str]) -> str:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout


def _ours(text: str, scope: Scope) -> bool:
    return any(p in text for p in scope.prefixes) or any(str(h) in text for h in scope.homes)


def _ancestors() -> set[int]:
    out = set()
    pid = os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _netns_inodes(names: Iterable[str]) -> set[int]:
    out = set()
    for n in names:
        with contextlib.suppress(OSError):
            out.add(os.stat(f"/run/netns/{n}").st_ino)
    return out


def scan_processes(scope: Scope, all_netns: Sequence[str]) -> list[str]:
    """Processes of the runs: a command line naming a lab prefix or home, a ``MIGRATOR_HOME`` of the
    runs in the environment, a netns of the labs, or a fault timer whose namespace is gone or ours."""
    skip = _ancestors() | scope.ignore_pids
    ours_ns = _netns_inodes(n for n in all_netns if any(n.startswith(f"{p}-") for p in scope.prefixes))
    live_ns = _netns_inodes(all_netns)
    host_ns = os.stat("/proc/self/ns/net").st_ino
    homes = [str(h) for h in scope.homes]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            args = [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\x00") if a]
            if not args:
                continue  # kernel thread or zombie
            cmd = " ".join(args)
            why = ""
            if _ours(cmd, scope):
                why = "command line"
            else:
                env = (entry / "environ").read_bytes().decode(errors="replace").split("\x00")
                if any(
                    e.startswith("MIGRATOR_HOME=") and e[14:].startswith(tuple(homes)) for e in env if homes
                ):
                    why = "MIGRATOR_HOME"
                else:
                    ns = os.stat(entry / "ns" / "net").st_ino
                    if ns in ours_ns:
                        why = "lab netns"
                    elif FAULT_MARK.fullmatch(args[-1]) and ns != host_ns and ns not in live_ns:
                        why = "fault timer of a deleted netns"
        except OSError:
            continue
        if why:
            found.append(f"process {entry.name} ({why}): {cmd[:140]}")
    return found


def scan_leftovers(scope: Scope) -> list[str]:
    """Everything of ``scope`` still on the machine (empty: nothing left)."""
    left: list[str] = []
    all_ns = [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()]
    left += [f"netns {n}" for n in all_ns if any(n.startswith(f"{p}-") for p in scope.prefixes)]
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        parts = line.split(": ")
        if len(parts) > 1 and any(parts[1].split("@")[0].startswith(p) for p in scope.prefixes):
            left.append(f"host link {parts[1].split('@')[0]}")
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        if _ours(line, scope) or any(line.startswith(u) for u in scope.underlays):
            left.append(f"host route {line.strip()}")
    for tool in ("iptables-save", "iptables-legacy-save"):
        for line in _run([tool]).splitlines():
            if line.startswith(("#", "*", "COMMIT")):
                continue
            if _ours(line, scope) or _ours(line.lower(), scope) or any(u in line for u in scope.underlays):
                left.append(f"host {tool.removesuffix('-save')} rule {line.strip()}")
    for line in _run(["nft", "list", "ruleset"]).splitlines():
        if _ours(line, scope) or any(u in line for u in scope.underlays):
            left.append(f"host nft {line.strip()}")
    left += scan_processes(scope, all_ns)
    etc = Path("/etc/netns")
    if etc.is_dir():
        left += [
            f"dir {p}"
            for p in sorted(etc.iterdir())
            if any(p.name.startswith(f"{x}-") for x in scope.prefixes)
        ]
    for home in scope.homes:  # the home and its sub-folders (one home per test or bench run)
        for base in [home, *(sorted(p for p in home.iterdir() if p.is_dir()) if home.is_dir() else [])]:
            labs = base / "labs"
            if labs.is_dir():
                left += [f"under labs/: {p}" for p in sorted(labs.iterdir())]
            locks = base / "locks"
            if locks.is_dir():
                left += [f"lock {p}" for p in sorted(locks.glob("*.lock"))]
    for pattern in scope.tmp_globs:
        left += [f"scratch folder {p}" for p in sorted(Path("/tmp").glob(pattern))]
    if scope.host_fault_dir.is_dir():
        left += [f"fault record {p}" for p in sorted(scope.host_fault_dir.glob("*.json"))]
    return left


# --------------------------------------------------------------------------------------------- figures


def bad_inputs() -> dict[str, Any]:
    """``bench.bad_inputs.run()``: the bad CLI inputs and the fuzzed plans."""
    from bench.bad_inputs import run  # noqa: PLC0415 - heavy; only when the figure is asked for

    result: dict[str, Any] = run()
    return result


def kills_from(path: Path) -> dict[str, Any]:
    from bench.kill_series import CaseResult, summary  # noqa: PLC0415

    results = [CaseResult(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return summary(results)


def table(rows: Sequence[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=2, help="kill cases to run (seeded, stratified by series)")
    ap.add_argument("--full", action="store_true", help="run the whole kill series instead of a sample")
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill sample ($MIGRATOR_KILL_SEED)")
    ap.add_argument("--kills-from", type=Path, default=None, help="figures of an earlier series (JSON lines)")
    ap.add_argument("--no-kills", action="store_true", help="skip the kill series")
    ap.add_argument("--lab", default="klr", help="lab name of the kill series (short: the prefix is m+name)")
    ap.add_argument("--underlay", default="198.18.41.0/24")
    ap.add_argument("--home", type=Path, default=None, help="MIGRATOR_HOME of the runs (a fresh folder)")
    args = ap.parse_args(argv)

    from loguru import logger  # noqa: PLC0415

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    home = (
        args.home or Path(os.environ.get("MIGRATOR_HOME", "/tmp/migrator-resilience")) / f"res-{os.getpid()}"
    )
    rows: list[tuple[str, str, str]] = [("figure", "value", "verdict")]
    failed = False
    t0 = time.monotonic()

    kills: dict[str, Any] | None = None
    if args.kills_from is not None:
        kills = kills_from(args.kills_from)
    elif not args.no_kills:
        if os.geteuid() != 0:
            print("resilience: the kill series needs root (it builds a lab); use --no-kills or --kills-from")
            return 2
        from bench import kill_series  # noqa: PLC0415

        kills = kill_series.run(
            sample=None if args.full else args.sample,
            seed=args.seed,
            home=home / "kills",
            lab_name=args.lab,
            underlay=args.underlay,
        )
        kill_series.print_summary(kills)
    if kills is not None:
        ok = kills["survived"] == kills["tried"] and kills["tried"] > 0 and not kills.get("lab_leftovers")
        failed |= not ok
        seed = f", seed {kills['seed']}" if "seed" in kills else ""
        rows.append(
            ("kills survived", f"{kills['survived']}/{kills['tried']}{seed}", "ok" if ok else "FAILED")
        )
    else:
        rows.append(("kills survived", "not run (--no-kills)", "-"))

    bad = bad_inputs()
    ok = not bad.get("failures") and bad.get("passed") == bad.get("tried")
    failed |= not ok
    rows.append(
        ("bad inputs tried", f"{bad.get('tried')} ({bad.get('passed')} passed)", "ok" if ok else "FAILED")
    )
    for f in list(bad.get("failures") or [])[:10]:
        print(f"bad input FAILED: {f}")

    prefixes = sorted({f"m{args.lab}", "mkl"})
    scope = Scope(
        prefixes=prefixes,
        homes=[home, Path("/tmp/migrator-bad-inputs-")],  # also the bad-input runs' homes (a prefix)
        underlays=[args.underlay.rsplit(".", 1)[0] + "."],
        tmp_globs=["migrator-bad-inputs-*"],
    )
    left = scan_leftovers(scope)
    for item in left:
        print(f"leftover: {item}")
    failed |= bool(left)
    rows.append(("leftovers found", str(len(left)), "ok" if not left else "FAILED"))
    print()
    print(table(rows))
    print(f"\n(resilience: {time.monotonic() - t0:.0f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
