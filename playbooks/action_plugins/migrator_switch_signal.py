"""Ansible action plugin (runs on the controller, no SSH): wait for migrator's signal in a local file.

``cni-switch-teardown.yml`` uses it between the teardown and the removal of the blocking CNI config, so that
one ``ansible-playbook`` run does the whole node side of a switch: when the teardown is done on a host this
plugin writes ``PATH.waiting`` (migrator then labels the node for the new CNI and waits until its agent is
ready) and polls ``PATH`` every 50 ms until migrator writes ``go`` or ``abort`` into it. Returns
``signal`` (the word read); fails after ``timeout`` seconds without one. Skipped in check mode.

Args: ``path`` (absolute, on the controller), ``timeout`` (seconds, default 120).
"""

from __future__ import annotations

import os
import time

from ansible.plugins.action import ActionBase

POLL = 0.05
SIGNALS = ("go", "abort")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        path = str(args.get("path") or "")
        if not os.path.isabs(path):
            return {**result, "failed": True, "msg": f"path must be an absolute path, not {path!r}"}
        timeout = float(args.get("timeout", 120))
        if self._task.check_mode:
            return {**result, "changed": False, "skipped": True, "msg": "check mode: no signal awaited"}
        with open(f"{path}.waiting", "w", encoding="utf-8") as fh:
            fh.write(str(task_vars.get("inventory_hostname", "")) if task_vars else "")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, encoding="utf-8") as fh:
                    word = fh.read().strip()
            except FileNotFoundError:
                word = ""
            if word in SIGNALS:
                return {**result, "changed": False, "signal": word, "msg": f"migrator signalled {word}"}
            if time.monotonic() >= deadline:
                msg = f"no signal from migrator in {path} after {timeout:g}s"
                return {**result, "failed": True, "msg": msg}
            time.sleep(POLL)
