"""One CLI convention everywhere (issue 17), checked on the real command tree, not on a list kept by hand:

- every command that prints a result takes ``-o/--output text|json``;
- every command that involves a target takes ``-t/--target``;
- every command that changes a cluster takes ``--yes`` and ``--dry-run``; off a TTY it refuses without
  ``--yes`` (exit 2, naming ``--yes``) and ``--dry-run`` changes nothing;
- no ``--help`` shows a ``<bool>``/``<int>`` placeholder for a flag;
- piped text is never cut: the end of a 300-character value reaches stdout;
- the README's command table names every command and only real ones.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from migrator.cli.main import app
from tests.clihelp import migrator_env, run_migrator

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "plans" / "examples" / "hello.yaml"

# commands that print no result a script would parse: a JSON Schema already (schema), the command's own
# output (lab exec)
NO_OUTPUT_OPTION = {"schema", "lab exec"}
TARGETED = {"apply", "plan", "verify", "faults list", "faults clear", "nodes ping", "doctor"}
CHANGES_A_CLUSTER = {"apply", "resume", "rollback", "faults clear", "lab down"}


def _commands() -> Iterator[tuple[str, Any]]:
    root = typer.main.get_command(app)
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:
        path, cmd = stack.pop()
        names = cmd.list_commands(typer.Context(cmd)) if hasattr(cmd, "list_commands") else []
        if not names or path == "doctor":  # doctor is a callback-only group: a command in its own right
            if path:
                yield path, cmd
            if not names:
                continue
        for name in names:
            sub = cmd.get_command(typer.Context(cmd), name)
            if sub is not None:
                stack.append((f"{path} {name}".strip(), sub))


COMMANDS = dict(_commands())


def _opts(cmd: Any) -> dict[str, Any]:
    return {opt: p for p in cmd.params for opt in getattr(p, "opts", [])}


def test_the_walk_finds_every_command() -> None:
    expected = {"apply", "plan", "validate", "schema", "runs", "status", "resume", "rollback", "verify"}
    expected |= {"lab up", "lab down", "lab status", "lab exec", "lab apply", "lab delete", "lab label"}
    expected |= {"faults list", "faults clear", "nodes ping", "doctor", "report"}
    assert expected <= set(COMMANDS), sorted(expected - set(COMMANDS))


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_output_option(path: str) -> None:
    opts = _opts(COMMANDS[path])
    if path in NO_OUTPUT_OPTION:
        assert "-o" not in opts
        return
    assert "-o" in opts and "--output" in opts, f"migrator {path}: no -o/--output"
    line = next(x for x in _help(path).splitlines() if "--output" in x)
    assert re.search(r"<text\|json\b", line), f"migrator {path}: -o takes text|json first: {line}"


@pytest.mark.parametrize("path", sorted(TARGETED))
def test_target_option(path: str) -> None:
    opts = _opts(COMMANDS[path])
    assert "-t" in opts and "--target" in opts, f"migrator {path}: no -t/--target"


@pytest.mark.parametrize("path", sorted(CHANGES_A_CLUSTER))
def test_changing_commands_take_yes_and_dry_run(path: str) -> None:
    opts = _opts(COMMANDS[path])
    assert "--yes" in opts and "--dry-run" in opts, f"migrator {path}: --yes and --dry-run"


@functools.cache
def _help(path: str) -> str:
    result = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return str(result.output)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_shows_no_placeholder_for_flags(path: str) -> None:
    text = _help(path)
    assert "Usage: " in text
    assert "<bool>" not in text, text


def test_verbose_count_has_no_int_placeholder() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "160", "NO_COLOR": "1"})
    line = next(x for x in result.output.splitlines() if "--verbose" in x)
    assert "<int>" not in line, line


# ------------------------------------------------------------------------------ behaviour (processes)


@pytest.fixture
def env(tmp_path: Path, migrator_home: Path) -> dict[str, str]:
    return migrator_env(migrator_home, MIGRATOR_FAKE_STATE=str(tmp_path / "fake.json"), NO_COLOR="1")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_migrator(*args, env=env, timeout=120)


def _markers(tmp_path: Path) -> set[str]:
    folder = tmp_path / "fake.markers"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_rollback_and_resume_preview_confirm_refuse(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(env, "apply", str(HELLO), "--yes", "-t", "fake", "-o", "json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    before = _markers(tmp_path)
    assert {"greet", "prepare", "bye"} <= before

    refused = cli(env, "rollback", run_id)
    assert refused.returncode == 2 and "--yes" in refused.stderr and "--dry-run" in refused.stderr
    assert _markers(tmp_path) == before

    preview = cli(env, "rollback", run_id, "--dry-run", "-o", "json")
    assert preview.returncode == 0, preview.stderr
    data = json.loads(preview.stdout)
    assert data["schema"] == "migrator.rollback.preview/v1" and data["run_id"] == run_id
    undone_markers = [u for u in data["undo"] if u["action"] == "demo.touch"]
    assert len(undone_markers) == len([m for m in before if m in {"greet", "prepare", "bye"}]) + len(
        [m for m in before if m.startswith("node-")]
    )
    assert data["undo"][0]["step"] == "touch-bye", data["undo"][0]  # newest first
    text = cli(env, "rollback", run_id, "--dry-run")
    assert text.returncode == 0, text.stderr
    assert f"rollback run {run_id}" in text.stdout and "undo demo.touch" in text.stdout
    assert _markers(tmp_path) == before, "a dry run changed the target"

    resumed = cli(env, "resume", run_id)  # nothing to resume, but the refusal for want of --yes comes first
    assert resumed.returncode == 2 and "--yes" in resumed.stderr

    undone = cli(env, "rollback", run_id, "--yes")
    assert undone.returncode == 0, undone.stderr
    assert _markers(tmp_path) == set()


def test_piped_text_is_not_cut(env: dict[str, str]) -> None:
    long = "x" * 300 + "THE-END"
    res = cli(env, "plan", str(HELLO), "-t", "fake", "--set", f"fail_at={long}")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if "THE-END" in line]
    assert lines, "the end of a long line was cut off"
    assert all(len(line) > 300 for line in lines)


def test_validate_json(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HELLO.read_text().replace("rollback: on-failure", "rollback: sometimes"))
    res = cli(env, "validate", str(HELLO), str(bad), "-o", "json")
    assert res.returncode == 2, res.stderr
    data = json.loads(res.stdout)
    assert data["schema"] == "migrator.validate/v1"
    good, wrong = data["plans"]
    assert good == {"file": str(HELLO), "valid": True, "problems": []}
    (problem,) = wrong["problems"]
    assert not wrong["valid"] and problem["field"].endswith("rollback") and problem["line"], problem


def test_nodes_ping_without_inventory_names_the_target(env: dict[str, str]) -> None:
    res = cli(env, "nodes", "ping", "-t", "fake")
    assert res.returncode == 2 and "fake" in res.stderr and "--inventory" in res.stderr, res.stderr


def test_readme_command_table_matches_the_cli() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Commands") : text.index("## Exit codes")]
    rows: dict[str, str] = {}  # command -> the README's synopsis of it
    for row in (r for r in table.splitlines() if r.startswith("| `migrator ")):
        for cell in re.findall(r"`migrator ([^`]+)`", row.split(" | ")[0]):
            words = [w for w in cell.split() if re.fullmatch(r"[a-z][a-z-]*", w)]
            path = next((" ".join(words[:n]) for n in (2, 1) if " ".join(words[:n]) in COMMANDS), None)
            assert path is not None, f"README names `migrator {cell}`, which is no command"
            rows[path] = rows.get(path, "") + " " + cell
    missing = set(COMMANDS) - set(rows)
    assert missing == set(), f"commands missing from README's table: {missing}"
    for path, synopsis in rows.items():  # every option the table shows for a command is real
        for opt in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", synopsis):
            assert opt in _opts(COMMANDS[path]), f"README: `migrator {path}` has no option {opt}"
