"""A small client of the Prometheus HTTP API: one instant query (``POST /api/v1/query``), standard library
only (``urllib``).

Every failure is a :class:`PrometheusError` (a :class:`~migrator.errors.CheckFailed`) whose message says
what went wrong: the server cannot be reached, answers an HTTP error, refuses the PromQL, or answers
something that is not the Prometheus API. The bearer token goes into one request header, never into a
message: what the server answers is quoted in a message only after the token is masked out of it.
Redirects are refused (a redirect would send the request to another address), and no proxy from the
environment is used (``http_proxy``...): the request goes to the URL given and nowhere else. Every request
is bounded in time (``timeout``) and every answer in size (:data:`MAX_ANSWER_BYTES`).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from typing import IO, Any

from migrator.errors import CheckFailed

MAX_ANSWER_BYTES = 8 * 1024 * 1024
MAX_QUOTED_CHARS = 300
URL_RE = re.compile(r"^https?://[^\s/@?#]+(/[^\s?#]*)?$")
MASK = "***"


class PrometheusError(CheckFailed):
    """A query that gave no usable answer. ``reason``: ``unreachable``, ``http``, ``promql``, ``auth``,
    ``answer`` (not the API's shape), ``config``. ``retryable``: worth another try (unreachable, 5xx, 429)."""

    def __init__(self, message: str, *, reason: str, retryable: bool = False) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str] = field(default_factory=dict)
    value: float = math.nan


@dataclass(frozen=True)
class QueryAnswer:
    """What ``/api/v1/query`` answered: ``result_type`` ``vector`` or ``scalar`` (one sample, no labels)."""

    result_type: str
    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = ()


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None  # urllib then raises the 3xx as an HTTPError


def check_url(url: str) -> str:
    """``url`` without a trailing slash; PrometheusError when it is not an http(s) URL without credentials
    (the message does not repeat it: it may hold a password)."""
    if not URL_RE.match(url):
        raise PrometheusError(
            "the Prometheus URL is not an http:// or https:// URL without credentials, query or fragment",
            reason="config",
        )
    return url.rstrip("/")


def _mask(text: str, token: str | None) -> str:
    return text.replace(token, MASK) if token else text


def _quote(raw: bytes, token: str | None) -> str:
    text = _mask(raw.decode("utf-8", errors="replace"), token).strip()
    text = " ".join(text.split())
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "..."


def _read(fp: IO[bytes]) -> bytes:
    data = fp.read(MAX_ANSWER_BYTES + 1)
    if len(data) > MAX_ANSWER_BYTES:
        raise PrometheusError(
            f"the answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB", reason="answer"
        )
    return data


def _http_error(exc: urllib.error.HTTPError, where: str, token: str | None) -> PrometheusError:
    try:
        body = _read(exc) if exc.fp is not None else b""
    except (OSError, PrometheusError, http.client.HTTPException):
        body = b""
    code = exc.code
    if 300 <= code < 400:
        target = exc.headers.get("Location", "?") if exc.headers else "?"
        return PrometheusError(
            f"{where} answered HTTP {code}, a redirect to {_mask(str(target), token)}: refused"
            " (set the URL to the final address)",
            reason="http",
        )
    error_type, error = "", ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            error_type, error = str(doc.get("errorType", "")), str(doc.get("error", ""))
    except ValueError:
        pass
    if error and code in (400, 422):
        return PrometheusError(
            f"PromQL error from {where} ({error_type or code}): {_mask(error, token)}", reason="promql"
        )
    if code in (401, 403):
        return PrometheusError(
            f"{where} answered HTTP {code} {exc.reason}: the bearer token is missing, wrong or not allowed",
            reason="auth",
        )
    quoted = _mask(error, token) if error else _quote(body, token)
    return PrometheusError(
        f"{where} answered HTTP {code} {exc.reason}" + (f": {quoted}" if quoted else ""),
        reason="http",
        retryable=code >= 500 or code == 429,
    )


def _value(raw: Any, where: str) -> float:
    if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[1], str)):
        raise PrometheusError(f'{where}: a sample is not [time, "value"]: {str(raw)[:100]}', reason="answer")
    try:
        return float(raw[1])
    except ValueError:
        raise PrometheusError(
            f"{where}: a sample's value is not a number: {raw[1][:50]!r}", reason="answer"
        ) from None


def parse_answer(body: bytes, where: str, token: str | None = None) -> QueryAnswer:
    """The answer of ``/api/v1/query``; PrometheusError when it is an error or not the API's shape."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise PrometheusError(
            f"{where} did not answer JSON (is it Prometheus?): {_quote(body, token)}", reason="answer"
        ) from None
    if not isinstance(doc, dict) or doc.get("status") not in ("success", "error"):
        raise PrometheusError(
            f"{where} did not answer the Prometheus API: {_quote(body, token)}", reason="answer"
        )
    if doc["status"] == "error":
        error = _mask(str(doc.get("error", "")), token)
        return_type = str(doc.get("errorType", "error"))
        raise PrometheusError(f"PromQL error from {where} ({return_type}): {error}", reason="promql")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(f"{where}: the answer has no data", reason="answer")
    kind, result = data.get("resultType"), data.get("result")
    warnings = tuple(_mask(str(w), token) for w in doc.get("warnings") or [])
    if kind == "scalar":
        return QueryAnswer("scalar", (Sample({}, _value(result, where)),), warnings)
    if kind == "vector" and isinstance(result, list):
        samples = []
        for item in result:
            if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
                raise PrometheusError(f"{where}: a series of the vector has no labels", reason="answer")
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            samples.append(Sample(labels, _value(item.get("value"), where)))
        return QueryAnswer("vector", tuple(samples), warnings)
    raise PrometheusError(
        f"the query's result is a {kind}, not an instant vector or a scalar (a range selector like x[5m]"
        " needs a function around it, e.g. rate(x[5m]))",
        reason="promql",
    )


def instant_query(
    base_url: str,
    query: str,
    *,
    timeout: float,
    token: str | None = None,
    ca_file: str | None = None,
) -> QueryAnswer:
    """Evaluate ``query`` now on the Prometheus at ``base_url`` (``POST /api/v1/query``)."""
    base = check_url(base_url)
    where = f"Prometheus at {base}"
    body = urllib.parse.urlencode({"query": query, "timeout": f"{max(1, int(timeout * 1000))}ms"}).encode()
    request = urllib.request.Request(f"{base}/api/v1/query", data=body, method="POST")  # noqa: S310 - checked
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Accept", "application/json")
    if token:
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects(), urllib.request.ProxyHandler({})]
    if base.startswith("https://"):
        try:
            context = ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise PrometheusError(f"ca_file: cannot load {ca_file}: {exc}", reason="config") from exc
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as answer:
            raw = _read(answer)
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, where, token) from exc
    except urllib.error.URLError as exc:
        raise PrometheusError(
            f"cannot reach {where}: {_mask(str(exc.reason), token)}", reason="unreachable", retryable=True
        ) from exc
    except TimeoutError as exc:
        raise PrometheusError(
            f"{where} did not answer within {timeout:g}s", reason="unreachable", retryable=True
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise PrometheusError(
            f"cannot read the answer of {where}: {type(exc).__name__}: {_mask(str(exc), token)}",
            reason="unreachable",
            retryable=True,
        ) from exc
    return parse_answer(raw, where, token)
