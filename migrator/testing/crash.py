"""Crashes on purpose, for tests and benches: a journal that "dies" right after a given event.

:func:`crash_after` is a journal factory for :attr:`migrator.engine.engine.EngineOptions.journal`: the
journal raises :class:`SimulatedCrash` right after the event with that ``seq`` is on disk, and in every
later write without writing anything, as if the process had got a ``kill -9`` there. ``SimulatedCrash`` is
a ``BaseException`` (not an ``Exception``): the engine lets it through, as it lets through any such, so it
leaves the run folder as a real crash would (no ``run.end``), ready for ``resume``/``rollback``.

A real ``kill -9`` at an exact event boundary of a real ``migrator`` process:
:mod:`migrator.testing.kill_after`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from migrator.runs.journal import Journal, JournalHook, Scrubber


class SimulatedCrash(BaseException):
    """Raised by a :class:`CrashingJournal`: simulates ``kill -9`` right after an event."""


class CrashingJournal(Journal):
    """A journal that crashes right after writing the event with seq ``crash_after``."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        *,
        crash_after: int,
        scrub: Scrubber | None = None,
        hooks: Iterable[JournalHook] = (),
    ) -> None:
        super().__init__(path, run_id, scrub=scrub, hooks=hooks)
        self.crash_after = crash_after
        self.crashed = False

    def _commit(self, line: str, written: Mapping[str, Any]) -> None:
        if self.crashed:
            raise SimulatedCrash(f"journal crashed after seq {self.crash_after}")
        super()._commit(line, written)
        if self.seq >= self.crash_after:
            self.crashed = True
            raise SimulatedCrash(f"simulated crash after seq {self.seq}")


def crash_after(seq: int) -> Callable[..., Journal]:
    """A journal factory (``EngineOptions(journal=crash_after(8))``) whose journal crashes after ``seq``."""

    def factory(path: Path, run_id: str, **kwargs: Any) -> Journal:
        return CrashingJournal(path, run_id, crash_after=seq, **kwargs)

    return factory
