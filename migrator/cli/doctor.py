"""``migrator doctor --target kube``: check the connection and every RBAC permission migrator uses."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from migrator.cli.common import Output, OutputOpt, console, schema_tag
from migrator.errors import MigratorError
from migrator.playbooks import compare_hosts
from migrator.targets.kube.cluster import KubeCluster
from migrator.targets.kube.doctor import CheckStatus, DoctorReport, run_doctor

app = typer.Typer(help="Check that migrator can do its job on a target.", no_args_is_help=False)


class DoctorTarget(StrEnum):
    KUBE = "kube"


STYLE = {CheckStatus.OK: "green", CheckStatus.MISSING: "red", CheckStatus.ERROR: "yellow"}


def render(report: DoctorReport, console: Console, *, show_all: bool) -> None:
    if report.error is not None:
        console.print(f"[red]cannot reach the cluster:[/red] {report.error}")
        return
    console.print(f"cluster: {report.identity}")
    table = Table(title="RBAC permissions (SelfSubjectAccessReview)")
    table.add_column("verb")
    table.add_column("resource")
    table.add_column("status")
    table.add_column("needed for")
    for check in report.checks:
        if check.status is CheckStatus.OK and not show_all:
            continue
        table.add_row(
            check.verb,
            check.permission.display,
            f"[{STYLE[check.status]}]{check.status}[/]",
            check.permission.why,
        )
    if table.row_count:
        console.print(table)
    missing = len(report.missing)
    if missing:
        console.print(
            f"[red]{missing} of {len(report.checks)} permissions missing[/red]: apply docs/rbac.yaml "
            "(a least-privilege ClusterRole) to this user or service account"
        )
    else:
        console.print(f"[green]all {len(report.checks)} permissions granted[/green]")


@app.callback(invoke_without_command=True)
def doctor(  # noqa: PLR0917 - typer maps parameters to options
    target: Annotated[
        DoctorTarget, typer.Option("--target", "-t", help="The target to check")
    ] = DoctorTarget.KUBE,
    kubeconfig: Annotated[
        str | None,
        typer.Option(help="Path of the kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster)"),
    ] = None,
    context: Annotated[str | None, typer.Option(help="The kubeconfig context")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List granted permissions too")] = False,
    inventory: Annotated[
        str | None,
        typer.Option(help="Ansible inventory to compare with the nodes (default: $MIGRATOR_INVENTORY)"),
    ] = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Check the connection to the target and every permission migrator uses; exit 1 if any is missing.

    With an inventory, also check that its host names are exactly the cluster's node names."""
    as_json = output == Output.JSON
    # with -o json the human lines go to stderr; stdout holds the one JSON document
    text = console(stderr=as_json)
    context = context or os.environ.get("MIGRATOR_KUBE_CONTEXT") or None
    inventory = inventory or os.environ.get("MIGRATOR_INVENTORY") or None
    try:
        cluster = KubeCluster(kubeconfig=kubeconfig, context=context, read_attempts=1)
    except MigratorError as err:
        text.print(f"[red]{err}[/red]")
        if as_json:
            console().print_json(json.dumps({"schema": schema_tag("doctor"), "ok": False, "error": str(err)}))
        raise typer.Exit(1) from err
    inventory_ok: bool | None = None
    try:
        report = run_doctor(cluster)
        if not as_json:
            render(report, text, show_all=show_all)
        if inventory and report.error is None:
            inventory_ok = check_inventory(Path(inventory), [n.name for n in cluster.list_nodes()], text)
        elif report.error is None:
            text.print("no Ansible inventory given (--inventory): plans with node work cannot run")
    except MigratorError as err:
        text.print(f"[red]{err}[/red]")
        if as_json:
            console().print_json(json.dumps({"schema": schema_tag("doctor"), "ok": False, "error": str(err)}))
        raise typer.Exit(1) from err
    finally:
        cluster.close()
    ok = report.ok and inventory_ok is not False
    if as_json:
        console().print_json(json.dumps(report_json(report, inventory, inventory_ok, ok=ok)))
    raise typer.Exit(0 if ok else 1)


def report_json(
    report: DoctorReport, inventory: str | None, inventory_ok: bool | None, *, ok: bool
) -> dict[str, object]:
    """``doctor -o json``: identity, every permission checked with its status, the inventory verdict."""
    return {
        "schema": schema_tag("doctor"),
        "ok": ok,
        "identity": report.identity,
        "error": report.error,
        "permissions": [
            {
                "verb": c.verb,
                "resource": c.permission.display,
                "status": str(c.status),
                "needed_for": c.permission.why,
                "reason": c.reason,
            }
            for c in report.checks
        ],
        "inventory": inventory,
        "inventory_matches_nodes": inventory_ok,
        "notes": list(report.notes),
    }


def check_inventory(path: Path, nodes: list[str], console: Console) -> bool:
    """Compare the inventory's hosts with the node names; print the result."""
    from migrator.targets.ansible.inventory import list_hosts  # noqa: PLC0415 - runs ansible-inventory

    mismatch = compare_hosts(list_hosts(path), nodes)
    style = "green" if mismatch.ok else "red"
    console.print(f"[{style}]inventory {path}: {mismatch.describe()}[/{style}]")
    return mismatch.ok
