"""The probe runner: the program of each pod of the ``migrator-probe`` DaemonSet (standard library only).

It is shipped next to ``agent.py`` in the ConfigMap ``migrator-probe-agent`` and started as
``python /opt/migrator-probe/runner.py``. No ``exec`` into pods and no inbound connection from migrator:

- *Rounds in*: migrator creates, per round and per node, a ConfigMap labelled
  ``migrator.io/probe-node=<node hash>`` and ``migrator.io/probe-round=<round>`` whose ``targets.json`` is
  a JSON object ``{"round", "targets": [agent targets], "continuous": bool, "rate_hz", "duration",
  "concurrency"}``. The runner lists its rounds once with its service account (a Role that only reads
  ConfigMaps in its own namespace), then watches them from that resourceVersion, and runs each new round
  once (in a thread).
- *Results out*: through its stdout, that is the pod log: ``MIGRATOR-PROBE <round> <json list of
  outcomes>`` lines (one for a one-off round; one per ``--flush`` seconds for a continuous round) and a
  final ``MIGRATOR-PROBE-END <round> <count>``. Migrator reads them with ``GET pods/NAME/log``.
- *Stop*: a continuous round stops when its ConfigMap is deleted (the watch's DELETED event) or at its
  bounded ``duration``.
- It also serves ``GET /`` and ``/healthz`` on ``--port`` (default 8080), so the probe pods are
  destinations too (readiness probe, the ``migrator-probe`` Service).

Every loop is bounded: ``--max-lifetime`` (default 24 h) ends the process; a round's duration is capped at
one hour.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

try:  # inside the package
    from migrator.probe import agent
except ImportError:  # in the pod: agent.py sits next to this file
    import agent  # type: ignore[import-not-found, no-redef]

RESULT_PREFIX = "MIGRATOR-PROBE"
END_PREFIX = "MIGRATOR-PROBE-END"
ROUND_LABEL = "migrator.io/probe-round"
NODE_LABEL = "migrator.io/probe-node"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_ROUND_SECONDS = 3600.0


def node_hash(node: str) -> str:
    """A label value for a node name (names may be longer than the 63 characters a label value allows)."""
    return hashlib.sha256(node.encode()).hexdigest()[:32]


class ApiReader:
    """The few GETs the runner makes, with the pod's service account (or a given URL and token)."""

    def __init__(self, url: str, token: str | None, ca_file: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None

    @classmethod
    def in_cluster(cls) -> ApiReader:
        url = os.environ.get("MIGRATOR_PROBE_API")
        if not url:
            host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            host = f"[{host}]" if ":" in host else host
            url = f"https://{host}:{port}"
        token = os.environ.get("MIGRATOR_PROBE_TOKEN")
        if token is None and os.path.exists(f"{SA_DIR}/token"):
            with open(f"{SA_DIR}/token", encoding="utf-8") as fh:
                token = fh.read().strip()
        ca = f"{SA_DIR}/ca.crt" if os.path.exists(f"{SA_DIR}/ca.crt") else None
        return cls(url, token, ca)

    def get(self, path: str, query: dict[str, str]) -> Any:
        request = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(query)}")  # noqa: S310 - http(s) only
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as resp:  # noqa: S310
            return json.loads(resp.read())

    def rounds(self, namespace: str, node: str) -> list[dict[str, Any]]:
        """This node's round ConfigMaps, oldest first."""
        return self.list_rounds(namespace, node)[0]

    def list_rounds(self, namespace: str, node: str) -> tuple[list[dict[str, Any]], str]:
        """This node's round ConfigMaps, oldest first, and the list's resourceVersion."""
        data = self.get(
            f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/configmaps",
            {"labelSelector": f"{NODE_LABEL}={node_hash(node)}", "resourceVersion": "0"},
        )
        items = list(data.get("items") or [])
        items.sort(key=lambda cm: str((cm.get("metadata") or {}).get("name", "")))
        return items, str((data.get("metadata") or {}).get("resourceVersion") or "")

    def watch_rounds(
        self, namespace: str, node: str, resource_version: str, seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events of this node's round ConfigMaps from ``resource_version`` for at most ``seconds``."""
        query = {
            "labelSelector": f"{NODE_LABEL}={node_hash(node)}",
            "watch": "1",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(seconds),
            "allowWatchBookmarks": "true",
        }
        path = f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/configmaps"
        request = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(query)}")  # noqa: S310 - http(s) only
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=seconds + 10, context=self.context) as resp:  # noqa: S310
            for line in resp:
                if line.strip():
                    yield json.loads(line)


def _round_of(cm: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    try:
        spec = json.loads((cm.get("data") or {})["targets.json"])
        return str(spec["round"]), spec
    except (KeyError, ValueError, TypeError):
        return None


def run_round(
    spec: dict[str, Any],
    emit: Callable[[str], None],
    still_wanted: Callable[[], bool],
    *,
    flush: float = 1.0,
) -> int:
    """Run one round and write its result lines with ``emit``; returns the number of outcomes."""
    rnd = str(spec["round"])
    specs = [agent.Spec.from_dict(t) for t in spec.get("targets") or []]
    if not spec.get("continuous"):
        outcomes = asyncio.run(
            agent.probe_all(specs, concurrency=int(spec.get("concurrency") or 256), allow_own_netns=True)
        )
        emit(f"{RESULT_PREFIX} {rnd} {json.dumps([o.to_dict() for o in outcomes], separators=(',', ':'))}")
        emit(f"{END_PREFIX} {rnd} {len(outcomes)}")
        return len(outcomes)
    stop = threading.Event()
    buffer: list[agent.Outcome] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def sink(outcome: agent.Outcome) -> None:
        with lock:
            buffer.append(outcome)

    def work() -> None:
        try:
            asyncio.run(
                agent.probe_continuously(
                    specs,
                    rate_hz=float(spec.get("rate_hz") or 10.0),
                    max_duration=min(float(spec.get("duration") or 60.0), MAX_ROUND_SECONDS),
                    stop=stop,
                    sink=sink,
                    allow_own_netns=True,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported in the log, the runner goes on
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"round-{rnd}", daemon=True)
    thread.start()
    total = 0

    def drain() -> None:
        nonlocal total
        with lock:
            chunk = list(buffer)
            buffer.clear()
        if chunk:
            total += len(chunk)
            emit(f"{RESULT_PREFIX} {rnd} {json.dumps([o.to_dict() for o in chunk], separators=(',', ':'))}")

    while thread.is_alive():
        thread.join(flush)
        drain()
        if not stop.is_set() and not still_wanted():
            stop.set()
    drain()
    if errors:
        emit(f"{END_PREFIX} {rnd} {total} error: {type(errors[0]).__name__}: {errors[0]}")
    else:
        emit(f"{END_PREFIX} {rnd} {total}")
    return total


class _Rounds:
    """This node's rounds: each run once, in a thread; a round whose ConfigMap is gone is told to stop."""

    def __init__(self, emit: Callable[[str], None], stop: threading.Event, done: Iterable[str]) -> None:
        self.emit = emit
        self.stop = stop
        self.seen = set(done)
        self.running: dict[str, threading.Event] = {}  # round -> its stop flag

    def start(self, rnd: str, spec: dict[str, Any]) -> None:
        if rnd in self.seen:
            return
        self.seen.add(rnd)
        flag = threading.Event()
        self.running[rnd] = flag

        def work() -> None:
            try:
                run_round(spec, self.emit, lambda: not flag.is_set() and not self.stop.is_set())
            finally:
                self.running.pop(rnd, None)

        threading.Thread(target=work, name=f"round-{rnd}", daemon=True).start()

    def listed(self, items: Iterable[dict[str, Any]]) -> None:
        """A list of the round ConfigMaps: start the new rounds, stop those no longer listed."""
        found = [r for r in map(_round_of, items) if r]
        for rnd, spec in found:
            self.start(rnd, spec)
        names = {rnd for rnd, _ in found}
        for rnd, flag in list(self.running.items()):
            if rnd not in names:
                flag.set()

    def watched(self, event: dict[str, Any], rv: str) -> str:
        """A watch event: start or stop its round; the resourceVersion to watch from next."""
        obj = event.get("object") or {}
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        kind = event.get("type")
        if kind == "ERROR":
            raise ValueError(f"watch error: {obj.get('message', obj)}")
        found = _round_of(obj)
        if found is not None and kind in ("ADDED", "MODIFIED"):
            self.start(*found)
        elif found is not None and kind == "DELETED" and found[0] in self.running:
            self.running[found[0]].set()
        return rv

    def stop_all(self) -> None:
        for flag in list(self.running.values()):
            flag.set()


def serve_rounds(
    reader: ApiReader,
    namespace: str,
    node: str,
    emit: Callable[[str], None],
    *,
    stop: threading.Event,
    poll: float = 1.0,
    max_lifetime: float = 86400.0,
    done: Iterable[str] = (),
    watch_seconds: int = 60,
) -> None:
    """Run each of this node's rounds once, until ``stop`` or ``max_lifetime``.

    One list, then a watch from its resourceVersion (re-opened every ``watch_seconds``; after an error,
    a new list ``poll`` seconds later): an idle runner costs the API server one open watch, not a request
    a second. Rounds run in threads; a round whose ConfigMap is deleted is told to stop."""
    lock = threading.Lock()
    deadline = time.monotonic() + max_lifetime

    def safe_emit(line: str) -> None:
        with lock:
            emit(line)

    rounds = _Rounds(safe_emit, stop, done)
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            items, rv = reader.list_rounds(namespace, node)
            rounds.listed(items)
            while not stop.is_set() and time.monotonic() < deadline:
                seconds = int(max(1, min(watch_seconds, deadline - time.monotonic())))
                for event in reader.watch_rounds(namespace, node, rv, seconds):
                    rv = rounds.watched(event, rv)
                    if stop.is_set():
                        break
        except (OSError, ValueError) as exc:
            safe_emit(f"# migrator-probe: cannot list or watch rounds: {exc}")
            stop.wait(poll)
    rounds.stop_all()


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"migrator-probe\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.split("\n")[0])
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "migrator-probe"))
    parser.add_argument("--node", default=os.environ.get("NODE_NAME", ""))
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=8080, help="0: no HTTP endpoint")
    parser.add_argument("--max-lifetime", type=float, default=86400.0)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not args.node:
        sys.stderr.write("runner: NODE_NAME is not set\n")
        return 2
    if args.port:
        server = http.server.ThreadingHTTPServer(("", args.port), _Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    emit(f"# migrator-probe runner on node {args.node}")
    serve_rounds(
        ApiReader.in_cluster(),
        args.namespace,
        args.node,
        emit,
        stop=threading.Event(),
        poll=args.poll,
        max_lifetime=args.max_lifetime,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
