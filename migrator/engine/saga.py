"""The saga's compensations: the rollback of a run (every step on the rollback stack undone, newest first,
then the preflight checks again as the post-rollback verification), one step's undo, and the undo of a
stage that failed with ``on_failure: continue``.

It knows the engine only through :class:`SagaHost` (what it calls back) and calls the undos through the
engine's :class:`~migrator.engine.runner.StepRunner`; the rollback stack is the
engine's :class:`~migrator.engine.state.SagaState`, folded from the journal, so a rollback continues where
a crashed one stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tenacity import RetryCallState

from migrator.actions import get_action
from migrator.engine.planio import render_step, runtime_context
from migrator.engine.runner import StepRunner
from migrator.engine.state import SagaState, StepRecord
from migrator.errors import CheckFailed, PermanentError
from migrator.plan.models import CheckBase, Plan, Stage
from migrator.ports import Node
from migrator.runs.events import (
    CheckPhase,
    Event,
    Outcome,
    RollbackEnd,
    RollbackOutcome,
    RollbackReason,
    RollbackStart,
    RunStatus,
    Signal,
    SignalAction,
    UndoEnd,
    UndoRetry,
    UndoStart,
)

if TYPE_CHECKING:
    pass

T = TypeVar("T")


class SagaHost(Protocol):
    """What the rollback needs of the engine."""

    run_id: str
    plan: Plan
    state: SagaState

    def emit(self, event: Event) -> Event: ...

    def node(self, name: str) -> Node: ...

    def run_checks(self, checks: Iterable[CheckBase], *, phase: CheckPhase) -> None: ...


class Saga:
    """Undoes what a run did. ``stop`` (a second interrupt) stops a rollback between two undos."""

    def __init__(self, host: SagaHost, calls: StepRunner, stop: threading.Event) -> None:
        self.host = host
        self.calls = calls
        self.stop = stop
        self.attention: list[str] = []
        """What went wrong without failing the run (a failed undo of a continued stage): it needs a look."""

    def compensate_stage(self, stage: Stage) -> None:
        """on_failure: continue: the stage is all or nothing; undo all of its steps now, newest first."""
        for rec in self.host.state.rollback_stack():
            if rec.stage == stage.name:
                try:
                    self.undo(rec)
                except Exception as exc:  # noqa: BLE001 - recorded; the run will need attention
                    self.attention.append(
                        f"the undo of {rec.key} (stage failed, on_failure: continue) failed: {exc}"
                    )

    def rollback_and_verify(self, reason: RollbackReason, error: str | None) -> tuple[RunStatus, str]:
        """Undo the rollback stack, then the post-rollback verification: how the run ends."""
        host = self.host
        run_id = host.run_id
        stack = host.state.rollback_stack()
        host.emit(RollbackStart(reason=reason, error=error, steps=tuple(r.key for r in stack)))
        undone = 0
        for rec in stack:
            if self.stop.is_set():
                left = len(stack) - undone
                host.emit(
                    Signal(
                        action=SignalAction.STOP_ROLLBACK, message="second interrupt: stopping the rollback"
                    )
                )
                host.emit(RollbackEnd(outcome=RollbackOutcome.STOPPED, undone=undone, left=left))
                return RunStatus.NEEDS_ATTENTION, (
                    f"rollback stopped by a second interrupt with {left} steps not undone;"
                    f" continue it with: migrator rollback {run_id}"
                )
            try:
                self.undo(rec)
            except Exception as exc:  # noqa: BLE001 - any failed undo needs a human
                host.emit(
                    RollbackEnd(outcome=RollbackOutcome.FAILED, undone=undone, failed=rec.key, error=str(exc))
                )
                return RunStatus.NEEDS_ATTENTION, (
                    f"{_what(reason, error)}; the undo of {rec.key} failed: {exc}. The target is only partly"
                    f" rolled back: fix the cause, then continue with: migrator rollback {run_id}"
                )
            undone += 1
        host.emit(RollbackEnd(outcome=RollbackOutcome.SUCCEEDED, undone=undone))
        try:
            host.run_checks(host.plan.spec.preflight, phase=CheckPhase.POST_ROLLBACK)
        except CheckFailed as exc:
            return RunStatus.NEEDS_ATTENTION, (
                f"{_what(reason, error)}; rolled back {undone} steps,"
                f" but the post-rollback verification failed: {exc}"
            )
        done = f"rolled back {undone} steps and verified"
        if reason == RollbackReason.FAILURE:
            return RunStatus.FAILED_ROLLED_BACK, f"failed: {error}; {done}"
        if reason == RollbackReason.INTERRUPT:
            return RunStatus.INTERRUPTED, f"interrupted; {done}"
        if reason == RollbackReason.ALWAYS:
            return RunStatus.SUCCEEDED, f"succeeded; {done} (rollback: always)"
        return RunStatus.ROLLED_BACK, done

    def undo(self, rec: StepRecord) -> None:
        """Undo one step: its explicit ``undo`` step, else its action's undo; ``no_undo``: nothing."""
        host = self.host
        stage = host.plan.spec.stages[rec.stage_index]
        step = stage.steps[rec.step_index]
        if stage.name != rec.stage or (step.display_name != rec.step and "***" not in rec.step):
            raise PermanentError(f"the plan does not match the journal at {rec.key}; cannot undo it")
        node = host.node(rec.node) if rec.node else None
        ref: dict[str, Any] = {"key": rec.key, "stage": rec.stage, "step": rec.step, "node": rec.node}
        if step.no_undo:
            host.emit(UndoStart(**ref, action=rec.action, kind="none"))
            host.emit(UndoEnd(**ref, outcome=Outcome.SUCCEEDED, skipped=True))
            return
        rendered = render_step(step, runtime_context(host.run_id, node))
        undo_step = rendered.undo
        if undo_step is not None:
            action = get_action(str(getattr(undo_step, "action", "")))
            args = getattr(undo_step, "args", None)
            policy, timeout, kind = (
                undo_step.retry,
                undo_step.timeout,
                f"step:{getattr(undo_step, 'action', '')}",
            )
        else:
            action = get_action(rec.action)
            args = getattr(rendered, "args", None)
            policy, timeout, kind = step.retry, step.timeout, "undo"
        host.emit(UndoStart(**ref, action=rec.action, kind=kind, completed=rec.completed))
        started = time.monotonic()
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            ctx = self.calls.step_context(
                rec.stage_index,
                stage,
                rec.step_index,
                step,
                node,
                key=rec.key,
                timeout=timeout,
                attempt=attempts,
                undoing=True,
            )
            ctx.prepared = rec.prepared if rec.prepared is not None else host.state.prepared.get(rec.key)
            result = rec.result if rec.completed else None

            def run() -> Any:
                if undo_step is not None:
                    return action.do(ctx, args)
                return action.undo(ctx, args, result)

            self.calls.in_worker(run, ctx.cancel, ctx.deadline, f"undo {rec.key}")

        def before_sleep(state: RetryCallState) -> None:
            wait_s = state.next_action.sleep if state.next_action else 0.0
            host.emit(UndoRetry(key=rec.key, attempt=state.attempt_number, wait=round(wait_s, 3)))

        try:
            self.calls.retrying(policy, before_sleep)(attempt)
        except Exception as exc:
            host.emit(
                UndoEnd(
                    **ref,
                    outcome=Outcome.FAILED,
                    error=str(exc),
                    attempts=attempts,
                    duration=round(time.monotonic() - started, 3),
                )
            )
            raise
        host.emit(
            UndoEnd(
                **ref,
                outcome=Outcome.SUCCEEDED,
                attempts=attempts,
                duration=round(time.monotonic() - started, 3),
            )
        )


def _what(reason: RollbackReason, error: str | None) -> str:
    if reason == RollbackReason.FAILURE:
        return f"failed: {error}"
    if reason == RollbackReason.INTERRUPT:
        return "interrupted"
    return f"rollback ({reason})"
