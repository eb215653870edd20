"""The run journal: ``runs/<run-id>/journal.jsonl``, append-only, one JSON event a line.

Every event is written with one ``write`` of the whole line, then ``flush`` and ``os.fsync``, so that a
crash (even ``kill -9``) can at worst tear the *last* line. :func:`read_journal` tolerates a torn last
line (it reports it, never loses an earlier event) and rejects corruption anywhere else with a clear
error. Secret values are replaced by ``***`` before anything reaches the disk.

Every event has ``seq`` (1, 2, 3, ... without gaps), ``ts`` (ISO 8601 UTC, ms), ``type`` and ``run_id``;
the events, one class per type, with their fields in the order they are written, are in
:mod:`migrator.runs.events` (the engine writes typed events with :meth:`Journal.write`; tools may
:meth:`Journal.append` a raw one). In short (``key`` is ``stage/step`` or ``stage/step@node``):

=======================  ==============================================================================
run.start                plan, target, identity, plan_hash, params (secrets masked), rollback, pid, host
run.resume               mode (resume|rollback), pid, host, phase
run.end                  status (a :class:`~migrator.runs.events.RunStatus`), message, exit_code
run.error                error[, traceback]
journal.repaired         detail (a torn last line was cut before this run appended)
preflight.start          checks ; preflight.end: outcome (succeeded|failed), failed
preflight.requirements   outcome, checked, failures, skipped, duration (the steps' own preflight)
stage.start              stage, stage_index[, addresses: {node: ip} | resumed, waves: [[node, ...], ...]]
stage.end                stage, outcome (succeeded|failed|failed-continued)[, error]
wave.start               stage, wave (0-based), nodes ; wave.end: stage, wave, outcome[, error], duration
step.start               key, stage, stage_index, step, step_index, node, action, attempt, args, timeout
step.prepared            key, prepared (the action's snapshot before its first attempt)
step.end                 key, ..., attempt, outcome (succeeded|retrying|failed|timeout|cancelled),
                         result | error + error_type, duration
step.retry               key, attempt, wait (seconds before the next attempt)
step.event               key, event[, preflight] (sub-events an action streams, e.g. Ansible task results)
check.start              check, check_type, phase, stage, nodes ; check.end: + ok, summary, details, duration
check.event              check, phase, event
monitor.start            stage, checks ; monitor.failed: stage, check, error, details ; monitor.end: stage,
                         rounds, aborted
rollback.start           reason (failure|interrupt|always|manual), error, steps (undo order)
undo.start               key, stage, step, node, action, kind (undo|step:ACTION|none)[, completed]
undo.end                 key, stage, step, node, outcome (succeeded|failed)[, error, attempts, duration,
                         skipped]
undo.retry               key, attempt, wait
rollback.end             outcome (succeeded|failed|stopped), undone[, failed, error, left]
signal                   action (cancel|stop-rollback), message
warning                  [stage, ]message
=======================  ==============================================================================

Hooks (:data:`JournalHook`) see every event right after it is on disk, before :meth:`Journal.write`
returns: a journal's own (``hooks=``), and the process-wide ones (:func:`add_write_hook`), for tools that
drive a real migrator process and must act at an exact event boundary.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrator.errors import ExitCode, MigratorError
from migrator.runs.events import Event, parse_event

SECRET_MASK = "***"  # noqa: S105 - the mask, not a secret

JournalHook = Callable[[Mapping[str, Any]], None]
"""Called with an event as written (secrets masked) right after it is on disk, under the journal's lock
(no other event is written meanwhile). A hook that raises makes that write raise, the event being durable."""

_PROCESS_HOOKS: list[JournalHook] = []


def add_write_hook(hook: JournalHook) -> Callable[[], None]:
    """Call ``hook`` after every event of every journal of this process; returns its remover."""
    _PROCESS_HOOKS.append(hook)
    return lambda: _PROCESS_HOOKS.remove(hook) if hook in _PROCESS_HOOKS else None


class JournalError(MigratorError):
    """The journal is corrupt before its last line: the run cannot be trusted without a human."""

    exit_code = ExitCode.NEEDS_ATTENTION


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Scrubber:
    """Replaces every occurrence of a secret value in strings (recursively) with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {str(s) for s in secrets if s is not None and str(s) != ""}
        self._secrets = sorted(values, key=len, reverse=True)

    @property
    def secrets(self) -> list[str]:
        return list(self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, SECRET_MASK)
        return value

    def __call__(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self(v) for v in value]
        return value


@dataclass
class JournalRead:
    """What :func:`read_journal` found: the events, and a description of a torn last line if any."""

    events: list[dict[str, Any]]
    torn: str | None = None
    good_bytes: int = 0  # length of the intact prefix of the file
    needs_newline: bool = False  # the last event is complete but its newline is missing

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    def typed(self) -> list[Event]:
        """The events parsed (:func:`migrator.runs.events.parse_event`)."""
        return [parse_event(e) for e in self.events]


def read_journal(path: Path) -> JournalRead:
    """Read a journal; tolerate a torn last line, raise :class:`JournalError` on corruption elsewhere."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise JournalError(f"{path}: no journal (is this a run folder?)") from None
    events: list[dict[str, Any]] = []
    pos = 0
    lineno = 0
    result = JournalRead(events=events)
    while pos < len(data):
        end = data.find(b"\n", pos)
        last = end == -1
        chunk = data[pos:] if last else data[pos:end]
        lineno += 1
        event: Any = None
        error: str | None = None
        try:
            event = json.loads(chunk.decode())
            if not isinstance(event, dict) or not isinstance(event.get("seq"), int) or "type" not in event:
                error = "not a journal event (needs seq and type)"
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            error = f"not valid JSON ({exc})"
        if error is None and events and event["seq"] != events[-1]["seq"] + 1:
            error = f"seq {event['seq']} follows seq {events[-1]['seq']}"
        if error is not None:
            if last:
                result.torn = f"line {lineno} is torn ({len(chunk)} bytes, {error}); it was dropped"
                break
            raise JournalError(
                f"{path}:{lineno}: journal is corrupt: {error}; the {len(events)} events before it are"
                " intact, but the run cannot be resumed safely without a look by a human"
            )
        events.append(event)
        if last:
            result.needs_newline = True
            pos = len(data)
        else:
            pos = end + 1
        result.good_bytes = pos
    return result


class Journal:
    """Appends events to ``journal.jsonl``; thread-safe; every event is fsync'd before ``write`` returns.

    ``hooks`` (and the process-wide ones, :func:`add_write_hook`) see each event right after it is on
    disk (:data:`JournalHook`).
    """

    def __init__(
        self, path: Path, run_id: str, *, scrub: Scrubber | None = None, hooks: Iterable[JournalHook] = ()
    ) -> None:
        self.path = path
        self.run_id = run_id
        self.scrub = scrub or Scrubber()
        self.hooks = list(hooks)
        self.repaired: str | None = None
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seq = 0
        if self.path.exists():
            found = read_journal(self.path)
            self.seq = found.last_seq
            if found.torn is not None or found.needs_newline:
                # cut the torn tail so that new events do not land after garbage
                with open(self.path, "r+b") as fh:
                    fh.truncate(found.good_bytes)
                    if found.needs_newline:
                        fh.seek(0, os.SEEK_END)
                        fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                self.repaired = found.torn
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()

    def write(self, event: Event) -> tuple[Event, Event]:
        """Write one typed event (the journal sets its ``seq``, ``ts`` and ``run_id``); return it twice:
        as the engine gave it (JSON values, secrets in clear: for the in-memory state) and as written
        (secrets masked: for everyone else)."""
        raw, written = self._write(event.type, event.body())
        return parse_event(raw), parse_event(written)

    def append(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Write one untyped event; return it as written (secrets masked)."""
        return self._write(type_, fields)[1]

    def _write(self, type_: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        with self._lock:
            raw: dict[str, Any] = {"seq": self.seq + 1, "ts": now_iso(), "type": type_, "run_id": self.run_id}
            raw.update(body)
            line = json.dumps(self.scrub(raw), default=_json_default, separators=(",", ":"))
            written: dict[str, Any] = json.loads(line)
            self._commit(line, written)
        return json.loads(json.dumps(raw, default=_json_default)), written

    def _commit(self, line: str, written: Mapping[str, Any]) -> None:
        """Put one line on disk (under the lock), then call the hooks."""
        self._fh.write(line.encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.seq = int(written["seq"])
        for hook in [*self.hooks, *_PROCESS_HOOKS]:
            hook(written)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)
