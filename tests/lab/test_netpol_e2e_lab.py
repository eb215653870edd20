"""The 48 upstream e2e NetworkPolicy cases (tests/policy/e2e_cases.py) enforced by the lab's policy agents.

On the session's netpol lab (3 calico nodes, pods a, b, c in x, y, z): every step of a case goes through
the lab's own commands (``Lab.apply``/``Lab.delete``/``Lab.label``, i.e. ``lab apply``/``lab delete``/
``lab label``), and at every probe step all 72 ordered pairs (loopback excluded, as upstream) are probed
from inside the source pods on the case's port and protocol; the observed matrix must equal the case's
expected matrix cell by cell. An observed deny is only a refused/reset/timeout, never a prober error.
Cases that probe SCTP need a kernel feature this one lacks (capability ``sctp``): they are reported as
skipped with that reason, checked against the lab's recorded capability.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.lab.lab import Lab
from tests.lab.netpol_probe import run_case
from tests.policy.e2e_cases import CASES, Case

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_e2e_case(netpol_clean: Lab, tmp_path: Path, case: Case) -> None:
    run_case(netpol_clean, tmp_path, case)
