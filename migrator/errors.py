"""Error hierarchy of migrator.

Every error the engine can see is a :class:`MigratorError`. Adapters translate third-party exceptions
(``kubernetes.client.ApiException``, ``ansible_runner`` statuses, ``subprocess`` failures) into these at
the boundary with ``raise ... from exc`` so that the engine can decide, from the type alone, whether to
retry (:class:`TemporaryError`), fail the step (:class:`StepFailed`, :class:`PermanentError`) or refuse
the input (:class:`PlanError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in README.md."""

    OK = 0
    FAILED_ROLLED_BACK = 1
    INVALID_INPUT = 2
    NEEDS_ATTENTION = 3
    INTERRUPTED = 130


class MigratorError(Exception):
    """Base class of every error migrator raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED_ROLLED_BACK


@dataclass(frozen=True)
class Location:
    """A place in a plan file: 1-based line and column."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One validation problem: where, which field, and what is wrong."""

    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        field = f"{self.path}: " if self.path else ""
        return f"{self.location}: {field}{self.message}"


class PlanError(MigratorError):
    """Bad input: a plan, a parameter, a selector or a CLI argument. Never retried."""

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems: list[Problem] = list(problems or [])
        if self.problems:
            message = "\n".join(str(p) for p in self.problems)
        super().__init__(message)


class UsageError(PlanError):
    """Bad use of the CLI or of the environment (missing file, unknown run id, lab not up)."""


class TemporaryError(MigratorError):
    """A failure that may go away: retry after ``delay`` seconds (kopf's TemporaryError)."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(MigratorError):
    """A failure that will not go away by retrying (kopf's PermanentError)."""


class StepFailed(PermanentError):
    """A step's action failed. ``node`` and ``detail`` say where and why when known."""

    def __init__(self, message: str, *, node: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.detail = detail


class StepTimeout(StepFailed):
    """A step did not finish within its timeout."""


class CheckFailed(MigratorError):
    """A verification or monitor check did not hold."""

    def __init__(self, message: str, *, check: str | None = None, details: object = None) -> None:
        super().__init__(message)
        self.check = check
        self.details = details


class Interrupted(MigratorError):
    """The run was interrupted by SIGINT or SIGTERM and stopped at a safe point."""

    exit_code = ExitCode.INTERRUPTED


class LockHeld(UsageError):
    """Another run holds the target's lock."""

    def __init__(self, message: str, holder_run_id: str) -> None:
        super().__init__(message)
        self.holder_run_id = holder_run_id


class UnsupportedFeature(PermanentError):
    """The target lacks a kernel or cluster feature a step needs (netem, ipip, IPVS, ...)."""

    def __init__(self, feature: str, *, node: str | None = None, hint: str = "") -> None:
        where = f" on node {node}" if node else ""
        msg = f"kernel feature {feature!r} is not available{where}"
        if hint:
            msg += f": {hint}"
        super().__init__(msg)
        self.feature = feature
        self.node = node
