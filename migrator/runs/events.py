"""The vocabulary of a run's journal: one frozen dataclass per event type, the enums of its outcomes, and
the one parser from a journal line's JSON object (:func:`parse_event`).

Every event has the envelope ``seq``, ``ts``, ``type`` (the class's :attr:`Event.TYPE`) and ``run_id``;
its other fields are the dataclass's, in the order they are written (:meth:`Event.to_json` writes the
same JSON object, key for key, that the engine wrote before the events were typed: old and new run folders
are interchangeable). A field made with :func:`opt` is optional in the format: it is left out of the line
when it has its default value, and a journal without it parses to that default. :func:`parse_event`
tolerates journals written by any earlier version: a missing optional field takes its default, a field
this version does not know is kept in :attr:`Event.extra` (and written back by :meth:`Event.to_json`), and
an event type it does not know becomes an :class:`UnknownEvent`. A known event without one of its required
fields, or with a value of the wrong kind, is an :class:`EventError`.

The engine emits these events (:meth:`migrator.runs.journal.Journal.write`); the saga state
(:mod:`migrator.engine.state`), the report (:mod:`migrator.report.model`) and the console
(:mod:`migrator.cli.console`, :mod:`migrator.engine.observers`) fold them, each once, by matching on the
classes.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any, ClassVar, Union

from migrator.errors import ExitCode

# ------------------------------------------------------------------------------------------ the enums


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


class RunMode(StrEnum):
    """How a session of a run started: a new run, or ``migrator resume``/``rollback`` of one."""

    APPLY = "apply"
    RESUME = "resume"
    ROLLBACK = "rollback"


class Outcome(StrEnum):
    """How a preflight, a wave or an undo ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StageOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FAILED_CONTINUED = "failed-continued"  # on_failure: continue; its steps were undone

    @property
    def done(self) -> bool:
        """The stage does not run again on a resume."""
        return self in (StageOutcome.SUCCEEDED, StageOutcome.FAILED_CONTINUED)


class StepOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # this attempt failed with a TemporaryError; another attempt follows
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def bad(self) -> bool:
        """The step ended without succeeding and will not be tried again."""
        return self in (StepOutcome.FAILED, StepOutcome.TIMEOUT, StepOutcome.CANCELLED)


class RollbackReason(StrEnum):
    FAILURE = "failure"
    INTERRUPT = "interrupt"
    ALWAYS = "always"  # rollback: always after a successful run
    MANUAL = "manual"  # `migrator rollback RUN`


class RollbackOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an undo failed: the run needs attention
    STOPPED = "stopped"  # a second interrupt stopped it between two undos


class CheckPhase(StrEnum):
    PREFLIGHT = "preflight"
    VERIFY = "verify"
    STAGE_VERIFY = "stage-verify"
    WAVE_VERIFY = "wave-verify"
    MONITOR = "monitor"
    POST_ROLLBACK = "post-rollback"


class SignalAction(StrEnum):
    CANCEL = "cancel"
    STOP_ROLLBACK = "stop-rollback"


class RunPhase(StrEnum):
    """Where a run is (:attr:`migrator.engine.state.SagaState.phase`), as ``run.resume`` records it."""

    FORWARD = "forward"
    ROLLBACK = "rollback"
    FINISHED = "finished"


class EventError(ValueError):
    """A journal event of a known type without a required field, or with a value of the wrong kind."""


# ------------------------------------------------------------------------------------------ the base

_OMIT = "migrator.omit"
Omit = Callable[[Any, Any], bool]  # (event, value) -> leave the field out of the line


def opt(default: Any = None) -> Any:
    """An optional field of the format: written only when it is not ``default``."""
    return field(default=default, metadata={_OMIT: lambda _event, value: value == default})


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """The envelope every journal event has. ``seq``, ``ts`` and ``run_id`` are set by the journal when it
    writes the event (:meth:`migrator.runs.journal.Journal.write`); the engine builds events without them."""

    TYPE: ClassVar[str] = ""
    seq: int = 0
    ts: str = ""
    run_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Fields of the line this version does not know (a journal from another version): kept, written back."""

    @property
    def type(self) -> str:
        return self.TYPE

    def body(self) -> dict[str, Any]:
        """The event's own fields as written (no envelope), then :attr:`extra`."""
        out: dict[str, Any] = {}
        for spec in _body(type(self)):
            value = getattr(self, spec.name)
            if spec.omit is not None and spec.omit(self, value):
                continue
            out[spec.name] = _plain(value)
        out.update(self.extra)
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the journal line (envelope first: ``seq``, ``ts``, ``type``, ``run_id``)."""
        return {"seq": self.seq, "ts": self.ts, "type": self.type, "run_id": self.run_id, **self.body()}


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownEvent(Event):
    """An event of a type this version does not know (a tool's, or a later version's): kept as it is."""

    name: str = ""

    @property
    def type(self) -> str:
        return self.name


# ------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStart(Event):
    TYPE: ClassVar[str] = "run.start"
    plan: str = ""
    target: str = ""
    identity: str | None = None
    plan_hash: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # secrets masked
    rollback: str = ""  # the plan's rollback policy
    pid: int | None = None
    host: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResume(Event):
    TYPE: ClassVar[str] = "run.resume"
    mode: RunMode = RunMode.RESUME
    pid: int | None = None
    host: str = ""
    phase: RunPhase = RunPhase.FORWARD  # where the run was when this session took it over


@dataclass(frozen=True, kw_only=True, slots=True)
class RunEnd(Event):
    TYPE: ClassVar[str] = "run.end"
    status: RunStatus
    message: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunError(Event):
    TYPE: ClassVar[str] = "run.error"
    error: str = ""
    traceback: str | None = opt()


@dataclass(frozen=True, kw_only=True, slots=True)
class JournalRepaired(Event):
    """A torn last line was cut before this session appended."""

    TYPE: ClassVar[str] = "journal.repaired"
    detail: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunWarning(Event):
    TYPE: ClassVar[str] = "warning"
    stage: str | None = opt()
    message: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Signal(Event):
    TYPE: ClassVar[str] = "signal"
    action: SignalAction
    message: str = ""


# ------------------------------------------------------------------------------------------ preflight


@dataclass(frozen=True, kw_only=True, slots=True)
class PreflightStart(Event):
    TYPE: ClassVar[str] = "preflight.start"
    checks: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class PreflightEnd(Event):
    TYPE: ClassVar[str] = "preflight.end"
    outcome: Outcome
    failed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class PreflightRequirements(Event):
    """The steps' own preflight at run start (:mod:`migrator.engine.requirements`)."""

    TYPE: ClassVar[str] = "preflight.requirements"
    outcome: Outcome
    checked: int = 0
    failures: tuple[Mapping[str, Any], ...] = ()  # {stage, step, node, action, error, error_type}
    skipped: tuple[str, ...] = ()
    duration: float = 0.0


# ------------------------------------------------------------------------------------- stages, waves


@dataclass(frozen=True, kw_only=True, slots=True)
class StageStart(Event):
    TYPE: ClassVar[str] = "stage.start"
    stage: str
    stage_index: int = 0
    addresses: Mapping[str, str] | None = opt()  # a for_each stage's nodes, when its waves were chosen
    resumed: bool = opt(False)  # a for_each stage started again with the waves it had
    waves: tuple[tuple[str, ...], ...] | None = opt()  # node names; None: not a for_each stage


@dataclass(frozen=True, kw_only=True, slots=True)
class StageEnd(Event):
    TYPE: ClassVar[str] = "stage.end"
    stage: str
    outcome: StageOutcome
    error: str | None = opt()


@dataclass(frozen=True, kw_only=True, slots=True)
class WaveStart(Event):
    TYPE: ClassVar[str] = "wave.start"
    stage: str
    wave: int  # 0-based
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class WaveEnd(Event):
    TYPE: ClassVar[str] = "wave.end"
    stage: str
    wave: int
    outcome: Outcome
    error: str | None = opt()
    duration: float | None = None


# -------------------------------------------------------------------------------------------- steps


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRef(Event):
    """Which step execution: ``key`` is ``stage/step`` or ``stage/step@node``."""

    key: str
    stage: str
    stage_index: int = 0
    step: str
    step_index: int = 0
    node: str | None = None
    action: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class StepStart(StepRef):
    TYPE: ClassVar[str] = "step.start"
    attempt: int = 1
    args: Any = None
    timeout: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class StepPrepared(Event):
    """The action's snapshot before its first attempt (what its undo needs)."""

    TYPE: ClassVar[str] = "step.prepared"
    key: str
    prepared: Any = None


def _unless_succeeded(event: Any, _value: Any) -> bool:
    """A step's result is written when it succeeded (even ``null``), and only then."""
    return bool(event.outcome != StepOutcome.SUCCEEDED)


@dataclass(frozen=True, kw_only=True, slots=True)
class StepEnd(StepRef):
    TYPE: ClassVar[str] = "step.end"
    attempt: int = 1
    outcome: StepOutcome
    result: Any = field(default=None, metadata={_OMIT: _unless_succeeded})
    error: str | None = opt()
    error_type: str | None = opt()
    duration: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRetry(Event):
    TYPE: ClassVar[str] = "step.retry"
    key: str
    attempt: int = 1
    wait: float = 0.0  # seconds before the next attempt


@dataclass(frozen=True, kw_only=True, slots=True)
class StepEvent(Event):
    """A sub-event an action streams (an Ansible task result, a fault's phase, ...)."""

    TYPE: ClassVar[str] = "step.event"
    key: str
    event: Mapping[str, Any] = field(default_factory=dict)
    preflight: bool = opt(False)  # from the step's preflight at run start


# ------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckRef(Event):
    check: str
    check_type: str | None = None
    phase: CheckPhase
    stage: str | None = None
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckStart(CheckRef):
    TYPE: ClassVar[str] = "check.start"


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckEnd(CheckRef):
    TYPE: ClassVar[str] = "check.end"
    ok: bool = False
    summary: str | None = None
    details: Any = None
    duration: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckEvent(Event):
    TYPE: ClassVar[str] = "check.event"
    check: str
    phase: CheckPhase
    event: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class MonitorStart(Event):
    TYPE: ClassVar[str] = "monitor.start"
    stage: str
    checks: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class MonitorFailed(Event):
    TYPE: ClassVar[str] = "monitor.failed"
    stage: str
    check: str
    error: str = ""
    details: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MonitorProgress(Event):
    """How a monitor check stands (probes sent, lost outside the waves, excused), for live displays.

    Never journaled (not in :data:`EVENT_TYPES`): the engine hands it to the observers only
    (:meth:`migrator.engine.engine.Engine.notify`), at most every few seconds per check."""

    TYPE: ClassVar[str] = "monitor.progress"
    stage: str
    check: str
    sent: int = 0
    lost: int = 0
    excused: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class MonitorEnd(Event):
    TYPE: ClassVar[str] = "monitor.end"
    stage: str
    rounds: int | None = None
    aborted: bool = False


# ----------------------------------------------------------------------------------------- rollback


@dataclass(frozen=True, kw_only=True, slots=True)
class RollbackStart(Event):
    TYPE: ClassVar[str] = "rollback.start"
    reason: RollbackReason | None = None
    error: str | None = None
    steps: tuple[str, ...] = ()  # keys, in undo order


@dataclass(frozen=True, kw_only=True, slots=True)
class UndoRef(Event):
    key: str
    stage: str = ""
    step: str = ""
    node: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class UndoStart(UndoRef):
    TYPE: ClassVar[str] = "undo.start"
    action: str = ""
    kind: str = "undo"  # undo | step:ACTION (an explicit undo step) | none (no_undo)
    completed: bool | None = opt()  # the step's do() had returned


@dataclass(frozen=True, kw_only=True, slots=True)
class UndoEnd(UndoRef):
    TYPE: ClassVar[str] = "undo.end"
    outcome: Outcome
    error: str | None = opt()
    attempts: int | None = opt()
    duration: float | None = opt()
    skipped: bool = opt(False)  # no_undo: nothing was undone


@dataclass(frozen=True, kw_only=True, slots=True)
class UndoRetry(Event):
    TYPE: ClassVar[str] = "undo.retry"
    key: str
    attempt: int = 1
    wait: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RollbackEnd(Event):
    TYPE: ClassVar[str] = "rollback.end"
    outcome: RollbackOutcome
    undone: int = 0
    failed: str | None = opt()  # the key of the undo that failed
    error: str | None = opt()
    left: int | None = opt()  # steps not undone when a second interrupt stopped it


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        RunStart,
        RunResume,
        RunEnd,
        RunError,
        JournalRepaired,
        RunWarning,
        Signal,
        PreflightStart,
        PreflightEnd,
        PreflightRequirements,
        StageStart,
        StageEnd,
        WaveStart,
        WaveEnd,
        StepStart,
        StepPrepared,
        StepEnd,
        StepRetry,
        StepEvent,
        CheckStart,
        CheckEnd,
        CheckEvent,
        MonitorStart,
        MonitorFailed,
        MonitorEnd,
        RollbackStart,
        UndoStart,
        UndoEnd,
        UndoRetry,
        RollbackEnd,
    )
}
"""Journal event type -> its class."""


# ------------------------------------------------------------------------------------------ the parser

_ENVELOPE = frozenset({"seq", "ts", "type", "run_id"})


def parse_event(data: Mapping[str, Any]) -> Event:
    """The typed event of one journal line's JSON object (see the module docstring for what it tolerates)."""
    name = str(data.get("type", ""))
    cls = EVENT_TYPES.get(name)
    try:
        seq = int(data.get("seq") or 0)
    except (TypeError, ValueError):
        raise EventError(f"journal event {name!r}: seq {data.get('seq')!r} is not a number") from None
    envelope: dict[str, Any] = {"seq": seq, "ts": _text(data.get("ts")), "run_id": _text(data.get("run_id"))}
    if cls is None:
        rest = {k: v for k, v in data.items() if k not in _ENVELOPE}
        return UnknownEvent(name=name, extra=rest, **envelope)
    specs = _body(cls)
    kwargs: dict[str, Any] = {}
    for spec in specs:
        if spec.name in data:
            try:
                kwargs[spec.name] = spec.coerce(data[spec.name])
            except (TypeError, ValueError) as exc:
                raise EventError(
                    f"journal event {seq} ({name}): {spec.name} {data[spec.name]!r} is not valid: {exc}"
                ) from None
        elif spec.required:
            raise EventError(f"journal event {seq} ({name}) has no {spec.name}")
    known = _ENVELOPE | {spec.name for spec in specs}
    extra = {k: v for k, v in data.items() if k not in known}
    return cls(**envelope, **kwargs, extra=extra)


def parse_events(events: typing.Iterable[Mapping[str, Any]]) -> list[Event]:
    return [parse_event(e) for e in events]


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    required: bool
    coerce: Callable[[Any], Any]
    omit: Omit | None


_BODIES: dict[str, tuple[_Spec, ...]] = {}


def _body(cls: type[Event]) -> tuple[_Spec, ...]:
    """The body fields of an event class, in the order they are written, with their coercions."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    found = _BODIES.get(key)
    if found is None:
        found = _BODIES[key] = _specs(cls)
    return found


def _specs(cls: type[Event]) -> tuple[_Spec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in fields(cls):
        if f.name in _ENVELOPE or f.name in ("extra", "name"):
            continue
        specs.append(_Spec(f.name, _required(f), _coercer(hints[f.name]), f.metadata.get(_OMIT)))
    return tuple(specs)


def _required(f: Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _coercer(tp: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = _coercer(members[0]) if len(members) == 1 else _same
        return lambda v: None if v is None else inner(v)
    if origin is tuple:
        item = _coercer(args[0]) if args else _same
        return lambda v: tuple(item(x) for x in _sequence(v))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if tp is bool:
        return bool
    if tp is int:
        return _int
    if tp is float:
        return float
    if tp is str:
        return _text
    return _same


def _same(value: Any) -> Any:
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a number")
    return int(value)


def _sequence(value: Any) -> list[Any] | tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise TypeError("not a list")
    return value


def _plain(value: Any) -> Any:
    """A field's value as JSON has it: tuples as lists, enums as their values."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value
