"""The one playbook helper: node-level work through the :class:`~migrator.ports.NodeExecutor` port.

Actions, checks, faults and the CLI run playbooks only through :func:`run_playbook`; the executor
(``migrator.targets.ansible``) maps ansible-runner's events and raises the errors defined here.

- :func:`run_playbook` builds the :class:`~migrator.ports.PlaybookRequest`, runs it, collects the
  ``migrator_*`` facts the tasks set and the check-mode diffs (:class:`PlaybookRun`), and turns a failed
  result into a migrator error naming the host and the task (:func:`error_for`: an executor that returns a
  failed result instead of raising is translated the same way as one that raises);
- :func:`error_for` and its errors: :class:`PlaybookFailed`, :class:`PlaybookTimeout`,
  :class:`HostsUnreachable`, :class:`PlaybookInterrupted` (each carries the run's ``result``);
- :func:`node_facts`: ``node-facts.yml``'s facts per host (interfaces, routes, CNI files, chains);
- :func:`preview` / :func:`render_diff`: what a check-mode run says would change, per host;
- :func:`command`: the ``ansible-playbook`` command line a dry run shows;
- :func:`compare_hosts` / :func:`require_match`: the executor's inventory hosts against the cluster's
  node names (they must be equal, as Kubernetes names).
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.errors import Interrupted, MigratorError, StepFailed, StepTimeout, TemporaryError, UsageError
from migrator.ports import NodeExecutor, PlaybookRequest, PlaybookResult, RunnerStatus

EventCallback = Callable[[Mapping[str, Any]], None]
NODE_FACTS_PLAYBOOK = "node-facts.yml"
NODE_FACTS = "migrator_node_facts"
"""The fact ``node-facts.yml`` sets: interfaces, routes, CNI config files, iptables chains by owner
(shape: ``playbooks/library/migrator_node_facts.py``)."""
NODE_FACTS_VARS = {"include_cni_content": False}

# ------------------------------------------------------------------------------------------------ errors


class FailedRun:
    """Carries the :class:`PlaybookResult` of the run that failed (per-host results for the journal)."""

    result: PlaybookResult | None = None


class PlaybookFailed(StepFailed, FailedRun):
    """A task failed on a host (or the playbook could not run at all). Not retried."""


class PlaybookTimeout(StepTimeout, FailedRun):
    """The playbook did not finish within the request's timeout."""


class HostsUnreachable(TemporaryError, FailedRun):
    """Some hosts could not be reached over SSH: retry later."""

    def __init__(self, message: str, hosts: tuple[str, ...], delay: float = 2.0) -> None:
        super().__init__(message, delay)
        self.hosts = hosts


class PlaybookInterrupted(Interrupted, FailedRun):
    """The run was canceled through the cancel event."""


def error_for(
    result: PlaybookResult, *, playbook: str, timeout: float | None = None, output_tail: str = ""
) -> MigratorError | None:
    """The migrator error that a finished run is, or ``None`` when it succeeded.

    Precedence: canceled → :class:`PlaybookInterrupted`; timeout → :class:`PlaybookTimeout`; a failed task
    on any host → :class:`PlaybookFailed` (naming the host, the task and Ansible's message; unreachable hosts
    are listed too); only unreachable hosts → :class:`HostsUnreachable` (a :class:`TemporaryError`); a failed
    run with no host to blame (syntax error, missing file) → :class:`PlaybookFailed` with the output tail.
    """
    err: MigratorError
    failed = [h for h in result.hosts.values() if h.failed and not h.unreachable]
    unreachable = [h for h in result.hosts.values() if h.unreachable]
    if result.status is RunnerStatus.CANCELED:
        err = PlaybookInterrupted(f"playbook {playbook} was canceled")
    elif result.status is RunnerStatus.TIMEOUT:
        err = PlaybookTimeout(
            f"playbook {playbook} timed out" + (f" after {timeout:g}s" if timeout else ""),
            detail=output_tail or None,
        )
    elif failed:
        first = failed[0]
        lines = [f"{h.host}: task {h.failed_task!r}: {h.message}" for h in failed]
        lines += [f"{h.host}: unreachable: {h.message}" for h in unreachable]
        err = PlaybookFailed(
            f"playbook {playbook} failed on {', '.join(h.host for h in failed)}: " + "; ".join(lines),
            node=first.host,
            detail=first.message,
        )
    elif unreachable:
        names = tuple(h.host for h in unreachable)
        err = HostsUnreachable(
            f"playbook {playbook}: unreachable: " + "; ".join(f"{h.host} ({h.message})" for h in unreachable),
            names,
        )
    elif result.status is RunnerStatus.FAILED:
        err = PlaybookFailed(f"playbook {playbook} failed: {output_tail or 'no output'}", detail=output_tail)
    else:
        return None
    if isinstance(err, FailedRun):
        err.result = result
    return err


def failed_result(exc: BaseException) -> PlaybookResult | None:
    """The per-host result a playbook error carries (``None``: the playbook did not run)."""
    return exc.result if isinstance(exc, FailedRun) else None


# --------------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class PlaybookRun:
    """One playbook run: the executor's result, the ``migrator_*`` facts per host, and the error of a
    failed run when :func:`run_playbook` was asked not to raise it."""

    result: PlaybookResult
    facts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    error: MigratorError | None = None

    @property
    def changed(self) -> int:
        return self.result.changed

    def diffs(self) -> dict[str, list[dict[str, Any]]]:
        """Per host with a change: the Ansible diff dicts (check mode with diff)."""
        return {h: [dict(d) for d in r.diffs] for h, r in self.result.hosts.items() if r.diffs}

    def fact(self, name: str) -> dict[str, dict[str, Any]]:
        """``{host: value}`` of one fact, for the hosts that set it to a dict."""
        return {h: dict(f[name]) for h, f in self.facts.items() if isinstance(f.get(name), dict)}


def run_playbook(
    executor: NodeExecutor,
    playbook: str | Path,
    hosts: Sequence[str],
    *,
    data_dir: Path,
    extra_vars: Mapping[str, Any] | None = None,
    secret_vars: frozenset[str] = frozenset(),
    check: bool = False,
    become: bool = False,
    timeout: float = 600.0,
    forks: int | None = None,
    cancel: threading.Event | None = None,
    on_event: EventCallback | None = None,
    raise_on_failure: bool = True,
) -> PlaybookRun:
    """Run ``playbook`` on ``hosts`` (check mode runs with diff; ``forks`` defaults to one per host).

    A failed run raises its migrator error (see :func:`error_for`). With ``raise_on_failure=False`` an
    error that carries the run's result is returned in :attr:`PlaybookRun.error` instead (an error before
    the playbook ran, e.g. a host not in the inventory, is still raised)."""
    request = PlaybookRequest(
        playbook=Path(playbook),
        hosts=tuple(hosts),
        extra_vars=dict(extra_vars or {}),
        secret_vars=secret_vars,
        check=check,
        diff=check,
        become=become,
        timeout=timeout,
        forks=forks if forks is not None else max(1, len(hosts)),
    )
    facts: dict[str, dict[str, Any]] = {}

    def handle(event: Mapping[str, Any]) -> None:
        got = event.get("facts")
        if isinstance(got, Mapping) and got:
            facts.setdefault(str(event.get("host")), {}).update(got)
        if on_event is not None:
            on_event(event)

    try:
        result = executor.run_playbook(request, data_dir=data_dir, cancel=cancel, on_event=handle)
        err = error_for(result, playbook=request.playbook.name, timeout=timeout)
        if err is not None:
            raise err
    except MigratorError as exc:
        failed = failed_result(exc)
        if raise_on_failure or failed is None:
            raise
        return PlaybookRun(failed, facts, exc)
    return PlaybookRun(result, facts)


def node_facts(
    executor: NodeExecutor,
    hosts: Sequence[str],
    *,
    data_dir: Path,
    timeout: float,
    cancel: threading.Event | None = None,
) -> dict[str, dict[str, Any]]:
    """``node-facts.yml`` (without the CNI files' content) on ``hosts``: ``{host: migrator_node_facts}``."""
    run = run_playbook(
        executor,
        NODE_FACTS_PLAYBOOK,
        hosts,
        data_dir=data_dir,
        extra_vars=NODE_FACTS_VARS,
        timeout=timeout,
        cancel=cancel,
    )
    return run.fact(NODE_FACTS)


# ------------------------------------------------------------------------------------------- preview


def command(
    playbook: str,
    hosts: Sequence[str],
    *,
    vars_json: str | None = None,
    check: bool = False,
    become: bool = False,
) -> str:
    """The ``ansible-playbook`` command line a dry run shows for a playbook run."""
    line = f"ansible-playbook {playbook} --limit {','.join(hosts) if hosts else '(none)'}"
    if vars_json is not None:
        line += f" -e '{vars_json}'"
    if check:
        line += " --check --diff"
    return line + (" --become" if become else "")


def _lines(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.splitlines()
    if isinstance(value, Mapping):
        return [f"{k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(value.items())]
    return [json.dumps(value, default=str)]


def render_diff(diff: Mapping[str, Any]) -> str:
    """One Ansible diff dict as unified-diff text (``prepared`` diffs are returned as they are)."""
    if diff.get("prepared"):
        return str(diff["prepared"]).rstrip("\n")
    before = diff.get("before")
    path = before.get("path") if isinstance(before, Mapping) else None
    before_header = str(diff.get("before_header") or path or "before")
    after_header = str(diff.get("after_header") or before_header)
    lines = difflib.unified_diff(
        _lines(diff.get("before")),
        _lines(diff.get("after")),
        fromfile=before_header,
        tofile=after_header,
        lineterm="",
    )
    return "\n".join(lines)


def preview(result: PlaybookResult) -> dict[str, list[str]]:
    """Per host, what a check-mode run says would change: one text block per changed task with a diff.

    For the dry-run report: ``{host: ["task 'Install the CNI config file':\n--- before\n+++ ..."]}``.
    Hosts with nothing to change get an empty list; unreachable or failed hosts get their message.
    """
    out: dict[str, list[str]] = {}
    for name, host in result.hosts.items():
        blocks: list[str] = []
        if host.unreachable or host.failed:
            state = "unreachable" if host.unreachable else "failed"
            blocks.append(f"{state}: task {host.failed_task!r}: {host.message}")
        for diff in host.diffs:
            text, task = render_diff(diff), diff.get("task", "?")
            blocks.append(f"task {task!r}:\n{text}" if text else f"task {task!r}")
        out[name] = blocks
    return out


# --------------------------------------------------------------------------------------- inventory hosts


@dataclass(frozen=True)
class InventoryMismatch:
    """Hosts of the inventory compared with the cluster's node names."""

    missing: tuple[str, ...]  # cluster nodes the inventory does not list
    extra: tuple[str, ...]  # inventory hosts that are not cluster nodes

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra

    def describe(self) -> str:
        if self.ok:
            return "the inventory maps 1:1 onto the cluster's nodes"
        parts = []
        if self.missing:
            parts.append(f"nodes missing from the inventory: {', '.join(self.missing)}")
        if self.extra:
            parts.append(f"inventory hosts that are not cluster nodes: {', '.join(self.extra)}")
        return "; ".join(parts) + " (inventory host names must equal Kubernetes node names)"


def compare_hosts(inventory_hosts: Iterable[str], node_names: Iterable[str]) -> InventoryMismatch:
    """Compare inventory hosts with cluster node names (exact, case-sensitive, as Kubernetes names)."""
    inv, nodes = set(inventory_hosts), set(node_names)
    return InventoryMismatch(missing=tuple(sorted(nodes - inv)), extra=tuple(sorted(inv - nodes)))


def require_match(inventory_hosts: Iterable[str], node_names: Iterable[str]) -> None:
    """Preflight: raise :class:`UsageError` listing missing/extra hosts unless the mapping is 1:1."""
    mismatch = compare_hosts(inventory_hosts, node_names)
    if not mismatch.ok:
        raise UsageError(mismatch.describe())
