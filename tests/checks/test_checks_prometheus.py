"""The ``prometheus`` check (issue 17's SLO gate) against a REAL Prometheus server.

Debian's ``prometheus`` binary runs on 127.0.0.1:<free port> and scrapes a real exporter: the lab's pod
server (``migrator/lab/podserver.py``, its ``/metrics``), also on loopback (network safety: nothing but
loopback). Plans run through the real engine on the in-memory ``fake`` target: preflight, verify and
monitor. Covered: pass, breach (the monitor aborts the stage), ``for:`` (a breach counts only once it lasted
that long; a shorter one does not), server down and bad PromQL (clear failures, never a pass), several
series and no data (clear failures), the bearer token (sent, and never in the run folder, the logs or the
messages, even when the server echoes it).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from migrator.actions.context import CheckContext
from migrator.checks.prometheus import PrometheusGate
from migrator.engine import EngineOptions, RunStatus, apply_plan, dry_run
from migrator.engine.planio import load_plan_file
from migrator.plan.models import PrometheusCheck
from migrator.testing.fake import fake_target
from tests.checks.promserver import (
    PROMETHEUS,
    ROOT,
    Exporter,
    Prometheus,
    Redirector,
    TokenGate,
    Traffic,
    environ,
    exporter,
    free_port,
    prometheus,
)

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs the prometheus binary (apt-get install prometheus)"
)

ERROR_RATIO = (
    '(sum(rate(migrator_podserver_requests_total{code=~"5..",path!="/healthz"}[3s])) or vector(0))'
    ' / sum(rate(migrator_podserver_requests_total{path!="/healthz"}[3s]))'
)
UP_FROM_ENV = {"type": "prometheus", "query": "up", "op": ">", "threshold": 0}
TOKEN = "s3cr3t-Tok3n-4f8e2a91c7"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, Prometheus]]:
    folder = tmp_path_factory.mktemp("prom")
    with exporter() as exp, prometheus(folder, [exp.address]) as prom:
        exp.hit("/local", 5)
        prom.wait_for_samples('migrator_podserver_requests_total{code="200",path="/local"}')
        yield exp, prom


def plan_file(
    tmp: Path,
    *,
    preflight: Sequence[Any] = (),
    monitor: Sequence[Any] = (),
    sleep: str = "1s",
    verify: Sequence[Any] = (),
) -> Path:
    stage: dict[str, Any] = {"name": "work", "steps": [{"action": "demo.sleep", "args": {"duration": sleep}}]}
    if monitor:
        stage["monitor"] = list(monitor)
    data = {
        "apiVersion": "migrator/v1",
        "kind": "Plan",
        "metadata": {"name": "slo-gate"},
        "spec": {"preflight": list(preflight), "stages": [stage], "verify": list(verify)},
    }
    path = tmp / "plan.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def run(path: Path, tmp: Path) -> Any:
    return apply_plan(
        load_plan_file(path),
        fake_target(4, state_file=tmp / "fake.json"),
        options=EngineOptions(monitor_interval=0.5),
    )


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]


def check_ends(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in events(run_dir) if e["type"] == "check.end"]


def gate(url: str, **fields: Any) -> dict[str, Any]:
    return {"type": "prometheus", "url": url, **fields}


def ctx(tmp: Path) -> CheckContext:
    return CheckContext(
        run_id="r",
        run_dir=tmp,
        artifacts_dir=tmp / "a",
        target=fake_target(1, state_file=tmp / "fake.json"),
        phase="verify",
        deadline=time.monotonic() + 60,
    )


# ------------------------------------------------------------------------------------------------ pass


def test_the_exporter_serves_counters_prometheus_scrapes(stack: tuple[Exporter, Prometheus]) -> None:
    exp, prom = stack
    exp.hit("/", 3)
    text = exp.metrics()
    assert "# TYPE migrator_podserver_requests_total counter" in text
    assert 'migrator_podserver_requests_total{code="503",path="/"}' in text
    assert (
        'migrator_podserver_info{pod="exporter",namespace="default",node="",app="exporter",version=""} 1'
        in text
    )
    prom.wait_for_samples('migrator_podserver_requests_total{code="503",path="/"}')
    assert '"health":"up"' in prom.query('up{job="podserver"}') or '"1"' in prom.query('up{job="podserver"}')


def test_preflight_and_verify_pass_on_a_healthy_error_ratio(
    stack: tuple[Exporter, Prometheus], tmp_path: Path
) -> None:
    exp, prom = stack
    with Traffic(exp, rate=40):
        time.sleep(3.5)  # a full rate window of good traffic
        checks = [
            gate(prom.url, name="scraped", query='up{job="podserver"}', op="==", threshold=1),
            gate(prom.url, name="error-ratio", query=ERROR_RATIO, op="<", threshold=0.05),
        ]
        result = run(plan_file(tmp_path, preflight=checks, verify=checks[1:]), tmp_path)
    assert result.status == RunStatus.SUCCEEDED, result.message
    ends = {(e["phase"], e["check"]): e for e in check_ends(result.run_dir)}
    assert ends[("preflight", "scraped")]["ok"] and ends[("preflight", "error-ratio")]["ok"]
    detail = ends[("verify", "error-ratio")]["details"]
    assert detail["value"] == 0 and detail["holds"] is True and detail["url"] == prom.url


# ---------------------------------------------------------------------------------------------- breach


def test_a_breach_during_the_stage_aborts_it_through_the_monitor(
    stack: tuple[Exporter, Prometheus], tmp_path: Path
) -> None:
    exp, prom = stack
    monitor = [gate(prom.url, name="error-budget", query=ERROR_RATIO, op="<", threshold=0.2)]
    with Traffic(exp, rate=40) as traffic:
        time.sleep(3.5)
        started = time.monotonic()

        def breach_soon() -> None:
            time.sleep(2.0)
            traffic.bad_share = 0.5  # half the requests answer 503

        threading.Thread(target=breach_soon, daemon=True).start()
        result = run(plan_file(tmp_path, monitor=monitor, sleep="40s"), tmp_path)
        took = time.monotonic() - started
    assert result.status == RunStatus.FAILED_ROLLED_BACK, result.message
    assert took < 25, took  # aborted, not waited out (40 s)
    (failed,) = [e for e in events(result.run_dir) if e["type"] == "monitor.failed"]
    assert failed["check"] == "error-budget"
    assert "SLO breached" in failed["error"] and "does not hold" in failed["error"], failed["error"]
    assert failed["details"]["value"] >= 0.2 and failed["details"]["holds"] is False
    assert "error-budget" in result.message or "SLO breached" in result.message, result.message


# ------------------------------------------------------------------------------------------------ for:


def test_for_a_breach_counts_only_once_it_lasted_that_long(
    stack: tuple[Exporter, Prometheus], tmp_path: Path
) -> None:
    _exp, prom = stack
    check = PrometheusCheck.model_validate(
        gate(prom.url, query="vector(1)", op=">", threshold=2, **{"for": "3s"}, interval="500ms")
    )
    started = time.monotonic()
    result = PrometheusGate().run(ctx(tmp_path), check)
    took = time.monotonic() - started
    assert not result.ok and 3.0 <= took < 8.0, (took, result.summary)
    assert "for 3." in result.summary and "(for: 3s)" in result.summary, result.summary
    assert result.details["evaluations"] >= 6 and result.details["breached_evaluations"] >= 6
    # the same condition without `for`: at once
    started = time.monotonic()
    now = PrometheusGate().run(ctx(tmp_path), check.model_copy(update={"for_": 0.0}))
    assert not now.ok and time.monotonic() - started < 2.0


def test_for_breaches_shorter_than_for_do_not_abort_the_monitor(
    stack: tuple[Exporter, Prometheus], tmp_path: Path
) -> None:
    """``vector(time() % 2)`` < 1 breaches one second out of every two: with ``for: 3s`` no breach lasts long
    enough (the monitor polls every 0.5 s and sees it start over); without ``for`` the first one aborts."""
    _exp, prom = stack
    flapping = {"query": "vector(time() % 2)", "op": "<", "threshold": 1}
    tolerant = [gate(prom.url, name="tolerant", **flapping, **{"for": "3s"})]
    result = run(plan_file(tmp_path, monitor=tolerant, sleep="6s"), tmp_path)
    assert result.status == RunStatus.SUCCEEDED, result.message
    (end,) = [e for e in events(result.run_dir) if e["type"] == "monitor.end"]
    assert end["rounds"] >= 6 and not end["aborted"], end
    strict = [gate(prom.url, name="strict", **flapping)]
    result = run(plan_file(tmp_path, monitor=strict, sleep="6s"), tmp_path)
    assert result.status == RunStatus.FAILED_ROLLED_BACK, result.message


# -------------------------------------------------------------------------------------- clear failures


def test_server_down_is_a_clear_failure_not_a_pass(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with environ(MIGRATOR_PROMETHEUS_URL=down):  # the URL from the environment
        result = run(plan_file(tmp_path, preflight=[UP_FROM_ENV]), tmp_path)
    assert result.status == RunStatus.FAILED_PREFLIGHT, result.message
    (end,) = check_ends(result.run_dir)
    assert end["ok"] is False
    assert f"cannot reach Prometheus at {down}" in end["summary"] and "refused" in end["summary"], end[
        "summary"
    ]
    assert "(2 tries)" in end["summary"] and end["details"]["reason"] == "unreachable"


def test_server_gone_during_the_stage_aborts_the_monitor(tmp_path: Path) -> None:
    with exporter() as exp, prometheus(tmp_path / "p", [exp.address]) as prom:
        up = {"query": 'up{job="podserver"}', "op": "==", "threshold": 1}
        monitor = [gate(prom.url, name="scraped", attempts=1, no_data="ok", **up)]
        threading.Timer(2.0, prom.proc.kill).start()
        started = time.monotonic()
        result = run(plan_file(tmp_path, monitor=monitor, sleep="30s"), tmp_path)
    assert result.status == RunStatus.FAILED_ROLLED_BACK, result.message
    assert time.monotonic() - started < 20
    (failed,) = [e for e in events(result.run_dir) if e["type"] == "monitor.failed"]
    assert "cannot reach Prometheus" in failed["error"], failed["error"]


def test_no_url_at_all_is_a_clear_failure(tmp_path: Path) -> None:
    with environ(MIGRATOR_PROMETHEUS_URL=None):
        result = run(plan_file(tmp_path, preflight=[UP_FROM_ENV]), tmp_path)
    assert result.status == RunStatus.FAILED_PREFLIGHT
    assert (
        "no Prometheus URL: set url in the check or $MIGRATOR_PROMETHEUS_URL"
        in check_ends(result.run_dir)[0]["summary"]
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sum(rate(migrator_podserver_requests_total[1m]", "PromQL error from Prometheus at"),
        ("migrator_podserver_requests_total[1m]", "is a matrix, not an instant vector or a scalar"),
        ("migrator_podserver_requests_total", "series, the check needs one value: aggregate them"),
        ("no_such_metric_anywhere", "no data: no_such_metric_anywhere gave no series"),
        ("vector(0) / vector(0)", "gave NaN"),
    ],
    ids=["bad-promql", "range-vector", "several-series", "no-series", "nan"],
)
def test_queries_that_give_no_one_value_fail_clearly(
    stack: tuple[Exporter, Prometheus], tmp_path: Path, query: str, expected: str
) -> None:
    exp, prom = stack
    exp.hit("/", 1)
    exp.hit("/local", 1)
    prom.wait_for_samples('migrator_podserver_requests_total{path="/"}')
    result = run(plan_file(tmp_path, preflight=[gate(prom.url, query=query, op="<", threshold=1)]), tmp_path)
    assert result.status == RunStatus.FAILED_PREFLIGHT, result.message
    (end,) = check_ends(result.run_dir)
    assert end["ok"] is False and expected in end["summary"], end["summary"]


def test_no_data_ok_holds_the_condition(stack: tuple[Exporter, Prometheus], tmp_path: Path) -> None:
    _exp, prom = stack
    check = PrometheusCheck.model_validate(
        gate(prom.url, query="no_such_metric", op="<", threshold=1, no_data="ok")
    )
    result = PrometheusGate().run(ctx(tmp_path), check)
    assert result.ok and "no data" in result.summary, result.summary


# ------------------------------------------------------------------------------------------------ token


def test_the_token_is_sent_and_never_written(stack: tuple[Exporter, Prometheus], tmp_path: Path) -> None:
    _exp, prom = stack
    logs = io.StringIO()
    sink = logger.add(logs, level="DEBUG")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    try:
        with TokenGate(prom.url, TOKEN) as front, environ(PROM_TOKEN=TOKEN, WRONG_TOKEN="not-" + TOKEN):
            good = [
                gate(front.url, name="env", query="vector(1)", op="==", threshold=1, token_env="PROM_TOKEN"),
                gate(
                    front.url,
                    name="file",
                    query="vector(1)",
                    op="==",
                    threshold=1,
                    token_file=str(token_file),
                ),
            ]
            (tmp_path / "ok").mkdir()
            ok = run(plan_file(tmp_path / "ok", preflight=good), tmp_path)
            assert ok.status == RunStatus.SUCCEEDED, ok.message
            assert front.seen[:2] == [f"Bearer {TOKEN}"] * 2
            (tmp_path / "bad").mkdir()
            one = {"query": "vector(1)", "op": "==", "threshold": 1}
            bad = [
                gate(front.url, name="wrong", token_env="WRONG_TOKEN", **one),
                gate(front.url, name="none", **one),
            ]
            failed = run(plan_file(tmp_path / "bad", preflight=bad), tmp_path)
            assert front.seen[-2:] == [f"Bearer not-{TOKEN}", None]
    finally:
        logger.remove(sink)
    assert failed.status == RunStatus.FAILED_PREFLIGHT
    summaries = {e["check"]: e["summary"] for e in check_ends(failed.run_dir)}
    assert (
        "HTTP 401" in summaries["wrong"]
        and "bearer token is missing, wrong or not allowed" in summaries["wrong"]
    )
    assert "HTTP 401" in summaries["none"]
    for run_dir in (ok.run_dir, failed.run_dir):
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert files
        leaked = [str(p) for p in files if TOKEN in p.read_text(errors="replace")]
        assert leaked == []
    assert TOKEN not in logs.getvalue()


def test_the_token_is_masked_when_the_server_echoes_it(
    stack: tuple[Exporter, Prometheus], tmp_path: Path
) -> None:
    """A proxy whose error body quotes the header it got: the message quotes it masked."""
    _exp, prom = stack
    with TokenGate(prom.url, "another-token", refuse_with=502) as front, environ(PROM_TOKEN=TOKEN):
        check = PrometheusCheck.model_validate(
            gate(front.url, query="vector(1)", op="==", threshold=1, token_env="PROM_TOKEN")
        )
        result = PrometheusGate().run(ctx(tmp_path), check)
    assert front.seen == [f"Bearer {TOKEN}"] * 2  # 502 is worth a second try
    assert not result.ok and "HTTP 502" in result.summary, result.summary
    assert "bad credentials: Bearer ***" in result.summary and TOKEN not in json.dumps(
        [result.summary, result.details]
    )


def test_a_missing_token_source_is_named_not_leaked(tmp_path: Path) -> None:
    with environ(PROM_TOKEN=None):
        check = PrometheusCheck.model_validate(
            gate("http://127.0.0.1:9", query="up", op=">", threshold=0, token_env="PROM_TOKEN")
        )
        result = PrometheusGate().run(ctx(tmp_path), check)
    assert (
        not result.ok and "token_env: environment variable PROM_TOKEN is not set or empty" in result.summary
    )
    check = PrometheusCheck.model_validate(
        gate("http://127.0.0.1:9", query="up", op=">", threshold=0, token_file=str(tmp_path / "nope"))
    )
    result = PrometheusGate().run(ctx(tmp_path), check)
    assert not result.ok and f"token_file: {tmp_path / 'nope'}: cannot read it" in result.summary


# -------------------------------------------------------------------------------------- plan and dry run


def test_the_dry_run_previews_the_gate_without_querying(tmp_path: Path) -> None:
    path = plan_file(tmp_path, preflight=[{**UP_FROM_ENV, "token_env": "PROM_TOKEN"}])
    with environ(MIGRATOR_PROMETHEUS_URL=None, PROM_TOKEN=None):
        report = dry_run(load_plan_file(path), fake_target(4, state_file=tmp_path / "fake.json"))
    text = json.dumps(report)
    assert "prometheus at $MIGRATOR_PROMETHEUS_URL: up > 0, bearer token from $PROM_TOKEN" in text, text
    assert "would fail: no Prometheus URL" in text and "would fail: token_env" in text


def test_the_shipped_game_day_plan_queries_a_real_error_ratio(tmp_path: Path) -> None:
    """``plans/gameday-slo-gate.yaml``'s SLO gate, as loaded (its default query over the pod servers'
    counters), on a fresh Prometheus: holds on good traffic (before any 5xx series exists: ``or vector(0)``),
    breaks when half the requests answer 503."""
    with exporter() as exp, prometheus(tmp_path / "p", [exp.address]) as prom:
        source = load_plan_file(ROOT / "plans" / "gameday-slo-gate.yaml", {"prometheus_url": prom.url})
        (check,) = [c for c in source.plan.spec.preflight if isinstance(c, PrometheusCheck)]
        (watch,) = [c for c in source.plan.spec.stages[0].monitor if isinstance(c, PrometheusCheck)]
        assert watch.for_ == 10.0 and watch.query == check.query and check.url == prom.url
        with Traffic(exp, rate=40) as traffic:
            prom.wait_for_samples(check.query)  # the first scrapes (a few seconds after ready)
            good = PrometheusGate().run(ctx(tmp_path), check)
            assert good.ok and good.details["value"] == 0, good.summary
            traffic.bad_share = 0.5
            time.sleep(3.0)
            bad = PrometheusGate().run(ctx(tmp_path), check)
    assert not bad.ok and bad.details["value"] >= 0.05 and "SLO breached" in bad.summary, bad.summary


def test_a_redirect_is_refused_and_the_token_not_forwarded(tmp_path: Path) -> None:
    """A server answering 302 to another address: the check fails naming the redirect; the other address
    gets no request (so never the token)."""
    with (
        TokenGate("http://127.0.0.1:9", TOKEN) as elsewhere,
        Redirector(f"{elsewhere.url}/api/v1/query") as front,
        environ(PROM_TOKEN=TOKEN),
    ):
        check = PrometheusCheck.model_validate(
            gate(front.url, query="up", op=">", threshold=0, token_env="PROM_TOKEN")
        )
        result = PrometheusGate().run(ctx(tmp_path), check)
    assert not result.ok and "answered HTTP 302, a redirect to" in result.summary, result.summary
    assert "refused" in result.summary and elsewhere.seen == []
