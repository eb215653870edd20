"""kill -9 of a real ``migrator apply`` of plans/flannel-to-calico.yaml on a 4-node bookinfo lab, then
``resume`` (series A) or ``rollback`` (series B), and a consistent end state (issue 8, crash safety).

CI runs a seeded sample of the full series of ``bench/kill_series.py`` (every step boundary and inside the
long steps, both series): ``$MIGRATOR_KILL_SAMPLE`` cases (default 2: one of each series, ~2-3 min each on
a loaded machine), chosen with ``$MIGRATOR_KILL_SEED`` (default: a new seed every run, printed in every
test id and failure message; set it to reproduce a failure). The series-A case also tears the journal's
last line after the kill: the resume must say so and lose nothing before it.

The lab (``kl<pid>`` on 198.18.40.0/24, its own MIGRATOR_HOME) is built once for the module, rebuilt after
a resume (it is on Calico then) and after any failed case, and always torn down.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.kill_series import (
    PLAN,
    Case,
    KillPoint,
    all_cases,
    home_env,
    journal_problems,
    kill_points,
    lab_down,
    lab_up,
    run_case,
    sample_cases,
    step_keys,
)
from migrator.engine.planio import load_plan_file

UNDERLAY = "198.18.40.0/24"
CAN_BUILD_LAB = os.geteuid() == 0 and shutil.which("ip") is not None and Path("/usr/lib/cni/ptp").exists()
SEED = int(os.environ.get("MIGRATOR_KILL_SEED") or random.SystemRandom().randrange(1_000_000))
SAMPLE = int(os.environ.get("MIGRATOR_KILL_SAMPLE", "2"))
CASES = [dataclasses.replace(c, tear=c.series == "A") for c in sample_cases(SAMPLE, SEED)]


def _id(case: Case) -> str:
    return f"seed{SEED}-" + "".join(ch if ch.isalnum() or ch in "@+.-" else "_" for ch in case.name)


# ------------------------------------------------------------------------------------ the series itself


def test_kill_points_cover_every_step_boundary_of_the_plan() -> None:
    plan = load_plan_file(PLAN).plan
    stages = [s for s in plan.spec.stages if s.enabled is True]
    keys: list[str] = []
    for stage in stages:
        names = [step.name for step in stage.steps]
        if stage.for_each is not None:
            keys += [
                f"{stage.name}/{n}@{node}" for node in ("node2", "node3", "node4", "node1") for n in names
            ]
        else:
            keys += [f"{stage.name}/{n}" for n in names]
    assert keys == step_keys()
    points = kill_points()
    boundaries = {(p.event, p.key) for p in points if not p.delay}
    assert boundaries == {(e, k) for k in keys for e in ("step.start", "step.end")}
    # inside the long steps: every switch, the drains, finalize, and the checks between them
    inside = {p.key for p in points if p.delay}
    assert {f"migrate-nodes/switch-to-calico@{n}" for n in ("node1", "node2", "node3", "node4")} <= inside
    assert {"migrate-nodes/drain@node2", "migrate-nodes/drain@node3", "finalize/finalize"} <= inside
    assert {"baseline", "reachability@migrate-nodes", "cni.nodes@finalize", "final-reachability"} <= inside
    cases = all_cases()
    assert len(cases) == 2 * len(points) and len({c.name for c in cases}) == len(cases)


def test_the_sample_is_seeded_and_covers_both_series() -> None:
    a, b = sample_cases(4, 123), sample_cases(4, 123)
    assert a == b
    assert sorted(c.series for c in a) == ["A", "A", "B", "B"]
    assert sample_cases(4, 124) != a or sample_cases(4, 125) != a
    assert [c.series for c in sample_cases(3, 1)].count("A") == 2


def _journal(path: Path, events: list[dict[str, Any]], tail: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events) + tail)
    return path


def test_journal_check_finds_a_lost_or_changed_event(tmp_path: Path) -> None:
    evs = [{"seq": i, "type": "step.start", "key": f"k{i}"} for i in range(1, 5)]
    end = {"seq": 5, "type": "run.end", "status": "succeeded"}
    assert journal_problems(_journal(tmp_path / "ok.jsonl", [*evs, end]), evs[:3], "succeeded") == []
    changed = [*evs[:2], {**evs[2], "key": "other"}, evs[3], end]
    assert "lost or changed" in " ".join(
        journal_problems(_journal(tmp_path / "c", changed), evs, "succeeded")
    )
    torn = journal_problems(_journal(tmp_path / "t", [*evs, end], b'{"seq": 6, "ty'), evs, "succeeded")
    assert any("still torn" in p for p in torn)
    assert any("rolled-back" in p for p in journal_problems(tmp_path / "ok.jsonl", evs, "rolled-back"))


# ------------------------------------------------------------------------------------------- on the lab


@dataclass
class LabBox:
    name: str
    home: Path
    fresh: bool = True  # on flannel as `lab up` builds it (or as a consistent rollback left it)


@pytest.fixture(scope="module")
def kill_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabBox]:
    if not CAN_BUILD_LAB:
        pytest.skip("needs root, iproute2 and CNI plugins")
    box = LabBox(name=f"kl{os.getpid() % 1000}", home=tmp_path_factory.mktemp("kills-home"))
    with home_env(box.home):
        lab = lab_up(box.name, UNDERLAY)
        try:
            yield box
        finally:
            left = lab_down(lab)
            assert not left, left


@pytest.mark.lab
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_kill_9_then_recover_leaves_a_consistent_lab(case: Case, kill_lab: LabBox) -> None:
    print(f"kill series sample: seed {SEED} (MIGRATOR_KILL_SEED={SEED}), case {case.name}")
    with home_env(kill_lab.home):
        if not kill_lab.fresh:
            from migrator.lab.lab import Lab  # noqa: PLC0415

            lab_down(Lab(kill_lab.name))
            lab_up(kill_lab.name, UNDERLAY)
            kill_lab.fresh = True
        result = run_case(kill_lab.home, kill_lab.name, case)
    kill_lab.fresh = result.ok and result.series == "B"
    if not result.ok:  # a stale lock of a failed case must not fail the next one too
        for lock in (kill_lab.home / "locks").glob("*.lock"):
            lock.unlink()
    print(
        f"killed after {result.killed_after}; kill {result.to_kill_s:.1f}s, recovery {result.recover_s:.1f}s,"
        f" checks {result.check_s:.1f}s; notes: {result.notes}"
    )
    assert result.ok, f"MIGRATOR_KILL_SEED={SEED} {case.name}: {result.problems}"
    assert result.recover_rc == 0


def test_check_points_match_the_checks_the_plan_journals() -> None:
    from bench.kill_series import _matches  # noqa: PLC0415

    wave_check = {"type": "check.start", "check": "reachability", "stage": "migrate-nodes"}
    assert _matches(wave_check, "check.start", "reachability@migrate-nodes")
    assert not _matches({**wave_check, "stage": None}, "check.start", "reachability@migrate-nodes")
    assert _matches({"type": "check.start", "check": "baseline", "stage": None}, "check.start", "baseline")
    assert _matches({"type": "step.end", "key": "a/b@node2"}, "step.end", "a/b@node2")


def test_a_boundary_point_kills_exactly_there() -> None:
    point = KillPoint("step.end", "migrate-nodes/drain@node2")
    assert point.name == "after step.end migrate-nodes/drain@node2"
    assert KillPoint("step.start", "finalize/finalize", delay=2.0).name == "during finalize/finalize +2s"
