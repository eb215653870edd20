"""Ansible callback plugin ``migrator_deadman``: a playbook that migrator started dies with migrator.

ansible-runner starts ``ansible-playbook`` on a pseudo-terminal with SIGHUP ignored, so when migrator is
killed (``kill -9``, OOM) the playbook does not notice until it next writes to the closed terminal: a task
that runs for a while (a wait, a long module) goes on changing the node after its run died, and can race
the ``resume`` or ``rollback`` that follows. With this plugin enabled (``ANSIBLE_CALLBACKS_ENABLED``) and
``MIGRATOR_PLAYBOOK_PARENT`` set to migrator's pid, a thread in the playbook checks its parent every 0.2 s;
once the parent is gone it kills the playbook's process group: itself, its forked workers and their ssh
clients (the nodes' sshd then ends the remote sessions). It acts only when the playbook leads its own
process group (ansible-runner's terminal session), so it never signals anyone else's group.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from ansible.plugins.callback import CallbackBase

PARENT_ENV = "MIGRATOR_PLAYBOOK_PARENT"
INTERVAL_S = 0.2


def _watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        time.sleep(INTERVAL_S)


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "migrator_deadman"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        try:
            parent = int(os.environ.get(PARENT_ENV) or 0)
        except ValueError:
            parent = 0
        if parent > 0 and os.getpgrp() == os.getpid():
            threading.Thread(target=_watch, args=(parent,), name="migrator-deadman", daemon=True).start()
