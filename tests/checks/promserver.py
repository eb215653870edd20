"""Test helpers for the ``prometheus`` check: a real Prometheus server (Debian's ``prometheus`` binary), a
real exporter (the lab's pod server, ``migrator/lab/podserver.py``) and a bearer-token gate in front of
Prometheus, all on 127.0.0.1 only (network safety: loopback, nothing else).

Every process is started with bounded waits and killed by the context managers, also when a test fails.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PODSERVER = ROOT / "migrator" / "lab" / "podserver.py"
PROMETHEUS = shutil.which("prometheus")
LOOPBACK = "127.0.0.1"
SCRAPE_S = 0.5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready at {url} after {timeout:g}s")


@dataclass
class Exporter:
    """A pod server on loopback: ``/local`` answers 200, ``/`` answers 503 (its upstream is a closed port)."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def hit(self, path: str, count: int = 1) -> None:
        for _ in range(count):
            try:
                with urllib.request.urlopen(f"http://{self.address}{path}", timeout=2.0):
                    pass
            except urllib.error.HTTPError:
                pass  # the 503s are what we want

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=2.0) as answer:
            return str(answer.read().decode())


@contextlib.contextmanager
def exporter(name: str = "exporter") -> Iterator[Exporter]:
    port, closed = free_port(), free_port()  # nothing listens on `closed`: the upstream calls fail at once
    proc = subprocess.Popen(
        [
            *(sys.executable, "-I", "-S", str(PODSERVER), "--bind", LOOPBACK, "--port", str(port)),
            *("--pod", name, "--namespace", "default", "--app", "exporter", "--call", f"{LOOPBACK}:{closed}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://{LOOPBACK}:{port}/healthz", proc, "the pod server", timeout=10)
        yield Exporter(port, proc)
    finally:
        _stop(proc)


@dataclass
class Prometheus:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def query(self, promql: str) -> str:
        data = urllib.parse.urlencode({"query": promql}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=5) as answer:
            return str(answer.read().decode())

    def wait_for_samples(self, promql: str, timeout: float = 30.0) -> None:
        """Until ``promql`` gives a non-empty result (the scrapes arrived)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            answer = self.query(promql)
            if '"result":[{' in answer or '"resultType":"scalar"' in answer:
                return
            time.sleep(0.2)
        raise RuntimeError(f"no samples for {promql} after {timeout:g}s")


@contextlib.contextmanager
def prometheus(folder: Path, targets: list[str]) -> Iterator[Prometheus]:
    """A real Prometheus on 127.0.0.1:<free port> scraping ``targets`` (host:port, loopback) every 0.5 s."""
    assert PROMETHEUS is not None, "the prometheus binary (Debian package prometheus)"
    assert all(t.startswith(f"{LOOPBACK}:") for t in targets), targets
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 500ms, evaluation_interval: 500ms, scrape_timeout: 400ms}\n"
        "scrape_configs:\n"
        "  - job_name: podserver\n"
        f"    static_configs: [{{targets: [{', '.join(repr(t) for t in targets)}]}}]\n"
    )
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}"),
                *(f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    try:
        _wait_http(f"http://{LOOPBACK}:{port}/-/ready", proc, f"prometheus (log: {log})", timeout=60)
        yield Prometheus(port, proc, log)
    finally:
        _stop(proc)


@dataclass
class Traffic:
    """Requests to an exporter from a background thread, ~``rate`` a second, a share of them failing (503)."""

    target: Exporter
    rate: float = 40.0
    bad_share: float = 0.0
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        end = time.monotonic() + 300  # bounded even if a test forgets to stop it
        n = 0
        while not self._stop.is_set() and time.monotonic() < end:
            n += 1
            bad = self.bad_share > 0 and (n % 100) < self.bad_share * 100
            self.target.hit("/" if bad else "/local")
            self.sent += 1
            self._stop.wait(1.0 / self.rate)

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class TokenGate:
    """A reverse proxy on loopback in front of Prometheus that wants ``Authorization: Bearer TOKEN``
    (Prometheus itself has no bearer-token auth). A wrong or missing token gets ``refuse_with`` (401) whose
    body echoes the header it got, as some proxies do: the check must mask it."""

    def __init__(self, upstream: str, token: str, refuse_with: int = 401) -> None:
        self.upstream, self.token, self.refuse_with = upstream, token, refuse_with
        self.seen: list[str | None] = []
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                auth = self.headers.get("Authorization")
                gate.seen.append(auth)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if auth != f"Bearer {gate.token}":
                    reply = f'{{"status":"error","error":"bad credentials: {auth}"}}'.encode()
                    self.send_response(gate.refuse_with)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                request = urllib.request.Request(gate.upstream + self.path, data=body, method="POST")
                request.add_header("Content-Type", self.headers.get("Content-Type", ""))
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        code, reply = answer.status, answer.read()
                except urllib.error.HTTPError as exc:
                    code, reply = exc.code, exc.read()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1})

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def __enter__(self) -> TokenGate:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def environ(**values: str | None) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        old = {k: os.environ.get(k) for k in values}
        try:
            for k, v in values.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return patch()


class Redirector:
    """A server on loopback answering every POST with ``302 Location: LOCATION``."""

    def __init__(self, location: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1})

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def __enter__(self) -> Redirector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
