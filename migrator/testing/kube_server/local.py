"""The fake API server in this process, at the narrowest seam (as httpx's ``MockTransport`` does): the
official client's urllib3 pool is replaced by :class:`LocalPool`, which hands each request to
:meth:`FakeKubeApi.handle` and its answer back, with no socket and no HTTP server.

Everything above the pool is the real code: :class:`~migrator.targets.kube.api.KubeApi` (calls, reads with
retries, pagination, watches, error translation) and the client's own request building (paths, query
parameters, content types, bodies, the bearer token). So a unit test of the kube adapter exercises what
production runs, against the same store and controllers as the HTTP server (:mod:`.http`), which stays for
end-to-end tests (the CLI in a subprocess, a kubeconfig) and benchmarks.

    with LocalKube() as kube:
        add_nodes(kube.api)
        cluster = kube.cluster(run_id="r1")   # a KubeCluster
"""

from __future__ import annotations

import http
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3
from kubernetes import client as k8s

from migrator.targets.kube.api import client_configuration
from migrator.targets.kube.cluster import KubeCluster
from migrator.testing.kube_server.api import FakeKubeApi, Request, RequestTimedOut
from migrator.testing.kube_server.store import Obj

HOST = "http://kube.local.invalid"  # never resolved: no request leaves the process


class LocalResponse:
    """What the client reads of a urllib3 response: status, headers, the body at once or as a stream."""

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        *,
        data: bytes = b"",
        events: Iterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.reason = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
        self.headers = urllib3.HTTPHeaderDict(dict(headers))
        self._data = data
        self._events = events

    @property
    def data(self) -> bytes:
        if self._events is not None:
            self._data, self._events = b"".join(self._events), None
        return self._data

    def read(self, amt: int | None = None) -> bytes:
        return self.data

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        if self._events is None:
            yield self.data
            return
        yield from self._events

    def getheaders(self) -> urllib3.HTTPHeaderDict:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def close(self) -> None:
        """Ends a watch (its generator stops waiting for events)."""
        events, self._events = self._events, None
        close = getattr(events, "close", None)
        if close is not None:
            close()

    def release_conn(self) -> None:
        return


def _read_timeout(timeout: Any) -> float | None:
    if isinstance(timeout, urllib3.Timeout):
        started = timeout.clone()  # its read timeout counts from the connection (made at once here)
        started.start_connect()
        read = started.read_timeout
        return float(read) if isinstance(read, int | float) else None
    return float(timeout) if isinstance(timeout, int | float) else None


class LocalPool:
    """Stands in for the client's ``urllib3.PoolManager``: requests are answered by ``api`` here."""

    def __init__(self, api: FakeKubeApi) -> None:
        self.api = api

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | str | None = None,
        fields: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Any = None,
        **_options: Any,
    ) -> LocalResponse:
        if fields:
            raise ValueError("the fake API server takes no form fields")
        split = urlsplit(url)
        headers = urllib3.HTTPHeaderDict(dict(headers or {}))  # names are case-insensitive
        request = Request(
            method=method.upper(),
            path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            body=body.encode() if isinstance(body, str) else body or b"",
            content_type=headers.get("Content-Type") or "application/json",
            auth=headers.get("Authorization"),
            timeout=_read_timeout(timeout),
        )
        try:
            response = self.api.handle(request)
        except RequestTimedOut as exc:
            raise urllib3.exceptions.ReadTimeoutError(None, url, str(exc)) from exc  # type: ignore[arg-type]
        out_headers = {"Content-Type": response.content_type, **response.headers}
        answer = response.body
        if isinstance(answer, bytes):
            return LocalResponse(response.status, out_headers, data=answer)
        if isinstance(answer, dict):
            return LocalResponse(response.status, out_headers, data=self.api.encode(answer))
        return LocalResponse(response.status, out_headers, events=(self._line(e) for e in answer))

    def _line(self, event: Obj) -> bytes:
        return json.dumps(event, separators=(",", ":")).encode() + b"\n"

    def clear(self) -> None:
        return


class LocalKube:
    """A fake cluster served in this process; a context manager that runs its controllers."""

    def __init__(self, api: FakeKubeApi | None = None) -> None:
        self.api = api or FakeKubeApi()
        self._clusters: list[KubeCluster] = []
        self._running = False

    @property
    def url(self) -> str:
        """The server URL the clients are given (never resolved)."""
        return HOST

    def start(self) -> LocalKube:
        self.api.start_timers()
        self._running = True
        return self

    def stop(self) -> None:
        for cluster in self._clusters:
            cluster.close()
        self._clusters.clear()
        if self._running:
            self.api.stop_timers()
            self._running = False

    def __enter__(self) -> LocalKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self, *, token: str | None = None) -> Any:
        """An official ``ApiClient`` whose requests this fake answers (``token``: default the one the
        fake requires)."""
        configuration = client_configuration()
        configuration.host = HOST
        token = token if token is not None else self.api.token
        if token is not None:
            configuration.api_key = {"BearerToken": f"Bearer {token}"}
        api_client = k8s.ApiClient(configuration)
        api_client.rest_client.pool_manager = LocalPool(self.api)  # type: ignore[assignment]  # the seam
        return api_client

    def cluster(self, *, token: str | None = None, **kwargs: Any) -> KubeCluster:
        """A :class:`KubeCluster` on this fake (closed when the fake stops)."""
        cluster = KubeCluster(api_client=self.api_client(token=token), **kwargs)
        self._clusters.append(cluster)
        return cluster
