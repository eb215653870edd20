"""Secrets never reach logs, journals, reports or the run folder (issue 8), on the kube target.

``migrator -vv apply -t kube`` against the fake API server (real client, real HTTP on 127.0.0.1) with a
kubeconfig that holds a bearer token and client-key-data, and a plan parameter marked ``secret`` whose
value is written to the nodes as a label. The secret demonstrably reaches the cluster (the label is
there after a run that succeeds, the token is what the server accepts), and a second run fails and rolls
back. Then every file under ``MIGRATOR_HOME``, and stdout/stderr of apply, status, runs and report, are
grepped for the token, the key (raw and base64) and the secret value.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, add_nodes
from tests.clihelp import migrator_env, run_migrator

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "kcTokenX9f2Qv7LmZwq"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIkeyMaterialQ4w8ZtPp\n-----END PRIVATE KEY-----\n"
KEY_B64 = base64.b64encode(KEY.encode()).decode()
SECRET = "S3cretLabelValue42"

PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata: {name: kube-secret}
spec:
  params:
    token: {type: string, default: "", secret: true}
  rollback: on-failure
  stages:
    - name: nodes
      for_each: {nodes: {}, max_unavailable: 2}
      steps:
        - name: label
          action: node.label
          args: {labels: {migrator.io/token: "${{ params.token }}"}}
"""
FAILING = PLAN + "        - {name: boom, action: demo.fail}\n"


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    srv = FakeApiServer(FakeKubeApi())
    srv.api.token = TOKEN
    add_nodes(srv.api)
    with srv:
        yield srv


def test_kubeconfig_tokens_and_secret_vars_never_reach_the_run_folder(
    server: FakeApiServer, tmp_path: Path
) -> None:
    config = server.kubeconfig(context="sec", token=TOKEN)
    config["users"][0]["user"]["client-key-data"] = KEY_B64
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    env = migrator_env(home, drop=("KUBECONFIG", "MIGRATOR_INVENTORY"), NO_COLOR="1")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_migrator("-vv", "--kubeconfig", str(kubeconfig), *args, env=env, timeout=300)

    outputs: list[str] = []
    for name, text, code in (("ok", PLAN, 0), ("failing", FAILING, 1)):
        plan = tmp_path / f"{name}.yaml"
        plan.write_text(text)
        result = cli("apply", str(plan), "-t", "kube:sec", "--yes", "--set", f"token={SECRET}", "-o", "text")
        outputs += [result.stdout, result.stderr]
        assert result.returncode == code, result.stderr[-2000:]
        if name == "ok":  # the secret did reach the target
            node = server.api.get("Node", "w1")
            assert node is not None and node["metadata"]["labels"]["migrator.io/token"] == SECRET
    runs = sorted(p.name for p in (home / "runs").iterdir())
    assert len(runs) == 2
    for run_id in runs:
        for args in (("status", run_id), ("status", run_id, "-o", "json"), ("report", run_id)):
            shown = cli(*args)
            assert shown.returncode == 0, shown.stderr
            outputs += [shown.stdout, shown.stderr]
    listed = cli("runs", "-o", "json")
    outputs += [listed.stdout, listed.stderr]

    files = [p for p in home.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"journal.jsonl", "migrator.log.jsonl", "report.json", "report.md", "report.html"} <= names
    needles = {"kubeconfig token": TOKEN, "client key": "MIIkeyMaterialQ4w8ZtPp", "key base64": KEY_B64[:24]}
    needles["secret var"] = SECRET
    leaks = [
        f"{what} in {path.relative_to(home)}"
        for path in files
        for what, needle in needles.items()
        if needle in path.read_text(errors="replace")
    ]
    leaks += [f"{what} in the output" for what, needle in needles.items() for out in outputs if needle in out]
    assert not leaks, leaks
    journal = next(p for p in files if p.name == "journal.jsonl" and p.parent.name == runs[-1]).read_text()
    assert "***" in journal  # the secret's uses are masked, not dropped
