"""The engine: gate (preflight) -> stages (waves of nodes) -> verify, with a saga rollback.

The engine never prints: it writes typed events (:mod:`migrator.runs.events`) to the journal
(:mod:`migrator.runs.journal`), folds them into its :class:`~migrator.engine.state.SagaState` (written to
``state.json`` after every transition) and hands them to observers. It takes a :class:`RunControl` whose
events the CLI sets on signals.

This module has the run's lifecycle, its stages, waves and steps, and the checks; a stage's monitor is in
:mod:`migrator.engine.monitor`, the rollback (undo, stage compensation) in :mod:`migrator.engine.saga`.

Only ``Exception`` is ever caught to decide how a run goes on; anything else (``KeyboardInterrupt``, a
test's simulated crash) goes through untouched, from any thread: a worker's is handed over to the thread
that waits for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from loguru import logger
from tenacity import RetryCallState

from migrator.actions import get_action
from migrator.actions.context import Cancelled, CheckContext, WaveLog
from migrator.checks import CheckResult, get_check
from migrator.engine.monitor import StageMonitor
from migrator.engine.planio import PlanSource, render_step, runtime_context
from migrator.engine.requirements import CHECK_NAME as REQUIREMENTS_CHECK
from migrator.engine.requirements import step_requirements
from migrator.engine.runner import StepRunner
from migrator.engine.saga import Saga
from migrator.engine.state import SagaState, step_key
from migrator.errors import (
    CheckFailed,
    ExitCode,
    Interrupted,
    MigratorError,
    StepFailed,
    StepTimeout,
    TemporaryError,
)
from migrator.plan.models import CheckBase, FailurePolicy, RollbackPolicy, Stage, StepBase
from migrator.plan.selection import stage_waves
from migrator.ports import Node, Target
from migrator.runs.events import (
    CheckEnd,
    CheckEvent,
    CheckPhase,
    CheckStart,
    Event,
    JournalRepaired,
    MonitorProgress,
    Outcome,
    PreflightEnd,
    PreflightStart,
    RollbackReason,
    RunEnd,
    RunError,
    RunMode,
    RunPhase,
    RunResume,
    RunStart,
    RunStatus,
    RunWarning,
    Signal,
    SignalAction,
    StageEnd,
    StageOutcome,
    StageStart,
    StepEnd,
    StepEvent,
    StepOutcome,
    StepPrepared,
    StepRetry,
    StepStart,
    WaveEnd,
    WaveStart,
)
from migrator.runs.journal import Journal, Scrubber, now_iso
from migrator.runs.rundir import RunDir

T = TypeVar("T")

PROGRESS_EVERY_S = 5.0
"""How often a monitor check's counts reach the observers (MonitorProgress), at most."""
_PROGRESS_AT = "migrator.progress_at"  # in a monitor check's store: when its last MonitorProgress went out


class Observer(Protocol):
    """Receives every journal event (as written: secrets masked) as it happens, and the progress events
    that are not journaled (:class:`MonitorProgress`). Must not raise, must be quick."""

    def on_event(self, event: Event) -> None: ...

    def close(self) -> None: ...


JournalFactory = Callable[..., Journal]
"""Makes a run's journal: ``factory(path, run_id, scrub=...)`` (:class:`~migrator.runs.journal.Journal`)."""


@dataclass
class RunControl:
    """How the outside world (the CLI's signal handlers) steers a run.

    ``cancel``: stop at the next safe point (running steps are asked to stop) and roll back per policy.
    ``stop_rollback``: stop the rollback at the next safe point (between two undos): needs-attention.
    """

    cancel: threading.Event = field(default_factory=threading.Event)
    stop_rollback: threading.Event = field(default_factory=threading.Event)


@dataclass
class EngineOptions:
    sleep: Callable[[float], None] | None = None
    """Waits between retries; ``None``: a wait that wakes up on cancel. Tests inject a recorder."""
    monitor_interval: float = 2.0
    poll: float = 0.02
    cancel_grace: float = 5.0
    """How long a cancelled or timed-out action gets to stop before the engine moves on."""
    journal: JournalFactory = Journal
    """Makes the run's journal (a test may give one that fails on purpose at a given event)."""
    approve: Callable[[str], bool] | None = None
    """Asked before a stage with ``approval: true``; ``None`` approves."""


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: RunStatus
    message: str
    run_dir: Path

    @property
    def exit_code(self) -> ExitCode:
        return self.status.exit_code

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": str(self.status),
            "exit_code": int(self.exit_code),
            "message": self.message,
            "run_dir": str(self.run_dir),
        }


class _Stop(Exception):
    """A node thread stops at a step boundary because a sibling in its wave failed."""


_NO_SNAPSHOT = (StepEvent, CheckStart)  # events that change nothing worth a new state.json


class Engine:
    """Runs one plan against one target in one run folder. Use :mod:`migrator.engine.api` to build it."""

    def __init__(
        self,
        source: PlanSource,
        target: Target,
        rundir: RunDir,
        *,
        observers: Sequence[Observer] = (),
        control: RunControl | None = None,
        options: EngineOptions | None = None,
        state: SagaState | None = None,
        target_spec: str | None = None,
    ) -> None:
        self.source = source
        self.plan = source.plan
        self.target = target
        self.rundir = rundir
        self.run_id = rundir.run_id
        self.observers = list(observers)
        self.control = control or RunControl()
        self.options = options or EngineOptions()
        self.state = state or SagaState(run_id=self.run_id)
        self.target_spec = target_spec or target.name
        self.scrub = Scrubber(source.secret_values)
        self.journal = self.options.journal(rundir.journal, self.run_id, scrub=self.scrub)
        self.calls = StepRunner(
            rundir=rundir,
            target=target,
            params=source.params,
            scrub=self.scrub,
            state=self.state,
            emit=self.emit,
            sleep=self.options.sleep or self._wait,
            poll=self.options.poll,
            grace=self.options.cancel_grace,
        )
        self.saga = Saga(self, self.calls, self.control.stop_rollback)
        self._emit_lock = threading.RLock()
        self._nodes: dict[str, Node] = {}
        self._cancel_seen = False
        self._continue_rollback = False
        self.wave_nodes: tuple[Node, ...] = ()
        self.waves = WaveLog()
        """Every wave's start and end as it happens, on the probes' clock: what the monitors excuse by."""
        self.log = logger.bind(run_id=self.run_id)
        if self.journal.repaired:
            self.emit(JournalRepaired(detail=self.journal.repaired))

    # ------------------------------------------------------------------------------------ events

    def notify(self, event: Event) -> None:
        """Tell the observers of an event that is not journaled (:class:`MonitorProgress`)."""
        stamped = dataclasses.replace(event, ts=now_iso(), run_id=self.run_id)
        for observer in self.observers:
            try:
                observer.on_event(stamped)
            except Exception:
                self.log.exception(f"observer {type(observer).__name__} failed")

    def emit(self, event: Event) -> Event:
        """Append an event to the journal, fold it into the state, snapshot the state, tell observers;
        return it as written."""
        with self._emit_lock:
            raw, written = self.journal.write(event)
            self.state.apply(raw)
            if not isinstance(raw, _NO_SNAPSHOT):
                self.rundir.write_state(self.scrub(self.state.snapshot()))
        for observer in self.observers:
            try:
                observer.on_event(written)
            except Exception:
                self.log.exception(f"observer {type(observer).__name__} failed")
        return written

    # --------------------------------------------------------------------------------- lifecycle

    def execute(self, mode: RunMode) -> RunResult:
        """``mode``: ``apply`` (new run), ``resume`` or ``rollback``."""
        try:
            if mode == RunMode.APPLY:
                self.emit(
                    RunStart(
                        plan=self.plan.metadata.name,
                        target=self.target_spec,
                        identity=self._identity(),
                        plan_hash=self.source.source_hash,
                        params=self.source.masked_params(),
                        rollback=str(self.plan.spec.rollback),
                        pid=os.getpid(),
                        host=socket.gethostname(),
                    )
                )
            else:
                self._continue_rollback = self.state.phase == RunPhase.ROLLBACK or (
                    self.state.status == RunStatus.NEEDS_ATTENTION and self.state.rollback_reason is not None
                )
                self.emit(
                    RunResume(mode=mode, pid=os.getpid(), host=socket.gethostname(), phase=self.state.phase)
                )
            try:
                status, message = self._drive(mode)
            except Exception as exc:  # noqa: BLE001 - never end a run without saying how it ended
                status, message = RunStatus.NEEDS_ATTENTION, f"run stopped: {type(exc).__name__}: {exc}"
                self.emit(RunError(error=str(exc), traceback=traceback.format_exc()))
            self.emit(RunEnd(status=status, message=message, exit_code=int(status.exit_code)))
            return RunResult(self.run_id, status, message, self.rundir.path)
        finally:
            self.journal.close()
            for observer in self.observers:
                with contextlib.suppress(Exception):
                    observer.close()

    def _identity(self) -> str | None:
        try:
            return self.target.cluster.identity()
        except Exception as exc:  # noqa: BLE001 - the identity is informative only
            self.log.warning(f"cannot read the target identity: {exc}")
            return None

    def _drive(self, mode: RunMode) -> tuple[RunStatus, str]:
        if mode == RunMode.ROLLBACK:
            return self.saga.rollback_and_verify(RollbackReason.MANUAL, None)
        if self._continue_rollback:
            reason = self.state.rollback_reason or RollbackReason.FAILURE
            return self.saga.rollback_and_verify(reason, self.state.rollback_error or None)
        try:
            failed_preflight = self._forward()
        except Interrupted as exc:
            return self._after_failure(exc, RollbackReason.INTERRUPT)
        except MigratorError as exc:
            return self._after_failure(exc, RollbackReason.FAILURE)
        except Exception as exc:  # noqa: BLE001 - a bug or an untranslated error: still roll back
            error = StepFailed(f"internal error: {type(exc).__name__}: {exc}")
            self.emit(RunError(error=str(error), traceback=traceback.format_exc()))
            return self._after_failure(error, RollbackReason.FAILURE)
        if failed_preflight is not None:
            return RunStatus.FAILED_PREFLIGHT, f"preflight failed, nothing was changed: {failed_preflight}"
        if self.saga.attention:
            return RunStatus.NEEDS_ATTENTION, "; ".join(self.saga.attention) + (
                f". Undo the run with: migrator rollback {self.run_id}"
            )
        if self.plan.spec.rollback == RollbackPolicy.ALWAYS:
            return self.saga.rollback_and_verify(RollbackReason.ALWAYS, None)
        return RunStatus.SUCCEEDED, self._success_message()

    def _forward(self) -> CheckFailed | None:
        """Preflight, every stage not done yet, the final verification; the preflight's failure, if any."""
        if not self.state.preflight_ok:
            try:
                self._check_requirements()  # every step's own preflight (kernel features...): issue 7
                self.run_checks(self.plan.spec.preflight, phase=CheckPhase.PREFLIGHT)
            except CheckFailed as exc:
                return exc
        for index, stage in enumerate(self.plan.spec.stages):
            if self.state.stage_done(stage.name):
                continue
            self._safe_point(None)
            self._run_stage(index, stage)
        self.run_checks(self.plan.spec.verify, phase=CheckPhase.VERIFY)
        return None

    def _after_failure(self, error: MigratorError, reason: RollbackReason) -> tuple[RunStatus, str]:
        """Roll back after a failure or an interrupt, unless the plan says ``rollback: never``."""
        if self.plan.spec.rollback != RollbackPolicy.NEVER:
            return self.saga.rollback_and_verify(reason, str(error))
        if reason == RollbackReason.INTERRUPT:
            return RunStatus.INTERRUPTED, (
                f"interrupted; NOT rolled back (rollback: never). Continue with `migrator resume"
                f" {self.run_id}` or undo with `migrator rollback {self.run_id}`"
            )
        return RunStatus.FAILED_NOT_ROLLED_BACK, (
            f"failed: {error}. NOT rolled back (rollback: never): the target is as the failure left it."
            f" Undo with `migrator rollback {self.run_id}`"
            f" or continue with `migrator resume {self.run_id}`"
        )

    def _success_message(self) -> str:
        if self.state.warnings:
            return "succeeded with failed stages (on_failure: continue): " + "; ".join(self.state.warnings)
        return f"succeeded: {self.state.steps_done} steps done"

    def _check_requirements(self) -> None:
        """At the start of a new run: every planned step's own preflight; journal the result, raise
        CheckFailed on a failure (:mod:`migrator.engine.requirements`)."""
        result = step_requirements(
            self.source,
            self.target,
            run_id=self.run_id,
            run_dir=self.rundir.path,
            artifacts_dir=self.rundir.check_dir(CheckPhase.PREFLIGHT, REQUIREMENTS_CHECK),
            scrub=self.scrub,
            emit=self._requirement_event,
            skip=lambda stage: self.state.stage_done(stage.name),
        )
        if result.checked or result.skipped:
            self.emit(result.to_event())
        if not result.ok:
            raise CheckFailed(result.message(), check=REQUIREMENTS_CHECK, details=result.to_dict())

    def _wait(self, seconds: float) -> None:
        """Between two attempts: a wait that a cancel ends early."""
        self.control.cancel.wait(seconds)

    def _requirement_event(self, key: str, event: Mapping[str, Any]) -> None:
        self.emit(StepEvent(key=key, event=dict(event), preflight=True))

    # ---------------------------------------------------------------------------------- stages

    def _run_stage(self, index: int, stage: Stage) -> None:
        if stage.approval and self.options.approve is not None and not self.options.approve(stage.name):
            raise StepFailed(f"stage {stage.name!r} was not approved")
        waves = self._start_stage(index, stage)
        monitor = (
            StageMonitor(
                stage,
                self.options.monitor_interval,
                emit=self.emit,
                run_check=self._monitor_check,
                wave_nodes=lambda: self.wave_nodes,
            )
            if stage.monitor
            else None
        )
        if monitor is not None:
            monitor.start()
        try:
            self._stage_body(index, stage, waves, monitor)
            self._safe_point(monitor)
            if monitor is not None:
                ending, monitor = monitor, None
                final = ending.stop()
                if final is not None:
                    raise final
        except Exception as exc:
            if monitor is not None:
                monitor.stop()
                monitor = None
            if stage.on_failure == FailurePolicy.CONTINUE and not isinstance(exc, Interrupted):
                self.saga.compensate_stage(stage)
                self.emit(StageEnd(stage=stage.name, outcome=StageOutcome.FAILED_CONTINUED, error=str(exc)))
                self.emit(RunWarning(stage=stage.name, message=f"stage {stage.name!r} failed: {exc}"))
                return
            self.emit(StageEnd(stage=stage.name, outcome=StageOutcome.FAILED, error=str(exc)))
            raise
        finally:
            if monitor is not None:
                monitor.stop()
        self.emit(StageEnd(stage=stage.name, outcome=StageOutcome.SUCCEEDED))

    def _start_stage(self, index: int, stage: Stage) -> list[list[str]] | None:
        """Emit ``stage.start``; a ``for_each`` stage's waves: chosen now, or as a resumed run froze them."""
        if stage.for_each is None:
            self.emit(StageStart(stage=stage.name, stage_index=index))
            return None
        waves = self.state.waves.get(stage.name)
        if waves is not None:
            self.emit(StageStart(stage=stage.name, stage_index=index, resumed=True, waves=_frozen(waves)))
            return waves
        chosen = stage_waves(self.target.cluster.list_nodes(), stage, index)
        self._nodes.update(chosen.nodes)
        self.emit(
            StageStart(
                stage=stage.name,
                stage_index=index,
                addresses={name: node.address for name, node in chosen.nodes.items()},
                waves=_frozen(chosen.waves),
            )
        )
        return chosen.waves

    def _stage_body(
        self, index: int, stage: Stage, waves: list[list[str]] | None, monitor: StageMonitor | None
    ) -> None:
        if waves is None:
            self._run_node_steps(index, stage, None, monitor, threading.Event())
            self._safe_point(monitor)
            self.run_checks(stage.verify, phase=CheckPhase.STAGE_VERIFY, stage=stage.name, monitor=monitor)
            return
        if not waves:
            self.emit(RunWarning(stage=stage.name, message=f"stage {stage.name!r} selected no nodes"))
        for wave_index, names in enumerate(waves):
            if self.state.wave_done(stage.name, wave_index):
                continue
            self._safe_point(monitor)
            self._run_wave(index, stage, wave_index, names, monitor)
        if waves and stage.verify:
            self._safe_point(monitor)
            self.run_checks(stage.verify, phase=CheckPhase.STAGE_VERIFY, stage=stage.name, monitor=monitor)

    def _run_wave(
        self, index: int, stage: Stage, wave_index: int, names: list[str], monitor: StageMonitor | None
    ) -> None:
        self.waves.begin(stage.name, wave_index, names)  # before anything of the wave happens
        self.emit(WaveStart(stage=stage.name, wave=wave_index, nodes=tuple(names)))
        started = time.monotonic()
        try:
            nodes = [self.node(n) for n in names]
            self.wave_nodes = tuple(nodes)
            self._run_nodes(index, stage, nodes, monitor)
            self.run_checks(
                stage.verify, phase=CheckPhase.WAVE_VERIFY, stage=stage.name, nodes=nodes, monitor=monitor
            )
        except Exception as exc:
            self.wave_nodes = ()
            self.waves.end(stage.name, wave_index)
            self.emit(
                WaveEnd(
                    stage=stage.name,
                    wave=wave_index,
                    outcome=Outcome.FAILED,
                    error=str(exc),
                    duration=round(time.monotonic() - started, 3),
                )
            )
            raise
        self.wave_nodes = ()
        self.waves.end(stage.name, wave_index)
        if monitor is not None:
            monitor.wake()
        self.emit(
            WaveEnd(
                stage=stage.name,
                wave=wave_index,
                outcome=Outcome.SUCCEEDED,
                duration=round(time.monotonic() - started, 3),
            )
        )

    def _run_nodes(self, index: int, stage: Stage, nodes: list[Node], monitor: StageMonitor | None) -> None:
        """A wave's nodes, each in its own thread; the first failure stops the others at a step boundary."""
        stop = threading.Event()
        with ThreadPoolExecutor(
            max_workers=max(1, len(nodes)), thread_name_prefix=f"wave-{stage.name}"
        ) as pool:
            futures: list[Future[None]] = [
                pool.submit(self._run_node_steps, index, stage, node, monitor, stop) for node in nodes
            ]
            pending: set[Future[None]] = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
        errors: list[Exception] = []
        for future in futures:
            exc = future.exception()
            if exc is None or isinstance(exc, _Stop):
                continue
            if not isinstance(exc, Exception):
                raise exc  # not a failure of the wave: it goes through
            errors.append(exc)
        if errors:
            raise _first_error(errors)

    def _run_node_steps(
        self, index: int, stage: Stage, node: Node | None, monitor: StageMonitor | None, stop: threading.Event
    ) -> None:
        try:
            for step_index, step in enumerate(stage.steps):
                if stop.is_set():
                    raise _Stop()
                self._run_step(index, stage, step_index, step, node, monitor=monitor)
        except _Stop:
            raise
        except BaseException:
            stop.set()  # whatever ended this node's steps, its siblings stop at their next step
            raise

    def node(self, name: str) -> Node:
        """A node by name: as the stage listed it, else from the target, else as the journal recorded it."""
        if name not in self._nodes:
            try:
                self._nodes[name] = self.target.cluster.get_node(name)
            except MigratorError:
                address = self.state.node_addresses.get(name, "")
                self._nodes[name] = Node(name=name, address=address)
        return self._nodes[name]

    # ----------------------------------------------------------------------------------- steps

    def _noticed_cancel(self) -> bool:
        if not self.control.cancel.is_set():
            return False
        with self._emit_lock:
            first = not self._cancel_seen
            self._cancel_seen = True
        if first:
            self.emit(
                Signal(action=SignalAction.CANCEL, message="interrupt: stopping at the next safe point")
            )
        return True

    def _safe_point(self, monitor: StageMonitor | None) -> None:
        if self._noticed_cancel():
            raise Interrupted("interrupted: stopped at a safe point")
        failure = monitor.failure() if monitor is not None else None
        if failure is not None:
            raise failure

    def _abort_reason(self, monitor: StageMonitor | None) -> BaseException | None:
        if self._noticed_cancel():
            return Interrupted("interrupted while the step was running")
        return monitor.failure() if monitor is not None else None

    def _run_step(
        self,
        index: int,
        stage: Stage,
        step_index: int,
        step: StepBase,
        node: Node | None,
        *,
        monitor: StageMonitor | None,
    ) -> None:
        node_name = node.name if node else None
        key = step_key(stage.name, step.display_name, node_name)
        if self.state.completed(key):
            return
        self._safe_point(monitor)
        rendered = render_step(step, runtime_context(self.run_id, node))
        action_name = str(getattr(rendered, "action", ""))
        action = get_action(action_name)
        args = getattr(rendered, "args", None)
        ref: dict[str, Any] = {
            "key": key,
            "stage": stage.name,
            "stage_index": index,
            "step": step.display_name,
            "step_index": step_index,
            "node": node_name,
            "action": action_name,
        }
        local_attempt = 0

        def abort() -> BaseException | None:
            return self._abort_reason(monitor)

        def attempt() -> None:
            nonlocal local_attempt
            local_attempt += 1
            self._safe_point(monitor)
            number = self.state.attempts.get(key, 0) + 1
            ctx = self.calls.step_context(
                index, stage, step_index, step, node, key=key, timeout=step.timeout, attempt=number
            )
            self.emit(StepStart(**ref, attempt=number, args=_dump(args), timeout=step.timeout))
            started = time.monotonic()

            def call(fn: Callable[[], T]) -> T:
                return self.calls.in_worker(
                    fn, ctx.cancel, ctx.deadline, f"step {key}", abort=abort, timeout=step.timeout
                )

            try:
                if key not in self.state.prepared:
                    prepared = call(lambda: action.prepare(ctx, args))
                    self.emit(StepPrepared(key=key, prepared=prepared))
                    ctx.prepared = prepared
                result = call(lambda: action.do(ctx, args))
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, MigratorError)
                    else StepFailed(f"{type(exc).__name__}: {exc}", node=node_name)
                )
                last = not isinstance(error, TemporaryError) or local_attempt >= step.retry.attempts
                self.emit(
                    StepEnd(
                        **ref,
                        attempt=number,
                        outcome=_failed_outcome(error, monitor) if last else StepOutcome.RETRYING,
                        error=str(error),
                        error_type=type(error).__name__,
                        duration=round(time.monotonic() - started, 3),
                    )
                )
                if error is not exc:
                    raise error from exc
                raise
            self.emit(
                StepEnd(
                    **ref,
                    attempt=number,
                    outcome=StepOutcome.SUCCEEDED,
                    result=result,
                    duration=round(time.monotonic() - started, 3),
                )
            )

        def before_sleep(state: RetryCallState) -> None:
            wait_s = state.next_action.sleep if state.next_action else 0.0
            self.emit(StepRetry(key=key, attempt=state.attempt_number, wait=round(wait_s, 3)))

        self.calls.retrying(step.retry, before_sleep)(attempt)

    # ----------------------------------------------------------------------------------- checks

    def _monitor_check(
        self, check: CheckBase, *, stage: str, call: str, store: dict[str, Any], nodes: Sequence[Node]
    ) -> None:
        """One call of a monitor's check (not journaled: the monitor emits its own events); a round's
        counts go to the observers (:class:`MonitorProgress`) at most every :data:`PROGRESS_EVERY_S`."""
        result = self.run_check(
            check, phase=CheckPhase.MONITOR, stage=stage, nodes=nodes, journal=False, call=call, store=store
        )
        details = result.details if isinstance(result.details, Mapping) else {}
        if call != "run" or "sent" not in details:
            return
        now = time.monotonic()
        if now - float(store.get(_PROGRESS_AT, -PROGRESS_EVERY_S)) < PROGRESS_EVERY_S:
            return
        store[_PROGRESS_AT] = now
        self.notify(
            MonitorProgress(
                stage=stage,
                check=check.display_name,
                sent=int(details.get("sent") or 0),
                lost=int(details.get("lost") or 0),
                excused=int(details.get("excused") or 0),
            )
        )

    def run_checks(
        self,
        checks: Iterable[CheckBase],
        *,
        phase: CheckPhase,
        stage: str | None = None,
        nodes: Sequence[Node] = (),
        monitor: StageMonitor | None = None,
    ) -> None:
        """Run every check (all of them, for a complete picture); raise CheckFailed naming the failures."""
        checks = list(checks)
        if phase == CheckPhase.PREFLIGHT:
            self.emit(PreflightStart(checks=tuple(c.display_name for c in checks)))
        failures: list[CheckFailed] = []
        for check in checks:
            try:
                self.run_check(check, phase=phase, stage=stage, nodes=nodes, monitor=monitor)
            except CheckFailed as exc:
                failures.append(exc)
        if phase == CheckPhase.PREFLIGHT:
            self.emit(
                PreflightEnd(
                    outcome=Outcome.FAILED if failures else Outcome.SUCCEEDED,
                    failed=tuple(str(f.check) for f in failures),
                )
            )
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise CheckFailed(
                "; ".join(str(f) for f in failures),
                check=failures[0].check,
                details=[f.details for f in failures],
            )

    def run_check(
        self,
        check: CheckBase,
        *,
        phase: CheckPhase,
        stage: str | None = None,
        nodes: Sequence[Node] = (),
        monitor: StageMonitor | None = None,
        journal: bool = True,
        call: str = "run",
        store: dict[str, Any] | None = None,
    ) -> CheckResult:
        """Run one check (``call``: ``run``, ``monitor_start`` or ``monitor_stop``); CheckFailed if not ok."""
        name = check.display_name
        check_type = str(getattr(check, "type", ""))
        checker = get_check(check_type)

        def emit_sub(event: Mapping[str, Any]) -> None:
            self.emit(CheckEvent(check=name, phase=phase, event=dict(event)))

        ctx = CheckContext(
            run_id=self.run_id,
            run_dir=self.rundir.path,
            artifacts_dir=self.rundir.check_dir(phase, name),
            target=self.target,
            phase=phase,
            params=self.source.params,
            stage=stage,
            nodes=tuple(nodes),
            cancel=threading.Event(),
            deadline=time.monotonic() + check.timeout,
            scrub=self.scrub,
            emit=emit_sub,
            store=store if store is not None else {},
            waves=self.waves,
        )

        def evaluate() -> CheckResult:
            if call == "monitor_start":
                checker.monitor_start(ctx, check)
                return CheckResult(True, "monitor started")
            if call == "monitor_stop":
                return checker.monitor_stop(ctx, check) or CheckResult(True, "monitor stopped")
            return checker.run(ctx, check)

        ref: dict[str, Any] = {
            "check": name,
            "check_type": check_type,
            "phase": phase,
            "stage": stage,
            "nodes": tuple(n.name for n in nodes),
        }
        if journal:
            self.emit(CheckStart(**ref))
        started = time.monotonic()
        interruptible = phase not in (CheckPhase.POST_ROLLBACK, CheckPhase.MONITOR)

        def abort() -> BaseException | None:
            return self._abort_reason(monitor)

        try:
            result = self.calls.in_worker(
                evaluate, ctx.cancel, ctx.deadline, f"check {name}", abort=abort if interruptible else None
            )
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
            result = _failed_check(exc, check.timeout)
        if journal:
            self.emit(
                CheckEnd(
                    **ref,
                    ok=result.ok,
                    summary=result.summary,
                    details=result.details,
                    duration=round(time.monotonic() - started, 3),
                )
            )
        if not result.ok:
            raise CheckFailed(
                f"{phase} check {name!r} failed: {result.summary}", check=name, details=result.details
            )
        return result


def _failed_check(exc: Exception, timeout: float) -> CheckResult:
    """The result of a check that raised."""
    if isinstance(exc, CheckFailed):
        return CheckResult(False, str(exc), exc.details)
    if isinstance(exc, StepTimeout):
        return CheckResult(False, f"timed out after {timeout:g}s")
    if isinstance(exc, MigratorError):
        return CheckResult(False, f"{type(exc).__name__}: {exc}")
    return CheckResult(False, f"internal error: {type(exc).__name__}: {exc}")


def _failed_outcome(error: MigratorError, monitor: StageMonitor | None) -> StepOutcome:
    """How a step's last attempt ended when it raised ``error``."""
    if isinstance(error, StepTimeout):
        return StepOutcome.TIMEOUT
    if isinstance(error, Interrupted | Cancelled) or (
        isinstance(error, CheckFailed) and monitor is not None and monitor.abort.is_set()
    ):
        return StepOutcome.CANCELLED
    return StepOutcome.FAILED


def _first_error(errors: list[Exception]) -> Exception:
    """The error that explains a wave's failure best: a real failure before an interruption."""
    for exc in errors:
        if not isinstance(exc, Interrupted | Cancelled):
            return exc
    return errors[0]


def _frozen(waves: list[list[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(wave) for wave in waves)


def _dump(args: Any) -> Any:
    if args is None:
        return None
    if hasattr(args, "model_dump"):
        return args.model_dump(mode="json")
    return args
