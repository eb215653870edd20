"""The full kube target through the ENGINE against fake API servers (real client, real HTTP).

- ``open_kube_target``: cluster, executor (inventory or none, with a message), prober, identity;
- the run lock is a Lease, renewed during the run, released at its end; a second apply is refused with
  the holder's run id; ``--force-unlock RUN`` takes it over;
- the run records the cluster identity and refuses to roll back against another cluster;
- the dry run reads a snapshot: one paginated list per resource, not a request per node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.engine import api as engine_api
from migrator.engine.dryrun import dry_run
from migrator.engine.planio import load_plan_file
from migrator.errors import LockHeld, UsageError
from migrator.ports import Target
from migrator.runs.events import RunStatus
from migrator.runs.journal import read_journal
from migrator.targets.kube import KubeCluster, KubeRunLock, open_kube_target
from migrator.targets.kube.lock import RUN_ID_ANNOTATION
from migrator.targets.kube.prober import KubeProber, OutsideMode
from migrator.targets.kube.target import NO_INVENTORY, apiserver_endpoint
from migrator.targets.open import open_target
from migrator.testing.kube_server import FakeApiServer, FakeKubeApi, add_nodes

PLAN = """\
apiVersion: migrator/v1
kind: Plan
metadata:
  name: kube-target-test
spec:
  params:
    pause: {type: duration, default: 10ms}
  rollback: on-failure
  stages:
    - name: wait
      steps:
        - name: pause
          action: demo.sleep
          args: {duration: "${{ params.pause }}"}
          no_undo: true
    - name: nodes
      for_each:
        nodes: {}
        order: workers-first
        max_unavailable: 2
      steps:
        - name: cordon
          action: node.cordon
        - name: label
          action: node.label
          args:
            labels: {migrator.io/test: done}
        - name: uncordon
          action: node.uncordon
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    return path


def _server(workers: int = 3) -> FakeApiServer:
    api = FakeKubeApi()
    add_nodes(api, workers=workers, control_planes=1)
    return FakeApiServer(api)


@pytest.fixture
def two_servers() -> Iterator[tuple[FakeApiServer, FakeApiServer]]:
    with _server() as a, _server() as b:
        yield a, b


def _target(server: FakeApiServer, tmp_path: Path, name: str = "a", **kwargs: Any) -> Target:
    config = server.write_kubeconfig(tmp_path / f"kubeconfig-{name}", context=name)
    return open_kube_target(name, kubeconfig=str(config), lease_duration=3.0, **kwargs)


def _lease(server: FakeApiServer) -> dict[str, Any] | None:
    return server.api.get("Lease", "migrator-run-lock", "kube-system")


def test_open_kube_target_gives_a_full_target(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_servers
    monkeypatch.delenv("MIGRATOR_INVENTORY", raising=False)
    target = _target(a, tmp_path)
    assert isinstance(target.cluster, KubeCluster)
    assert isinstance(target.prober, KubeProber)
    assert target.executor is None and target.no_executor == NO_INVENTORY
    assert "--inventory" in NO_INVENTORY
    identity = target.cluster.identity()
    assert identity.startswith(a.url)
    assert identity != _target(b, tmp_path, "b").cluster.identity()
    assert target.run_lock is not None and isinstance(target.run_lock("r1"), KubeRunLock)
    assert target.apiserver_endpoint == a.url.split("://", 1)[1]  # fault.apiserver's default
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[nodes]\ncp1\nw1\nw2\nw3\n")
    monkeypatch.setenv("MIGRATOR_INVENTORY", str(inventory))
    with_inventory = _target(a, tmp_path)
    assert with_inventory.executor is not None and with_inventory.inventory == inventory
    assert with_inventory.no_executor is None
    prober = with_inventory.prober
    assert isinstance(prober, KubeProber) and prober.outside is OutsideMode.HOST_NETWORK
    monkeypatch.setenv("MIGRATOR_PROBE_OUTSIDE", "off")
    prober = _target(a, tmp_path).prober
    assert isinstance(prober, KubeProber) and prober.outside is OutsideMode.OFF
    monkeypatch.setenv("MIGRATOR_PROBE_OUTSIDE", "lan")
    with pytest.raises(UsageError, match="MIGRATOR_PROBE_OUTSIDE is 'lan': one of host-network, off"):
        _target(a, tmp_path)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://198.18.0.10:6443", "198.18.0.10:6443"),
        ("https://198.18.0.10", "198.18.0.10:443"),
        ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
        ("https://api.example.com:6443", None),  # a DNS name: fault.apiserver falls back to the nodes
        ("https://[fd00::1]:6443", None),
    ],
)
def test_apiserver_endpoint_from_the_server_url(url: str, endpoint: str | None) -> None:
    assert apiserver_endpoint(url) == endpoint


def test_open_target_resolves_kube_with_context(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two_servers
    monkeypatch.setenv("KUBECONFIG", str(a.write_kubeconfig(tmp_path / "kc", context="ctx-a")))
    target = open_target("kube:ctx-a")
    assert target.cluster.identity().startswith(a.url)
    with pytest.raises(UsageError):
        open_target("kube:no-such-context")


def test_apply_holds_a_renewed_lease_and_releases_it(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, plan_file: Path
) -> None:
    a, _ = two_servers
    target = _target(a, tmp_path)
    seen: dict[str, Any] = {}
    stop = threading.Event()

    def watch() -> None:  # samples the Lease while the run sleeps in its first stage
        while not stop.wait(0.05):
            lease = _lease(a)
            if lease is not None:
                renew = lease["spec"]["renewTime"]
                seen.setdefault("renews", set()).add(renew)
                seen["lease"] = lease
                second = _target(a, tmp_path, "second")
                try:
                    engine_api.apply_plan(load_plan_file(plan_file), second, run_id="second-run")
                except LockHeld as exc:
                    seen["refused"] = (str(exc), exc.holder_run_id)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        source = load_plan_file(plan_file, {"pause": "2.5s"})
        result = engine_api.apply_plan(source, target, run_id="first-run")
    finally:
        stop.set()
        watcher.join(5)
    assert result.status is RunStatus.SUCCEEDED, result.message
    lease = seen["lease"]
    assert lease["metadata"]["annotations"][RUN_ID_ANNOTATION] == "first-run"
    assert "run first-run" in lease["spec"]["holderIdentity"]
    assert lease["spec"]["leaseDurationSeconds"] == 3
    assert len(seen["renews"]) >= 2, "the lease is renewed during the run (every duration/3)"
    message, holder = seen["refused"]
    assert holder == "first-run" and "first-run" in message
    assert _lease(a) is None, "the lease is released at the end of the run"
    assert a.api.get("Namespace", "migrator-probe") is None
    labels = [n["metadata"]["labels"].get("migrator.io/test") for n in a.api.find("Node")]
    assert labels == ["done"] * 4


def test_second_apply_refused_then_force_unlock(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, plan_file: Path
) -> None:
    a, _ = two_servers
    other = KubeCluster(kubeconfig=str(a.write_kubeconfig(tmp_path / "kc-o", context="o")), context="o")
    holder = other.lock("holder-run", duration=300)
    holder.acquire()
    target = _target(a, tmp_path)
    with pytest.raises(LockHeld) as info:
        engine_api.apply_plan(load_plan_file(plan_file), target, run_id="mine")
    assert info.value.holder_run_id == "holder-run"
    assert "holder-run" in str(info.value)
    assert all(not n["spec"].get("unschedulable") for n in a.api.find("Node")), "nothing changed"
    result = engine_api.apply_plan(
        load_plan_file(plan_file), target, run_id="mine2", force_unlock="holder-run"
    )
    assert result.status is RunStatus.SUCCEEDED, result.message
    assert _lease(a) is None
    other.close()


def test_rollback_refused_against_another_cluster(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, plan_file: Path
) -> None:
    a, b = two_servers
    result = engine_api.apply_plan(load_plan_file(plan_file), _target(a, tmp_path), run_id="ident-run")
    assert result.status is RunStatus.SUCCEEDED
    events = read_journal(result.run_dir / "journal.jsonl").events
    start = next(e for e in events if e["type"] == "run.start")
    assert start["identity"] == _target(a, tmp_path).cluster.identity()
    with pytest.raises(UsageError, match="is not the cluster run ident-run ran against"):
        engine_api.rollback_run("ident-run", target=_target(b, tmp_path, "b"))
    assert all(n["metadata"]["labels"].get("migrator.io/test") is None for n in b.api.find("Node"))
    assert _lease(b) is None and _lease(a) is None
    back = engine_api.rollback_run("ident-run", target=_target(a, tmp_path))
    assert back.status is RunStatus.ROLLED_BACK, back.message
    assert all(n["metadata"]["labels"].get("migrator.io/test") is None for n in a.api.find("Node"))


def test_dry_run_reads_one_snapshot(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, plan_file: Path
) -> None:
    a, _ = two_servers
    target = _target(a, tmp_path)
    a.api.requests.clear()
    report = dry_run(load_plan_file(plan_file), target)
    waves = report["stages"][1]["waves"]
    assert [[n["node"] for n in w["nodes"]] for w in waves] == [["w1", "w2"], ["w3", "cp1"]]
    node_gets = [p for m, p, _ in a.api.requests if m == "GET" and p.startswith("/api/v1/nodes/")]
    node_lists = [p for m, p, _ in a.api.requests if m == "GET" and p == "/api/v1/nodes"]
    assert node_gets == [] and len(node_lists) == 1
    assert not [r for r in a.api.requests if r[0] != "GET"], "a dry run changes nothing"


def _cli(*args: str, home: Path) -> Any:
    from tests.clihelp import migrator_env, run_migrator  # noqa: PLC0415

    env = migrator_env(home, drop=("KUBECONFIG",), MIGRATOR_INVENTORY="")
    return run_migrator(*args, env=env, timeout=120)


def test_cli_kube_options_plan_and_lock(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, plan_file: Path
) -> None:
    a, _ = two_servers
    config = a.write_kubeconfig(tmp_path / "kc-cli", context="cli")
    home = tmp_path / "cli-home"
    planned = _cli(
        "--kubeconfig",
        str(config),
        "--context",
        "cli",
        "plan",
        str(plan_file),
        "-t",
        "kube",
        "-o",
        "json",
        home=home,
    )
    assert planned.returncode == 0, planned.stderr
    assert '"w1"' in planned.stdout and '"cp1"' in planned.stdout
    holder = KubeCluster(kubeconfig=str(config), context="cli").lock("someone-else", duration=300)
    holder.acquire()
    refused = _cli("--kubeconfig", str(config), "apply", str(plan_file), "-t", "kube:cli", "--yes", home=home)
    assert refused.returncode == 2, refused.stderr
    assert "someone-else" in refused.stderr
    holder.release()
    done = _cli("--kubeconfig", str(config), "apply", str(plan_file), "-t", "kube:cli", "--yes", home=home)
    assert done.returncode == 0, done.stderr
    assert _lease(a) is None


def test_run_stops_when_another_run_takes_the_lease(
    two_servers: tuple[FakeApiServer, FakeApiServer], tmp_path: Path, plan_file: Path
) -> None:
    a, _ = two_servers
    config = a.write_kubeconfig(tmp_path / "kc-lost", context="lost")
    target = open_kube_target("lost", kubeconfig=str(config), lease_duration=0.9)

    def steal() -> None:  # another run takes the Lease over while this one sleeps in its first stage
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _lease(a) is None:
            time.sleep(0.05)

        def mutate(lease: dict[str, Any]) -> None:
            lease["metadata"]["annotations"][RUN_ID_ANNOTATION] = "thief-run"
            lease["spec"]["holderIdentity"] = "elsewhere/1 run thief-run"

        a.api.update("Lease", "migrator-run-lock", "kube-system", mutate)

    thief = threading.Thread(target=steal, daemon=True)
    thief.start()
    result = engine_api.apply_plan(load_plan_file(plan_file, {"pause": "8s"}), target, run_id="victim-run")
    thief.join(5)
    assert result.status is not RunStatus.SUCCEEDED, result.message
    labels = [n["metadata"]["labels"].get("migrator.io/test") for n in a.api.find("Node")]
    assert labels == [None] * 4, "the run stopped before its node stage"
    lease = _lease(a)
    assert lease is not None and lease["metadata"]["annotations"][RUN_ID_ANNOTATION] == "thief-run", (
        "the thief's lease is left alone"
    )
