"""``LabProber``: the :class:`migrator.ports.Prober` of the embedded lab.

The lab is a set of network namespaces. The prober opens every probe socket inside the source's
namespace from one process (see :mod:`migrator.probe.agent`), so a full matrix costs sockets, not
processes. It needs to know which namespace each probe source lives in: a mapping or a callable
"source -> netns path" (pod key ``ns/name``, node name, or ``outside``), and optionally a zero-argument
``refresh`` callable returning a fresh mapping, called at the start of every run (pods move when nodes
are drained or pods restarted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migrator.errors import UsageError
from migrator.ports import ContinuousProbe, ProbeResult, ProbeTarget
from migrator.probe.engine import DEFAULT_CONCURRENCY, ContinuousRun, EngineOptions, ProbeEngine

EXTRAS_NETNS_KEYS = ("netns", "probe_netns", "netns_by_source")
EXTRAS_REFRESH_KEYS = ("netns_map",)
EXTRAS_DNS_KEYS = ("dns_server", "cluster_dns")


class LabProber:
    """Probes from lab namespaces.

    ``netns``: mapping or callable from probe source to a netns path (``/run/netns/NAME``). A source it
    does not know is a :class:`~migrator.errors.UsageError`: the lab prober never probes from the host's
    own namespace, and it refuses a "namespace" that is in fact the host's.
    ``refresh``: when given, called at the start of each run for a fresh source -> netns mapping.
    ``dns_server``: the cluster DNS address used to resolve service names (``service-dns``) for sources
    without an ``/etc/netns/NAME/resolv.conf`` (nodes, ``outside``). ``dns_for`` may give one per source.
    ``retries``: confirmation passes over failed probes of one-off runs; a pair that answers then is ok
    with ``error="flaky: ..."`` (counted as flaky in summaries). Continuous probes never retry.
    """

    def __init__(
        self,
        netns: Callable[[str], str | None] | Mapping[str, str],
        *,
        refresh: Callable[[], Mapping[str, str]] | None = None,
        dns_server: str | None = None,
        dns_for: Callable[[str], str | None] | None = None,
        retries: int = 1,
    ) -> None:
        self._netns = netns
        self._refresh = refresh
        self.options = EngineOptions(
            dns_server=dns_server, dns_for=dns_for, allow_own_netns=False, retries=retries
        )

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], *, dns_server: str | None = None) -> LabProber:
        """Build from ``Target.extras`` as the lab adapter fills them.

        Uses ``extras["netns"]`` (source -> netns path) and, when callable, ``extras["netns_map"]`` (a
        fresh mapping). The DNS server comes from the extras when they name one, else from ``dns_server``
        (for example the ClusterIP of kube-dns, :func:`migrator.probe.matrix.find_dns_server`).
        """
        mapping: Any = next((extras[k] for k in EXTRAS_NETNS_KEYS if k in extras), None)
        refresh: Any = next((extras[k] for k in EXTRAS_REFRESH_KEYS if callable(extras.get(k))), None)
        if mapping is None and refresh is None:
            raise UsageError(
                f"target extras hold no netns mapping (looked for {', '.join(EXTRAS_NETNS_KEYS)})"
            )
        if mapping is not None and not (isinstance(mapping, Mapping) or callable(mapping)):
            raise UsageError("target extras netns entry is neither a mapping nor a callable")
        dns: Any = next((extras[k] for k in EXTRAS_DNS_KEYS if k in extras), None)
        return cls(mapping or {}, refresh=refresh, dns_server=str(dns) if dns is not None else dns_server)

    @property
    def engine(self) -> ProbeEngine:
        """An engine over the current mapping (refreshed when a ``refresh`` callable was given)."""
        netns: Callable[[str], str | None] | Mapping[str, str] = self._netns
        if self._refresh is not None:
            fresh = dict(self._refresh())
            if isinstance(self._netns, Mapping):
                fresh = {**self._netns, **fresh}
            netns = fresh
        return ProbeEngine(netns, self.options)

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
