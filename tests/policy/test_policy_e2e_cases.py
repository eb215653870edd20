"""All 48 cases of the upstream e2e NetworkPolicy suite through the policy model alone.

The 9 pods get fake IPs (10.244.<ns>.<pod>); every step of a case is applied in order (policies parsed
with :func:`parse_network_policy`, so each case's objects also pass our API-server validation), and at
every probe step the model's whole matrix is compared with the case's expected matrix cell by cell,
loopback excluded, as upstream does.
"""

from __future__ import annotations

import pytest

from migrator.policy.model import PolicyModel, Protocol
from tests.policy.e2e_cases import CASES, Case, Probe
from tests.policy.netpol_world import World


def mismatches(model: PolicyModel, probe: Probe) -> list[str]:
    matrix = model.matrix(probe.port, Protocol(probe.protocol))
    wrong = []
    for src, dst, expected in probe.cells():
        got = matrix.allowed(src, dst)
        decided = model.decide(model.pod(src), model.pod(dst), probe.port, Protocol(probe.protocol))
        if got != expected or (decided.verdict.value == "allow") != expected:
            wrong.append(f"{src} -> {dst}: expected {expected}, matrix {got}, decide {decided}")
    return wrong


def test_there_are_48_cases_with_distinct_lines_and_a_probe_each() -> None:
    assert len(CASES) == 48
    assert len({c.line for c in CASES}) == 48
    assert all(c.probes for c in CASES)
    assert {c.feature for c in CASES} == {None, "SCTP"}
    assert sum(c.feature == "SCTP" for c in CASES) == 3


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-{c.name[:60]}" for c in CASES])
def test_case_through_the_model(case: Case) -> None:
    world = World()
    probes = 0
    for step in case.steps:
        if isinstance(step, Probe):
            probes += 1
            wrong = mismatches(world.model(), step)
            assert not wrong, f"{case.title}, probe {probes} ({step.port}/{step.protocol}):\n" + "\n".join(
                wrong
            )
        else:
            world.step(step)
    assert probes == len(case.probes)


def test_a_wrong_expectation_is_caught() -> None:
    """The comparison can fail: flip one non-loopback cell of a case and the model disagrees."""
    case = CASES[0]
    world = World()
    world.step(case.steps[0])  # type: ignore[arg-type]
    probe = case.probes[0]
    flipped = [list(row) for row in probe.expected]
    flipped[3][0] = not flipped[3][0]
    bad = Probe(probe.port, probe.protocol, tuple(tuple(r) for r in flipped))
    wrong = mismatches(world.model(), bad)
    assert len(wrong) == 1
    assert wrong[0].startswith("y/a -> x/a: expected True, matrix False")
