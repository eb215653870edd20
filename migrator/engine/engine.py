"""The engine: gate (preflight) -> stages (waves of nodes) -> verify, with a saga rollback.

The engine never prints: it writes events to the journal (:mod:`migrator.runs.journal`), folds them
into its :class:`~migrator.engine.state.SagaState` (written to ``state.json`` after every transition)
and hands them to observers. It takes a :class:`RunControl` whose events the CLI sets on signals.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from loguru import logger
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from migrator.actions import StepContext, get_action
from migrator.actions.context import Cancelled, CheckContext
from migrator.checks import CheckResult, get_check
from migrator.engine.planio import PlanSource, render_step, runtime_context
from migrator.engine.requirements import check_requirements
from migrator.engine.state import SagaState, StepRecord, step_key
from migrator.errors import (
    CheckFailed,
    ExitCode,
    Interrupted,
    MigratorError,
    PermanentError,
    StepFailed,
    StepTimeout,
    TemporaryError,
)
from migrator.plan.models import CheckBase, FailurePolicy, RetryPolicy, RollbackPolicy, Stage, StepBase
from migrator.plan.selection import resolve_waves
from migrator.ports import Node, Target
from migrator.runs.events import RollbackReason, RunStatus, StepOutcome
from migrator.runs.journal import Journal, Scrubber, SimulatedCrash
from migrator.runs.rundir import RunDir

T = TypeVar("T")


class Observer(Protocol):
    """Receives every journal event (already scrubbed) as it happens. Must not raise, must be quick."""

    def on_event(self, event: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


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
    crash_after: int | None = None
    """Tests: simulate ``kill -9`` right after the journal event with this seq."""
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


class _Monitor:
    """Runs a stage's monitor checks in a background thread; a failure aborts the stage."""

    def __init__(self, engine: Engine, stage: Stage, interval: float) -> None:
        self.engine = engine
        self.stage = stage
        self.interval = interval
        self.abort = threading.Event()
        self.error: CheckFailed | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"monitor-{stage.name}", daemon=True)
        self.rounds = 0
        self.stores: list[dict[str, Any]] = [{} for _ in stage.monitor]
        self._stopped = False

    def start(self) -> None:
        self.engine.emit(
            "monitor.start", stage=self.stage.name, checks=[c.display_name for c in self.stage.monitor]
        )
        for check, store in zip(self.stage.monitor, self.stores, strict=True):
            try:
                self.engine.run_check(
                    check,
                    phase="monitor",
                    stage=self.stage.name,
                    journal=False,
                    call="monitor_start",
                    store=store,
                )
            except CheckFailed as exc:
                self._fail(check, exc)
                return
        self._thread.start()

    def _fail(self, check: CheckBase, exc: CheckFailed) -> None:
        self.error = exc
        self.abort.set()
        self.engine.emit(
            "monitor.failed",
            stage=self.stage.name,
            check=check.display_name,
            error=str(exc),
            details=exc.details,
        )

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for check, store in zip(self.stage.monitor, self.stores, strict=True):
                    if self._stop.is_set():
                        return
                    try:
                        self.engine.run_check(
                            check,
                            phase="monitor",
                            stage=self.stage.name,
                            nodes=self.engine.wave_nodes,
                            journal=False,
                            store=store,
                        )
                    except CheckFailed as exc:
                        self._fail(check, exc)
                        return
                self.rounds += 1
                if self._stop.wait(self.interval):
                    return
        except SimulatedCrash:
            return
        except Exception as exc:  # noqa: BLE001 - a bug in a check must not kill the run silently
            self.error = CheckFailed(f"monitor of stage {self.stage.name!r} crashed: {exc}")
            self.abort.set()
            logger.exception("monitor crashed")

    def stop(self) -> CheckFailed | None:
        """Stop the rounds, let each check conclude (``monitor_stop``); the first failure, if any."""
        if self._stopped:
            return None
        self._stopped = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        final: CheckFailed | None = None
        for check, store in zip(self.stage.monitor, self.stores, strict=True):
            try:
                self.engine.run_check(
                    check,
                    phase="monitor",
                    stage=self.stage.name,
                    journal=False,
                    call="monitor_stop",
                    store=store,
                )
            except CheckFailed as exc:
                if final is None and not self.abort.is_set():
                    final = exc
                    self.engine.emit(
                        "monitor.failed",
                        stage=self.stage.name,
                        check=check.display_name,
                        error=str(exc),
                        details=exc.details,
                    )
        self.engine.emit(
            "monitor.end",
            stage=self.stage.name,
            rounds=self.rounds,
            aborted=self.abort.is_set() or final is not None,
        )
        return final


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
        self.journal = Journal(
            rundir.journal, self.run_id, scrub=self.scrub, crash_after=self.options.crash_after
        )
        self._emit_lock = threading.RLock()
        self._nodes: dict[str, Node] = {}
        self._cancel_seen = False
        self._attention: list[str] = []
        self._continue_rollback = False
        self.wave_nodes: tuple[Node, ...] = ()
        self.log = logger.bind(run_id=self.run_id)
        if self.journal.repaired:
            self.emit("journal.repaired", detail=self.journal.repaired)

    # ------------------------------------------------------------------------------------ events

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Append an event to the journal, fold it into the state, snapshot the state, tell observers."""
        with self._emit_lock:
            raw, event = self.journal.write(type_, **fields)
            self.state.apply(raw)
            if type_ not in ("step.event", "check.start"):
                self.rundir.write_state(self.scrub(self.state.snapshot()))
        for observer in self.observers:
            try:
                observer.on_event(event)
            except Exception:
                self.log.exception(f"observer {type(observer).__name__} failed")
        return event

    # --------------------------------------------------------------------------------- lifecycle

    def execute(self, mode: str) -> RunResult:
        """``mode``: ``apply`` (new run), ``resume`` or ``rollback``."""
        try:
            if mode == "apply":
                self.emit(
                    "run.start",
                    plan=self.plan.metadata.name,
                    target=self.target_spec,
                    identity=self._identity(),
                    plan_hash=self.source.source_hash,
                    params=self.source.masked_params(),
                    rollback=str(self.plan.spec.rollback),
                    pid=os.getpid(),
                    host=socket.gethostname(),
                )
            else:
                self._continue_rollback = self.state.phase == "rollback" or (
                    self.state.status == RunStatus.NEEDS_ATTENTION and self.state.rollback_reason is not None
                )
                self.emit(
                    "run.resume",
                    mode=mode,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    phase=self.state.phase,
                )
            try:
                status, message = self._drive(mode)
            except SimulatedCrash:
                raise
            except Exception as exc:  # noqa: BLE001 - never end a run without saying how it ended
                status, message = RunStatus.NEEDS_ATTENTION, f"run stopped: {type(exc).__name__}: {exc}"
                self.emit("run.error", error=str(exc), traceback=traceback.format_exc())
            self.emit("run.end", status=str(status), message=message, exit_code=int(status.exit_code))
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

    def _drive(self, mode: str) -> tuple[RunStatus, str]:
        if mode == "rollback":
            return self._rollback_and_verify(RollbackReason.MANUAL, None)
        if self._continue_rollback:
            reason = self.state.rollback_reason or RollbackReason.FAILURE
            return self._rollback_and_verify(reason, self.state.rollback_error or None)
        error: BaseException | None = None
        reason = RollbackReason.FAILURE
        try:
            if not self.state.preflight_ok:
                try:
                    check_requirements(self)  # every step's own preflight (kernel features...): issue 7
                    self.run_checks(self.plan.spec.preflight, phase="preflight")
                except CheckFailed as exc:
                    return RunStatus.FAILED_PREFLIGHT, f"preflight failed, nothing was changed: {exc}"
            for index, stage in enumerate(self.plan.spec.stages):
                if self.state.stage_done(stage.name):
                    continue
                self._safe_point(None)
                self._run_stage(index, stage)
            self.run_checks(self.plan.spec.verify, phase="verify")
        except SimulatedCrash:
            raise
        except Interrupted as exc:
            error, reason = exc, RollbackReason.INTERRUPT
        except MigratorError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a bug or an untranslated error: still roll back
            error = StepFailed(f"internal error: {type(exc).__name__}: {exc}")
            self.emit("run.error", error=str(error), traceback=traceback.format_exc())
        policy = self.plan.spec.rollback
        if error is None and self._attention:
            return RunStatus.NEEDS_ATTENTION, "; ".join(self._attention) + (
                f". Undo the run with: migrator rollback {self.run_id}"
            )
        if error is None:
            if policy == RollbackPolicy.ALWAYS:
                return self._rollback_and_verify(RollbackReason.ALWAYS, None)
            return RunStatus.SUCCEEDED, self._success_message()
        if policy == RollbackPolicy.NEVER:
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
        return self._rollback_and_verify(reason, str(error))

    def _success_message(self) -> str:
        if self.state.warnings:
            return "succeeded with failed stages (on_failure: continue): " + "; ".join(self.state.warnings)
        return f"succeeded: {self.state.steps_done} steps done"

    # ---------------------------------------------------------------------------------- stages

    def _run_stage(self, index: int, stage: Stage) -> None:
        if stage.approval and self.options.approve is not None and not self.options.approve(stage.name):
            raise StepFailed(f"stage {stage.name!r} was not approved")
        waves: list[list[str]] | None = None
        fields: dict[str, Any] = {"stage": stage.name, "stage_index": index}
        if stage.for_each is not None:
            waves = self.state.waves.get(stage.name)
            if waves is None:
                nodes = self.target.cluster.list_nodes()
                waves = resolve_waves(nodes, stage.for_each, where=f"stages[{index}] ({stage.name})")
                chosen = {n for wave in waves for n in wave}
                fields["addresses"] = {n.name: n.address for n in nodes if n.name in chosen}
                self._nodes.update({n.name: n for n in nodes if n.name in chosen})
            else:
                fields["resumed"] = True
            fields["waves"] = waves
        self.emit("stage.start", **fields)
        monitor = _Monitor(self, stage, self.options.monitor_interval) if stage.monitor else None
        if monitor is not None:
            monitor.start()
        try:
            if waves is not None:
                if not waves:
                    self.emit("warning", stage=stage.name, message=f"stage {stage.name!r} selected no nodes")
                for wave_index, names in enumerate(waves):
                    if self.state.wave_done(stage.name, wave_index):
                        continue
                    self._safe_point(monitor)
                    self._run_wave(index, stage, wave_index, names, monitor)
                if waves and stage.verify:
                    self._safe_point(monitor)
                    self.run_checks(stage.verify, phase="stage-verify", stage=stage.name, monitor=monitor)
            else:
                self._run_node_steps(index, stage, None, monitor, threading.Event())
                self._safe_point(monitor)
                self.run_checks(stage.verify, phase="stage-verify", stage=stage.name, monitor=monitor)
            self._safe_point(monitor)
            if monitor is not None:
                ending, monitor = monitor, None
                final = ending.stop()
                if final is not None:
                    raise final
        except SimulatedCrash:
            raise
        except Exception as exc:
            if monitor is not None:
                monitor.stop()
                monitor = None
            if stage.on_failure == FailurePolicy.CONTINUE and not isinstance(exc, Interrupted):
                self._compensate_stage(stage)
                self.emit("stage.end", stage=stage.name, outcome="failed-continued", error=str(exc))
                self.emit("warning", stage=stage.name, message=f"stage {stage.name!r} failed: {exc}")
                return
            self.emit("stage.end", stage=stage.name, outcome="failed", error=str(exc))
            raise
        finally:
            if monitor is not None:
                monitor.stop()
        self.emit("stage.end", stage=stage.name, outcome="succeeded")

    def _run_wave(
        self, index: int, stage: Stage, wave_index: int, names: list[str], monitor: _Monitor | None
    ) -> None:
        self.emit("wave.start", stage=stage.name, wave=wave_index, nodes=names)
        started = time.monotonic()
        try:
            nodes = [self._node(n) for n in names]
            self.wave_nodes = tuple(nodes)
            stop = threading.Event()
            errors: list[BaseException] = []
            with ThreadPoolExecutor(
                max_workers=max(1, len(nodes)), thread_name_prefix=f"wave-{stage.name}"
            ) as pool:
                futures: list[Future[None]] = [
                    pool.submit(self._run_node_steps, index, stage, node, monitor, stop) for node in nodes
                ]
                pending: set[Future[None]] = set(futures)
                while pending:
                    _, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
            for future in futures:
                exc = future.exception()
                if exc is None or isinstance(exc, _Stop):
                    continue
                if not isinstance(exc, Exception):
                    raise exc  # SimulatedCrash and friends
                errors.append(exc)
            if errors:
                raise _first_error(errors)
            self.run_checks(stage.verify, phase="wave-verify", stage=stage.name, nodes=nodes, monitor=monitor)
        except SimulatedCrash:
            raise
        except BaseException as exc:
            self.wave_nodes = ()
            self.emit(
                "wave.end",
                stage=stage.name,
                wave=wave_index,
                outcome="failed",
                error=str(exc),
                duration=round(time.monotonic() - started, 3),
            )
            raise
        self.wave_nodes = ()
        self.emit(
            "wave.end",
            stage=stage.name,
            wave=wave_index,
            outcome="succeeded",
            duration=round(time.monotonic() - started, 3),
        )

    def _run_node_steps(
        self, index: int, stage: Stage, node: Node | None, monitor: _Monitor | None, stop: threading.Event
    ) -> None:
        try:
            for step_index, step in enumerate(stage.steps):
                if stop.is_set():
                    raise _Stop()
                self._run_step(index, stage, step_index, step, node, monitor=monitor)
        except _Stop:
            raise
        except BaseException:
            stop.set()
            raise

    def _node(self, name: str) -> Node:
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
            self.emit("signal", action="cancel", message="interrupt: stopping at the next safe point")
        return True

    def _safe_point(self, monitor: _Monitor | None) -> None:
        if self._noticed_cancel():
            raise Interrupted("interrupted: stopped at a safe point")
        if monitor is not None and monitor.abort.is_set():
            raise monitor.error or CheckFailed("a monitor check failed")

    def _abort_reason(self, monitor: _Monitor | None) -> MigratorError | None:
        if self._noticed_cancel():
            return Interrupted("interrupted while the step was running")
        if monitor is not None and monitor.abort.is_set():
            return monitor.error or CheckFailed("a monitor check failed")
        return None

    def _step_dir(self, index: int, stage: Stage, step_index: int, step: StepBase, node: Node | None) -> Path:
        return self.rundir.step_dir(
            f"{index + 1:02d}.{step_index + 1:02d}",
            stage.name,
            step.display_name,
            node.name if node else None,
        )

    def _step_ctx(
        self,
        index: int,
        stage: Stage,
        step_index: int,
        step: StepBase,
        node: Node | None,
        *,
        key: str,
        timeout: float,
        attempt: int,
        undoing: bool = False,
    ) -> StepContext:
        def emit_sub(event: Mapping[str, Any]) -> None:
            self.emit("step.event", key=key, event=dict(event))

        return StepContext(
            run_id=self.run_id,
            run_dir=self.rundir.path,
            artifacts_dir=self._step_dir(index, stage, step_index, step, node),
            target=self.target,
            node=node,
            params=self.source.params,
            cancel=threading.Event(),
            deadline=time.monotonic() + timeout,
            emit=emit_sub,
            scrub=self.scrub,
            stage=stage.name,
            step=step.display_name,
            attempt=attempt,
            prepared=self.state.prepared.get(key),
            undoing=undoing,
            timeout=timeout,
        )

    def _run_step(
        self,
        index: int,
        stage: Stage,
        step_index: int,
        step: StepBase,
        node: Node | None,
        *,
        monitor: _Monitor | None,
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
        policy = step.retry
        local_attempt = 0
        base = {
            "key": key,
            "stage": stage.name,
            "stage_index": index,
            "step": step.display_name,
            "step_index": step_index,
            "node": node_name,
            "action": action_name,
        }

        def attempt() -> None:
            nonlocal local_attempt
            local_attempt += 1
            self._safe_point(monitor)
            number = self.state.attempts.get(key, 0) + 1
            ctx = self._step_ctx(
                index, stage, step_index, step, node, key=key, timeout=step.timeout, attempt=number
            )
            self.emit("step.start", **base, attempt=number, args=_dump(args), timeout=step.timeout)
            started = time.monotonic()
            try:
                if key not in self.state.prepared:
                    prepared = self._call(
                        lambda: action.prepare(ctx, args),
                        ctx.cancel,
                        ctx.deadline,
                        monitor,
                        f"step {key}",
                        timeout=step.timeout,
                    )
                    self.emit("step.prepared", key=key, prepared=prepared)
                    ctx.prepared = prepared
                result = self._call(
                    lambda: action.do(ctx, args),
                    ctx.cancel,
                    ctx.deadline,
                    monitor,
                    f"step {key}",
                    timeout=step.timeout,
                )
            except SimulatedCrash:
                raise
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, MigratorError)
                    else StepFailed(f"{type(exc).__name__}: {exc}", node=node_name)
                )
                if isinstance(error, TemporaryError) and local_attempt < policy.attempts:
                    outcome = StepOutcome.RETRYING
                elif isinstance(error, StepTimeout):
                    outcome = StepOutcome.TIMEOUT
                elif isinstance(error, Interrupted | Cancelled) or (
                    isinstance(error, CheckFailed) and monitor is not None and monitor.abort.is_set()
                ):
                    outcome = StepOutcome.CANCELLED
                else:
                    outcome = StepOutcome.FAILED
                self.emit(
                    "step.end",
                    **base,
                    attempt=number,
                    outcome=str(outcome),
                    error=str(error),
                    error_type=type(error).__name__,
                    duration=round(time.monotonic() - started, 3),
                )
                if error is not exc:
                    raise error from exc
                raise
            self.emit(
                "step.end",
                **base,
                attempt=number,
                outcome=str(StepOutcome.SUCCEEDED),
                result=result,
                duration=round(time.monotonic() - started, 3),
            )

        def before_sleep(state: RetryCallState) -> None:
            wait_s = state.next_action.sleep if state.next_action else 0.0
            self.emit("step.retry", key=key, attempt=state.attempt_number, wait=round(wait_s, 3))

        self._retrying(policy, before_sleep)(attempt)

    def _retrying(self, policy: RetryPolicy, before_sleep: Callable[[RetryCallState], None]) -> Retrying:
        def wait_for(state: RetryCallState) -> float:
            base = min(policy.max_backoff, policy.backoff * policy.multiplier ** (state.attempt_number - 1))
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, TemporaryError):
                return max(base, exc.delay)
            return base

        return Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_for,
            retry=retry_if_exception_type(TemporaryError),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _sleep(self, seconds: float) -> None:
        if self.options.sleep is not None:
            self.options.sleep(seconds)
        else:
            self.control.cancel.wait(seconds)

    def _call(
        self,
        fn: Callable[[], T],
        cancel: threading.Event,
        deadline: float,
        monitor: _Monitor | None,
        what: str,
        *,
        interruptible: bool = True,
        timeout: float | None = None,
    ) -> T:
        """Run ``fn`` in a worker thread under ``deadline``; set ``cancel`` on timeout or abort."""
        box: dict[str, Any] = {}
        done = threading.Event()
        limit = timeout if timeout is not None else max(0.0, deadline - time.monotonic())

        def runner() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                box["error"] = exc
            finally:
                done.set()

        thread = threading.Thread(target=runner, name=what[:40], daemon=True)
        thread.start()
        reason: BaseException | None = None
        while not done.wait(self.options.poll):
            if time.monotonic() >= deadline:
                reason = StepTimeout(f"{what} timed out after {limit:g}s")
                break
            abort = self._abort_reason(monitor) if interruptible else None
            if abort is not None:
                reason = abort
                break
        if reason is not None:
            cancel.set()
            done.wait(self.options.cancel_grace)
            raise reason
        if "error" in box:
            raise box["error"]
        return cast(T, box.get("result"))

    # ----------------------------------------------------------------------------------- checks

    def run_checks(
        self,
        checks: Iterable[CheckBase],
        *,
        phase: str,
        stage: str | None = None,
        nodes: Sequence[Node] = (),
        monitor: _Monitor | None = None,
    ) -> None:
        """Run every check (all of them, for a complete picture); raise CheckFailed naming the failures."""
        checks = list(checks)
        if phase == "preflight":
            self.emit("preflight.start", checks=[c.display_name for c in checks])
        failures: list[CheckFailed] = []
        for check in checks:
            try:
                self.run_check(check, phase=phase, stage=stage, nodes=nodes, monitor=monitor)
            except CheckFailed as exc:
                failures.append(exc)
        if phase == "preflight":
            self.emit(
                "preflight.end",
                outcome="succeeded" if not failures else "failed",
                failed=[f.check for f in failures],
            )
        if failures:
            if len(failures) == 1:
                raise failures[0]
            raise CheckFailed(
                "; ".join(str(f) for f in failures),
                check=failures[0].check,
                details=[f.details for f in failures],
            )

    def run_check(
        self,
        check: CheckBase,
        *,
        phase: str,
        stage: str | None = None,
        nodes: Sequence[Node] = (),
        monitor: _Monitor | None = None,
        journal: bool = True,
        call: str = "run",
        store: dict[str, Any] | None = None,
    ) -> CheckResult:
        """Run one check (``call``: ``run``, ``monitor_start`` or ``monitor_stop``); CheckFailed if not ok."""
        name = check.display_name
        check_type = str(getattr(check, "type", ""))
        checker = get_check(check_type)
        cancel = threading.Event()

        def emit_sub(event: Mapping[str, Any]) -> None:
            self.emit("check.event", check=name, phase=phase, event=dict(event))

        ctx = CheckContext(
            run_id=self.run_id,
            run_dir=self.rundir.path,
            artifacts_dir=self.rundir.check_dir(phase, name),
            target=self.target,
            phase=phase,
            params=self.source.params,
            stage=stage,
            nodes=tuple(nodes),
            cancel=cancel,
            deadline=time.monotonic() + check.timeout,
            scrub=self.scrub,
            emit=emit_sub,
            store=store if store is not None else {},
        )

        def evaluate() -> CheckResult:
            if call == "monitor_start":
                checker.monitor_start(ctx, check)
                return CheckResult(True, "monitor started")
            if call == "monitor_stop":
                return checker.monitor_stop(ctx, check) or CheckResult(True, "monitor stopped")
            return checker.run(ctx, check)

        fields = {
            "check": name,
            "check_type": check_type,
            "phase": phase,
            "stage": stage,
            "nodes": [n.name for n in nodes],
        }
        if journal:
            self.emit("check.start", **fields)
        started = time.monotonic()
        interruptible = phase not in ("post-rollback", "monitor")
        try:
            result = self._call(
                evaluate,
                cancel,
                ctx.deadline,
                monitor if phase != "monitor" else None,
                f"check {name}",
                interruptible=interruptible,
            )
        except SimulatedCrash:
            raise
        except Interrupted:
            raise
        except CheckFailed as exc:
            result = CheckResult(False, str(exc), exc.details)
        except StepTimeout:
            result = CheckResult(False, f"timed out after {check.timeout:g}s")
        except MigratorError as exc:
            result = CheckResult(False, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
            result = CheckResult(False, f"internal error: {type(exc).__name__}: {exc}")
        if journal:
            self.emit(
                "check.end",
                **fields,
                ok=result.ok,
                summary=result.summary,
                details=result.details,
                duration=round(time.monotonic() - started, 3),
            )
        if not result.ok:
            raise CheckFailed(
                f"{phase} check {name!r} failed: {result.summary}", check=name, details=result.details
            )
        return result

    # ---------------------------------------------------------------------------------- rollback

    def _compensate_stage(self, stage: Stage) -> None:
        """on_failure: continue: the stage is all or nothing; undo all of its steps now, newest first."""
        for rec in self.state.rollback_stack():
            if rec.stage == stage.name:
                try:
                    self._undo(rec)
                except SimulatedCrash:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded; the run will need attention
                    self._attention.append(
                        f"the undo of {rec.key} (stage failed, on_failure: continue) failed: {exc}"
                    )

    def _rollback_and_verify(self, reason: RollbackReason, error: str | None) -> tuple[RunStatus, str]:
        stack = self.state.rollback_stack()
        self.emit("rollback.start", reason=str(reason), error=error, steps=[r.key for r in stack])
        undone = 0
        for rec in stack:
            if self.control.stop_rollback.is_set():
                left = len(stack) - undone
                self.emit("signal", action="stop-rollback", message="second interrupt: stopping the rollback")
                self.emit("rollback.end", outcome="stopped", undone=undone, left=left)
                return RunStatus.NEEDS_ATTENTION, (
                    f"rollback stopped by a second interrupt with {left} steps not undone;"
                    f" continue it with: migrator rollback {self.run_id}"
                )
            try:
                self._undo(rec)
            except SimulatedCrash:
                raise
            except Exception as exc:  # noqa: BLE001 - any failed undo needs a human
                self.emit("rollback.end", outcome="failed", undone=undone, failed=rec.key, error=str(exc))
                return RunStatus.NEEDS_ATTENTION, (
                    f"{_what(reason, error)}; the undo of {rec.key} failed: {exc}. The target is only partly"
                    f" rolled back: fix the cause, then continue with: migrator rollback {self.run_id}"
                )
            undone += 1
        self.emit("rollback.end", outcome="succeeded", undone=undone)
        try:
            self.run_checks(self.plan.spec.preflight, phase="post-rollback")
        except CheckFailed as exc:
            return RunStatus.NEEDS_ATTENTION, (
                f"{_what(reason, error)}; rolled back {undone} steps,"
                " but the post-rollback verification failed:"
                f" {exc}"
            )
        done = f"rolled back {undone} steps and verified"
        if reason == RollbackReason.FAILURE:
            return RunStatus.FAILED_ROLLED_BACK, f"failed: {error}; {done}"
        if reason == RollbackReason.INTERRUPT:
            return RunStatus.INTERRUPTED, f"interrupted; {done}"
        if reason == RollbackReason.ALWAYS:
            return RunStatus.SUCCEEDED, f"succeeded; {done} (rollback: always)"
        return RunStatus.ROLLED_BACK, done

    def _undo(self, rec: StepRecord) -> None:
        stage = self.plan.spec.stages[rec.stage_index]
        step = stage.steps[rec.step_index]
        if stage.name != rec.stage or (step.display_name != rec.step and "***" not in rec.step):
            raise PermanentError(f"the plan does not match the journal at {rec.key}; cannot undo it")
        node = self._node(rec.node) if rec.node else None
        base = {"key": rec.key, "stage": rec.stage, "step": rec.step, "node": rec.node}
        if step.no_undo:
            self.emit("undo.start", **base, action=rec.action, kind="none")
            self.emit("undo.end", **base, outcome="succeeded", skipped=True)
            return
        rendered = render_step(step, runtime_context(self.run_id, node))
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
        self.emit("undo.start", **base, action=rec.action, kind=kind, completed=rec.completed)
        started = time.monotonic()
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            ctx = self._step_ctx(
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
            ctx.prepared = rec.prepared if rec.prepared is not None else self.state.prepared.get(rec.key)
            if undo_step is not None:
                self._call(
                    lambda: action.do(ctx, args),
                    ctx.cancel,
                    ctx.deadline,
                    None,
                    f"undo {rec.key}",
                    interruptible=False,
                )
            else:
                result = rec.result if rec.completed else None
                self._call(
                    lambda: action.undo(ctx, args, result),
                    ctx.cancel,
                    ctx.deadline,
                    None,
                    f"undo {rec.key}",
                    interruptible=False,
                )

        def before_sleep(state: RetryCallState) -> None:
            wait_s = state.next_action.sleep if state.next_action else 0.0
            self.emit("undo.retry", key=rec.key, attempt=state.attempt_number, wait=round(wait_s, 3))

        try:
            self._retrying(policy, before_sleep)(attempt)
        except SimulatedCrash:
            raise
        except Exception as exc:
            self.emit(
                "undo.end",
                **base,
                outcome="failed",
                error=str(exc),
                attempts=attempts,
                duration=round(time.monotonic() - started, 3),
            )
            raise
        self.emit(
            "undo.end",
            **base,
            outcome="succeeded",
            attempts=attempts,
            duration=round(time.monotonic() - started, 3),
        )


def _what(reason: RollbackReason, error: str | None) -> str:
    if reason == RollbackReason.FAILURE:
        return f"failed: {error}"
    if reason == RollbackReason.INTERRUPT:
        return "interrupted"
    return f"rollback ({reason})"


def _first_error(errors: list[BaseException]) -> BaseException:
    """The error that explains a wave's failure best: a real failure before an interruption."""
    for exc in errors:
        if not isinstance(exc, Interrupted | Cancelled):
            return exc
    return errors[0]


def _dump(args: Any) -> Any:
    if args is None:
        return None
    if hasattr(args, "model_dump"):
        return args.model_dump(mode="json")
    return args
