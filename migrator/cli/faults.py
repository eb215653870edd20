"""``migrator faults list|clear``: the network faults on the target's nodes, from the records the faults
left under ``/run/migrator/faults/`` on each node (not from any local state: this also works after
migrator was killed, from another machine).

``clear`` reverts them all now (the same revert script the expiry timer would run, under the same lock),
then reads tc/iptables back and reports any drift; exit 1 if anything is left.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from migrator.faults import nodes as fnodes
from migrator.ports import Target
from migrator.targets.open import open_target

app = typer.Typer(help="Network faults on the target's nodes: list them, clear them (revert all now).")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

TargetOpt = Annotated[
    str, typer.Option("--target", "-t", help="lab[:NAME] or kube:... (default $MIGRATOR_TARGET or lab)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output")]
BecomeOpt = Annotated[bool, typer.Option("--become", help="Ansible become on the nodes (SSH user not root)")]


def _target(spec: str) -> Target:
    return open_target(spec or os.environ.get("MIGRATOR_TARGET", "lab"))


def _hosts(target: Target, only: list[str] | None) -> list[str]:
    names = [n.name for n in target.cluster.list_nodes()]
    if target.executor is not None:
        inventory = set(target.executor.inventory_hosts())
        names = [n for n in names if n in inventory]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise typer.BadParameter(f"unknown node(s) {unknown}; nodes: {names}")
        names = [n for n in names if n in only]
    return names


def list_records(
    target: Target, nodes: list[str] | None = None, *, become: bool = False
) -> dict[str, list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="migrator-faults-") as scratch:
        return fnodes.list_faults(
            target.node_executor(fnodes.NEEDS_EXECUTOR),
            _hosts(target, nodes),
            data_dir=Path(scratch),
            become=become,
        )


def clear_faults(
    target: Target, nodes: list[str] | None = None, *, become: bool = False
) -> dict[str, fnodes.NodeOutcome]:
    with tempfile.TemporaryDirectory(prefix="migrator-faults-") as scratch:
        return fnodes.revert(
            target.node_executor(fnodes.NEEDS_EXECUTOR),
            _hosts(target, nodes),
            everything=True,
            data_dir=Path(scratch),
            become=become,
        )


def _when(ts: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return "?"


@app.command("list")
def list_cmd(
    target: TargetOpt = "",
    node: Annotated[list[str] | None, typer.Option("--node", "-n", help="Only these nodes")] = None,
    as_json: JsonOpt = False,
    become: BecomeOpt = False,
) -> None:
    """Active faults on every node of the target (from the records on the nodes)."""
    records = list_records(_target(target), node, become=become)
    if as_json:
        typer.echo(json.dumps(records, indent=2, default=str))
        return
    table = Table("node", "id", "kind", "mechanism", "interface", "expires (UTC)", "left", "timer")
    now = time.time()
    count = 0
    for name, recs in sorted(records.items()):
        for rec in recs:
            count += 1
            meta = rec.get("meta") or {}
            left = float(rec.get("expires_at", 0)) - now
            table.add_row(
                name,
                str(rec.get("id")),
                str(rec.get("kind")),
                str(meta.get("mechanism", "")),
                str(meta.get("interface", "")),
                _when(rec.get("expires_at")),
                f"{left:.0f}s" if left > 0 else "expired",
                "armed" if rec.get("timer_alive") else "gone",
            )
    if count == 0:
        out.print(f"no faults on {len(records)} node(s)")
        return
    out.print(table)


@app.command("clear")
def clear_cmd(
    target: TargetOpt = "",
    node: Annotated[list[str] | None, typer.Option("--node", "-n", help="Only these nodes")] = None,
    as_json: JsonOpt = False,
    become: BecomeOpt = False,
) -> None:
    """Revert every fault on the nodes now; exit 1 if any state is left behind (drift)."""
    outcomes = clear_faults(_target(target), node, become=become)
    drift = {n: o.drift for n, o in outcomes.items() if o.drift}
    if as_json:
        data = {n: {"reverted": o.reverted, "drift": o.drift} for n, o in outcomes.items()}
        typer.echo(json.dumps(data, indent=2))
    else:
        for name, outcome in sorted(outcomes.items()):
            what = ", ".join(outcome.reverted) if outcome.reverted else "nothing to revert"
            out.print(f"{name}: {what}")
            for line in outcome.drift:
                err.print(f"{name}: drift: {line}", markup=False)
    if drift:
        raise typer.Exit(1)
