"""``migrator faults list|clear``: the network faults on the target's nodes, from the records the faults
left under ``/run/migrator/faults/`` on each node (not from any local state: this also works after
migrator was killed, from another machine).

``clear`` reverts them all now (the same revert script the expiry timer would run, under the same lock),
then reads tc/iptables back and reports any drift; exit 1 if anything is left.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from migrator.cli.common import (
    DryRunOpt,
    JsonAliasOpt,
    Output,
    OutputOpt,
    TargetOpt,
    YesOpt,
    confirm_change,
    console,
    default_target,
    output_of,
)
from migrator.faults import nodes as fnodes
from migrator.ports import Target
from migrator.targets.open import open_target

app = typer.Typer(help="Network faults on the target's nodes: list them, clear them (revert all now).")
out = console()
err = console(stderr=True)
BecomeOpt = Annotated[bool, typer.Option("--become", help="Ansible become on the nodes (SSH user not root)")]


def _target(spec: str) -> Target:
    return open_target(default_target(spec))


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
    output: OutputOpt = Output.TEXT,
    as_json: JsonAliasOpt = False,
    become: BecomeOpt = False,
) -> None:
    """Active faults on every node of the target (from the records on the nodes)."""
    records = list_records(_target(target), node, become=become)
    if output_of(output, as_json) == Output.JSON:
        typer.echo(json.dumps(records, indent=2, default=str))
        return
    _print_records(records)


def _print_records(records: dict[str, list[dict[str, Any]]]) -> None:
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
def clear_cmd(  # noqa: PLR0917 - typer maps parameters to options
    target: TargetOpt = "",
    node: Annotated[list[str] | None, typer.Option("--node", "-n", help="Only these nodes")] = None,
    output: OutputOpt = Output.TEXT,
    as_json: JsonAliasOpt = False,
    become: BecomeOpt = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Revert every fault on the nodes now; exit 1 if any state is left behind (drift).

    ``--dry-run`` lists the faults it would revert; without ``--yes`` it asks on a TTY (refuses off one)."""
    fmt = output_of(output, as_json)
    tgt = _target(target)
    if dry_run or not yes:
        records = list_records(tgt, node, become=become)
        if dry_run:
            if fmt == Output.JSON:
                typer.echo(json.dumps({"would_revert": records}, indent=2, default=str))
            else:
                _print_records(records)
            return
        # nothing recorded: the clear below only reads tc/iptables back (drift), nothing to confirm
        if any(records.values()) and not confirm_change(
            "Revert these faults now?", yes=yes, what="faults clear", preview=lambda: _print_records(records)
        ):
            err.print("not cleared")
            raise typer.Exit(1)
    outcomes = clear_faults(tgt, node, become=become)
    drift = {n: o.drift for n, o in outcomes.items() if o.drift}
    if fmt == Output.JSON:
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
