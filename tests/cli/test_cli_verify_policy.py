"""``migrator verify --scope policy`` on the fake target: json shape, text matrix, exit codes."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from migrator.cli.main import app
from migrator.cli.verify import OutputFormat, render_policy_matrix, verify_policy
from migrator.ports import Target
from migrator.probe.policy import PolicyOptions
from migrator.testing.fake import FakeCluster, FakeProber, TableModel, deny_into_y, y_denied

PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


def run(prober_kw: dict[str, Any], output: OutputFormat, **kw: Any) -> tuple[int, str]:
    cluster = FakeCluster.netpol()
    target = Target("fake", cluster, prober=FakeProber(cluster, **prober_kw))
    buf = io.StringIO()
    console = Console(file=buf, width=220, color_system=None)
    code = verify_policy(target, output=output, console=console, model_factory=TableModel(deny_into_y), **kw)
    return code, buf.getvalue()


def hole_at_x_a_y_b(key: tuple[str, str, int, str]) -> bool:
    return y_denied(key) and key[:2] != ("x/a", "y/b")


def test_json_shape_when_enforced_as_expected() -> None:
    code, out = run({"deny": y_denied}, OutputFormat.JSON)
    assert code == 0
    data = json.loads(out)
    assert data["kind"] == "policy" and data["passed"] is True
    assert data["summary"] == {
        "total": 288,
        "ok": 288,
        "holes": 0,
        "breaks": 0,
        "errors": 0,
        "mismatches": 0,
        "unsupported": 0,
        "expected_allow": 216,
        "expected_deny": 72,
        "passed": True,
        "by_port": {
            f"{p}/{proto}": {"ok": 72, "hole": 0, "break": 0, "error": 0}
            for p in (80, 81)
            for proto in ("tcp", "udp")
        },
    }
    first = data["results"][0]
    assert set(first) >= {
        "kind",
        "source",
        "dest",
        "port",
        "protocol",
        "expected",
        "observed",
        "ok",
        "policies",
    }
    assert first["kind"] == "policy" and first["source"] == "x/a" and first["dest"] == "x/b"
    assert {r["protocol"] for r in data["results"]} == {"tcp", "udp"}
    assert {r["observed"] for r in data["results"]} == {"allow", "deny"}
    denied = [r for r in data["results"] if r["expected"] == "deny"]
    assert len(denied) == 72 and all(r["policies"] == ["y/deny-other-ns"] for r in denied)
    assert all("/" in r["source"] and "/" in r["dest"] and ":" not in r["dest"] for r in data["results"])
    assert [(m["port"], m["protocol"]) for m in data["matrices"]] == [
        (80, "tcp"),
        (80, "udp"),
        (81, "tcp"),
        (81, "udp"),
    ]
    assert data["matrices"][0]["pods"] == PODS


def test_json_counts_holes_breaks_and_errors_and_exits_1() -> None:
    errors = {("z/a", "z/b", 80, "udp"): "os-error: Too many open files"}
    code, out = run(
        {"deny": hole_at_x_a_y_b, "errors": errors, "blocked": {("y/a", "y/c", 81, "tcp")}}, OutputFormat.JSON
    )
    assert code == 1
    data = json.loads(out)
    s = data["summary"]
    assert (s["holes"], s["breaks"], s["errors"], s["passed"]) == (4, 1, 1, False)
    holes = [r for r in data["results"] if r["status"] == "hole"]
    assert {(r["source"], r["dest"], r["expected"], r["observed"], r["ok"]) for r in holes} == {
        ("x/a", "y/b", "deny", "allow", False)
    }
    err = next(r for r in data["results"] if r["status"] == "error")
    assert (err["observed"], err["ok"], err["error"]) == ("error", False, "os-error: Too many open files")


@pytest.mark.parametrize(
    ("prober_kw", "code"),
    [
        ({"deny": y_denied}, 0),
        ({"deny": hole_at_x_a_y_b}, 1),
        ({"deny": y_denied, "blocked": {("x/a", "x/b", 80, "tcp")}}, 1),
        ({"deny": y_denied, "errors": {("x/a", "y/a", 80, "tcp"): "netns: gone"}}, 1),
    ],
    ids=["as-expected", "hole", "break", "prober-error"],
)
def test_exit_codes(prober_kw: dict[str, Any], code: int) -> None:
    assert run(prober_kw, OutputFormat.TEXT)[0] == code
    assert run(prober_kw, OutputFormat.JSON)[0] == code


def test_text_matrix_and_mismatch_lines() -> None:
    code, out = run(
        {
            "deny": hole_at_x_a_y_b,
            "blocked": {("z/c", "x/a", 81, "udp")},
            "errors": {("x/b", "y/c", 80, "tcp"): "os-error: x"},
        },
        OutputFormat.TEXT,
    )
    assert code == 1
    lines = out.splitlines()
    assert "FAILED" in lines[0] and "4 holes, 1 breaks, 1 prober errors" in lines[0]
    title = lines.index("Policy 80/tcp (rows: source pod, columns: destination pod)")
    assert lines[title + 1].split() == PODS
    table = {line.split()[0]: line.split()[1:] for line in lines[title + 2 : title + 11]}
    assert list(table) == PODS
    assert table["x/a"] == ["-", ".", ".", "X", "H", "X", ".", ".", "."]
    assert table["x/b"] == [".", "-", ".", "X", "X", "?", ".", ".", "."]
    assert table["y/a"] == [".", ".", ".", "-", ".", ".", ".", ".", "."]
    udp81 = lines.index("Policy 81/udp (rows: source pod, columns: destination pod)")
    assert lines[udp81 + 2 + 8].split() == ["z/c", "B", ".", ".", "X", "X", "X", ".", ".", "-"]
    assert "  hole: x/a -> y/b 80/tcp: expected deny, observed allow (deciding: y/deny-other-ns)" in lines
    assert any(
        line.startswith("  break: z/c -> x/a 81/udp: expected allow, observed deny (refused")
        for line in lines
    )
    assert any(
        line.startswith("  error: x/b -> y/c 80/tcp: expected deny, prober error os-error: x")
        for line in lines
    )


def test_namespace_filter_reaches_the_matrix() -> None:
    code, out = run({"deny": y_denied}, OutputFormat.JSON, options=PolicyOptions(namespaces=frozenset({"x"})))
    data = json.loads(out)
    assert code == 0 and data["summary"]["total"] == 6 * 4 and data["options"]["namespaces"] == ["x"]


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--scope", "policy", "--baseline", "b.json"],
        ["verify", "--scope", "policy", "--per-source", "3"],
        ["verify", "--scope", "all", "--namespace", "x"],
    ],
)
def test_options_that_do_not_apply_are_usage_errors(args: list[str]) -> None:
    res = CliRunner().invoke(app, [*args, "--target", "fake"])
    assert res.exit_code == 2, res.output
    assert "policy" in res.output


def test_the_command_line_runs_the_policy_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    """``migrator verify --scope policy -n x -n y -o json`` through typer, on a fake target."""
    from migrator.cli import verify as verify_mod  # noqa: PLC0415
    from migrator.probe import policy as policy_mod  # noqa: PLC0415

    cluster = FakeCluster.netpol()
    seen: list[str] = []

    def fake_open(spec: str) -> Target:
        seen.append(spec)
        return Target("fake", cluster, prober=FakeProber(cluster, deny=hole_at_x_a_y_b))

    monkeypatch.setattr(verify_mod, "open_target", fake_open)
    monkeypatch.setattr(policy_mod, "default_model", TableModel(deny_into_y))
    res = CliRunner().invoke(
        app, ["verify", "--target", "lab:np", "--scope", "policy", "-n", "x", "-n", "y", "-o", "json"]
    )
    assert res.exit_code == 1, res.output
    assert seen == ["lab:np"]
    data = json.loads(res.stdout)
    assert data["options"] == {"scope": "policy", "namespaces": ["x", "y"], "timeout": 0.5}
    assert data["summary"]["total"] == 6 * 5 * 4 and data["summary"]["holes"] == 4
    res = CliRunner().invoke(
        app, ["verify", "--target", "lab:np", "--scope", "policy", "-n", "y", "--timeout", "0.2"]
    )
    assert res.exit_code == 0, res.output
    assert "Policy 81/udp (rows: source pod, columns: destination pod)" in res.stdout


def test_long_pod_names_number_the_columns_and_keep_lines_short() -> None:
    pods = ["kube-system/coredns-ggw2m67gqs-qw8lx", "x/a", "x/b"]
    matrix = {"port": 53, "protocol": "tcp", "pods": pods, "rows": ["-X.", "X-.", "..-"]}
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(render_policy_matrix(matrix))
    lines = buf.getvalue().splitlines()
    assert lines[1].split() == ["1", "2", "3"]
    assert lines[2].split() == ["1", pods[0], "-", "X", "."]
    assert lines[4].split() == ["3", "x/b", ".", ".", "-"]
    assert max(len(line) for line in lines[1:]) <= len(pods[0]) + 4 + 3 * 3  # row label + 3 cells
    short = {"port": 80, "protocol": "tcp", "pods": ["x/a", "x/b"], "rows": ["-X", ".-"]}
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(render_policy_matrix(short))
    assert buf.getvalue().splitlines()[1].split() == ["x/a", "x/b"]  # short names head their columns
