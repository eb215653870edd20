"""How the engine calls an action or a check: a step's context, a worker thread under a deadline (told to
stop on a timeout or an abort), and attempts per a retry policy. Used by the forward run
(:mod:`migrator.engine.engine`) and by the undos (:mod:`migrator.engine.saga`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from migrator.actions import StepContext
from migrator.engine.state import SagaState
from migrator.errors import StepTimeout, TemporaryError
from migrator.plan.models import RetryPolicy, Stage, StepBase
from migrator.ports import Node, Target
from migrator.runs.events import Event, StepEvent
from migrator.runs.journal import Scrubber
from migrator.runs.rundir import RunDir

T = TypeVar("T")

Abort = Callable[[], BaseException | None]
"""Asked while a call runs: what stops it now (an interrupt, a monitor's failure), or ``None``."""


class StepRunner:
    """Calls actions and checks for one run (see the module docstring)."""

    def __init__(
        self,
        *,
        rundir: RunDir,
        target: Target,
        params: Mapping[str, Any],
        scrub: Scrubber,
        state: SagaState,
        emit: Callable[[Event], object],
        sleep: Callable[[float], None],
        poll: float,
        grace: float,
    ) -> None:
        self.rundir = rundir
        self.target = target
        self.params = params
        self.scrub = scrub
        self.state = state
        self.emit = emit
        self.sleep = sleep
        self.poll = poll
        self.grace = grace

    def step_context(
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
        """The context of one attempt of step ``key`` (the ``step_index``-th of the ``index``-th stage)."""

        def emit_sub(event: Mapping[str, Any]) -> None:
            self.emit(StepEvent(key=key, event=dict(event)))

        return StepContext(
            run_id=self.rundir.run_id,
            run_dir=self.rundir.path,
            artifacts_dir=self.step_dir(index, stage, step_index, step, node),
            target=self.target,
            node=node,
            params=self.params,
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

    def step_dir(self, index: int, stage: Stage, step_index: int, step: StepBase, node: Node | None) -> Path:
        return self.rundir.step_dir(
            f"{index + 1:02d}.{step_index + 1:02d}",
            stage.name,
            step.display_name,
            node.name if node else None,
        )

    def retrying(self, policy: RetryPolicy, before_sleep: Callable[[RetryCallState], None]) -> Retrying:
        """Attempts per ``policy``: a TemporaryError is tried again after a backoff (at least its delay)."""

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
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def in_worker(
        self,
        fn: Callable[[], T],
        cancel: threading.Event,
        deadline: float,
        what: str,
        *,
        abort: Abort | None = None,
        timeout: float | None = None,
    ) -> T:
        """Run ``fn`` in a worker thread under ``deadline``; set ``cancel`` on timeout or abort. Whatever
        ``fn`` raises (``BaseException`` included) is raised here, in the calling thread."""
        box: dict[str, Any] = {}
        done = threading.Event()
        limit = timeout if timeout is not None else max(0.0, deadline - time.monotonic())

        def runner() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed over to the calling thread, raised there
                box["error"] = exc
            finally:
                done.set()

        thread = threading.Thread(target=runner, name=what[:40], daemon=True)
        thread.start()
        reason: BaseException | None = None
        while not done.wait(self.poll):
            if time.monotonic() >= deadline:
                reason = StepTimeout(f"{what} timed out after {limit:g}s")
                break
            reason = abort() if abort is not None else None
            if reason is not None:
                break
        if reason is not None:
            cancel.set()
            done.wait(self.grace)
            raise reason
        if "error" in box:
            raise box["error"]
        return cast(T, box.get("result"))
