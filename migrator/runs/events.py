"""The vocabulary of a run's journal: how a run, a step and a rollback end."""

from __future__ import annotations

from enum import StrEnum

from migrator.errors import ExitCode


class RunStatus(StrEnum):
    RUNNING = "running"
    ROLLING_BACK = "rolling-back"
    SUCCEEDED = "succeeded"
    FAILED_PREFLIGHT = "failed-preflight"  # nothing was changed
    FAILED_ROLLED_BACK = "failed-rolled-back"
    FAILED_NOT_ROLLED_BACK = "failed-not-rolled-back"  # rollback: never
    ROLLED_BACK = "rolled-back"  # `migrator rollback RUN` finished cleanly
    NEEDS_ATTENTION = "needs-attention"  # an undo or the post-rollback verification failed
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.ROLLING_BACK)

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT[self]


_EXIT = {
    RunStatus.RUNNING: ExitCode.INTERRUPTED,
    RunStatus.ROLLING_BACK: ExitCode.INTERRUPTED,
    RunStatus.SUCCEEDED: ExitCode.OK,
    RunStatus.ROLLED_BACK: ExitCode.OK,
    RunStatus.FAILED_PREFLIGHT: ExitCode.FAILED_ROLLED_BACK,
    RunStatus.FAILED_ROLLED_BACK: ExitCode.FAILED_ROLLED_BACK,
    RunStatus.FAILED_NOT_ROLLED_BACK: ExitCode.FAILED_ROLLED_BACK,
    RunStatus.NEEDS_ATTENTION: ExitCode.NEEDS_ATTENTION,
    RunStatus.INTERRUPTED: ExitCode.INTERRUPTED,
}


class StepOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # this attempt failed with a TemporaryError; another attempt follows
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class RollbackReason(StrEnum):
    FAILURE = "failure"
    INTERRUPT = "interrupt"
    ALWAYS = "always"  # rollback: always after a successful run
    MANUAL = "manual"  # `migrator rollback RUN`
