"""``migrator lab``: up, status, exec, down. No business logic here: it calls :class:`migrator.lab.Lab`."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Annotated, Any

import typer
from rich.table import Table

from migrator.cli.common import (
    DryRunOpt,
    Output,
    OutputOpt,
    YesOpt,
    confirm_change,
    schema_tag,
)
from migrator.cli.common import (
    console as make_console,
)
from migrator.errors import UsageError
from migrator.lab.lab import Lab
from migrator.lab.objects import parse_label_args
from migrator.lab.spec import AppKind, CniKind, validate_spec

app = typer.Typer(help="The embedded lab cluster (network namespaces, real CNI plugins, VXLAN, sshd).")
console = make_console()

NameOpt = Annotated[
    str | None, typer.Option("--name", help="Lab name (default: $MIGRATOR_LAB or 'default').")
]


def lab_name(name: str | None) -> str:
    return name or os.environ.get("MIGRATOR_LAB") or "default"


def render_status(status: dict[str, Any]) -> None:
    if status.get("phase") == "absent":
        console.print(f"lab [bold]{status['name']}[/] is not up; run: migrator lab up")
        return
    console.print(
        f"lab [bold]{status['name']}[/]: {status['phase']}  underlay {status['underlay']} "
        f"(host {status['host_ip']} on {status['host_veth']})  outside {status['outside']['ip']}"
    )
    if status.get("message"):
        console.print(f"[red]{status['message']}[/]")
    missing = [c for c in status["capabilities"] if not c["available"]]
    if missing:
        console.print("[yellow]kernel features the lab cannot emulate:[/]")
        for c in missing:
            console.print(f"  - {c['name']}: {c['detail']}")
    nodes = Table(
        "NODE",
        "IP",
        "ROLES",
        "SCHED",
        "CNI",
        "POD CIDR",
        "VTEP",
        "CNI DEVICES",
        "SSHD",
        "POLICY AGENT",
        "LABELS",
        title="Nodes",
    )
    for n in status["nodes"]:
        labels = ",".join(
            f"{k}={v}" if v else k for k, v in n["labels"].items() if not k.startswith("kubernetes.io/")
        )
        nodes.add_row(
            n["name"],
            n["ip"],
            ",".join(n["roles"]) or "<none>",
            "yes" if n["schedulable"] else "[yellow]cordoned[/]",
            n["cni"],
            n["pod_cidr"],
            f"{n['vtep_ip']} {n['vtep_mac']}",
            (" ".join(n.get("devices", [])) or "<none>") + _weave_cell(n.get("weave")),
            n["sshd"] + (f"\nbgp {n['bgp']}" if n.get("bgp") else ""),
            _policy_cell(n.get("policy") or {}),
            labels,
        )
    console.print(nodes)
    pods = Table("NAMESPACE", "POD", "NODE", "IP", "PHASE", "OWNER", "CONTAINERS", title="Pods")
    for p in status["pods"]:
        phase = p["phase"] if p["phase"] == "Running" else f"[red]{p['phase']}[/] {p['message']}"
        pods.add_row(
            p["namespace"],
            p["name"],
            p["node"],
            p["ip"] or "",
            phase,
            p["owner"] or "",
            ",".join(p["containers"]),
        )
    console.print(pods)
    svcs = Table("NAMESPACE", "SERVICE", "CLUSTER-IP", "PORTS", "ENDPOINTS", title="Services")
    for s in status["services"]:
        ports = ", ".join(
            f"{p['port']}/{p['protocol']}" + (f":{p['node_port']}" if p.get("node_port") else "")
            for p in s["ports"]
        )
        svcs.add_row(
            s["namespace"], s["name"], s["cluster_ip"], ports, " ".join(s["endpoints"]) or "[red]<none>[/]"
        )
    console.print(svcs)
    if status.get("network_policies"):
        pols = Table("NAMESPACE", "NETWORKPOLICY", "POD SELECTOR", "TYPES", title="NetworkPolicies")
        for np_ in status["network_policies"]:
            spec = np_.get("spec") or {}
            pols.add_row(
                np_["namespace"],
                np_["name"],
                json.dumps(spec.get("podSelector") or {}),
                ",".join(spec.get("policyTypes") or []) or "(default)",
            )
        console.print(pols)
    ns_line = ", ".join(
        n["name"]
        + "{"
        + ",".join(f"{k}={v}" for k, v in n["labels"].items() if not k.startswith("kubernetes.io/"))
        + "}"
        for n in status.get("namespaces", [])
    )
    if ns_line:
        console.print(f"Namespaces: {ns_line}")
    console.print(f"Ansible inventory: {status['inventory']}")


def _weave_cell(w: dict[str, Any] | None) -> str:
    """The node's weave network (``weave`` bridge address, mesh peers), under its CNI devices."""
    if not w:
        return ""
    return f"\nweave {' '.join(w['addresses']) or '<no address>'}, {len(w['peers'])} peer(s)"


def _policy_cell(p: dict[str, Any]) -> str:
    if not p.get("enforcing"):
        return "none (no NetworkPolicy)"
    cell = f"{p['agent']}"
    if p.get("last_ms") is not None:
        cell += f"\nreconcile {p['last_ms']:.0f} ms (median {p['median_ms']:.0f})"
    return cell


@app.command()
def up(  # noqa: PLR0917 - typer options
    name: NameOpt = None,
    nodes: Annotated[int, typer.Option(help="Number of nodes (node1 is the control plane).")] = 4,
    cni: Annotated[
        CniKind,
        typer.Option(
            help="Pod network: flannel (VXLAN), calico (VXLAN, wire-compatible with flannel), weave (Weave "
            "Net: a weave bridge per node, one flat L2 VXLAN overlay on UDP 6784, pods in 10.32.0.0/12, "
            "weave-npc policy), canal."
        ),
    ] = CniKind.FLANNEL,
    pods_per_node: Annotated[int, typer.Option(help="Generic 'echo' pods per node.")] = 1,
    app_: Annotated[
        str,
        typer.Option(
            "--app",
            help=f"Demo application(s), comma-separated: {', '.join(a.value for a in AppKind)} "
            "(e.g. bookinfo,netpol; none alone).",
        ),
    ] = AppKind.BOOKINFO.value,
    seed: Annotated[int, typer.Option(help="Seed for names and addresses.")] = 0,
    underlay: Annotated[str, typer.Option(help="Underlay /24 inside 198.18.0.0/15.")] = "198.18.0.0/24",
    output: OutputOpt = Output.TEXT,
) -> None:
    """Build the lab (idempotent: an existing lab is left as is)."""
    lname = lab_name(name)
    spec = validate_spec(
        name=lname, nodes=nodes, cni=cni, pods_per_node=pods_per_node, app=app_, seed=seed, underlay=underlay
    )
    lab = Lab(lname)
    if output == Output.JSON:
        res = lab.up(spec)
        data = {
            "schema": schema_tag("lab.up"),
            "name": lname,
            "already_up": res.already_up,
            "same_spec": res.same_spec,
            "seconds": round(res.seconds, 3),
            "status": lab.status(),
        }
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    with console.status(f"bringing lab {lname!r} up..."):
        res = lab.up(spec)
    if res.already_up:
        console.print(f"lab [bold]{lname}[/] is already up")
        if not res.same_spec:
            console.print(
                "[yellow]it was built with other settings; run `migrator lab down` first to change them[/]"
            )
    else:
        console.print(f"lab [bold]{lname}[/] is up in {res.seconds:.1f}s")
    render_status(lab.status())


@app.command()
def status(
    name: NameOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Nodes, pods, services, kernel gaps and the inventory path."""
    lab = Lab(lab_name(name))
    st = lab.status()
    if output == Output.JSON:
        typer.echo(json.dumps(st, indent=2, sort_keys=True))
    else:
        render_status(st)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(
    target: Annotated[
        str, typer.Argument(help="A node name, a pod (name, namespace/name or unique prefix), or 'outside'.")
    ],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    name: NameOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before the command is killed.")] = 300.0,
) -> None:
    """Run a command inside a node's or a pod's namespaces."""
    lab = Lab(lab_name(name))
    argv = lab.exec_argv(target, command)
    try:
        rc = subprocess.run(argv, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"command timed out after {timeout}s") from exc
    raise typer.Exit(rc)


FilesOpt = Annotated[
    list[str], typer.Option("-f", "--filename", help="A YAML file (multi-document); repeatable.")
]
LabDryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Validate and show each outcome; change nothing (as kubectl)")
]


def _render_outcomes(outcomes: list[Any], output: Output, *, dry_run: bool = False) -> None:
    if output == Output.JSON:
        extra = {"dry_run": True} if dry_run else {}
        typer.echo(json.dumps([{**o.as_dict(), **extra} for o in outcomes], indent=2))
        return
    suffix = " (dry run)" if dry_run else ""
    for o in outcomes:
        console.print(f"{o.kind.lower()}/{o.key} {o.action.value}{suffix}", markup=False)


@app.command()
def apply(
    files: FilesOpt, name: NameOpt = None, output: OutputOpt = Output.TEXT, dry_run: LabDryRunOpt = False
) -> None:
    """Apply NetworkPolicies, Namespaces and pod label changes (all documents or none)."""
    _render_outcomes(list(Lab(lab_name(name)).apply(files, dry_run=dry_run)), output, dry_run=dry_run)


@app.command()
def delete(
    files: FilesOpt, name: NameOpt = None, output: OutputOpt = Output.TEXT, dry_run: LabDryRunOpt = False
) -> None:
    """Delete the NetworkPolicies and Namespaces of the files (all documents or none)."""
    _render_outcomes(list(Lab(lab_name(name)).delete(files, dry_run=dry_run)), output, dry_run=dry_run)


@app.command()
def label(  # noqa: PLR0917 - typer arguments and options
    kind: Annotated[str, typer.Argument(help="pod or namespace")],
    target: Annotated[
        str, typer.Argument(help="NAMESPACE/NAME (pods; or -n NAMESPACE NAME), or a namespace")
    ],
    labels: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove")],
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="The pod's namespace.")] = None,
    name: NameOpt = None,
    output: OutputOpt = Output.TEXT,
    dry_run: LabDryRunOpt = False,
) -> None:
    """Set or remove labels of a pod or a namespace; the policy agents follow."""
    kind = {"pods": "pod", "po": "pod", "namespaces": "namespace", "ns": "namespace"}.get(kind, kind)
    if kind not in ("pod", "namespace"):
        raise UsageError(f"cannot label {kind!r}: pod or namespace")
    key = target
    if kind == "pod":
        if namespace is not None:
            if "/" in target:
                raise UsageError(
                    f"give the pod as NAMESPACE/NAME or -n NAMESPACE NAME, not both ({target!r})"
                )
            key = f"{namespace}/{target}"
        elif "/" not in target:
            key = f"default/{target}"
    elif namespace is not None:
        raise UsageError("-n/--namespace is for pods")
    out = Lab(lab_name(name)).label(kind, key, parse_label_args(labels), dry_run=dry_run)
    _render_outcomes([out], output, dry_run=dry_run)


def _run_in_progress(lname: str) -> str | None:
    """The run holding lab ``lname``'s lock with a live process, if any (``lab down`` asks first then)."""
    from migrator.engine.lock import read_lock  # noqa: PLC0415 - only for lab down

    info = read_lock(f"lab:{lname}")
    if info is None or info.stale:
        return None
    return info.run_id


@app.command()
def down(
    name: NameOpt = None, yes: YesOpt = False, dry_run: DryRunOpt = False, output: OutputOpt = Output.TEXT
) -> None:
    """Remove everything the lab created (also after a crash).

    When a run holds the lab (its process alive), ``down`` shows it and asks on a TTY; off a TTY it
    refuses without ``--yes``. ``--dry-run`` says what would be removed."""
    lname = lab_name(name)
    lab = Lab(lname)
    running = _run_in_progress(lname)
    if dry_run:
        st = lab.status()
        data = {
            "schema": schema_tag("lab.down.preview"),
            "name": lname,
            "up": st.get("phase") != "absent",
            "nodes": [n["name"] for n in st.get("nodes", [])],
            "pods": len(st.get("pods", [])),
            "run_in_progress": running,
        }
        if output == Output.JSON:
            typer.echo(json.dumps(data, indent=2))
        else:
            _print_down_preview(data)
        return
    if running is not None and not confirm_change(
        f"Run {running} is using lab {lname!r}; remove the lab anyway?",
        yes=yes,
        what=f"lab down (run {running} is in progress on lab {lname!r})",
        preview=lambda: console.print(f"run {running} holds lab {lname!r} (see: migrator status {running})"),
    ):
        console.print("lab left as is")
        raise typer.Exit(1)
    res = lab.down()
    if output == Output.JSON:
        data = {
            "schema": schema_tag("lab.down"),
            "name": lname,
            "existed": res.existed,
            "removed": len(res.removed),
            "seconds": round(res.seconds, 3),
            "leftovers": list(res.leftovers),
        }
        typer.echo(json.dumps(data, indent=2))
    elif not res.existed and not res.removed:
        console.print(f"lab [bold]{lname}[/] was not up; nothing to remove")
    else:
        console.print(f"lab [bold]{lname}[/] removed in {res.seconds:.1f}s ({len(res.removed)} objects)")
    if output != Output.JSON:
        for left in res.leftovers:
            console.print(f"[red]left behind:[/] {left}", markup=True)
    if res.leftovers:
        raise typer.Exit(1)


def _print_down_preview(data: dict[str, Any]) -> None:
    if not data["up"]:
        console.print(f"lab {data['name']} is not up; lab down would only sweep leftovers", markup=False)
        return
    nodes = ", ".join(data["nodes"])
    console.print(
        f"lab down would remove lab {data['name']}: nodes {nodes}, {data['pods']} pod(s), their namespaces,"
        " processes, interfaces, rules and files",
        markup=False,
    )
    if data["run_in_progress"]:
        console.print(f"run {data['run_in_progress']} is in progress on it", markup=False)
