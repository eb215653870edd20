"""Reading an Ansible inventory (whether it maps 1:1 onto the cluster's node names is
:func:`migrator.playbooks.compare_hosts`, a port-level check).

The inventory is parsed by Ansible itself (``ansible-inventory --list``), so every format Ansible reads
(INI, YAML, scripts, plugins) works, and group and host variables are resolved the way a playbook sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.errors import PermanentError, UsageError

INVENTORY_TIMEOUT = 60.0


def ansible_bin_dir() -> Path | None:
    """The folder of the Ansible commands installed with the running Python (same ansible-core as the
    ``ansible_runner`` we import), or ``None`` to use ``PATH``. Also skips version-manager shims (pyenv),
    which cost a fraction of a second per start."""
    folder = Path(sys.executable).parent
    return folder if (folder / "ansible-playbook").is_file() else None


def ansible_command(name: str) -> str:
    folder = ansible_bin_dir()
    return str(folder / name) if folder is not None and (folder / name).is_file() else name


@dataclass(frozen=True)
class Inventory:
    """The hosts of an inventory, their groups and their resolved variables."""

    path: Path
    hosts: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]
    hostvars: Mapping[str, Mapping[str, Any]]

    def group(self, name: str) -> tuple[str, ...]:
        return self.groups.get(name, ())


def _members(groups: Mapping[str, Any], name: str, seen: set[str]) -> list[str]:
    """All hosts of group ``name``, children included."""
    if name in seen:
        return []
    seen.add(name)
    group = groups.get(name) or {}
    hosts = list(group.get("hosts") or [])
    for child in group.get("children") or []:
        hosts.extend(_members(groups, child, seen))
    return list(dict.fromkeys(hosts))


def parse_inventory_json(path: Path, data: Mapping[str, Any]) -> Inventory:
    """Build an :class:`Inventory` from ``ansible-inventory --list`` output."""
    meta = data.get("_meta") or {}
    hostvars: Mapping[str, Mapping[str, Any]] = meta.get("hostvars") or {}
    groups_raw = {k: v for k, v in data.items() if k != "_meta" and isinstance(v, Mapping)}
    groups = {name: tuple(_members(groups_raw, name, set())) for name in groups_raw}
    hosts = list(groups.get("all", ()))
    for host in hostvars:  # hosts only in hostvars (defensive)
        if host not in hosts:
            hosts.append(host)
    return Inventory(path=path, hosts=tuple(sorted(hosts)), groups=groups, hostvars=hostvars)


def _one_line(text: str, limit: int = 300) -> str:
    """ansible-inventory's error on one line: ``[WARNING]``/``[ERROR]`` prefixes and repeats dropped."""
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        for prefix in ("[WARNING]:", "[ERROR]:"):
            line = line.removeprefix(prefix).strip()
        if not line or line == "<<< caused by >>>" or line.startswith("Origin:"):
            continue
        if not any(line.rstrip(".") in part for part in parts):  # ansible repeats the cause
            parts.append(line)
    joined = "; ".join(parts) or "no output"
    return joined if len(joined) <= limit else joined[: limit - 9] + " …(cut)"


def load_inventory(path: Path, *, timeout: float = INVENTORY_TIMEOUT) -> Inventory:
    """Parse ``path`` with ``ansible-inventory --list``.

    Raises :class:`UsageError` when the file is missing or Ansible cannot parse it.
    """
    if not path.exists():
        raise UsageError(f"inventory {path} does not exist")
    argv = [ansible_command("ansible-inventory"), "--list", "-i", str(path)]
    env_extra = {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "True", "ANSIBLE_NOCOLOR": "True"}
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **env_extra},
        )
    except subprocess.TimeoutExpired as exc:
        raise PermanentError(f"ansible-inventory timed out after {timeout:g}s on {path}") from exc
    except FileNotFoundError as exc:
        raise PermanentError("ansible-inventory not found: install ansible-core") from exc
    if proc.returncode != 0:
        raise UsageError(f"cannot parse inventory {path}: {_one_line(proc.stderr or proc.stdout)}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise PermanentError(f"ansible-inventory printed invalid JSON for {path}") from exc
    inv = parse_inventory_json(path, data)
    logger.debug("inventory {} lists {} hosts", path, len(inv.hosts))
    return inv


def list_hosts(path: Path, *, timeout: float = INVENTORY_TIMEOUT) -> list[str]:
    """The inventory's host names, sorted."""
    return list(load_inventory(path, timeout=timeout).hosts)
