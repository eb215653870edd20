"""The probe engine: runs :class:`~migrator.ports.ProbeTarget`s through the agent, one process, many netns.

Every run gets its own worker thread with its own event loop. Only that thread ever switches namespaces
(see :class:`migrator.probe.agent.NetnsSockets`), so the caller's thread always stays in the host
namespace, whatever happens to the probes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from loguru import logger

from migrator.errors import PermanentError, UsageError
from migrator.ports import ProbeKind, ProbeResult, ProbeTarget
from migrator.probe import agent

NetnsResolver = Callable[[str], str | None]
"""Maps a probe source (pod key ``ns/name``, node name or ``outside``) to a netns path, or ``None``."""

DEFAULT_CONCURRENCY = 256
FLAKY_PREFIX = "flaky: "
MAX_WORKERS = 4
MIN_SPECS_PER_WORKER = 64
CONTINUOUS_MAX_DURATION = 3600.0
CONTINUOUS_MAX_PROBES = 2_000_000
"""A continuous run keeps every result (about 200 bytes each): refuse runs that could exceed this."""


def as_resolver(netns: NetnsResolver | Mapping[str, str]) -> NetnsResolver:
    if isinstance(netns, Mapping):
        mapping = dict(netns)
        return mapping.get
    return netns


@dataclass(frozen=True)
class EngineOptions:
    """How targets become agent specs.

    ``dns_server`` is the resolver for host names (the ``service-dns`` kind) when a source has no
    resolv.conf.
    ``allow_own_netns`` lets a source without a namespace probe from the prober's own namespace:
    never for the lab, only for an agent running inside a pod.
    ``retries``: failed probes of a one-off run are probed again (at ``retry_concurrency``) up to this many
    times; a pair that then answers is ``ok`` with ``error="flaky: <first error>"``, so a starved CPU does
    not fail a healthy pair silently, and the flake stays visible.
    """

    dns_server: str | None = None
    allow_own_netns: bool = False
    workers: int = 0  # probing threads for big runs; 0: min(4, CPUs)
    retries: int = 1  # confirmation passes over failed probes (one-off runs only, never continuous)
    retry_concurrency: int = 128


def to_spec(target: ProbeTarget, netns: str | None, options: EngineOptions) -> agent.Spec:
    return agent.Spec(
        source=target.source,
        dest=target.dest,
        kind=target.kind.value,
        host=target.host,
        port=target.port,
        protocol=agent.Protocol(target.protocol.value),
        path=target.path,
        expect_status=target.expect_status,
        expect_body=target.expect_body,
        timeout=target.timeout,
        netns=netns,
        dns_fallback=options.dns_server,
    )


def to_result(outcome: agent.Outcome) -> ProbeResult:
    return ProbeResult(
        source=outcome.source,
        dest=outcome.dest,
        kind=ProbeKind(outcome.kind),
        ok=outcome.ok,
        latency_ms=outcome.latency_ms,
        error=outcome.error,
        ts=outcome.ts,
        elapsed_ms=outcome.elapsed_ms,
    )


def _raise_nofile(wanted: int) -> None:
    import resource  # noqa: PLC0415 - POSIX only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class ProbeEngine:
    """Probes :class:`ProbeTarget`s from the namespaces a resolver names."""

    def __init__(
        self, netns: NetnsResolver | Mapping[str, str], options: EngineOptions | None = None
    ) -> None:
        self._resolve = as_resolver(netns)
        self.options = options or EngineOptions()

    def specs(self, targets: Sequence[ProbeTarget]) -> list[agent.Spec]:
        """Agent specs; a source without a namespace is a :class:`UsageError` (unless allowed)."""
        specs, unknown = self._split(targets)
        if unknown:
            raise UsageError(f"no network namespace known for probe source {targets[unknown[0]].source!r}")
        return [s for s in specs if s is not None]

    def _split(self, targets: Sequence[ProbeTarget]) -> tuple[list[agent.Spec | None], list[int]]:
        cache: dict[str, str | None] = {}
        specs: list[agent.Spec | None] = []
        unknown: list[int] = []
        for i, target in enumerate(targets):
            if target.source not in cache:
                cache[target.source] = self._resolve(target.source)
            path = cache[target.source]
            if path is None and not self.options.allow_own_netns:
                specs.append(None)
                unknown.append(i)
            else:
                specs.append(to_spec(target, path, self.options))
        return specs, unknown

    def probe(
        self, targets: Sequence[ProbeTarget], *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> list[ProbeResult]:
        """Probe every target; results in target order. Each probe is bounded by its timeout.

        Failed probes get up to ``options.retries`` confirmation passes (see :class:`EngineOptions`).
        A source without a known namespace is not probed: its targets fail with ``netns: ...``, and the
        rest of the matrix still runs.
        """
        if not targets:
            return []
        maybe, unknown = self._split(targets)
        if unknown:
            logger.warning(
                "no network namespace known for {} source(s): {}",
                len({targets[i].source for i in unknown}),
                ", ".join(sorted({targets[i].source for i in unknown})[:5]),
            )
        known = [i for i, s in enumerate(maybe) if s is not None]
        specs = [s for s in maybe if s is not None]
        outcomes = self._probe_specs(specs, concurrency)
        results: list[ProbeResult | None] = [None] * len(targets)
        for i, outcome in zip(known, outcomes, strict=True):
            results[i] = to_result(outcome)
        now = time.time()
        for i in unknown:
            t = targets[i]
            error = f"{agent.ErrorCode.NETNS.value}: no network namespace known for source {t.source}"
            results[i] = ProbeResult(t.source, t.dest, t.kind, False, None, error, now)
        return [r for r in results if r is not None]

    def _probe_specs(self, specs: list[agent.Spec], concurrency: int) -> list[agent.Outcome]:
        outcomes = self._run(specs, concurrency)
        for _ in range(max(0, self.options.retries)):
            failed = [i for i, o in enumerate(outcomes) if not o.ok]
            if not failed:
                break
            again = self._run([specs[i] for i in failed], min(concurrency, self.options.retry_concurrency))
            for i, outcome in zip(failed, again, strict=True):
                if outcome.ok:
                    first = outcomes[i].error or ""
                    outcomes[i] = dataclasses.replace(
                        outcome, error=f"{FLAKY_PREFIX}{first}", ts=outcomes[i].ts
                    )
            logger.debug(
                "confirmation pass: {} failed, {} answered now", len(failed), sum(o.ok for o in again)
            )
        return outcomes

    def _run(self, specs: list[agent.Spec], concurrency: int) -> list[agent.Outcome]:
        """One pass over ``specs``; outcomes in order.

        Big runs are split round-robin over a few worker threads, each with its own event loop and its own
        namespace switching: the kernel work of a probe (the whole veth/bridge path of its packets) runs in
        the sending thread, outside the GIL, so this uses more than one CPU.
        """
        if not specs:
            return []
        _raise_nofile(concurrency * 2 + 256)
        workers = self.options.workers or min(MAX_WORKERS, os.cpu_count() or 1)
        workers = max(1, min(workers, len(specs) // MIN_SPECS_PER_WORKER))
        chunks = [specs[i::workers] for i in range(workers)]
        per_worker = max(1, -(-concurrency // workers))
        boxes: list[dict[str, list[agent.Outcome] | BaseException]] = [{} for _ in chunks]

        def work(chunk: list[agent.Spec], box: dict[str, list[agent.Outcome] | BaseException]) -> None:
            try:
                box["out"] = asyncio.run(
                    agent.probe_all(
                        chunk, concurrency=per_worker, allow_own_netns=self.options.allow_own_netns
                    )
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["err"] = exc

        started = time.perf_counter()
        threads = [
            threading.Thread(target=work, args=(chunk, box), name=f"probe-engine-{i}", daemon=True)
            for i, (chunk, box) in enumerate(zip(chunks, boxes, strict=True))
        ]
        for t in threads:
            t.start()
        bound = max(s.timeout for s in specs) * (len(specs) / max(1, concurrency) + 2) + 30.0
        deadline = time.monotonic() + bound
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            raise PermanentError(f"probe run did not finish within {bound:.0f}s")
        outcomes: list[agent.Outcome | None] = [None] * len(specs)
        for w, box in enumerate(boxes):
            err = box.get("err")
            if isinstance(err, BaseException):
                raise PermanentError(f"probe run failed: {err}") from err
            out = box["out"]
            assert isinstance(out, list)
            for j, outcome in enumerate(out):
                outcomes[w + j * workers] = outcome
        results = [o for o in outcomes if o is not None]
        assert len(results) == len(specs)
        logger.debug(
            "probed {} targets in {:.0f} ms with {} workers, {} failed",
            len(results),
            (time.perf_counter() - started) * 1000,
            workers,
            sum(not r.ok for r in results),
        )
        return results

    def start_continuous(
        self, targets: Sequence[ProbeTarget], *, rate_hz: float, max_duration: float
    ) -> ContinuousRun:
        run = ContinuousRun(
            self.specs(targets), rate_hz=rate_hz, max_duration=max_duration, options=self.options
        )
        run.start()
        return run


class ContinuousRun:
    """A continuous probe running in a background thread (implements ``migrator.ports.ContinuousProbe``).

    Every target is probed ``rate_hz`` times a second until :meth:`stop` or ``max_duration`` (capped at an
    hour). :meth:`snapshot` returns the results so far, sorted by send time.
    """

    def __init__(
        self, specs: Sequence[agent.Spec], *, rate_hz: float, max_duration: float, options: EngineOptions
    ) -> None:
        if rate_hz <= 0 or rate_hz > 1000:
            raise UsageError(f"rate_hz must be in (0, 1000], got {rate_hz}")
        if max_duration <= 0:
            raise UsageError(f"max_duration must be positive, got {max_duration}")
        planned = rate_hz * min(max_duration, CONTINUOUS_MAX_DURATION) * len(specs)
        if planned > CONTINUOUS_MAX_PROBES:
            raise UsageError(
                f"continuous probe of {len(specs)} pairs at {rate_hz:g} Hz for {max_duration:g}s would keep "
                f"{planned:.0f} results (max {CONTINUOUS_MAX_PROBES}): use fewer pairs, a lower rate or a "
                "shorter max_duration"
            )
        self.specs = list(specs)
        self.rate_hz = rate_hz
        self.max_duration = min(max_duration, CONTINUOUS_MAX_DURATION)
        self._options = options
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._results: list[ProbeResult] = []
        self._error: BaseException | None = None
        self._sent = 0
        self.stats: dict[str, int] = {}
        self._thread = threading.Thread(target=self._work, name="probe-continuous", daemon=True)

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    def start(self) -> None:
        longest = max((s.timeout for s in self.specs), default=1.0)
        _raise_nofile(int(2 * len(self.specs) * self.rate_hz * longest) + len(self.specs) + 2048)
        self._thread.start()

    def _sink(self, outcome: agent.Outcome) -> None:
        result = to_result(outcome)
        with self._lock:
            self._results.append(result)

    def _work(self) -> None:
        try:
            self._sent = asyncio.run(
                agent.probe_continuously(
                    self.specs,
                    rate_hz=self.rate_hz,
                    max_duration=self.max_duration,
                    stop=self._stop,
                    sink=self._sink,
                    allow_own_netns=self._options.allow_own_netns,
                    stats=self.stats,
                )
            )
            if self.stats.get("skipped_rounds"):
                logger.info(
                    "continuous probe: {} rounds skipped (the prober fell behind its schedule)",
                    self.stats["skipped_rounds"],
                )
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            logger.error("continuous probe failed: {}", exc)
            self._error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def snapshot(self) -> list[ProbeResult]:
        with self._lock:
            return sorted(self._results, key=lambda r: r.ts)

    def take(self, before: float) -> list[ProbeResult]:
        """Remove and return (sorted by send time) the results sent before ``before``.

        A monitor that accounts results as they become final calls this each round, so a long run keeps
        only the results not accounted yet (``snapshot``/``stop`` then return only those).
        """
        with self._lock:
            taken = [r for r in self._results if r.ts < before]
            if taken:
                self._results = [r for r in self._results if r.ts >= before]
        return sorted(taken, key=lambda r: r.ts)

    def stop(self) -> list[ProbeResult]:
        self._stop.set()
        if self._thread.ident is not None:
            timeout = max((s.timeout for s in self.specs), default=1.0) + 5.0
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise PermanentError("continuous probe did not stop in time")
        if self._error is not None:
            raise PermanentError(f"continuous probe failed: {self._error}") from self._error
        return self.snapshot()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end on its own (``max_duration``); ``True`` when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
