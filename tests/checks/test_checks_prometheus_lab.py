"""The ``prometheus`` check on a real lab: a real Prometheus scrapes the lab's real pod servers.

Network safety: the pods' addresses exist only inside the lab, so everything runs **inside the lab**:
Prometheus in node1's network namespace (listening on that namespace's own loopback), the traffic from
node1's namespace, and the check itself (a Python process started in node1's namespace, querying
``http://127.0.0.1:PORT`` there). The host namespace sends nothing to a lab address. The breach is an
iptables rule inside productpage's pod namespace (its calls to its upstreams are rejected: it answers 503).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrator.lab.lab import Lab
from migrator.lab.spec import LabSpec
from migrator.lab.state import LabState

LAB_NAME = "prm"
UNDERLAY = "198.18.41.0/24"
ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
PROM_PORT = 19090

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus binary (apt-get install prometheus)"),
]


@dataclass
class PromLab:
    lab: Lab
    st: LabState
    node_ns: str
    pods: dict[str, tuple[str, str]]  # pod key -> (ip, app)


def http_pods(st: LabState) -> dict[str, tuple[str, str]]:
    out = {}
    for key, pod in st.pods.items():
        if pod.host_network or not pod.ip or 9080 not in pod.ports:
            continue
        out[key] = (pod.ip, pod.labels.get("app", ""))
    return out


def in_ns(ns: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def promlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromLab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    tmp = tmp_path_factory.mktemp("promlab")
    lab = Lab(LAB_NAME)
    proc: subprocess.Popen[bytes] | None = None
    try:
        lab.up(LabSpec(name=LAB_NAME, nodes=2, pods_per_node=1, underlay=UNDERLAY))
        st = lab.require()
        node_ns = st.nodes["node1"].netns
        pods = http_pods(st)
        assert any(app == "productpage" for _ip, app in pods.values()), pods
        groups = "\n".join(
            f"      - {{targets: ['{ip}:9080'], labels: {{pod: '{key}', app: '{app}'}}}}"
            for key, (ip, app) in sorted(pods.items())
        )
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 500ms, evaluation_interval: 500ms, scrape_timeout: 400ms}\n"
            "scrape_configs:\n  - job_name: pods\n    static_configs:\n" + groups + "\n"
        )
        with (tmp / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    *("ip", "netns", "exec", node_ns, PROMETHEUS, f"--config.file={config}"),
                    *(f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{PROM_PORT}"),
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ready = in_ns(
                node_ns, ["curl", "-s", "-m", "1", f"http://127.0.0.1:{PROM_PORT}/-/ready"], timeout=5
            )
            if ready.returncode == 0 and "Ready" in ready.stdout:
                break
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()
            time.sleep(0.3)
        else:
            raise AssertionError("prometheus in node1's namespace not ready")
        yield PromLab(lab, st, node_ns, pods)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        res = lab.down()
        assert not res.leftovers, res.leftovers


def gate(pl: PromLab, check: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run the check inside node1's namespace (its loopback is where Prometheus listens); its result."""
    script = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        from migrator.actions.context import CheckContext
        from migrator.checks.prometheus import PrometheusGate
        from migrator.plan.models import PrometheusCheck
        from migrator.testing.fake import fake_target
        tmp = Path(sys.argv[2])
        target = fake_target(1, state_file=tmp / "fake.json")
        ctx = CheckContext(run_id="r", run_dir=tmp, artifacts_dir=tmp / "a", phase="verify", target=target,
                           deadline=time.monotonic() + 60)
        result = PrometheusGate().run(ctx, PrometheusCheck.model_validate(json.loads(sys.argv[1])))
        print(json.dumps(result.to_json()))
        """
    )
    body = {"type": "prometheus", "url": f"http://127.0.0.1:{PROM_PORT}", **check}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["ip", "netns", "exec", pl.node_ns, sys.executable, "-c", script, json.dumps(body), str(tmp)],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def traffic(pl: PromLab, ip: str, seconds: float) -> subprocess.Popen[bytes]:
    """Requests from node1's namespace to ``ip:9080/`` for ``seconds`` (bounded), ~20 a second."""
    n = int(seconds * 20)
    loop = f"for i in $(seq {n}); do curl -s -o /dev/null -m 2 http://{ip}:9080/; sleep 0.05; done"
    return subprocess.Popen(["ip", "netns", "exec", pl.node_ns, "sh", "-c", loop])


def productpage(pl: PromLab) -> tuple[str, str]:
    key, (ip, _app) = next((k, v) for k, v in sorted(pl.pods.items()) if v[1] == "productpage")
    return key, ip


RATIO = (
    '(sum(rate(migrator_podserver_requests_total{app="productpage",path="/",code=~"5.."}[4s])) or vector(0))'
    ' / sum(rate(migrator_podserver_requests_total{app="productpage",path="/"}[4s]))'
)


def test_every_lab_pod_is_scraped(promlab: PromLab, tmp_path: Path) -> None:
    want = len(promlab.pods)
    result = gate(
        promlab,
        {
            "query": '(count(up{job="pods"} == 1) or vector(0))',
            "op": "==",
            "threshold": want,
            "for": "20s",
            "interval": "1s",
        },
        tmp_path,
    )
    assert result["ok"], result["summary"]  # waits (for:) until every pod has been scraped once
    info = gate(promlab, {"query": "count(migrator_podserver_info)", "op": "==", "threshold": want}, tmp_path)
    assert info["ok"], info["summary"]


def test_the_gate_holds_then_breaks_with_productpage(promlab: PromLab, tmp_path: Path) -> None:
    key, ip = productpage(promlab)
    ns = promlab.st.pods[key].netns
    assert ns
    rule = ["OUTPUT", "-p", "tcp", "--dport", "9080", "-j", "REJECT", "--reject-with", "tcp-reset"]
    load = traffic(promlab, ip, 40)
    try:
        held = gate(promlab, {"query": RATIO, "op": "<", "threshold": 0.1}, tmp_path)
        for _ in range(20):  # no data until the first scrapes of the traffic (bounded)
            if "no data" not in held["summary"]:
                break
            time.sleep(1)
            held = gate(promlab, {"query": RATIO, "op": "<", "threshold": 0.1}, tmp_path)
        assert held["ok"] and held["details"]["value"] == 0, held["summary"]
        # productpage's calls to details and reviews rejected inside its own namespace: it answers 503
        assert in_ns(ns, ["iptables", "-w", "5", "-A", *rule]).returncode == 0
        time.sleep(6)  # the 4 s rate window fills with 503s
        broke = gate(
            promlab, {"query": RATIO, "op": "<", "threshold": 0.1, "for": "2s", "interval": "500ms"}, tmp_path
        )
    finally:
        in_ns(ns, ["iptables", "-w", "5", "-D", *rule])
        load.kill()
        load.wait(timeout=10)
    assert not broke["ok"] and "SLO breached" in broke["summary"], broke["summary"]
    assert broke["details"]["value"] > 0.5 and broke["details"]["breached_for_s"] >= 2.0, broke["details"]
