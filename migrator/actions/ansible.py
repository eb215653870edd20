"""The ``ansible.playbook`` action: run a playbook from ``playbooks/`` on the target's nodes.

Hosts: in a ``for_each`` stage, the current node; outside, every host of the target's inventory.

- ``do`` runs the playbook through the target's node executor (``AnsibleRunnerExecutor``) with the step's
  artifacts folder as ansible-runner's private data dir, the step's cancel event and its remaining time as
  the timeout. Every task result per host is emitted with ``ctx.emit`` (a ``step.event`` in the journal);
  the step's result is the per-host summary (ok/changed/failed/skipped/unreachable). Unreachable hosts raise
  ``migrator.playbooks.HostsUnreachable`` (a ``TemporaryError``: the step's retry policy applies); a
  failed task raises ``PlaybookFailed`` (a ``StepFailed`` naming the host, the task and Ansible's message).
- ``undo`` runs ``undo_playbook`` with ``undo_vars`` on the same hosts; without one, there is nothing to
  undo.
- ``preview`` (dry run) runs the playbook in check mode with diff against the real node(s) and returns,
  per node, the ok/changed counts and what would change (with the diff). It changes nothing; an
  unreachable node is reported in the preview.

Secrets: a var is secret when it is listed in ``secret_vars`` or when its value contains the value of a
plan param marked ``secret: true``. Secret vars go to Ansible through the executor's secret channel (never
the data dir) and are scrubbed from every event. A var listed in ``secret_vars`` must take its value from
a secret param: a literal would already be in the plan copy in the run folder, so it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.actions.base import Action, register_action
from migrator.actions.context import PreviewLine, StepContext
from migrator.errors import MigratorError, PlanError
from migrator.plan.models import AnsiblePlaybookArgs
from migrator.playbooks import command, failed_result, run_playbook
from migrator.playbooks import preview as check_mode_preview
from migrator.ports import NodeExecutor, PlaybookResult

DEFAULT_TIMEOUT = 300.0
"""Timeout of a check-mode run in a dry run (no step deadline there)."""


def executor_of(ctx: StepContext) -> NodeExecutor:
    return ctx.target.node_executor(f"step {ctx.step!r} cannot run playbooks")


def step_hosts(ctx: StepContext, executor: NodeExecutor) -> tuple[str, ...]:
    """The current node in a ``for_each`` stage, else every inventory host."""
    if ctx.node is not None:
        return (ctx.node.name,)
    return tuple(executor.inventory_hosts())


def secret_names(ctx: StepContext, values: Mapping[str, Any], listed: list[str]) -> frozenset[str]:
    """Vars listed in ``secret_vars`` plus those whose value holds a secret param's value.

    Raises :class:`PlanError` for a listed var whose value is a literal of the plan (not from a secret
    param): the engine cannot keep that value out of the run folder.
    """
    names = {name for name in values if ctx.scrub(values[name]) != values[name]}
    for name in listed:
        if name not in values:
            continue
        value = values[name]
        if value not in (None, "") and ctx.scrub(value) == value:
            raise PlanError(
                f"step {ctx.step!r}: var {name!r} is listed in secret_vars but its value is not a param"
                " marked secret: true; give it as ${{ params.NAME }} with a secret param"
            )
        names.add(name)
    return frozenset(names)


def host_summary(result: PlaybookResult) -> dict[str, dict[str, Any]]:
    """Per host: the counts and the failure, JSON-able (the step's result in the journal)."""
    out: dict[str, dict[str, Any]] = {}
    for name, host in sorted(result.hosts.items()):
        entry: dict[str, Any] = {
            "ok": host.ok,
            "changed": host.changed,
            "failed": host.failed,
            "skipped": host.skipped,
            "unreachable": host.unreachable,
        }
        if host.failed_task or host.message:
            entry["failed_task"] = host.failed_task
            entry["message"] = host.message
        out[name] = entry
    return out


def _timeout(ctx: StepContext) -> float:
    left = ctx.remaining()
    if math.isinf(left):
        return ctx.timeout or DEFAULT_TIMEOUT
    return max(1.0, left)


def _run(
    ctx: StepContext,
    *,
    playbook: str,
    variables: Mapping[str, Any],
    secret_vars: list[str],
    become: bool,
    forks: int,
    data_dir: Path,
    phase: str,
    check: bool = False,
) -> PlaybookResult:
    executor = executor_of(ctx)

    def forward(event: Mapping[str, Any]) -> None:
        ctx.emit({**event, "phase": phase, "playbook": playbook})

    summary = {"event": "playbook", "phase": phase, "playbook": playbook}
    try:
        run = run_playbook(
            executor,
            playbook,
            step_hosts(ctx, executor),
            data_dir=data_dir,
            extra_vars=dict(variables),
            secret_vars=secret_names(ctx, variables, secret_vars),
            check=check,
            become=become,
            timeout=_timeout(ctx),
            forks=forks,
            cancel=ctx.cancel,
            on_event=forward,
        )
    except MigratorError as exc:
        failed = failed_result(exc)
        if failed is not None:
            status, hosts = failed.status.value, host_summary(failed)
            ctx.emit({**summary, "status": status, "hosts": hosts, "error": str(exc)})
        raise
    ctx.emit({**summary, "status": run.result.status.value, "hosts": host_summary(run.result)})
    return run.result


@register_action("ansible.playbook")
class AnsiblePlaybook(Action[AnsiblePlaybookArgs]):
    """Run ``args.playbook``; undo runs ``args.undo_playbook`` (when given)."""

    def do(self, ctx: StepContext, args: AnsiblePlaybookArgs) -> Any:
        result = _run(
            ctx,
            playbook=args.playbook,
            variables=args.vars,
            secret_vars=args.secret_vars,
            become=args.become,
            forks=args.forks,
            data_dir=ctx.artifacts(),
            phase="do",
        )
        return {"playbook": args.playbook, "changed": result.changed, "hosts": host_summary(result)}

    def undo(self, ctx: StepContext, args: AnsiblePlaybookArgs, result: Any) -> None:
        if not args.undo_playbook:
            logger.info("step {}: no undo_playbook, nothing to undo", ctx.step)
            return
        _run(
            ctx,
            playbook=args.undo_playbook,
            variables=args.undo_vars,
            secret_vars=args.secret_vars,
            become=args.become,
            forks=args.forks,
            data_dir=ctx.artifacts() / "undo",
            phase="undo",
        )

    def preview(self, ctx: StepContext, args: AnsiblePlaybookArgs) -> list[PreviewLine]:
        return _check_mode(
            ctx,
            playbook=args.playbook,
            variables=args.vars,
            secret_vars=args.secret_vars,
            become=args.become,
            forks=args.forks,
        )

    def undo_preview(self, ctx: StepContext, args: AnsiblePlaybookArgs) -> list[PreviewLine]:
        if not args.undo_playbook:
            return ["nothing to undo (no undo_playbook)"]
        where = ctx.node.name if ctx.node is not None else "all inventory hosts"
        return [f"ansible-playbook {args.undo_playbook} on {where} with vars {sorted(args.undo_vars)}"]


def _check_mode(
    ctx: StepContext,
    *,
    playbook: str,
    variables: Mapping[str, Any],
    secret_vars: list[str],
    become: bool,
    forks: int,
) -> list[PreviewLine]:
    """Run the playbook in check mode with diff; per node: counts and what would change."""
    try:
        executor = executor_of(ctx)
        hosts = step_hosts(ctx, executor)
    except MigratorError as exc:
        return [f"cannot preview {playbook}: {exc}"]
    lines: list[PreviewLine] = [{"command": command(playbook, hosts, check=True, become=become)}]
    result: PlaybookResult | None
    try:
        result = _run(
            ctx,
            playbook=playbook,
            variables=variables,
            secret_vars=secret_vars,
            become=become,
            forks=forks,
            data_dir=ctx.artifacts(),
            phase="check",
            check=True,
        )
    except PlanError:
        raise
    except MigratorError as exc:
        result = failed_result(exc)
        if result is None or not result.hosts:
            lines.append(f"check mode could not run: {exc}")
            return lines
    blocks = check_mode_preview(result)
    for name, host in sorted(result.hosts.items()):
        if host.unreachable:
            lines.append(f"{name}: UNREACHABLE in check mode ({host.message}); cannot tell what would change")
            continue
        state = "FAILED in check mode" if host.failed else "check mode"
        lines.append(f"{name}: {state}: ok={host.ok} changed={host.changed}")
        for block in blocks.get(name, []):
            if block.startswith(("failed:", "unreachable:")):
                lines.append(f"{name}: {block}")
            else:
                lines.append(f"{name} would change {block}")
        if not host.failed and host.changed == 0:
            lines.append(f"{name}: nothing would change")
    return lines
