"""``AnsibleRunnerExecutor``: the node executor, running real playbooks over SSH through ansible-runner.

One call of :meth:`AnsibleRunnerExecutor.run_playbook` is one ``ansible-playbook`` run in its own private
data dir (``data_dir``, inside the run folder: artifacts are kept under ``data_dir/artifacts/<ident>/``).
Results are mapped by :mod:`migrator.targets.ansible.events`; failures are raised as the migrator errors
of :func:`migrator.playbooks.error_for`:

- a failed task → :class:`~migrator.playbooks.PlaybookFailed` (a ``StepFailed`` naming the host, the task
  and Ansible's message);
- unreachable hosts only → :class:`~migrator.playbooks.HostsUnreachable` (a ``TemporaryError``: retry);
- timeout → ``PlaybookTimeout`` (a ``StepTimeout``); cancel event set → ``PlaybookInterrupted`` (an
  ``Interrupted``).

Every raised error carries ``.result`` (the :class:`PlaybookResult`, per host) when the playbook ran.

Secrets (``request.secret_vars``) never reach the data dir: they are passed to Ansible as ``-e @FILE`` with
FILE in a private temporary folder (on tmpfs when there is one) that is removed after the run; every event
is scrubbed before ansible-runner writes it and before it is forwarded; the artifacts are scrubbed again
after the run. Playbooks must still set ``no_log: true`` on tasks that use secrets.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ansible_runner
from loguru import logger
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from migrator.errors import PermanentError, StepFailed, TemporaryError, UnsupportedFeature
from migrator.paths import playbooks_dir
from migrator.playbooks import HostsUnreachable, PlaybookFailed, PlaybookInterrupted, error_for, run_playbook
from migrator.ports import NodeExecutor, PlaybookRequest, PlaybookResult, RunnerStatus
from migrator.targets.ansible.events import SecretScrubber, host_results, task_event
from migrator.targets.ansible.inventory import ansible_bin_dir, list_hosts, load_inventory

EventCallback = Callable[[Mapping[str, Any]], None]

# Environment variables of the ansible-playbook process kept in the ``command`` artifact (ansible-runner
# writes the whole environment there; the rest of the caller's environment may hold credentials).
_ENV_KEEP = re.compile(r"^(ANSIBLE_|RUNNER_|PATH$|HOME$|LANG$|LC_|PYTHONPATH$|USER$)")
_POLL = 0.25  # seconds between ansible-runner's checks of cancel and timeout
CALLBACKS_DIR = Path(__file__).with_name("callbacks")  # migrator_deadman.py
DEADMAN_PARENT_ENV = "MIGRATOR_PLAYBOOK_PARENT"  # = migrator_deadman.PARENT_ENV (not imported: ansible)


class Strategy(StrEnum):
    """Ansible play strategies: ``linear`` (task by task on all hosts) or ``free`` (each host at its pace)."""

    LINEAR = "linear"
    FREE = "free"


def default_control_path_dir() -> Path:
    """A short per-user folder for SSH ControlPath sockets (socket paths are limited to 108 bytes)."""
    return Path(tempfile.gettempdir()) / f"mgr-cp-{os.getuid()}"


class AnsibleRunnerExecutor:
    """Runs playbooks on nodes through ``ansible_runner.run``; implements ``migrator.ports.NodeExecutor``.

    ``inventory``: the inventory file (host names must equal Kubernetes node names).
    ``playbooks``: folder that relative playbook paths are resolved against (default ``playbooks/``).
    ``connect_timeout``: SSH connect timeout in seconds. ``control_persist``: seconds an idle SSH master
    connection stays up between steps. ``strategy``: force a :class:`Strategy` (default: each play's own).
    ``host_key_checking``: verify SSH host keys against known_hosts (off by default, for speed and
    throw-away labs; turn it on for a real cluster with a managed known_hosts). ``envvars``: extra
    ``ANSIBLE_*`` settings. ``verbosity``: ``-v`` count (never with secrets).
    ``hosts``: the inventory's host names when the caller already parsed it (saves an ``ansible-inventory``
    run); otherwise they are parsed on first use.
    """

    def __init__(
        self,
        inventory: Path,
        *,
        playbooks: Path | None = None,
        connect_timeout: int = 10,
        control_persist: int = 60,
        control_path_dir: Path | None = None,
        strategy: Strategy | None = None,
        host_key_checking: bool = False,
        envvars: Mapping[str, str] | None = None,
        verbosity: int = 0,
        hosts: Sequence[str] | None = None,
    ) -> None:
        self.inventory = Path(inventory).resolve()
        self.playbooks = (playbooks or playbooks_dir()).resolve()
        self.connect_timeout = connect_timeout
        self.control_persist = control_persist
        self.control_path_dir = control_path_dir or default_control_path_dir()
        self.strategy = strategy
        self.host_key_checking = host_key_checking
        self.extra_env = dict(envvars or {})
        self.verbosity = verbosity
        self._hosts: list[str] | None = list(hosts) if hosts is not None else None
        self._heartbeat: SshHeartbeat | None = None

    # ------------------------------------------------------------------------------------------ inventory

    def inventory_hosts(self) -> list[str]:
        """The inventory's host names (parsed once, by ``ansible-inventory``)."""
        if self._hosts is None:
            self._hosts = list_hosts(self.inventory)
        return list(self._hosts)

    # ------------------------------------------------------------------------------------ fault leases

    def start_heartbeat(self, hosts: Sequence[str], *, become: bool = False) -> str:
        """Keep a heartbeat file fresh on ``hosts`` while this process lives (fault leases:
        :mod:`migrator.targets.ansible.heartbeat`); returns its path on the nodes."""
        if self._heartbeat is None:
            from migrator.targets.ansible.heartbeat import SshHeartbeat  # noqa: PLC0415 - faults only

            self._heartbeat = SshHeartbeat(load_inventory(self.inventory).hostvars)
            atexit.register(self._heartbeat.close)
        return self._heartbeat.start(hosts, become=become)

    # ------------------------------------------------------------------------------------------------ run

    def resolve_playbook(self, playbook: Path) -> Path:
        path = playbook if playbook.is_absolute() else self.playbooks / playbook
        if not path.is_file():
            raise PlaybookFailed(f"playbook {path} does not exist")
        return path

    def _env(self) -> dict[str, str]:
        self.control_path_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {
            "ANSIBLE_HOST_KEY_CHECKING": str(self.host_key_checking),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_GATHERING": "explicit",
            "ANSIBLE_SSH_ARGS": (
                f"-o ControlMaster=auto -o ControlPersist={self.control_persist}s "
                "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"
            ),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_path_dir),
            "ANSIBLE_SSH_RETRIES": "0",  # the engine retries unreachable hosts (TemporaryError)
            "ANSIBLE_TIMEOUT": str(self.connect_timeout),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        }
        if self.strategy:
            env["ANSIBLE_STRATEGY"] = self.strategy.value
        # the playbook dies with migrator (ansible-runner ignores SIGHUP in it): migrator_deadman.py
        env["ANSIBLE_CALLBACK_PLUGINS"] = str(CALLBACKS_DIR)
        env["ANSIBLE_CALLBACKS_ENABLED"] = "migrator_deadman"
        env[DEADMAN_PARENT_ENV] = str(os.getpid())
        bin_dir = ansible_bin_dir()
        if bin_dir is not None:  # ansible-playbook of this environment first (and no pyenv shim)
            env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        env.update(self.extra_env)
        return env

    def run_playbook(
        self,
        request: PlaybookRequest,
        *,
        data_dir: Path,
        cancel: threading.Event | None = None,
        on_event: EventCallback | None = None,
    ) -> PlaybookResult:
        """Run ``request.playbook`` on ``request.hosts``; see the module docstring for the errors (a caller
        that wants the result of a failed run too uses ``migrator.playbooks.run_playbook``'s
        ``raise_on_failure=False``)."""
        playbook = self.resolve_playbook(request.playbook)
        hosts = tuple(dict.fromkeys(request.hosts))
        if not hosts:
            logger.warning("playbook {}: no hosts, nothing to run", playbook.name)
            return PlaybookResult(status=RunnerStatus.SUCCESSFUL, hosts={})
        self._check_startable(playbook, hosts, cancel)
        run = self._prepare(request, playbook, hosts, Path(data_dir).resolve(), on_event)
        with _secret_vars_file(run.secrets) as secret_args:
            started = time.monotonic()
            runner = self._start(run, request, [*_cmdline(request), *secret_args], cancel)
        result = _collect(run, runner)
        logger.info(
            "ansible-playbook {}: {} in {:.1f}s, changed={}",
            playbook.name,
            result.status.value,
            time.monotonic() - started,
            result.changed,
        )
        err = error_for(
            result,
            playbook=playbook.name,
            timeout=request.timeout,
            output_tail=_output_tail(run.artifacts, run.scrubber),
        )
        if err is not None:
            raise err
        return result

    def _check_startable(
        self, playbook: Path, hosts: tuple[str, ...], cancel: threading.Event | None
    ) -> None:
        """Refuse hosts that are not in the inventory, and a run canceled before it started."""
        unknown = sorted(set(hosts) - set(self.inventory_hosts()))
        if unknown:
            raise PlaybookFailed(
                f"hosts not in inventory {self.inventory}: {', '.join(unknown)}", node=unknown[0]
            )
        if cancel is not None and cancel.is_set():
            raise PlaybookInterrupted(f"playbook {playbook.name} not started: canceled")

    def _prepare(
        self,
        request: PlaybookRequest,
        playbook: Path,
        hosts: tuple[str, ...],
        data_dir: Path,
        on_event: EventCallback | None,
    ) -> _Run:
        """The data dir and the vars of one run, its secrets set apart (and their scrubber)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        ident = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        try:  # plain JSON values only (Paths and enums become strings)
            all_vars: dict[str, Any] = json.loads(json.dumps(dict(request.extra_vars), default=str))
        except (TypeError, ValueError) as exc:
            raise PlaybookFailed(f"extra vars of {playbook.name} are not JSON-able: {exc}") from exc
        secrets = {k: v for k, v in all_vars.items() if k in request.secret_vars}
        public = {k: v for k, v in all_vars.items() if k not in request.secret_vars}
        scrubber = SecretScrubber(secrets.values())
        if scrubber and self.verbosity:
            raise PermanentError("verbose Ansible output is refused for a playbook with secret vars")
        return _Run(
            playbook, hosts, data_dir, ident, public, secrets, scrubber, _EventLog(scrubber, on_event)
        )

    def _start(
        self, run: _Run, request: PlaybookRequest, cmdline: list[str], cancel: threading.Event | None
    ) -> Any:
        """``ansible_runner.run`` of ``run``: returns when the playbook ended, timed out or was canceled."""
        forks = max(1, min(request.forks, len(run.hosts)))
        timeout = max(1, math.ceil(request.timeout))
        logger.info(
            "ansible-playbook {} on {} host(s){}{} (data dir {})",
            run.playbook.name,
            len(run.hosts),
            " --check" if request.check else "",
            " --become" if request.become else "",
            run.data_dir,
        )
        try:
            return ansible_runner.run(
                private_data_dir=str(run.data_dir),
                ident=run.ident,
                playbook=str(run.playbook),
                inventory=str(self.inventory),
                limit=",".join(run.hosts),
                extravars=run.public or None,
                cmdline=shlex.join(cmdline) if cmdline else None,
                forks=forks,
                verbosity=self.verbosity or None,
                envvars=self._env(),
                settings={"pexpect_timeout": _POLL},
                suppress_env_files=True,
                # with secrets, the raw output never touches the disk; a scrubbed copy is written after
                suppress_output_file=bool(run.scrubber),
                quiet=True,
                timeout=timeout,
                cancel_callback=cancel.is_set if cancel is not None else (lambda: False),
                event_handler=run.events.handle,
            )
        except Exception as exc:
            raise PlaybookFailed(f"ansible-runner could not run {run.playbook.name}: {exc}") from exc

    # --------------------------------------------------------------------------------------------- helpers

    def collect_facts(
        self,
        playbook: Path,
        fact: str,
        hosts: tuple[str, ...],
        *,
        data_dir: Path,
        extra_vars: Mapping[str, Any] | None = None,
        cancel: threading.Event | None = None,
        on_event: EventCallback | None = None,
        timeout: float = 120.0,
    ) -> dict[str, dict[str, Any]]:
        """Run a facts playbook and return ``{host: <value of the fact>}`` (raises like ``run_playbook``)."""
        run = run_playbook(
            self,
            playbook,
            hosts,
            data_dir=data_dir,
            extra_vars=extra_vars,
            timeout=timeout,
            cancel=cancel,
            on_event=on_event,
        )
        return run.fact(fact)

    def node_facts(
        self,
        hosts: tuple[str, ...],
        *,
        data_dir: Path,
        cancel: threading.Event | None = None,
        timeout: float = 120.0,
    ) -> dict[str, dict[str, Any]]:
        """Run ``node-facts.yml``; ``{host: facts}`` (shape: ``playbooks/library/migrator_node_facts.py``)."""
        return self.collect_facts(
            Path("node-facts.yml"),
            "migrator_node_facts",
            hosts,
            data_dir=data_dir,
            cancel=cancel,
            timeout=timeout,
        )

    def kernel_features(
        self,
        hosts: tuple[str, ...],
        *,
        data_dir: Path,
        cancel: threading.Event | None = None,
        timeout: float = 120.0,
    ) -> dict[str, dict[str, Any]]:
        """Run ``kernel-features.yml``; ``{host: features}`` (see ``require_features``)."""
        return self.collect_facts(
            Path("kernel-features.yml"),
            "migrator_kernel_features",
            hosts,
            data_dir=data_dir,
            cancel=cancel,
            timeout=timeout,
        )


class _EventLog:
    """The events of one run, as ansible-runner hands them over (from its own threads): each is scrubbed
    of secret values in place (ansible-runner writes this very dict to ``job_events/``), kept, and
    forwarded to ``on_event`` when it is a task event."""

    def __init__(self, scrubber: SecretScrubber, on_event: EventCallback | None) -> None:
        self.scrubber = scrubber
        self.on_event = on_event
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def handle(self, event: dict[str, Any]) -> bool:
        self.scrubber.scrub_in_place(event)
        with self._lock:
            self.events.append(event)
        if self.on_event is not None:
            forwarded = task_event(event)
            if forwarded is not None:
                try:
                    self.on_event(forwarded)
                except Exception:  # noqa: BLE001 - a broken observer must not kill the run
                    logger.exception("on_event callback failed")
        return True


@dataclass(frozen=True)
class _Run:
    """One ``ansible-playbook`` run as :meth:`AnsibleRunnerExecutor.run_playbook` prepared it."""

    playbook: Path
    hosts: tuple[str, ...]
    data_dir: Path
    ident: str
    public: dict[str, Any]  # the extra vars passed through ansible-runner (written to the data dir)
    secrets: dict[str, Any]  # the extra vars passed as ``-e @FILE`` (see _secret_vars_file)
    scrubber: SecretScrubber
    events: _EventLog

    @property
    def artifacts(self) -> Path:
        return self.data_dir / "artifacts" / self.ident


def _cmdline(request: PlaybookRequest) -> list[str]:
    """The ansible-playbook options that ``request`` asks for."""
    cmdline: list[str] = []
    if request.check:
        cmdline.append("--check")
    if request.diff or request.check:
        cmdline.append("--diff")
    if request.become:
        cmdline.append("--become")
    return cmdline


@contextmanager
def _secret_vars_file(secrets: Mapping[str, Any]) -> Iterator[list[str]]:
    """``["-e", "@FILE"]``, FILE holding ``secrets`` in a private temporary folder (on tmpfs when there is
    one: never on disk) that is removed on exit; ``[]`` without secrets."""
    if not secrets:
        yield []
        return
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    secret_dir = Path(tempfile.mkdtemp(prefix="mgr-sec-", dir=base))
    try:
        secret_file = secret_dir / "vars.json"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(secrets, fh)
        yield ["-e", f"@{secret_file}"]
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)


def _collect(run: _Run, runner: Any) -> PlaybookResult:
    """The result of a finished run, its artifacts sanitized (and the ``stdout`` artifact rebuilt from
    the scrubbed events when the run had secrets)."""
    artifacts = run.artifacts
    if run.scrubber:
        _write_stdout(artifacts, run.events.events)
    _sanitize_artifacts(artifacts, run.scrubber)
    try:
        status = RunnerStatus(runner.status)
    except ValueError:
        status = RunnerStatus.FAILED
    return PlaybookResult(
        status=status, hosts=host_results(run.events.events, run.hosts, run.scrubber), artifacts_dir=artifacts
    )


def require_features(features: Mapping[str, Mapping[str, Any]], needed: Sequence[str]) -> None:
    """Raise :class:`UnsupportedFeature` for the first node lacking one of ``needed``.

    ``features`` is the result of :meth:`AnsibleRunnerExecutor.kernel_features`; ``needed`` holds paths
    such as ``"qdisc/netem"``, ``"qdisc/tbf"``, ``"link/ipip"``, ``"iptables/statistic"`` or ``"ipvs"``.
    A node without any features (the probe did not run there) counts as lacking them.
    """
    for host in sorted(features):
        node = features[host]
        for path in needed:
            value: Any = node
            for part in path.split("/"):
                value = value.get(part) if isinstance(value, Mapping) else None
            if value is not True:
                why = str((node.get("errors") or {}).get(path, "")) if isinstance(node, Mapping) else ""
                name = path.split("/")[-1]
                hint = f"probe of {path} failed: {why}" if why else ""
                raise UnsupportedFeature(name, node=host, hint=hint)


def _write_stdout(artifacts: Path, events: list[dict[str, Any]]) -> None:
    """The ``stdout`` artifact rebuilt from the (already scrubbed) events."""
    lines = [str(e.get("stdout", "")) for e in sorted(events, key=lambda e: int(e.get("counter", 0)))]
    try:
        (artifacts / "stdout").write_text("\n".join(line for line in lines if line) + "\n")
    except OSError as exc:
        logger.debug("could not write {}/stdout: {}", artifacts, exc)


def _output_tail(artifacts: Path, scrubber: SecretScrubber, lines: int = 15) -> str:
    try:
        text = (artifacts / "stdout").read_text(errors="replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return scrubber.text("\n".join(tail))


def _sanitize_artifacts(artifacts: Path, scrubber: SecretScrubber) -> None:
    """Drop the caller's environment from ``command`` and scrub secret values from every artifact."""
    command = artifacts / "command"
    try:
        data = json.loads(command.read_text())
        data["env"] = {k: v for k, v in (data.get("env") or {}).items() if _ENV_KEEP.match(k)}
        command.write_text(json.dumps(scrubber.scrub(data)))
    except (OSError, ValueError) as exc:
        logger.debug("could not sanitize {}: {}", command, exc)
    if not scrubber or not artifacts.is_dir():
        return
    for path in artifacts.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_text(errors="surrogateescape")
        except OSError:
            continue
        clean = scrubber.text(text)
        if clean != text:
            path.write_text(clean, errors="surrogateescape")
            logger.warning("scrubbed a secret value from {}", path)


# ------------------------------------------------------------------------------------------------- retry


def run_with_retry(
    executor: AnsibleRunnerExecutor,
    request: PlaybookRequest,
    *,
    data_dir: Path,
    attempts: int = 3,
    cancel: threading.Event | None = None,
    on_event: EventCallback | None = None,
    sleep: Callable[[float], None] | None = None,
) -> PlaybookResult:
    """Run with bounded retries of unreachable hosts (``TemporaryError``), one data dir per attempt.

    Attempt ``n`` uses ``data_dir/attempt-n``. Waits ``error.delay`` seconds between attempts (woken early
    by ``cancel``). After the last attempt, raises :class:`StepFailed` naming the unreachable hosts.
    """
    counter = {"n": 0}

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        return exc.delay if isinstance(exc, TemporaryError) else 1.0

    def do_sleep(seconds: float) -> None:
        if sleep is not None:
            sleep(seconds)
        elif cancel is not None:
            cancel.wait(seconds)
        else:
            time.sleep(seconds)

    def before(state: RetryCallState) -> None:
        if state.attempt_number > 1:
            logger.warning(
                "playbook {}: retry {}/{} after unreachable hosts",
                request.playbook.name,
                state.attempt_number,
                attempts,
            )

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait,
        sleep=do_sleep,
        before=before,
        retry=retry_if_exception_type(TemporaryError),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                counter["n"] += 1
                return executor.run_playbook(
                    request, data_dir=data_dir / f"attempt-{counter['n']}", cancel=cancel, on_event=on_event
                )
    except HostsUnreachable as exc:
        err = StepFailed(
            f"{exc} (still unreachable after {counter['n']} attempts)",
            node=exc.hosts[0] if exc.hosts else None,
            detail=str(exc),
        )
        raise err from exc
    raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises


if TYPE_CHECKING:
    from migrator.targets.ansible.heartbeat import SshHeartbeat

if TYPE_CHECKING:  # mypy proves that the adapter implements the port

    def _implements_port(executor: AnsibleRunnerExecutor) -> NodeExecutor:
        return executor
