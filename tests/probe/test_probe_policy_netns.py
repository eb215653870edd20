"""Policy verification with real packets: the lab prober over a netpol model of namespaces this module
creates and removes (``np-probe-<PID>-*``, 198.18.41.0/24; see np_fabric.py), enforced with iptables."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from np_fabric import NetpolFabric

from migrator.ports import Target
from migrator.probe.policy import Observed, PolicyOptions, PolicyStatus, run_policy_verify
from migrator.targets.lab.prober import LabProber
from migrator.testing.fake import TableModel, deny_into_y, y_denied

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fabric() -> Iterator[NetpolFabric]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "iptables-restore", "sysctl")):
        pytest.skip("needs root, iproute2, iptables and sysctl")
    fab = NetpolFabric()
    try:
        fab.up()
        yield fab
    finally:
        fab.down()


def verify(fab: NetpolFabric, timeout: float = 0.5):  # type: ignore[no-untyped-def]
    target = Target("np-fabric", fab.cluster, prober=LabProber(fab.netns, retries=0))
    return run_policy_verify(target, PolicyOptions(timeout=timeout), model_factory=TableModel(deny_into_y))


def test_enforced_as_expected_every_probe_matches(fabric: NetpolFabric) -> None:
    assert fabric.enforce(y_denied) == 72
    report = verify(fabric)
    assert report.passed, report.describe()
    assert report.summary.total == 288 and report.summary.expected_deny == 72
    denied = [r for r in report.results if r.observed is Observed.DENY]
    assert len(denied) == 72 and all((r.error or "").startswith("refused") for r in denied)
    assert report.duration_s < 5  # REJECT answers at once (a loose bound; the figure is in bench/)


def test_a_missing_rule_is_a_hole_and_an_extra_one_a_break(fabric: NetpolFabric) -> None:
    def actual(key: tuple[str, str, int, str]) -> bool:
        if key == ("z/b", "y/c", 81, "udp"):
            return False  # the enforcer forgot one rule
        if key == ("x/a", "z/a", 80, "tcp"):
            return True  # and denies an allowed one
        return y_denied(key)

    fabric.enforce(actual)
    report = verify(fabric)
    bad = {
        (r.case.source, r.case.dest, r.case.port, r.case.protocol.value, r.status) for r in report.mismatches
    }
    assert bad == {
        ("z/b", "y/c", 81, "UDP", PolicyStatus.HOLE),
        ("x/a", "z/a", 80, "TCP", PolicyStatus.BREAK),
    }
    assert not report.passed


def test_drop_is_an_observed_deny_by_timeout(fabric: NetpolFabric) -> None:
    fabric.enforce(y_denied, drop={("x/b", "y/b", 80, "udp"), ("x/b", "y/b", 81, "tcp")})
    report = verify(fabric, timeout=0.3)
    assert report.passed, report.describe()
    dropped = [r for r in report.results if (r.case.source, r.case.dest) == ("x/b", "y/b")]
    errors = {(r.case.port, r.case.protocol.value): r.error for r in dropped}
    assert errors[(80, "UDP")] == "timeout: after 0.3s" and errors[(81, "TCP")] == "timeout: after 0.3s"


def test_a_pod_without_a_namespace_is_an_error_never_a_deny(fabric: NetpolFabric) -> None:
    fabric.enforce(y_denied)
    netns = dict(fabric.netns)
    del netns["z/c"]
    target = Target("np-fabric", fabric.cluster, prober=LabProber(netns, retries=0))
    report = run_policy_verify(target, PolicyOptions(timeout=0.5), model_factory=TableModel(deny_into_y))
    from_z_c = [r for r in report.results if r.case.source == "z/c"]
    assert len(from_z_c) == 32 and all(r.status is PolicyStatus.ERROR for r in from_z_c)
    assert report.summary.errors == 32 and report.summary.holes == report.summary.breaks == 0


def test_zz_nothing_is_left_behind_by_a_fabric() -> None:
    fab = NetpolFabric(prefix=f"np-probe-{os.getpid()}-t")
    try:
        fab.up()
    finally:
        fab.down()
    names = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    assert fab.prefix not in names
