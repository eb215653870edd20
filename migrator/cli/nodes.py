"""``migrator nodes``: node-level checks through the Ansible executor.

``migrator nodes ping --inventory PATH [--nodes a,b] [--expect-nodes a,b,c]`` runs the ``ping`` module on
the nodes over SSH and prints a table of reachable and unreachable nodes. Exit code 0 when every node
answered (and the inventory matches ``--expect-nodes``), 3 (needs attention) otherwise, 2 on bad input,
130 when interrupted (Ctrl-C cancels the run through the executor's cancel event).
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from migrator.cli.common import Output, OutputOpt, TargetOpt, console, default_target, schema_tag
from migrator.cli.inputs import check_inventory_file, check_inventory_keys, exit_with
from migrator.errors import ExitCode, MigratorError, UsageError
from migrator.playbooks import compare_hosts, run_playbook
from migrator.ports import PlaybookResult, RunnerStatus
from migrator.targets.ansible.events import ssh_hint
from migrator.targets.ansible.executor import AnsibleRunnerExecutor
from migrator.targets.ansible.inventory import load_inventory

app = typer.Typer(help="Node-level checks over SSH (Ansible).", no_args_is_help=True)


@app.callback()
def _nodes() -> None:
    """Node-level checks over SSH (Ansible)."""


@contextmanager
def cancel_on_sigint() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM while the block runs (main thread only); handlers restored after."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _target_inventory(spec: str) -> Path:
    """The inventory of target ``spec`` (the lab writes its own); exit 2 if it has none."""
    from migrator.targets.open import open_target  # noqa: PLC0415 - only without --inventory

    name = default_target(spec)
    try:
        found = getattr(open_target(name), "inventory", None)
    except MigratorError as exc:
        raise exit_with(exc) from exc
    if found is None:
        raise exit_with(UsageError(f"target {name} has no Ansible inventory: pass --inventory PATH"))
    return Path(found)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def ping_table(result: PlaybookResult, addresses: dict[str, str]) -> Table:
    table = Table(title="Node reachability (ansible ping)")
    table.add_column("node")
    table.add_column("address")
    table.add_column("status")
    table.add_column("message", overflow="fold")
    for name in sorted(result.hosts):
        host = result.hosts[name]
        if host.unreachable:
            status = "[red]unreachable[/red]"
        elif host.failed:
            status = "[red]failed[/red]"
        elif host.ok:
            status = "[green]reachable[/green]"
        else:
            status = "[yellow]no result[/yellow]"
        table.add_row(name, addresses.get(name, ""), status, host.message or "")
    return table


def _why(result: PlaybookResult, name: str) -> str:
    """One actionable line on why a node did not answer the ping."""
    host = result.hosts.get(name)
    message = (host.message if host is not None else None) or ""
    hint = ssh_hint(message)
    if hint:
        return hint
    lines = [
        line.strip() for line in message.splitlines() if line.strip() and "Permanently added" not in line
    ]
    reason = lines[-1] if lines else "no answer"
    if "ssh: " in reason:
        reason = reason[reason.rindex("ssh: ") :]
    if host is not None and host.unreachable:
        return f"unreachable: {reason} (is sshd running there, and is ansible_host right in the inventory?)"
    return reason


def _ping_json(
    result: PlaybookResult, inventory: Path, wanted: list[str], addresses: dict[str, str], bad: list[str]
) -> dict[str, object]:
    rows = [
        {
            "node": name,
            "address": addresses.get(name, ""),
            "reachable": name not in bad,
            "why": _why(result, name) if name in bad else "",
        }
        for name in wanted
    ]
    return {"schema": schema_tag("nodes.ping"), "inventory": str(inventory), "nodes": rows}


@app.command()
def ping(  # noqa: PLR0917 - typer maps parameters to options
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", "-i", help="Ansible inventory (INI or YAML); default: the target's"),
    ] = None,
    target: TargetOpt = "",
    nodes: Annotated[str | None, typer.Option(help="Comma-separated node names (default: all).")] = None,
    expect_nodes: Annotated[
        str | None,
        typer.Option(help="Comma-separated cluster node names the inventory must map 1:1 onto."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds for the whole ping.")] = 60.0,
    keep: Annotated[Path | None, typer.Option(help="Keep ansible-runner's artifacts in this folder.")] = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Check that every node is reachable over SSH through the inventory (default: the target's own,
    e.g. the one the lab wrote)."""
    out = console()
    errors = console(stderr=True)
    if inventory is None:
        inventory = _target_inventory(target)
    try:
        check_inventory_file(inventory)
        inv = load_inventory(inventory)
        check_inventory_keys(inventory)
    except MigratorError as exc:
        raise exit_with(exc) from exc
    wanted = _split(nodes) or list(inv.hosts)
    unknown = sorted(set(wanted) - set(inv.hosts))
    if unknown:
        listed = ", ".join(inv.hosts)
        refused = UsageError(f"not in inventory {inventory}: {', '.join(unknown)} (it lists {listed})")
        raise exit_with(refused)
    attention = False
    if expect_nodes is not None:
        mismatch = compare_hosts(inv.hosts, _split(expect_nodes))
        style = "green" if mismatch.ok else "red"
        errors.print(f"[{style}]{mismatch.describe()}[/{style}]")
        attention = not mismatch.ok

    executor = AnsibleRunnerExecutor(inventory=inventory, hosts=inv.hosts)
    with tempfile.TemporaryDirectory(prefix="migrator-ping-") as tmp:
        data_dir = keep if keep is not None else Path(tmp)
        try:
            with cancel_on_sigint() as cancel:
                result = run_playbook(
                    executor,
                    "ping.yml",
                    wanted,
                    data_dir=data_dir,
                    timeout=timeout,
                    cancel=cancel,
                    raise_on_failure=False,
                ).result
        except MigratorError as exc:
            raise exit_with(exc) from exc
    if result.status is RunnerStatus.CANCELED:
        errors.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    addresses = {h: str(inv.hostvars.get(h, {}).get("ansible_host", "")) for h in wanted}
    bad = sorted(h.host for h in result.hosts.values() if h.unreachable or h.failed or not h.ok)
    bad += sorted(set(wanted) - set(result.hosts) - set(bad))  # no result at all: not reachable either
    if output == Output.JSON:
        out.print_json(json.dumps(_ping_json(result, inventory, wanted, addresses, bad)))
        if bad or attention:
            raise typer.Exit(int(ExitCode.NEEDS_ATTENTION))
        return
    out.print(ping_table(result, addresses))
    if bad:
        for name in bad:
            errors.print(
                f"error: {name} ({addresses.get(name) or 'no address'}): {_why(result, name)}", markup=False
            )
        errors.print(f"[red]{len(bad)} of {len(wanted)} node(s) not reachable:[/red] {', '.join(bad)}")
    else:
        out.print(f"[green]all {len(wanted)} node(s) reachable[/green]")
    if bad or attention:
        raise typer.Exit(int(ExitCode.NEEDS_ATTENTION))
