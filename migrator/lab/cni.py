"""Invoke the real CNI plugin binaries the way libcni does (conflist: each plugin in turn with prevResult)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.errors import MigratorError, StepFailed
from migrator.lab import calico, canal, flannel, sh, weave

CNI_BIN_DIR = Path("/usr/lib/cni")
CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
KUBELET_CNI_BY_FILE: dict[str, str] = {weave.CONFLIST_NAME: "weave", canal.CONFLIST_NAME: "canal"}
"""The CNI of a node's first config file, by file name (first: Canal's network is named like Calico's)..."""
KUBELET_CNI_BY_NETWORK: dict[str, str] = {
    flannel.NETWORK_NAME: "flannel",
    calico.NETWORK_NAME: "calico",
    weave.NETWORK_NAME: "weave",
}
"""... else by the network name inside it."""


def find_conflist(conf_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The config the kubelet would pick: the first file of the folder in lexical order."""
    files = sorted(p for p in conf_dir.iterdir() if p.suffix in CONFIG_SUFFIXES) if conf_dir.is_dir() else []
    if not files:
        raise StepFailed(f"no CNI configuration in {conf_dir} (network plugin not ready)")
    path = files[0]
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StepFailed(f"cannot read CNI configuration {path}: {exc}") from exc
    if "plugins" not in raw:  # a single-plugin .conf
        raw = {"cniVersion": raw.get("cniVersion", "0.3.1"), "name": raw.get("name", "net"), "plugins": [raw]}
    return path, raw


def kubelet_cni(conf_dir: Path) -> str:
    """The CNI the kubelet uses, from the first config file of ``conf_dir`` (its ``/etc/cni/net.d``):
    ``flannel``, ``calico``, ``weave``..., the network name of an unknown file, ``none`` without one."""
    try:
        path, conf = find_conflist(conf_dir)
    except MigratorError:
        return "none"
    if path.name in KUBELET_CNI_BY_FILE:
        return KUBELET_CNI_BY_FILE[path.name]
    name = str(conf.get("name", ""))
    return KUBELET_CNI_BY_NETWORK.get(name, name or "unknown")


class CniInvoker:
    """Runs plugins inside a node's namespaces (through ``nsenter`` into the node's holder process)."""

    def __init__(self, holder_pid: int, *, timeout: float = 20.0) -> None:
        self.holder_pid = holder_pid
        self.timeout = timeout

    def _exec(self, plugin_conf: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        ptype = str(plugin_conf.get("type", ""))
        binary = CNI_BIN_DIR / ptype
        if not ptype or not binary.exists():
            raise StepFailed(f"CNI plugin {ptype!r} not found in {CNI_BIN_DIR}")
        argv = ["nsenter", "-t", str(self.holder_pid), "-m", "-u", "-n", str(binary)]
        res = sh.run(argv, input=json.dumps(plugin_conf), env=env, timeout=self.timeout, check=False)
        out = res.stdout.strip()
        parsed: dict[str, Any] = {}
        if out:
            try:
                parsed = json.loads(out)
            except ValueError:
                parsed = {"msg": out}
        if not res.ok:
            msg = parsed.get("msg") or res.stderr.strip() or f"rc={res.rc}"
            details = parsed.get("details", "")
            raise StepFailed(f"CNI {env['CNI_COMMAND']} {ptype} failed: {msg} {details}".strip())
        return parsed

    @staticmethod
    def _env(command: str, container_id: str, netns: str, pod: str, namespace: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(CNI_BIN_DIR),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
        }

    @staticmethod
    def _plugin_conf(
        conflist: dict[str, Any], plugin: dict[str, Any], prev: dict[str, Any] | None
    ) -> dict[str, Any]:
        conf = dict(plugin)
        conf["cniVersion"] = conflist.get("cniVersion", "0.3.1")
        conf["name"] = conflist.get("name", "net")
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def add(
        self, conflist: dict[str, Any], *, container_id: str, netns: str, pod: str, namespace: str
    ) -> dict[str, Any]:
        env = self._env("ADD", container_id, netns, pod, namespace)
        result: dict[str, Any] | None = None
        for plugin in conflist["plugins"]:
            result = self._exec(self._plugin_conf(conflist, plugin, result), env)
        logger.debug("CNI ADD {}/{} -> {}", namespace, pod, pod_ip(result or {}))
        return result or {}

    def delete(
        self,
        conflist: dict[str, Any],
        *,
        container_id: str,
        netns: str,
        pod: str,
        namespace: str,
        prev: dict[str, Any] | None,
    ) -> None:
        env = self._env("DEL", container_id, netns, pod, namespace)
        errors: list[str] = []
        plugins: Sequence[dict[str, Any]] = list(reversed(conflist["plugins"]))
        for plugin in plugins:
            try:
                self._exec(self._plugin_conf(conflist, plugin, prev), env)
            except StepFailed as exc:  # DEL must be best effort: keep going, report at the end
                errors.append(str(exc))
        if errors:
            raise StepFailed("; ".join(errors))


def pod_ip(result: dict[str, Any]) -> str | None:
    """The first IPv4 address of a CNI result (0.3.x/0.4.0/1.0.0 all use ``ips[].address``)."""
    for entry in result.get("ips", []):
        addr = str(entry.get("address", ""))
        if addr and ":" not in addr:
            return addr.split("/", maxsplit=1)[0]
    return None
