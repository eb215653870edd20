"""RBAC: docs/rbac.yaml and the doctor come from one table; the doctor lists what is missing."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from migrator.cli.doctor import app
from migrator.targets.kube import KubeCluster
from migrator.targets.kube.doctor import CheckStatus, run_doctor
from migrator.targets.kube.rbac import PERMISSIONS, checks, cluster_role_rules, render_rbac_yaml
from migrator.testing.kube_server import FakeApiServer, LocalKube

DOC = Path(__file__).resolve().parents[2] / "docs" / "rbac.yaml"


def test_rbac_doc_is_generated_from_the_doctor_table() -> None:
    assert DOC.read_text() == render_rbac_yaml(), (
        "docs/rbac.yaml is stale: regenerate it from migrator/targets/kube/rbac.py"
    )
    role = next(d for d in yaml.safe_load_all(DOC.read_text()) if d["kind"] == "ClusterRole")
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    checked = {(p.group, p.resource_ref, verb) for p, verb in checks()}
    assert granted == checked
    assert role["rules"] == cluster_role_rules()
    assert ("", "pods/eviction", "create") in granted and (
        "coordination.k8s.io",
        "leases",
        "update",
    ) in granted


def test_doctor_lists_missing_permissions(local: LocalKube, local_cluster: KubeCluster) -> None:
    assert run_doctor(local_cluster).ok
    local.api.denied = {("create", "", "pods", "eviction"), ("update", "coordination.k8s.io", "leases", "")}
    report = run_doctor(local_cluster)
    assert not report.ok
    assert sorted(c.label for c in report.missing) == [
        "create pods/eviction",
        "update leases.coordination.k8s.io",
    ]
    assert all(c.status is CheckStatus.MISSING for c in report.missing)
    assert len(report.checks) == sum(len(p.verbs) for p in PERMISSIONS)


def test_doctor_cli_exit_codes(fake: FakeApiServer, kubeconfig: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["--target", "kube", "--kubeconfig", str(kubeconfig), "--context", "fake"])
    assert ok.exit_code == 0, ok.output
    assert "permissions granted" in ok.output
    fake.api.denied = {("patch", "", "nodes", "")}
    bad = runner.invoke(app, ["--target", "kube", "--kubeconfig", str(kubeconfig)])
    assert bad.exit_code == 1
    assert "nodes" in bad.output and "missing" in bad.output and "docs/rbac.yaml" in bad.output


def test_doctor_cli_unreachable_cluster(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--kubeconfig", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "cannot load Kubernetes config" in result.output


def test_doctor_compares_the_inventory_with_the_nodes(
    fake: FakeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    from migrator.testing.kube_server import add_nodes  # noqa: PLC0415

    add_nodes(fake.api, workers=2, control_planes=1)
    good = tmp_path / "good.ini"
    good.write_text("[nodes]\ncp1\nw1\nw2\n")
    bad = tmp_path / "bad.ini"
    bad.write_text("[nodes]\ncp1\nw1\nw9\n")
    base = ["--target", "kube", "--kubeconfig", str(kubeconfig), "--context", "fake"]
    ok = CliRunner().invoke(app, [*base, "--inventory", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "maps 1:1" in ok.output
    wrong = CliRunner().invoke(app, [*base, "--inventory", str(bad)])
    assert wrong.exit_code == 1, wrong.output
    assert "w2" in wrong.output and "w9" in wrong.output
    none = CliRunner().invoke(app, base, env={"MIGRATOR_INVENTORY": ""})
    assert none.exit_code == 0 and "no Ansible inventory" in none.output
