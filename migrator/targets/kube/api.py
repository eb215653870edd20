"""The thin layer between migrator and the official ``kubernetes`` client.

Every call goes through :meth:`KubeApi.call`: the typed client methods are called with
``_preload_content=False`` (raw JSON, no strict model validation, fast for thousands of objects),
``ApiException`` and urllib3 errors are translated to :mod:`migrator.errors` at this boundary, lists are
paginated (``limit``/``continue``) and watches are bounded in time and stop on a cancel event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader
from kubernetes.watch.watch import iter_resp_lines
from loguru import logger
from tenacity import (
    AttemptManager,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from migrator.errors import MigratorError, PermanentError, TemporaryError, UsageError

Obj = dict[str, Any]
T = TypeVar("T")

FIELD_MANAGER = "migrator"  # the field manager of every write (server-side apply, patches)

RBAC_HINT = (
    "migrator lacks a Kubernetes permission: apply the ClusterRole in docs/rbac.yaml to its user or "
    "service account, and run `migrator doctor --target kube` to list what is missing"
)


try:  # optional: several times faster on the large list pages of big clusters
    import orjson

    def _loads(data: bytes | str) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - orjson is optional

    def _loads(data: bytes | str) -> Any:
        return json.loads(data)


class KubeNotFound(PermanentError):
    """The object (or the API) does not exist on the cluster."""

    def __init__(self, message: str, *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name


class KubeConflict(TemporaryError):
    """409: the object changed under us (or already exists); re-read and retry."""


class KubeForbidden(PermanentError):
    """401/403: authentication or RBAC refused the call."""


class KubeInvalid(PermanentError):
    """400/422: the API server refused the object as invalid."""


class WatchExpired(TemporaryError):
    """410 Gone during a watch: list again and watch from the new resourceVersion."""


def _status_of(exc: ApiException) -> tuple[str, str, Obj]:
    """``(reason, message, details)`` from an ApiException's Status body."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body.startswith("{"):
        try:
            status = json.loads(body)
        except ValueError:
            status = {}
        if isinstance(status, dict):
            return (
                str(status.get("reason") or exc.reason or ""),
                str(status.get("message") or ""),
                status.get("details") or {},
            )
    return str(exc.reason or ""), str(body or ""), {}


def retry_after(exc: ApiException, default: float = 1.0) -> float:
    """The ``Retry-After`` header in seconds (delta or HTTP date), else ``default``."""
    headers = exc.headers or {}
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if not raw:
        return default
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(str(raw)).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return default


def translate(exc: BaseException, what: str) -> MigratorError:
    """Map a client exception to a migrator error (raise it ``from exc``)."""
    if isinstance(exc, MigratorError):
        return exc
    if isinstance(exc, ApiException):
        code = int(exc.status or 0)
        reason, message, details = _status_of(exc)
        text = f"{what}: HTTP {code} {reason}: {message}".rstrip(": ")
        if code in (401, 403):
            return KubeForbidden(f"{text}. Hint: {RBAC_HINT}")
        if code == 404:
            return KubeNotFound(
                f"{what}: not found ({message or reason})",
                kind=str(details.get("kind", "")),
                name=str(details.get("name", "")),
            )
        if code == 409:
            return KubeConflict(text, delay=retry_after(exc, 0.5))
        if code == 410:
            return WatchExpired(text, delay=0.0)
        if code == 429 or code >= 500 or code == 0:
            return TemporaryError(text, delay=retry_after(exc, 1.0))
        if code in (400, 422):
            return KubeInvalid(text)
        return PermanentError(text)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return TemporaryError(f"{what}: cannot reach the Kubernetes API server: {exc}", delay=2.0)
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ListResult:
    items: list[Obj]
    resource_version: str


def client_configuration() -> Any:
    """A client ``Configuration`` whose urllib3 layer retries only failed connections (not statuses, not
    ``Retry-After``): every other retry is ours, bounded and visible (:class:`TemporaryError`)."""
    configuration = k8s.Configuration()
    configuration.retries = urllib3.util.Retry(
        total=3,
        connect=2,
        read=0,
        redirect=0,
        status=0,
        other=0,
        backoff_factor=0.1,
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    return configuration


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def incluster_client() -> Any:
    """An ``ApiClient`` from the pod's service account (``$KUBERNETES_SERVICE_HOST``/``_PORT``, the token
    and CA under :data:`SERVICE_ACCOUNT_DIR`; the token is re-read when it rotates)."""
    configuration = client_configuration()
    InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=f"{SERVICE_ACCOUNT_DIR}/token", cert_filename=f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    ).load_and_set(client_configuration=configuration)
    return k8s.ApiClient(configuration)


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ``ApiClient`` from a kubeconfig (``--kubeconfig``/``--context``, else ``$KUBECONFIG`` or
    ``~/.kube/config``) or, without one, the in-cluster service account."""
    try:
        if kubeconfig is None and context is None:
            try:
                return k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                    client_configuration=client_configuration(), persist_config=False
                )
            except (ConfigException, FileNotFoundError, OSError):
                return incluster_client()
        return k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig,
            context=context,
            persist_config=False,
            client_configuration=client_configuration(),
        )
    except (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # a malformed kubeconfig raises YAML or plain Python errors from inside the loader: one line
        where = kubeconfig or "the default kubeconfig"
        detail = " ".join(str(exc).split()) or type(exc).__name__
        known = _context_names(kubeconfig) if context else None
        if known is not None and context not in known:
            detail = f"no context {context!r}; the contexts are: {', '.join(known) or '(none)'}"
        raise UsageError(
            f"cannot load Kubernetes config from {where} (context {context or 'current'}): {detail}"
        ) from exc


def _context_names(kubeconfig: str | None) -> list[str] | None:
    """The context names of a kubeconfig, or None when it cannot be read (the caller's error stands)."""
    try:
        contexts, _active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - only to improve an error message that is already being raised
        return None
    return sorted(str(c.get("name")) for c in contexts or [] if isinstance(c, dict))


class KubeApi:
    """The official client's API groups plus the call, list and watch helpers migrator needs."""

    def __init__(
        self,
        api_client: Any,
        *,
        page_size: int = 500,
        request_timeout: float = 30.0,
        read_attempts: int = 3,
        watch_chunk: float = 5.0,
        max_pages: int = 10_000,
    ) -> None:
        self.client = api_client
        self.page_size = page_size
        self.request_timeout = request_timeout
        self.read_attempts = max(read_attempts, 1)
        self.watch_chunk = watch_chunk
        self.max_pages = max_pages
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}
        self._resources_lock = threading.Lock()

    # The API groups are created on first use: importing one of the client's typed API modules compiles
    # its validators (about 1 s for CoreV1Api), so a run pays only for the groups it uses.

    @cached_property
    def core(self) -> Any:
        return k8s.CoreV1Api(self.client)

    @cached_property
    def apps(self) -> Any:
        return k8s.AppsV1Api(self.client)

    @cached_property
    def policy(self) -> Any:
        return k8s.PolicyV1Api(self.client)

    @cached_property
    def networking(self) -> Any:
        return k8s.NetworkingV1Api(self.client)

    @cached_property
    def coordination(self) -> Any:
        return k8s.CoordinationV1Api(self.client)

    @cached_property
    def discovery_v1(self) -> Any:
        return k8s.DiscoveryV1Api(self.client)

    @cached_property
    def authorization(self) -> Any:
        return k8s.AuthorizationV1Api(self.client)

    @property
    def host(self) -> str:
        return str(self.client.configuration.host)

    # -------------------------------------------------------------------------------------- calls

    def call_bytes(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        """One API call through the typed client, returning the raw body (no retry; e.g. a pod's log)."""
        kwargs["_preload_content"] = False
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            resp = func(*args, **kwargs)
            data: bytes = resp.data
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, what) from exc
        return data

    def call(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        """One API call through the typed client, returning the JSON body (no retry)."""
        data = self.call_bytes(what, func, *args, **kwargs)
        if not data:
            return {}
        parsed = _loads(data)
        return parsed if isinstance(parsed, dict) else {"items": parsed}

    def read(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        """An idempotent read, retried on temporary errors (bounded: ``read_attempts``, 30 s)."""
        retrying = Retrying(
            retry=retry_if_exception_type(TemporaryError),
            stop=stop_after_attempt(self.read_attempts) | stop_after_delay(30),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        attempt: AttemptManager | None = None
        try:
            for attempt in retrying:
                with attempt:
                    return self.call(what, func, *args, **kwargs)
        except MigratorError as exc:
            # The attempt keeps the error (its outcome) and tenacity's frames in its traceback keep the
            # attempt: a reference cycle that would keep the callers' frames (e.g. a dry run's snapshot of
            # every pod) alive until a full collection. Cut it: the error is raised from here, and the
            # locals that hold the attempt are dropped as it leaves (a KubeNotFound is routine).
            exc.__traceback__ = None
            raise
        finally:
            del retrying
            attempt = None
        raise PermanentError(f"{what}: no attempt made")  # pragma: no cover - tenacity always attempts

    def list_all(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> ListResult:
        """Every item of a list call, page by page (``limit``/``continue``)."""
        items: list[Obj] = []
        rv = ""
        for page in self.pages(what, func, *args, **kwargs):
            items.extend(page.get("items") or [])
            rv = rv or str((page.get("metadata") or {}).get("resourceVersion") or "")
        return ListResult(items, rv)

    def list_converted(
        self, what: str, convert: Callable[[Obj], T], func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> list[T]:
        """Every item of a list call through ``convert``, a page at a time: only one page of the raw JSON
        objects is alive at once (e.g. 20,000 pods: their port view is a fraction of their JSON)."""
        out: list[T] = []
        for page in self.pages(what, func, *args, **kwargs):
            out.extend(map(convert, page.get("items") or ()))
        return out

    def pages(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Obj]:
        """The pages of a list call (``limit``/``continue``), each read with retries."""
        token: str | None = None
        for _ in range(self.max_pages):
            page = self.read(what, func, *args, limit=self.page_size, _continue=token, **kwargs)
            token = (page.get("metadata") or {}).get("continue")
            yield page
            if not token:
                return
        raise PermanentError(f"{what}: more than {self.max_pages} pages of {self.page_size}")

    def watch(
        self,
        what: str,
        func: Callable[..., Any],
        *args: Any,
        resource_version: str,
        deadline: float,
        cancel: threading.Event | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[str, Obj]]:
        """``(type, object)`` watch events from ``resource_version`` until ``deadline`` (monotonic) or
        ``cancel``; reconnects every ``watch_chunk`` seconds. Raises :class:`WatchExpired` on 410."""
        rv = resource_version
        for _ in range(100_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancel is not None and cancel.is_set()):
                return
            chunk = max(1, int(min(remaining, self.watch_chunk) + 0.999))
            try:
                resp = func(
                    *args,
                    watch=True,
                    resource_version=rv,
                    timeout_seconds=chunk,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                    _request_timeout=(self.request_timeout, chunk + 10),
                    **kwargs,
                )
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise translate(exc, what) from exc
            try:
                for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                    if not line:
                        continue
                    event = json.loads(line)
                    etype, obj = str(event.get("type")), event.get("object") or {}
                    if etype == "ERROR":
                        code = int(obj.get("code") or 0)
                        if code == 410:
                            raise WatchExpired(f"{what}: watch expired: {obj.get('message')}", delay=0.0)
                        raise TemporaryError(f"{what}: watch error {code}: {obj.get('message')}")
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if etype == "BOOKMARK":
                        continue
                    yield etype, obj
                    if cancel is not None and cancel.is_set():
                        return
                    if time.monotonic() >= deadline:
                        return
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                logger.debug("{}: watch stream broke ({}), reconnecting", what, exc)
                time.sleep(0.2)
            finally:
                resp.close()  # never put a half-read watch stream back in the pool
                resp.release_conn()
        raise PermanentError(f"{what}: too many watch reconnects")

    # ---------------------------------------------------------------------------- generic paths

    def request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        """A raw request through the client's configuration, auth and TLS (for arbitrary kinds)."""
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method_, url, header_params, body_, post = self.client.param_serialize(
                method=method,
                resource_path=path,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.client.call_api(
                method_,
                url,
                header_params=header_params,
                body=body_,
                post_params=post,
                _request_timeout=self.request_timeout,
            )
            resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException.from_response(http_resp=resp, body=None, data=None)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, what) from exc
        return json.loads(resp.data) if resp.data else {}

    def resource_for(self, api_version: str, kind: str) -> tuple[str, bool]:
        """``(plural, namespaced)`` of a kind, from API discovery (cached per group version)."""
        with self._resources_lock:
            if (api_version, kind) in self._resources:
                return self._resources[(api_version, kind)]
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        found = self.request(f"discover {api_version}", "GET", path)
        with self._resources_lock:
            for res in found.get("resources") or []:
                if "/" not in str(res.get("name")):
                    self._resources[(api_version, str(res.get("kind")))] = (
                        str(res["name"]),
                        bool(res.get("namespaced")),
                    )
            if (api_version, kind) not in self._resources:
                raise KubeNotFound(
                    f"the cluster has no kind {kind} in {api_version} (is its CRD installed?)", kind=kind
                )
            return self._resources[(api_version, kind)]

    def object_path(self, api_version: str, kind: str, name: str | None, namespace: str | None) -> str:
        plural, namespaced = self.resource_for(api_version, kind)
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if namespaced:
            if not namespace:
                raise UsageError(f"{kind} {name} is namespaced: give it a namespace")
            base += f"/namespaces/{namespace}"
        base += f"/{plural}"
        return f"{base}/{name}" if name else base
