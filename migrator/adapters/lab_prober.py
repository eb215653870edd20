"""``LabProber``: the :class:`migrator.ports.Prober` of the embedded lab.

The lab is a set of network namespaces. The prober opens every probe socket inside the source's
namespace from one process (see :mod:`migrator.probe.agent`), so a full matrix costs sockets, not
processes. It needs to know which namespace each probe source lives in: a mapping or a callable
"source -> netns path" (pod key ``ns/name``, node name, or ``outside``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migrator.errors import UsageError
from migrator.ports import ContinuousProbe, ProbeResult, ProbeTarget
from migrator.probe.engine import DEFAULT_CONCURRENCY, ContinuousRun, EngineOptions, ProbeEngine

EXTRAS_NETNS_KEYS = ("netns", "probe_netns", "netns_by_source", "prober_netns")
EXTRAS_DNS_KEYS = ("dns_server", "cluster_dns", "dns")


class LabProber:
    """Probes from lab namespaces.

    ``netns``: mapping or callable from probe source to a netns path (``/var/run/netns/NAME``). A source it
    does not know is a :class:`~migrator.errors.UsageError`: the lab prober never probes from the host's
    own namespace, and it refuses a "namespace" that is in fact the host's.
    ``dns_server``: the cluster DNS address used to resolve service names for the ``service-dns`` kind
    when a pod namespace has no ``/etc/netns/NAME/resolv.conf``.
    """

    def __init__(
        self,
        netns: Callable[[str], str | None] | Mapping[str, str],
        *,
        dns_server: str | None = None,
        dns_for: Callable[[str], str | None] | None = None,
    ) -> None:
        self.engine = ProbeEngine(
            netns, EngineOptions(dns_server=dns_server, dns_for=dns_for, allow_own_netns=False)
        )

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], *, dns_server: str | None = None) -> LabProber:
        """Build from ``Target.extras`` as the lab adapter fills it (source -> netns mapping).

        The DNS server comes from the extras when they name one, else from ``dns_server`` (for example the
        ClusterIP of kube-dns, :func:`migrator.probe.matrix.find_dns_server`).
        """
        mapping: Any = next((extras[k] for k in EXTRAS_NETNS_KEYS if k in extras), None)
        if mapping is None:
            raise UsageError(
                f"target extras hold no netns mapping (looked for {', '.join(EXTRAS_NETNS_KEYS)})"
            )
        dns: Any = next((extras[k] for k in EXTRAS_DNS_KEYS if k in extras), None)
        if not (isinstance(mapping, Mapping) or callable(mapping)):
            raise UsageError("target extras netns entry is neither a mapping nor a callable")
        return cls(mapping, dns_server=str(dns) if dns is not None else dns_server)

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
