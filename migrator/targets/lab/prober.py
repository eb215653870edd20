"""``LabProber``: the :class:`migrator.ports.Prober` of the embedded lab.

The lab is a set of network namespaces. The prober opens every probe socket inside the source's
namespace from one process (see :mod:`migrator.probe.agent`), so a full matrix costs sockets, not
processes. It needs to know which namespace each probe source lives in: a mapping "source -> netns path"
(pod key ``ns/name``, node name, or ``outside``), and optionally a zero-argument ``refresh`` callable
returning a fresh mapping, called at the start of every run (pods move when nodes are drained or pods
restarted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from migrator.ports import ContinuousProbe, ProbeResult, ProbeTarget
from migrator.probe.engine import DEFAULT_CONCURRENCY, ContinuousRun, EngineOptions, ProbeEngine


class LabProber:
    """Probes from lab namespaces.

    ``netns``: mapping from probe source to a netns path (``/run/netns/NAME``). A source it does not know
    is a :class:`~migrator.errors.UsageError`: the lab prober never probes from the host's own namespace,
    and it refuses a "namespace" that is in fact the host's.
    ``refresh``: when given, called at the start of each run for a fresh source -> netns mapping.
    ``dns_server``: the cluster DNS address used to resolve service names (``service-dns``) for sources
    without an ``/etc/netns/NAME/resolv.conf`` (nodes, ``outside``).
    ``retries``: confirmation passes over failed probes of one-off runs; a pair that answers then is ok
    with ``error="flaky: ..."`` (counted as flaky in summaries). Continuous probes never retry.
    """

    def __init__(
        self,
        netns: Mapping[str, str],
        *,
        refresh: Callable[[], Mapping[str, str]] | None = None,
        dns_server: str | None = None,
        retries: int = 1,
    ) -> None:
        self._netns = netns
        self._refresh = refresh
        self.options = EngineOptions(dns_server=dns_server, allow_own_netns=False, retries=retries)

    def sources(self) -> dict[str, str]:
        """The current probe source -> netns path mapping (fresh when a ``refresh`` callable was given)."""
        if self._refresh is not None:
            return {**self._netns, **self._refresh()}
        return dict(self._netns)

    @property
    def engine(self) -> ProbeEngine:
        """An engine over the current mapping (refreshed when a ``refresh`` callable was given)."""
        return ProbeEngine(self.sources() if self._refresh is not None else self._netns, self.options)

    def probe(
        self, targets: Sequence[ProbeTarget], *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> list[ProbeResult]:
        return self.engine.probe(targets, concurrency=concurrency)

    def start_continuous(
        self, targets: Sequence[ProbeTarget], *, rate_hz: float, max_duration: float
    ) -> ContinuousProbe:
        return self.start_continuous_run(targets, rate_hz=rate_hz, max_duration=max_duration)

    def start_continuous_run(
        self, targets: Sequence[ProbeTarget], *, rate_hz: float, max_duration: float
    ) -> ContinuousRun:
        """Like :meth:`start_continuous`, typed as the concrete run (``period_s``, ``wait``, ``running``)."""
        return self.engine.start_continuous(targets, rate_hz=rate_hz, max_duration=max_duration)
