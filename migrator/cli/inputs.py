"""Checks of the operator's inputs before anything starts: inventory and SSH keys.

A run must not find out half-way, from an unreachable node, that the inventory is missing or that ssh
ignores a private key others can read. :func:`check_target_inputs` is run by ``apply``, ``resume``,
``rollback`` and ``nodes ping`` and raises :class:`~migrator.errors.UsageError` (exit 2) with one
actionable line: which file, which host, and the command that fixes it.

SSH keys are found in the inventory text (``ansible_ssh_private_key_file`` / ``ansible_private_key_file``
in INI or YAML, plus ``group_vars``/``host_vars`` next to it), which costs no ``ansible-inventory`` run;
keys set through templates, ``ansible.cfg`` or an ssh agent are not checked here (ssh's own error is then
turned into the same hint by :func:`migrator.targets.ansible.events.ssh_hint`).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from migrator.errors import MigratorError, UsageError

KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
_KEY_RE = re.compile(
    r"^\s*(?P<host>[^\s#\[=:]+)?[^\n#]*?\b(?:ansible_ssh_private_key_file|ansible_private_key_file)"
    r"\s*[=:]\s*(?P<q>['\"]?)(?P<path>[^\s'\"#,}\]]+)(?P=q)",
    re.MULTILINE,
)
_MAX_FILE = 2_000_000


def _text(path: Path) -> str:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_FILE:
            return ""
        return path.read_text(errors="replace")
    except OSError:
        return ""


def inventory_keys(inventory: Path) -> dict[Path, list[str]]:
    """SSH private key files named in an inventory (and its group_vars/host_vars): path → users."""
    files = [inventory] if inventory.is_file() else sorted(p for p in inventory.rglob("*") if p.is_file())
    base = inventory.parent if inventory.is_file() else inventory
    for sub in ("group_vars", "host_vars"):
        folder = base / sub
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*") if p.is_file())
    found: dict[Path, list[str]] = {}
    for file in files[:200]:
        for match in _KEY_RE.finditer(_text(file)):
            raw = match.group("path")
            if "{{" in raw or "$" in raw:
                continue  # templated: Ansible resolves it, ssh's error gets a hint (ansible_events.ssh_hint)
            key = Path(raw).expanduser()
            if not key.is_absolute():
                key = (file.parent / key).resolve()
            host = match.group("host") or ""
            user = host if file == inventory and host and not host.startswith("ansible_") else file.name
            found.setdefault(key, [])
            if user not in found[key]:
                found[key].append(user)
    return found


def key_problem(key: Path, users: Iterable[str] = ()) -> str | None:
    """What is wrong with an SSH private key file for ssh, with the fix; ``None`` when it is usable."""
    who = ", ".join(list(users)[:5])
    of = f" (the SSH key of {who})" if who else ""
    try:
        info = key.stat()
    except FileNotFoundError:
        return f"SSH private key {key}{of} does not exist: fix the path in the inventory or create the key"
    except OSError as exc:
        return f"SSH private key {key}{of} cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"SSH private key {key}{of} is not a regular file"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return (
            f"SSH private key {key}{of} has mode {mode:04o}: ssh ignores keys that others can read;"
            f" run: chmod 600 {key}"
        )
    return None


def check_inventory_keys(inventory: Path) -> None:
    """Raise :class:`UsageError` for the first unusable SSH key the inventory names."""
    for key, users in inventory_keys(inventory).items():
        problem = key_problem(key, users)
        if problem:
            raise UsageError(problem)


def check_inventory_file(inventory: Path) -> None:
    """The inventory exists and can be read (a directory is a valid Ansible inventory)."""
    if not inventory.exists():
        raise UsageError(f"inventory {inventory} does not exist (--inventory or $MIGRATOR_INVENTORY)")
    if inventory.is_file():
        try:
            with inventory.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise UsageError(f"inventory {inventory} cannot be read: {exc.strerror or exc}") from exc


def check_target_inputs(target: Any, *, parse: bool = False) -> None:
    """Check the inventory of ``target`` (if it has one) and the SSH keys it names.

    ``parse``: also parse it with ``ansible-inventory`` (about a second; for inventories the operator
    wrote, not for the lab's generated one).
    """
    inventory = getattr(target, "inventory", None)
    if inventory is None:
        return
    path = Path(inventory)
    check_inventory_file(path)
    if parse:
        from migrator.targets.ansible.inventory import load_inventory  # noqa: PLC0415 - heavy, optional

        load_inventory(path)
    check_inventory_keys(path)


def one_line(message: str, limit: int = 400) -> str:
    """A message on one line: lines joined with ``; ``, ``[WARNING]``/``[ERROR]`` prefixes dropped."""
    parts: list[str] = []
    for raw in message.splitlines():
        line = re.sub(r"^\[(?:WARNING|ERROR)\]:\s*", "", raw.strip())
        if line and line not in parts:
            parts.append(line)
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 7] + " …(cut)"


def exit_with(exc: MigratorError) -> typer.Exit:
    """Print ``exc`` as one ``error:`` line on stderr; the :class:`typer.Exit` with its exit code to raise
    (for sub-commands that tests also call without :func:`migrator.cli.main.run`)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {one_line(str(exc))}", markup=False)
    return typer.Exit(int(exc.exit_code))
