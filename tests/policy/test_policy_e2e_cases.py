"""All 48 cases of the upstream e2e NetworkPolicy suite through the policy model alone.

The 9 pods get fake IPs (10.244.<ns>.<pod>); every step of a case is applied in order (policies parsed
with :func:`parse_network_policy`, so each case's objects also pass our API-server validation), and at
every probe step the model's whole matrix is compared with the case's expected matrix cell by cell,
loopback excluded, as upstream does.
"""

from __future__ import annotations

import pytest

from migrator.policy.model import PolicyModel, Protocol
from tests.policy.e2e_cases import CASES, PODS, Case, Probe
from tests.policy.netpol_world import World
from tests.upstream import upstream_dir


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


UPSTREAM_FILE = upstream_dir() / "k8s-netpol" / "network_policy.go"

# The "Expected results" truth table written out in upstream's comment of the case at line 774
# ("." connected, "X" blocked, *X* marks the cell the case is about; loopback cells ignored).
EXPECTED_774 = """
xa X X X . X X X X X
xb . . . X X . . . .
xc . . . X X . . . .
ya . . . X X . . . .
yb . . . X X . . . .
yc . . . X X . . . .
za . . . X X . . . .
zb . . . X X . . . .
zc . . . X X . . . .
"""


def test_case_774_matches_the_truth_table_written_upstream() -> None:
    case = next(c for c in CASES if c.line == 774)
    rows = [line.split()[1:] for line in EXPECTED_774.strip().splitlines()]
    probe = case.probes[0]
    for i, row in enumerate(rows):
        for j, mark in enumerate(row):
            if i != j:
                assert probe.expected[i][j] is (mark == "."), (PODS[i], PODS[j])


@pytest.mark.skipif(not UPSTREAM_FILE.exists(), reason=f"upstream suite not at {UPSTREAM_FILE}")
def test_every_case_is_an_it_of_the_upstream_file_at_its_line() -> None:
    lines = UPSTREAM_FILE.read_text().splitlines()
    its = [n + 1 for n, line in enumerate(lines) if line.strip().startswith("f.It(")]
    assert sorted(c.line for c in CASES) == its
    for case in CASES:
        assert f'f.It("{case.name}"' in lines[case.line - 1], case.title
        body = "\n".join(lines[case.line : case.line + 120])
        end = body.find("f.It(")
        body = body if end < 0 else body[:end]
        assert body.count("ValidateOrFail(") == len(case.probes), case.title
