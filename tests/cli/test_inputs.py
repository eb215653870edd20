"""Input checks before a run (migrator.cli.inputs): SSH keys named by an inventory, one-line messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.cli.inputs import (
    check_inventory_file,
    check_inventory_keys,
    check_target_inputs,
    inventory_keys,
    key_problem,
    one_line,
)
from migrator.errors import UsageError
from migrator.ports import Target
from migrator.targets.ansible.events import result_message, ssh_hint
from migrator.testing.fake import FakeCluster


def _key(path: Path, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("key")
    path.chmod(mode)
    return path


def test_keys_are_found_in_ini_yaml_and_group_vars(tmp_path: Path) -> None:
    a = _key(tmp_path / "keys" / "a", 0o600)
    b = _key(tmp_path / "keys" / "b", 0o600)
    c = _key(tmp_path / "keys" / "c", 0o600)
    ini = tmp_path / "inv.ini"
    ini.write_text(
        f"[workers]\nnode1 ansible_host=10.0.0.1 ansible_ssh_private_key_file={a}\n"
        f"node2 ansible_host=10.0.0.2 ansible_private_key_file='{b}'\n"
        "node3 ansible_host=10.0.0.3 ansible_ssh_private_key_file={{ lookup('env', 'KEY') }}\n"
        "# node9 ansible_ssh_private_key_file=/commented/out\n"
    )
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(f"ansible_ssh_private_key_file: {c}\n")
    found = inventory_keys(ini)
    assert found == {a: ["node1"], b: ["node2"], c: ["all.yml"]}
    yml = tmp_path / "inv.yml"
    yml.write_text(
        "all:\n  hosts:\n    node1: {ansible_host: 10.0.0.1, ansible_ssh_private_key_file: keys/a}\n"
    )
    assert inventory_keys(yml)[a] == ["node1"]  # relative to the inventory's folder
    check_inventory_keys(ini)


def test_key_problems_name_the_key_and_the_fix(tmp_path: Path) -> None:
    open_key = _key(tmp_path / "id_open", 0o644)
    problem = key_problem(open_key, ["node1", "node2"])
    assert problem is not None
    assert str(open_key) in problem and "0644" in problem and f"chmod 600 {open_key}" in problem
    assert "node1, node2" in problem
    assert "does not exist" in (key_problem(tmp_path / "nope") or "")
    assert "not a regular file" in (key_problem(tmp_path) or "")
    assert key_problem(_key(tmp_path / "id_ok", 0o600)) is None
    assert key_problem(_key(tmp_path / "id_ro", 0o400)) is None
    inventory = tmp_path / "inv.ini"
    inventory.write_text(f"node1 ansible_ssh_private_key_file={open_key}\n")
    with pytest.raises(UsageError, match="chmod 600"):
        check_inventory_keys(inventory)
    with pytest.raises(UsageError, match="chmod 600"):
        check_target_inputs(Target(name="t", cluster=FakeCluster.with_nodes(1), inventory=inventory))
    check_target_inputs(Target(name="no inventory", cluster=FakeCluster.with_nodes(1)))


def test_inventory_file_checks(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        check_inventory_file(tmp_path / "missing.ini")
    check_inventory_file(tmp_path)  # a folder is a valid Ansible inventory


def test_ssh_failures_get_the_fix() -> None:
    perms = (
        "Failed to connect to the host via ssh: Permissions 0644 for '/k/id' are too open.\r\n"
        'Load key "/k/id": bad permissions\r\nroot@10.0.0.1: Permission denied (publickey).'
    )
    assert (
        ssh_hint(perms)
        == "ssh ignored the private key /k/id because others can read it; run: chmod 600 /k/id"
    )
    missing = "no such identity: /k/none: No such file or directory\r\nPermission denied (publickey)."
    assert "/k/none does not exist" in (ssh_hint(missing) or "")
    assert ssh_hint("Connection refused") is None
    message = result_message({"unreachable": True, "msg": perms})
    assert message.startswith("ssh ignored the private key /k/id")


def test_one_line() -> None:
    assert one_line("[WARNING]: a\n\n[ERROR]: b\na\n") == "a; b"
    assert len(one_line("x" * 1000, limit=50)) == 50


def test_an_unexpected_exception_is_one_line_and_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug of ours (not a MigratorError) gives no traceback without --debug: one line, exit 3."""
    import migrator.cli.main as cli_main  # noqa: PLC0415
    from migrator.runs import rundir  # noqa: PLC0415

    def broken() -> list[object]:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(rundir, "list_runs", broken)  # `runs` imports it when it runs
    with pytest.raises(SystemExit) as exited:
        cli_main.run(["runs"])
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: internal error RuntimeError: boom; second line") and "--debug" in err
    with pytest.raises(SystemExit):
        cli_main.run(["runs", "--debug"])
    assert "Traceback" in capsys.readouterr().err
