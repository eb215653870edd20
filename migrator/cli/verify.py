"""``migrator verify``: one run of the whole reachability suite against a target (exit 0 all ok, 1 not).

The work is :func:`migrator.checks.reachability.evaluate`, the code path of the ``reachability`` check
(``-o json`` adds the check's bounded ``details``: per-kind counts, failing pairs, grids); this module
opens the target, renders the result
(a per-kind table and source x destination matrices with rich, or JSON) and sets the exit code.
Wire it with ``main_app.add_typer(verify.app)`` or ``main_app.command("verify")(verify.verify)``.

``--scope policy`` runs :func:`migrator.probe.policy.run_policy_verify` instead (every ordered pod pair on
every declared TCP/UDP port, allowed and denied, against what the NetworkPolicies say): the text output is
one expected-vs-observed truth table per (port, protocol) and a line per hole, break or prober error;
``-o json`` is :meth:`PolicyReport.to_dict`. Exit 1 on any hole, break or prober error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from migrator.checks.reachability import evaluate, report_details
from migrator.errors import ExitCode, MigratorError, UsageError
from migrator.ports import ProbeKind, ProbeResult, Target
from migrator.probe.analysis import PairStatus, grid, pair_key
from migrator.probe.matrix import MatrixOptions, Scope
from migrator.probe.policy import (
    DEFAULT_TIMEOUT as POLICY_TIMEOUT,
)
from migrator.probe.policy import (
    LEGEND,
    MAX_GRID_SIDE,
    ModelFactory,
    PolicyOptions,
    PolicyReport,
    PolicyStatus,
    policy_matrices,
    run_policy_verify,
)
from migrator.probe.suite import VerifyReport, load_baseline, save_baseline
from migrator.targets.open import open_target as engine_open_target

app = typer.Typer(help="Reachability verification.")

POD_KINDS = (ProbeKind.POD_SAME_NODE, ProbeKind.POD_CROSS_NODE)
SERVICE_KINDS = (ProbeKind.SERVICE_IP, ProbeKind.SERVICE_DNS)


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def open_target(spec: str) -> Target:
    """The target named by ``--target`` (see :func:`migrator.targets.open.open_target`), with a prober."""
    target = engine_open_target(spec)
    if target.prober is None:
        raise UsageError(f"target {spec!r} has no prober yet; `migrator verify` runs against the lab")
    return target


# ----------------------------------------------------------------------------------------- rendering


def _mark(ok: bool | None) -> Text:
    if ok is None:
        return Text("·", style="dim")
    return Text("✓", style="green") if ok else Text("✗", style="bold red")


def render_grid(
    title: str, results: Iterable[ProbeResult], kinds: Iterable[ProbeKind], *, max_cols: int = 60
) -> RenderableType | None:
    """A source x destination matrix of ✓/✗ (· not probed).

    Wider than ``max_cols`` destinations, only the rows and columns with a failure are drawn.
    """
    g = grid(results, kinds)
    if not g.sources:
        return None
    sources, dests = list(g.sources), list(g.dests)
    note = ""
    if len(dests) > max_cols:
        bad = [k for k, ok in g.cells.items() if not ok]
        total = len(g.cells)
        if not bad:
            return Group(Text(title, style="bold"), Text(f"all {total} pairs ok", style="green"))
        sources = sorted({s for s, _ in bad})
        dests = sorted({d for _, d in bad})
        note = f" (only rows and columns with failures: {len(bad)} of {total} pairs failed)"
    width = len(str(len(dests) - 1))
    label_w = max(len(s) for s in sources) + 2
    lines = [Text(title + note, style="bold")]
    for digit in range(width):
        row = Text(" " * label_w)
        for i in range(len(dests)):
            row.append(f"{i:>{width}}"[digit], style="dim")
        lines.append(row)
    for s in sources:
        row = Text(f"{s:<{label_w - 1}} ")
        for d in dests:
            row.append_text(_mark(g.cell(s, d)))
        lines.append(row)
    legend = "  ".join(f"{i}={d}" for i, d in enumerate(dests))
    lines.append(Text(f"columns: {legend}", style="dim"))
    return Group(*lines)


def render_text(report: VerifyReport, *, max_failures: int = 40) -> RenderableType:
    s = report.summary
    verdict = Text("PASSED", style="bold green") if s.passed else Text("FAILED", style="bold red")
    head = Text.assemble(
        ("Reachability ", "bold"),
        (report.target, "bold cyan"),
        f"  {s.ok}/{s.total} ok in {report.duration_s:.2f}s  ",
        verdict,
    )
    table = Table(show_edge=False, pad_edge=False)
    for col, justify in (
        ("kind", "left"),
        ("probes", "right"),
        ("ok", "right"),
        ("failed", "right"),
        ("never", "right"),
        ("flaky", "right"),
        ("pass%", "right"),
        ("min%", "right"),
        ("p50ms", "right"),
        ("", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for k in s.kinds:
        table.add_row(
            k.kind.value,
            str(k.total),
            str(k.ok),
            str(k.failed),
            str(k.never_worked) if s.has_baseline else "-",
            str(k.flaky),
            f"{k.pass_pct:.1f}",
            f"{k.threshold_pct:g}",
            "-" if k.median_latency_ms is None else f"{k.median_latency_ms:.1f}",
            _mark(k.passed),
        )
    parts: list[RenderableType] = [head, table]
    for title, kinds in (
        ("Pod to pod (rows: source pod, columns: destination pod)", POD_KINDS),
        ("Pod to service by ClusterIP and DNS name (both must work)", SERVICE_KINDS),
        ("DNS: pod resolves each service name to its ClusterIP", (ProbeKind.DNS,)),
        ("Node to pod (kubelet probes)", (ProbeKind.NODE_TO_POD,)),
        ("Outside to NodePort (rows: client, columns: service@node)", (ProbeKind.NODEPORT,)),
        ("Container to container (localhost inside the pod)", (ProbeKind.CONTAINER,)),
    ):
        rendered = render_grid(title, report.results, kinds)
        if rendered is not None:
            parts += [Text(""), rendered]
    if s.failures:
        parts.append(Text(""))
        parts.append(Text(f"Failures ({len(s.failures)})", style="bold"))
        for r in s.failures[:max_failures]:
            status = s.statuses.get(pair_key(r))
            tag = " [never worked]" if status is PairStatus.NEVER_WORKED else ""
            tag = " [regressed]" if status is PairStatus.REGRESSED else tag
            parts.append(Text(f"  {r.source} -> {r.dest} ({r.kind.value}): {r.error}{tag}", style="red"))
        if len(s.failures) > max_failures:
            parts.append(
                Text(f"  ... and {len(s.failures) - max_failures} more (-o json for all)", style="dim")
            )
    return Group(*parts)


MAX_NAMED_COLUMN = 8  # widest pod name (plus a space) still used as a column head
MARK_STYLES = {".": "green", "X": "cyan", "H": "bold red", "B": "bold red", "?": "bold yellow", "-": "dim"}


def render_policy_matrix(matrix: Mapping[str, Any]) -> RenderableType:
    """One (port, protocol) truth table: rows are sources, columns destinations (``x/a`` ... ``z/c``)."""
    pods = [str(p) for p in matrix["pods"]]
    rows = [str(r) for r in matrix["rows"]]
    width = max((len(p) for p in pods), default=1) + 1
    title = f"Policy {matrix['port']}/{matrix['protocol']} (rows: source pod, columns: destination pod)"
    if matrix.get("filtered"):
        counts = matrix.get("counts") or {}
        shown = "the first 40 " if matrix.get("truncated") else ""
        title += (
            f": {shown}pods of a mismatch only ({counts.get('.', 0) + counts.get('X', 0)} cells as expected)"
        )
        if not pods:
            return Text(f"{title}: none", style="bold")
    if width <= MAX_NAMED_COLUMN:  # x/a ... z/c: the names head the columns, as upstream's truth tables
        head, col = [f"{p:>{width}}" for p in pods], width
        labels = [f"{p:<{width}}" for p in pods]
    else:  # long pod names: numbered columns, the number before each row's name (no line wider than needed)
        col = len(str(len(pods))) + 1
        name_w = max(len(p) for p in pods) + col + 1
        head = [f"{i:>{col}}" for i in range(1, len(pods) + 1)]
        labels = [f"{f'{i:>{col - 1}}':} {p}".ljust(name_w) for i, p in enumerate(pods, 1)]
        width = name_w
    lines = [Text(title, style="bold"), Text(" " * width + "".join(head))]
    for label, row in zip(labels, rows, strict=True):
        line = Text(label)
        for mark in row:
            line.append(f"{mark:>{col}}", style=MARK_STYLES.get(mark, ""))
        lines.append(line)
    return Group(*lines)


def render_policy_text(report: PolicyReport, *, max_listed: int = 200) -> RenderableType:
    s = report.summary
    verdict = Text("PASSED", style="bold green") if s.passed else Text("FAILED", style="bold red")
    head = Text.assemble(
        ("Policy verification ", "bold"),
        (report.target, "bold cyan"),
        f"  {s.ok}/{s.total} as expected ({s.expected_allow} expected allow, {s.expected_deny} expected deny)"
        f", {s.holes} holes, {s.breaks} breaks, {s.errors} prober errors in {report.duration_s:.2f}s  ",
        verdict,
    )
    parts: list[RenderableType] = [head]
    policies = ", ".join(report.inputs.policies) or "none"
    parts.append(Text(f"policies: {policies}", style="dim"))
    for matrix in policy_matrices(report.results, report.pods(), max_side=MAX_GRID_SIDE):
        parts += [Text(""), render_policy_matrix(matrix)]
    parts.append(Text(LEGEND, style="dim"))
    if report.unsupported:
        protos = sorted({c.protocol.value for c in report.unsupported})
        parts.append(
            Text(
                f"not probed: {len(report.unsupported)} cases of {', '.join(protos)} (unsupported)",
                style="yellow",
            )
        )
    bad = report.mismatches
    if bad:
        parts.append(Text(""))
        parts.append(Text(f"Mismatches and errors ({len(bad)})", style="bold"))
        for r in bad[:max_listed]:
            style = "yellow" if r.status is PolicyStatus.ERROR else "red"
            parts.append(Text(f"  {r.describe()}", style=style))
        if len(bad) > max_listed:
            parts.append(Text(f"  ... and {len(bad) - max_listed} more (-o json for all)", style="dim"))
    return Group(*parts)


def verify_policy(
    target: Target,
    *,
    output: OutputFormat = OutputFormat.TEXT,
    options: PolicyOptions | None = None,
    console: Console | None = None,
    model_factory: ModelFactory | None = None,
) -> int:
    """``verify --scope policy``: run, render and return the exit code (0 all as expected, 1 any hole,
    break or prober error)."""
    report = run_policy_verify(target, options or PolicyOptions(), model_factory=model_factory)
    out = console or Console()
    if output is OutputFormat.JSON:
        out.print_json(json.dumps(report.to_dict()))
    else:
        out.print(render_policy_text(report))
    return int(ExitCode.OK) if report.passed else int(ExitCode.FAILED_ROLLED_BACK)


# ---------------------------------------------------------------------------------------------- CLI


def verify_target(
    target: Target,
    *,
    output: OutputFormat = OutputFormat.TEXT,
    options: MatrixOptions | None = None,
    threshold: float = 100.0,
    baseline: Path | None = None,
    save: Path | None = None,
    console: Console | None = None,
) -> int:
    """Run, render and return the exit code (0 all ok, 1 failures)."""
    base = load_baseline(baseline) if baseline else None
    report = evaluate(target, options or MatrixOptions(), threshold_pct=threshold, baseline=base)
    if save:
        save_baseline(save, report)
    out = console or Console()
    if output is OutputFormat.JSON:
        out.print_json(json.dumps({**report.to_dict(), "details": report_details(report)}))
    else:
        out.print(render_text(report))
    return int(ExitCode.OK) if report.passed else int(ExitCode.FAILED_ROLLED_BACK)


@app.command("verify")
def verify(
    *,
    target: Annotated[str, typer.Option("--target", "-t", help="lab or lab:NAME")] = "lab",
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TEXT,
    scope: Annotated[Scope, typer.Option(help="which kinds of probe")] = Scope.ALL,
    per_source: Annotated[int | None, typer.Option(help="sample: destinations per source")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    timeout: Annotated[
        float | None, typer.Option(help=f"seconds per probe (default 1; {POLICY_TIMEOUT:g} for policy)")
    ] = None,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="policy: only pods of this namespace")
    ] = None,
    threshold: Annotated[float, typer.Option(help="minimum pass % per kind")] = 100.0,
    baseline: Annotated[Path | None, typer.Option(help="an earlier run's results")] = None,
    save: Annotated[Path | None, typer.Option(help="write the results here (a later --baseline)")] = None,
) -> None:
    """Probe every kind of communication once and print the matrix (exit 0 all ok, 1 failures).

    ``--scope policy`` probes every ordered pod pair on every declared port, allowed and denied, and
    compares with what the NetworkPolicies say (holes, breaks; exit 1 on any mismatch or prober error).
    """
    try:
        if scope is Scope.POLICY:
            unused = [
                name
                for name, value in (("--baseline", baseline), ("--save", save), ("--per-source", per_source))
                if value is not None
            ]
            if unused:
                raise UsageError(f"{', '.join(unused)}: not used with --scope policy")
        elif namespace:
            raise UsageError("--namespace: only with --scope policy")
        tgt = open_target(target)
        if scope is Scope.POLICY:
            popts = PolicyOptions(
                namespaces=frozenset(namespace) if namespace else None,
                timeout=POLICY_TIMEOUT if timeout is None else timeout,
            )
            raise typer.Exit(verify_policy(tgt, output=output, options=popts))
        code = verify_target(
            tgt,
            output=output,
            options=MatrixOptions(
                scope=scope, per_source=per_source, seed=seed, timeout=1.0 if timeout is None else timeout
            ),
            threshold=threshold,
            baseline=baseline,
            save=save,
        )
    except MigratorError as exc:
        Console(stderr=True).print(Text(f"error: {exc}", style="red"))
        raise typer.Exit(int(exc.exit_code)) from exc
    raise typer.Exit(code)
