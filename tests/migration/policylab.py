"""What the live-migration tests with NetworkPolicy share (Canal -> Calico, Weave Net -> Calico): one lab
per module with bookinfo, the e2e netpol model and the policies of plans/policies/continuity.yaml, the CLI
as a subprocess, and the verification that every allowed path flows and every policy decision holds."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import AppKind, CniKind, LabSpec
from tests.clihelp import migrator_env, run_migrator
from tests.migration.test_migration_flannel_calico import ROOT

POLICIES = ROOT / "plans" / "policies" / "continuity.yaml"
NETPOL_NAMESPACES = ("x", "y", "z")


def cli(home: Path, *args: str, timeout: float = 900) -> Any:
    return run_migrator(*args, env=migrator_env(home), timeout=timeout)


def policy_lab(home: Path, tag: str, cni: CniKind, underlay: str) -> Iterator[Lab]:
    """A 4-node lab on ``cni`` with bookinfo, the netpol model and the continuity policies, in ``home``;
    always torn down (the body of a module-scoped fixture)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIGRATOR_HOME", str(home))
        name = f"{tag}{random.randrange(100, 999)}"
        the_lab = Lab(name)
        try:
            apps = (AppKind.BOOKINFO, AppKind.NETPOL)
            the_lab.up(LabSpec(name=name, nodes=4, cni=cni, app=apps, underlay=underlay))
            res = cli(home, "lab", "apply", "--name", name, "-f", str(POLICIES))
            assert res.returncode == 0, res.stdout + res.stderr
            yield the_lab
        finally:
            down = the_lab.down()
            assert not down.leftovers, down.leftovers


def status(home: Path, lab: Lab) -> dict[str, Any]:
    res = cli(home, "lab", "status", "--name", lab.name, "-o", "json", timeout=60)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def verify_all_and_policy(home: Path, lab: Lab) -> None:
    """Every kind of communication that policy allows flows; every policy decision holds, cell by cell."""
    res = cli(home, "verify", "-t", f"lab:{lab.name}", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    ns = [arg for n in NETPOL_NAMESPACES for arg in ("--namespace", n)]
    pol = cli(home, "verify", "-t", f"lab:{lab.name}", "--scope", "policy", *ns, "-o", "json", timeout=300)
    assert pol.returncode == 0, pol.stdout + pol.stderr
    summary = json.loads(pol.stdout)["summary"]
    assert summary["holes"] == 0 and summary["breaks"] == 0, summary
    assert summary["expected_deny"] > 0 and summary["total"] > summary["expected_deny"], summary


def policy_monitor(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The policy monitor's totals among a run's continuous-probe reports."""
    (found,) = [r for r in reports if any(p["kind"] == "policy" for p in r["pairs"])]
    totals: dict[str, Any] = found["policy"]
    return totals


def assert_no_loss_outside_the_wave(reports: list[dict[str, Any]]) -> None:
    """0 lost pod probes outside the wave, >= 99.5% NodePort availability, 0 policy holes and breaks with
    denied and allowed cases both probed."""
    pods = [p for r in reports for p in r["pairs"] if p["kind"] in ("pod-cross-node", "pod-same-node")]
    assert pods and sum(p["sent"] for p in pods) > 0 and sum(p["lost"] for p in pods) == 0
    nodeport = [p for r in reports for p in r["pairs"] if p["kind"] == "nodeport"]
    sent, lost = sum(p["sent"] for p in nodeport), sum(p["lost"] for p in nodeport)
    assert sent > 0 and (sent - lost) / sent >= 0.995, (sent, lost)
    policy = policy_monitor(reports)
    assert policy["holes"] == 0 and policy["breaks"] == 0 and policy["errors"] == 0, policy
    assert policy["expected_deny"] > 0 and policy["expected_allow"] > 0, policy
