"""Pure mapping from ansible-runner events to migrator's results and errors.

Nothing here runs Ansible: the functions take the event dicts that ansible-runner hands to its
``event_handler`` (and stores under ``artifacts/<ident>/job_events/``), so they are unit-tested with events
recorded from real runs.

- :func:`task_event` turns one runner event into the small JSON-able dict forwarded to ``on_event``;
- :func:`host_results` folds a run's events into one :class:`~migrator.ports.HostResult` per host (which
  migrator error a finished run is, and its check-mode preview, are :mod:`migrator.playbooks`' job);
- :class:`SecretScrubber` replaces secret values in any JSON-like value (events, files, messages).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from enum import StrEnum
from typing import Any

from migrator.ports import HostResult

REDACTED = "********"
MAX_TEXT = 2000  # longest message or diff text forwarded per field
FACT_PREFIX = "migrator_"  # facts forwarded in events (set by our playbooks and modules)


class HostStatus(StrEnum):
    """Outcome of one task on one host, as forwarded to ``on_event``."""

    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


class RunnerEvent(StrEnum):
    """The ansible-runner event names this module reads."""

    OK = "runner_on_ok"
    FAILED = "runner_on_failed"
    UNREACHABLE = "runner_on_unreachable"
    SKIPPED = "runner_on_skipped"
    STATS = "playbook_on_stats"


TASK_EVENTS = frozenset({RunnerEvent.OK, RunnerEvent.FAILED, RunnerEvent.UNREACHABLE, RunnerEvent.SKIPPED})


# ------------------------------------------------------------------------------------------------ secrets


class SecretScrubber:
    """Replaces every occurrence of the secret values (as text) with ``********``."""

    def __init__(self, values: Iterable[Any]) -> None:
        texts: set[str] = set()

        def leaves(value: Any) -> None:  # a structured secret: scrub each of its values
            if isinstance(value, Mapping):
                for v in value.values():
                    leaves(v)
            elif isinstance(value, list | tuple | set | frozenset):
                for v in value:
                    leaves(v)
            elif value is not None and not isinstance(value, bool) and str(value) != "":
                texts.add(str(value))

        for value in values:
            leaves(value)
        # longest first, so that a secret containing another one is replaced whole
        self.values: tuple[str, ...] = tuple(sorted(texts, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, value: str) -> str:
        for secret in self.values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def scrub(self, value: Any) -> Any:
        """A copy of a JSON-like ``value`` with secrets replaced (keys included)."""
        if not self.values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.scrub(k): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def scrub_in_place(self, event: dict[str, Any]) -> None:
        """Scrub ``event`` in place: ansible-runner writes the dict it passed to the handler."""
        if not self.values:
            return
        for key in list(event):
            event[key] = self.scrub(event[key])


# ------------------------------------------------------------------------------------------ event → dict


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 15] + " …(truncated)"


def _first_failed_item(res: Mapping[str, Any]) -> Mapping[str, Any] | None:
    results = res.get("results")
    if isinstance(results, list):
        for item in results:
            if isinstance(item, Mapping) and (item.get("failed") or item.get("unreachable")):
                return item
    return None


_BAD_KEY_PERMS = re.compile(r"Load key \"(?P<key>[^\"]+)\": bad permissions")
_NO_IDENTITY = re.compile(r"no such identity: (?P<key>[^:\s]+): No such file")


def ssh_hint(message: str) -> str | None:
    """The fix for an ssh failure (a private key others can read, a missing key), or ``None``."""
    match = _BAD_KEY_PERMS.search(message)
    if match:
        key = match.group("key")
        return f"ssh ignored the private key {key} because others can read it; run: chmod 600 {key}"
    match = _NO_IDENTITY.search(message)
    if match:
        return f"the SSH private key {match.group('key')} does not exist: fix the path in the inventory"
    return None


def result_message(res: Mapping[str, Any]) -> str:
    """Ansible's message for a task result: ``msg``, plus ``stderr``/``stdout`` for commands."""
    item = _first_failed_item(res)
    if item is not None:
        inner = result_message(item)
        label = item.get("item", item.get("_ansible_item_label"))
        return f"item {label!r}: {inner}" if label is not None else inner
    if "censored" in res:
        return str(res["censored"])
    parts: list[str] = []
    msg = res.get("msg")
    if msg:
        parts.append(str(msg))
    if res.get("failed") or res.get("unreachable"):
        for key in ("stderr", "module_stderr", "stdout", "module_stdout"):
            out = res.get(key)
            if out and str(out).strip():
                parts.append(f"{key}: {str(out).strip()}")
                break
        if "rc" in res and res.get("rc") not in (0, None):
            parts.append(f"rc={res['rc']}")
    hint = ssh_hint(" ".join(parts)) if res.get("unreachable") else None
    if hint:
        parts.insert(0, hint)  # first: _short may cut the end
    return _short("; ".join(parts))


def _diffs(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw: list[Any] = []
    diff = res.get("diff")
    if isinstance(diff, Mapping):
        raw.append(diff)
    elif isinstance(diff, list):
        raw.extend(diff)
    for item in res.get("results") or []:
        if isinstance(item, Mapping):
            raw.extend(_diffs(item))
    out: list[dict[str, Any]] = []
    for d in raw:
        if not isinstance(d, Mapping):
            continue
        entry = {k: _short(v) if isinstance(v, str) else v for k, v in d.items() if v not in (None, "")}
        if entry.get("before") != entry.get("after") or "prepared" in entry:
            out.append(entry)
    return out


def _facts(res: Mapping[str, Any]) -> dict[str, Any]:
    facts = res.get("ansible_facts")
    if not isinstance(facts, Mapping):
        return {}
    return {k: v for k, v in facts.items() if str(k).startswith(FACT_PREFIX)}


def task_event(event: Mapping[str, Any], scrubber: SecretScrubber | None = None) -> dict[str, Any] | None:
    """The dict forwarded to ``on_event`` for a task result, or ``None`` for other events.

    Shape (JSON-able): ``{"event": "task", "host", "task", "action", "play", "status"
    (ok|changed|failed|unreachable|skipped), "ignored" (a failure with ignore_errors), "msg", "diff" (a
    list of Ansible diff dicts, possibly empty), "facts" (the ``migrator_*`` facts the task set, possibly
    empty), "duration" (seconds or null), "created" (ISO time)}``.
    """
    name = event.get("event")
    if name not in TASK_EVENTS:
        return None
    data: Mapping[str, Any] = event.get("event_data") or {}
    res: Mapping[str, Any] = data.get("res") or {}
    if name == RunnerEvent.OK:
        status = HostStatus.CHANGED if res.get("changed") else HostStatus.OK
    elif name == RunnerEvent.FAILED:
        status = HostStatus.FAILED
    elif name == RunnerEvent.UNREACHABLE:
        status = HostStatus.UNREACHABLE
    else:
        status = HostStatus.SKIPPED
    out: dict[str, Any] = {
        "event": "task",
        "host": str(data.get("host", "")),
        "task": str(data.get("task", "")),
        "action": str(data.get("resolved_action") or data.get("task_action") or ""),
        "play": str(data.get("play", "")),
        "status": status.value,
        "ignored": bool(data.get("ignore_errors")) and status is HostStatus.FAILED,
        "msg": result_message(res),
        "diff": _diffs(res),
        "facts": _facts(res),
        "duration": data.get("duration"),
        "created": event.get("created"),
    }
    result: dict[str, Any] = scrubber.scrub(out) if scrubber else out
    return result


# ------------------------------------------------------------------------------------- events → results


def _stats(events: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    found: Mapping[str, Any] | None = None
    for event in events:
        if event.get("event") == RunnerEvent.STATS:
            found = event.get("event_data") or {}
    return found


def host_results(
    events: Iterable[Mapping[str, Any]], hosts: Collection[str], scrubber: SecretScrubber | None = None
) -> dict[str, HostResult]:
    """One :class:`HostResult` per host in ``hosts`` (and per other host seen in the events).

    Counts come from the ``playbook_on_stats`` event when there is one (``ok`` counts ok *and* changed
    tasks, as in Ansible's recap; failures rescued by a ``rescue`` block or ignored do not count), otherwise
    from the task events (a run that timed out or was canceled). The failed task and message are those of the
    last failure (or unreachability) that counted.
    """
    events = list(events)
    stats = _stats(events)
    names: list[str] = list(dict.fromkeys(hosts))
    per_host: dict[str, dict[str, Any]] = {}

    def rec(host: str) -> dict[str, Any]:
        if host not in per_host:
            per_host[host] = {
                "ok": 0,
                "changed": 0,
                "failed": 0,
                "skipped": 0,
                "unreachable": False,
                "failed_task": None,
                "message": None,
                "diffs": [],
            }
            if host not in names:
                names.append(host)
        return per_host[host]

    for host in names:
        rec(host)
    for event in events:
        te = task_event(event, scrubber)
        if te is None or not te["host"]:
            continue
        r = rec(te["host"])
        status = HostStatus(te["status"])
        if status in (HostStatus.OK, HostStatus.CHANGED):
            r["ok"] += 1
            r["changed"] += status is HostStatus.CHANGED
        elif status is HostStatus.SKIPPED:
            r["skipped"] += 1
        elif status is HostStatus.UNREACHABLE:
            r["unreachable"] = True
            r["failed_task"], r["message"] = te["task"], te["msg"]
        elif not te["ignored"]:
            r["failed"] += 1
            r["failed_task"], r["message"] = te["task"], te["msg"]
        else:
            r["ok"] += 1
        for d in te["diff"]:
            r["diffs"].append({"task": te["task"], **d})

    if stats is not None:

        def count(key: str, host: str) -> int:
            table = stats.get(key) or {}
            return int(table.get(host, 0)) if isinstance(table, Mapping) else 0

        for host in list(per_host):
            r = per_host[host]
            r["ok"], r["changed"] = count("ok", host), count("changed", host)
            r["skipped"] = count("skipped", host)
            r["failed"] = count("failures", host)
            r["unreachable"] = r["unreachable"] or count("dark", host) > 0
            if r["failed"] == 0 and not r["unreachable"]:
                r["failed_task"], r["message"] = None, None  # rescued

    return {
        host: HostResult(
            host=host,
            ok=r["ok"],
            changed=r["changed"],
            failed=r["failed"],
            skipped=r["skipped"],
            unreachable=r["unreachable"],
            failed_task=r["failed_task"],
            message=r["message"],
            diffs=tuple(r["diffs"]),
        )
        for host, r in ((h, per_host[h]) for h in names)
    }
