"""``migrator``: apply, plan, validate, schema, runs, status, resume, rollback (+ sub-apps when present).

:func:`run` is the console-script entry point: it maps :class:`~migrator.errors.MigratorError` to the
documented exit codes (0 ok, 1 failed and rolled back, 2 invalid input, 3 needs attention, 130
interrupted) and never shows a traceback unless ``--debug`` is given: every error is one ``error: ...``
line on stderr (bad CLI use names the ``--help`` to read; an unexpected exception, a bug of ours, exits 3
because the state of a run it interrupted is unknown).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from loguru import logger
from typer.core import TyperGroup

from migrator import __version__
from migrator.cli.common import (
    DryRunOpt,
    Output,
    OutputOpt,
    TargetOpt,
    YesOpt,
    confirm_change,
    console,
    default_target,
    plain_flags,
    schema_tag,
)
from migrator.cli.inputs import one_line
from migrator.errors import ExitCode, MigratorError, PlanError, UsageError

if TYPE_CHECKING:  # the commands import what they need when they run (`migrator --version` at once)
    from migrator.engine import RunControl, RunResult
    from migrator.runs.rundir import RunDir

# sub-apps other modules add: (command name, module with a typer ``app``)
SUBAPPS: tuple[tuple[str, str], ...] = (
    ("lab", "migrator.cli.lab"),
    ("nodes", "migrator.cli.nodes"),
    ("doctor", "migrator.cli.doctor"),
    ("faults", "migrator.cli.faults"),
    ("report", "migrator.cli.report"),
)


def _load_lazy(name: str) -> Any:
    """The click command of sub-app ``name`` (or of ``verify``), imported on first use."""
    if name == "verify":  # one command, not a group
        from migrator.cli.verify import verify  # noqa: PLC0415

        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command("verify")(verify)
        return typer.main.get_command(single)
    module = dict(SUBAPPS)[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    sub = getattr(mod, "app", None)
    if not isinstance(sub, typer.Typer):
        return None
    command = typer.main.get_command(sub)
    command.name = name
    # as with add_typer: completion options belong to the top-level command only
    command.params = [p for p in command.params if p.name not in ("install_completion", "show_completion")]
    return command


_LAZY = (*(name for name, _ in SUBAPPS), "verify")


class _LazyGroup(TyperGroup):
    """Sub-apps (lab, nodes, doctor, faults, report, verify) are imported only when they run or when the
    help lists them: ``migrator status RUN`` does not pay for the kubernetes client or the lab."""

    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return [*own, *(name for name in _LAZY if name not in own)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LAZY:
            command = _load_lazy(cmd_name)
            if command is not None:
                self.commands[cmd_name] = command
        return plain_flags(command) if command is not None else None

    def get_params(self, ctx: Any) -> Any:
        plain_flags(self)
        return super().get_params(ctx)


app = typer.Typer(
    name="migrator",
    cls=_LazyGroup,
    help="Plan-driven, verified and reversible network changes for Kubernetes clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = console()
err = console(stderr=True)


def _setup_logging(verbose: int) -> None:
    level = "WARNING" if verbose <= 0 else "INFO" if verbose == 1 else "DEBUG"
    logger.remove()
    logger.add(
        sys.stderr,
        level=level,
        format="<level>{level: <8}</level> {message}",
        # journal events have their own observers; -vv shows them on stderr too
        filter=(lambda record: True) if verbose >= 2 else (lambda record: "event" not in record["extra"]),
        colorize=None,
    )


def _print_version(value: bool) -> None:
    """``--version``: eager, so it answers before click asks for a command."""
    if value:
        out.print(f"migrator {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(  # noqa: PLR0917 - typer maps parameters to options
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More logs on stderr (-vv: debug)")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit"),
    ] = False,
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="kube target: kubeconfig file (default $KUBECONFIG)")
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="kube target: kubeconfig context (or -t kube:CONTEXT)")
    ] = None,
    inventory: Annotated[
        str | None,
        typer.Option("--inventory", help="kube target: Ansible inventory of the nodes ($MIGRATOR_INVENTORY)"),
    ] = None,
) -> None:
    """Plan-driven, verified and reversible network changes for Kubernetes clusters."""
    _setup_logging(verbose)
    for option, value in (("--kubeconfig", kubeconfig), ("--inventory", inventory)):
        if value and os.pathsep not in value and not Path(value).expanduser().exists():
            raise UsageError(f"{option} {value}: no such file")
    # the kube target reads these (migrator.targets.kube.target.open_kube_target)
    for env, value in (
        ("KUBECONFIG", kubeconfig),
        ("MIGRATOR_KUBE_CONTEXT", context),
        ("MIGRATOR_INVENTORY", inventory),
    ):
        if value:
            os.environ[env] = value


# ------------------------------------------------------------------------------------------ helpers

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a plan parameter: NAME=VALUE (repeatable)")
]


@contextlib.contextmanager
def _signals(control: RunControl) -> Iterator[None]:
    """SIGINT/SIGTERM once: cancel (roll back per policy); twice: stop the rollback too."""
    count = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
            control.cancel.set()
            err.print(
                f"[yellow]{name}: stopping at the next safe point, then rolling back per the plan's policy"
                " (send it again to stop the rollback too)[/]"
            )
        else:
            control.cancel.set()
            control.stop_rollback.set()
            err.print(
                f"[red]{name} again: stopping the rollback at the next safe point;"
                " the run will need attention[/]"
            )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _observers(output: Output) -> Any:
    from migrator.cli.console import console_observer  # noqa: PLC0415 - imported when the command runs

    if output == Output.JSON:
        return None
    return lambda rundir: [console_observer()]


def _finish(result: RunResult, output: Output) -> None:
    if output == Output.JSON:
        out.print_json(json.dumps({"schema": schema_tag("run"), **result.to_json()}))
    else:
        style = {0: "green", 1: "yellow", 3: "red", 130: "yellow"}.get(int(result.exit_code), "red")
        message = str(result.message)
        status = str(result.status)
        if message.startswith(f"{status}:"):  # the engine's message may already lead with it
            message = message[len(status) + 1 :].lstrip()
        err.print(f"[{style}]{status}[/]: ", markup=True, end="")
        err.print(message, markup=False)
        err.print(f"run folder: {result.run_dir}")
    raise typer.Exit(int(result.exit_code))


def _print_dry_run(report: dict[str, Any], output: Output) -> None:
    from migrator.cli.console import dry_run_tree  # noqa: PLC0415 - imported when the command runs

    if output == Output.JSON:
        out.print_json(json.dumps({"schema": schema_tag("plan"), **report}, default=str))
    else:
        out.print(dry_run_tree(report))


def _confirm(question: str) -> bool:
    return bool(typer.confirm(question, default=False))


# ------------------------------------------------------------------------------------------ commands


@app.command("apply")
def apply_cmd(  # noqa: PLR0917 - typer maps parameters to options
    plan: Annotated[Path, typer.Argument(help="The plan file")],
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    target: TargetOpt = "",
    set_: SetOpt = None,
    output: OutputOpt = Output.TEXT,
    force_unlock: Annotated[
        str | None, typer.Option("--force-unlock", metavar="RUN", help="Take over the stale lock of run RUN")
    ] = None,
) -> None:
    """Run a plan against a target (preview, confirm, run, verify; roll back on failure)."""
    from migrator.cli.inputs import check_target_inputs  # noqa: PLC0415 - imported when the command runs
    from migrator.engine import EngineOptions, RunControl, apply_plan, load_plan_file, open_target  # noqa: PLC0415 - imported when the command runs
    from migrator.engine import dry_run as make_dry_run  # noqa: PLC0415 - imported when the command runs
    from migrator.engine.planio import parse_overrides  # noqa: PLC0415 - imported when the command runs

    spec = target or default_target()
    source = load_plan_file(plan, parse_overrides(set_ or []))
    tgt = open_target(spec)
    if dry_run:
        _print_dry_run(make_dry_run(source, tgt, target_spec=spec), output)
        raise typer.Exit(0)
    interactive = sys.stdin.isatty()
    check_target_inputs(tgt, parse=spec.strip().startswith("kube"))
    if not confirm_change(
        f"Apply plan {source.plan.metadata.name!r} to target {spec!r}?",
        yes=yes,
        what="apply",
        preview=lambda: _print_dry_run(make_dry_run(source, tgt, target_spec=spec), Output.TEXT),
        interactive=interactive,
    ):
        err.print("not applied")
        raise typer.Exit(int(ExitCode.FAILED_ROLLED_BACK))
    control = RunControl()
    options = EngineOptions(
        approve=None if yes or not interactive else (lambda stage: _confirm(f"Start stage {stage!r}?"))
    )
    with _signals(control):
        result = apply_plan(
            source,
            tgt,
            target_spec=spec,
            observers=_observers(output),
            control=control,
            options=options,
            force_unlock=force_unlock,
        )
    _finish(result, output)


@app.command("plan")
def plan_cmd(
    plan: Annotated[Path, typer.Argument(help="The plan file")],
    target: TargetOpt = "",
    set_: SetOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Dry run: which nodes, in which waves, which actions with which arguments, which checks."""
    from migrator.engine import dry_run as make_dry_run  # noqa: PLC0415 - imported when the command runs
    from migrator.engine import load_plan_file, open_target  # noqa: PLC0415 - imported when the command runs
    from migrator.engine.planio import parse_overrides  # noqa: PLC0415 - imported when the command runs

    spec = target or default_target()
    source = load_plan_file(plan, parse_overrides(set_ or []))
    _print_dry_run(make_dry_run(source, open_target(spec), target_spec=spec), output)


@app.command("validate")
def validate_cmd(
    plans: Annotated[list[Path], typer.Argument(help="Plan files")],
    set_: SetOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Validate plan files: exit 0 when all are valid, 2 otherwise."""
    from migrator.cli import plan_cmds  # noqa: PLC0415

    if output == Output.JSON:
        report = plan_cmds.validate_report(plans, plan_cmds.parse_sets(set_ or []))
        out.print_json(json.dumps({"schema": schema_tag("validate"), "plans": report}))
        raise typer.Exit(0 if all(r["valid"] for r in report) else int(ExitCode.INVALID_INPUT))
    code = plan_cmds.validate(plans, plan_cmds.parse_sets(set_ or []))
    if code == 0:
        _engine_notes(plans, set_ or [])
    raise typer.Exit(code)


def _engine_notes(plans: Sequence[Path], sets: list[str]) -> None:
    """Say (on stderr, without failing) what this build cannot run yet: actions/checks not available."""
    from migrator.engine import load_plan_file, validate_for_engine  # noqa: PLC0415 - imported when the command runs
    from migrator.engine.planio import parse_overrides  # noqa: PLC0415 - imported when the command runs

    for path in plans:
        try:
            validate_for_engine(load_plan_file(path, parse_overrides(sets)))
        except PlanError as exc:
            for line in [str(p) for p in exc.problems] or [str(exc)]:
                err.print(f"note: {line}", markup=False)


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of plans (for editors)."""
    from migrator.cli import plan_cmds  # noqa: PLC0415

    typer.echo(plan_cmds.schema())


@app.command("runs")
def runs_cmd(output: OutputOpt = Output.TEXT) -> None:
    """List runs: id, plan, target, status, started, duration."""
    from rich.table import Table  # noqa: PLC0415 - imported when the command runs

    from migrator.runs.rundir import list_runs  # noqa: PLC0415 - imported when the command runs

    rows = [_run_row(r) for r in list_runs()]
    if output == Output.JSON:
        out.print_json(json.dumps(rows))
        return
    table = Table("run", "plan", "target", "status", "started", "duration")
    for row in rows:
        table.add_row(
            row["run_id"], row["plan"], row["target"], row["status"], row["started"], row["duration"]
        )
    out.print(table)


def _run_row(rundir: RunDir) -> dict[str, Any]:
    from migrator.engine.lock import pid_alive  # noqa: PLC0415 - imported when the command runs

    meta, state = rundir.meta(), rundir.state()
    status = str(state.get("status", "unknown"))
    if status in ("running", "rolling-back") and not pid_alive(int(meta.get("pid") or 0)):
        status = f"{status} (crashed? resume it)"
    started = str(state.get("started") or meta.get("started") or "")
    return {
        "run_id": rundir.run_id,
        "plan": str(meta.get("plan", "")),
        "target": str(meta.get("target", "")),
        "status": status,
        "started": started.replace("T", " ")[:19],
        "duration": _duration(started, state.get("ended") or state.get("updated")),
        "message": state.get("message", ""),
    }


def _duration(start: str, end: Any) -> str:

    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(0.0, (b - a).total_seconds())
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


@app.command("status")
def status_cmd(
    run: Annotated[str, typer.Argument(help="Run id or unique prefix")], output: OutputOpt = Output.TEXT
) -> None:
    """Where a run is: status, stage, wave, steps in flight, what a rollback would undo."""
    from migrator.engine.observers import describe  # noqa: PLC0415 - imported when the command runs
    from migrator.engine.state import SagaState  # noqa: PLC0415 - imported when the command runs
    from migrator.runs.journal import read_journal  # noqa: PLC0415 - imported when the command runs
    from migrator.runs.rundir import find_run  # noqa: PLC0415 - imported when the command runs

    rundir = find_run(run)
    found = read_journal(rundir.journal)
    events = found.typed()
    state = SagaState.replay(events)
    row = _run_row(rundir)
    snapshot = state.snapshot()
    snapshot["status_shown"] = row["status"]
    snapshot["journal_torn"] = found.torn
    snapshot["meta"] = rundir.meta()
    snapshot["schema"] = schema_tag("status")
    if output == Output.JSON:
        out.print_json(json.dumps(snapshot, default=str))
        return
    out.print(f"run      {rundir.run_id}")
    out.print(f"plan     {row['plan']}  ({snapshot['meta'].get('plan_path')})")
    out.print(f"target   {row['target']}")
    out.print(f"status   {row['status']}  {state.message}")
    out.print(f"started  {row['started']}  duration {row['duration']}")
    if state.current_stage:
        wave = f", wave {state.current_wave + 1}" if state.current_wave is not None else ""
        out.print(f"at       stage {state.current_stage}{wave}")
    if state.inflight:
        out.print(f"in flight {', '.join(sorted(state.inflight))}")
    stack = state.rollback_stack()
    out.print(f"steps done {state.steps_done}; to undo on rollback: {len(stack)}")
    for rec in stack[:20]:
        out.print(f"  undo {rec.key}" + ("" if rec.completed else " (did not finish)"), markup=False)
    if len(stack) > 20:
        out.print(f"  ... and {len(stack) - 20} more")
    if found.torn:
        out.print(f"[yellow]journal: {found.torn}[/]")
    out.print("last events:")
    for event in events[-12:]:
        line = describe(event)
        if line:
            out.print(f"  {event.seq:>4} {line.strip()}", markup=False)
    if not state.status.terminal or "crashed" in row["status"]:
        out.print(
            f"continue with: migrator resume {rundir.run_id}"
            f"   or undo with: migrator rollback {rundir.run_id}"
        )


def _check_run_inputs(run: str) -> None:
    """Before resuming or rolling back: the run's target inventory and SSH keys are usable (exit 2 with
    the fix, not a failed undo half-way). A target that cannot be opened is left to the engine to report."""
    from migrator.cli.inputs import check_target_inputs  # noqa: PLC0415 - imported when the command runs
    from migrator.engine import open_target  # noqa: PLC0415 - imported when the command runs
    from migrator.runs.rundir import find_run  # noqa: PLC0415 - imported when the command runs

    spec = str(find_run(run).meta().get("target") or "")
    if not spec:
        return
    try:
        tgt = open_target(spec)
    except MigratorError:
        return
    check_target_inputs(tgt)


def run_preview(run: str, verb: str) -> dict[str, Any]:
    """What ``resume``/``rollback`` of ``run`` would do, from its journal alone (nothing is touched)."""
    from migrator.engine.state import SagaState  # noqa: PLC0415 - imported when the command runs
    from migrator.runs.events import RunStatus  # noqa: PLC0415 - imported when the command runs
    from migrator.runs.journal import read_journal  # noqa: PLC0415 - imported when the command runs
    from migrator.runs.rundir import find_run  # noqa: PLC0415 - imported when the command runs

    rundir = find_run(run)
    state = SagaState.replay(read_journal(rundir.journal).typed())
    row = _run_row(rundir)
    undo = [
        {
            "key": r.key,
            "stage": r.stage,
            "step": r.step,
            "node": r.node,
            "action": r.action,
            "completed": r.completed,
        }
        for r in state.rollback_stack()
    ]
    rolling_back = state.status is RunStatus.ROLLING_BACK
    if verb == "rollback" or rolling_back:
        does = f"undo {len(undo)} step(s), newest first, then verify"
    else:
        wave = f", wave {state.current_wave + 1}" if state.current_wave is not None else ""
        at = f"stage {state.current_stage}{wave}" if state.current_stage else "the first stage not done"
        does = f"continue from {at}; the steps already done are not run again"
    return {
        "schema": schema_tag(f"{verb}.preview"),
        "run_id": rundir.run_id,
        "plan": row["plan"],
        "target": row["target"],
        "status": row["status"],
        "stages": {stage: str(outcome) for stage, outcome in state.stage_outcome.items()},
        "action": verb,
        "does": does,
        "undo": undo if verb == "rollback" or rolling_back else [],
    }


def _print_preview(preview: dict[str, Any], output: Output) -> None:
    if output == Output.JSON:
        out.print_json(json.dumps(preview, default=str))
        return
    out.print(
        f"{preview['action']} run {preview['run_id']} (plan {preview['plan']}, target {preview['target']})",
        markup=False,
    )
    out.print(f"status   {preview['status']}", markup=False)
    for stage, outcome in preview["stages"].items():
        out.print(f"stage    {stage}: {outcome}", markup=False)
    out.print(f"would    {preview['does']}", markup=False)
    for rec in preview["undo"]:
        where = f" on {rec['node']}" if rec["node"] else ""
        unfinished = "" if rec["completed"] else " (did not finish)"
        out.print(f"  undo {rec['action']}{where}  [{rec['key']}]{unfinished}", markup=False)


def _continue_cmd(
    fn: Callable[..., RunResult],
    run: str,
    *,
    verb: str,
    force: bool,
    set_: list[str] | None,
    output: Output,
    yes: bool,
    dry_run: bool,
) -> None:
    """Shared body of ``resume`` and ``rollback``: preview, confirmation, signals, observers, exit code."""
    from migrator.engine import RunControl  # noqa: PLC0415 - imported when the command runs
    from migrator.engine.planio import parse_overrides  # noqa: PLC0415 - imported when the command runs

    if dry_run:
        _print_preview(run_preview(run, verb), output)
        raise typer.Exit(0)
    _check_run_inputs(run)
    if not confirm_change(
        f"{verb.capitalize()} run {run!r}?",
        yes=yes,
        what=verb,
        preview=lambda: _print_preview(run_preview(run, verb), Output.TEXT),
    ):
        err.print(f"not {'resumed' if verb == 'resume' else 'rolled back'}")
        raise typer.Exit(int(ExitCode.FAILED_ROLLED_BACK))
    control = RunControl()
    with _signals(control):
        result = fn(
            run,
            observers=_observers(output),
            control=control,
            force=force,
            overrides=parse_overrides(set_ or []),
        )
    _finish(result, output)


ForceOpt = Annotated[bool, typer.Option("--force", help="Go on even if the plan file or target changed")]


@app.command("resume")
def resume_cmd(  # noqa: PLR0917 - typer maps parameters to options
    run: Annotated[str, typer.Argument(help="Run id or unique prefix")],
    force: ForceOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = Output.TEXT,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Continue an interrupted (even kill -9) run from its journal, or continue its rollback."""
    from migrator.engine import resume_run  # noqa: PLC0415 - imported when the command runs

    _continue_cmd(
        resume_run, run, verb="resume", force=force, set_=set_, output=output, yes=yes, dry_run=dry_run
    )


@app.command("rollback")
def rollback_cmd(  # noqa: PLR0917 - typer maps parameters to options
    run: Annotated[str, typer.Argument(help="Run id or unique prefix")],
    force: ForceOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = Output.TEXT,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Undo every completed step of a finished or interrupted run, newest first, then verify."""
    from migrator.engine import rollback_run  # noqa: PLC0415 - imported when the command runs

    _continue_cmd(
        rollback_run, run, verb="rollback", force=force, set_=set_, output=output, yes=yes, dry_run=dry_run
    )


# ------------------------------------------------------------------------------------------ entry point


_GLOBAL_FLAGS = ("-v", "-vv", "-vvv", "--verbose", "--debug")


def _hoist_global_options(args: list[str]) -> list[str]:
    """Let ``-v``/``--debug`` also follow the command (``migrator apply plan.yaml -v``)."""
    if "--" in args:
        return args
    flags = [a for a in args if a in _GLOBAL_FLAGS]
    return flags + [a for a in args if a not in _GLOBAL_FLAGS]


def _usage_line(exc: typer.TyperException) -> str:
    """Click's usage error on one line, with the command's ``--help`` to read."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or "migrator"
    return f"{one_line(message)} (see: {path} --help)"


def run(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: exit codes from :class:`ExitCode`; no tracebacks without ``--debug``.

    Every error is printed as ``error: ...`` on one line of stderr (a plan with several problems: one line
    each, naming file:line:column and the field).
    """
    args = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    _setup_logging(0)
    started = time.monotonic()
    code: int
    try:
        result = app(args=args, prog_name="migrator", standalone_mode=False)
        code = int(result) if isinstance(result, int) else 0
    except MigratorError as exc:
        if debug:
            err.print_exception()
        lines = [str(p) for p in exc.problems] if isinstance(exc, PlanError) and exc.problems else [str(exc)]
        for line in lines:
            err.print(f"error: {one_line(line, limit=1000)}", markup=False)
        code = int(exc.exit_code)
    except typer.Exit as exc:
        code = int(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        code = int(ExitCode.INTERRUPTED)
    except typer.TyperException as exc:  # bad CLI use: unknown option, missing argument, ...
        if exc.format_message().strip():  # (no message: a group without a command has shown its help)
            err.print(f"error: {_usage_line(exc)}", markup=False)
        code = int(ExitCode.INVALID_INPUT)
    except OSError as exc:  # the state folder or a file cannot be used: say which, no traceback
        if debug:
            err.print_exception()
        err.print(f"error: {one_line(str(exc))}", markup=False)
        code = int(ExitCode.INVALID_INPUT)
    except KeyboardInterrupt:
        err.print("interrupted")
        code = int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, and the state may need a look
        if debug:
            err.print_exception()
        detail = one_line(str(exc)) or "no message"
        err.print(
            f"error: internal error {type(exc).__name__}: {detail} (rerun with --debug for the traceback;"
            " check `migrator runs` for a run that needs attention)",
            markup=False,
        )
        code = int(ExitCode.NEEDS_ATTENTION)
    logger.debug("migrator exits {} after {:.2f}s", code, time.monotonic() - started)
    sys.exit(code)


if __name__ == "__main__":
    run()
