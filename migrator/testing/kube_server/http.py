"""The fake API server over HTTP on 127.0.0.1 (a random port), for the official client through an ordinary
kubeconfig: end-to-end tests, the CLI in a subprocess, benchmarks. Chunked watch streams."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from migrator.testing.kube_server.api import FakeKubeApi, Request, Response
from migrator.testing.kube_server.store import Obj


def kubeconfig_for(server: str, *, context: str, token: str) -> Obj:
    """A kubeconfig with one cluster (``server``), one token user and one context, current."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": f"{context}-user", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-user"}}],
        "current-context": context,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=method,
            path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            body=self.rfile.read(length) if length else b"",
            content_type=self.headers.get("Content-Type") or "application/json",
            auth=self.headers.get("Authorization"),
        )
        response = self.server.api.handle(request)
        body = response.body
        if isinstance(body, bytes):
            self._send(response, body)
        elif isinstance(body, dict):
            self._send(response, self.server.api.encode(body))
        else:
            self._stream(body)

    def _send(self, response: Response, data: bytes) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[Obj]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = self.server.api.encode(event) + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: FakeKubeApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api


class FakeApiServer:
    """The fake API server on 127.0.0.1 with a random port; a context manager."""

    def __init__(self, api: FakeKubeApi | None = None) -> None:
        self.api = api or FakeKubeApi()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake API server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApiServer:
        self._server = _Server(self.api)
        timers = self.api.start_timers()
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="fake-kube-api",
            daemon=True,
        )
        serve.start()
        self._threads = [serve, timers]
        return self

    def stop(self) -> None:
        self.api.stop_timers()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, *, context: str = "fake", token: str = "fake-token") -> Obj:  # noqa: S107
        return kubeconfig_for(self.url, context=context, token=token)

    def write_kubeconfig(self, path: Path, *, context: str = "fake", token: str = "fake-token") -> Path:  # noqa: S107
        path.write_text(yaml.safe_dump(self.kubeconfig(context=context, token=token)))
        return path
