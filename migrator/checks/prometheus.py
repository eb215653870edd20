"""``prometheus``: an SLO gate on a PromQL query, usable in preflight, verify and monitor.

The check evaluates an instant query (:mod:`migrator.checks.promql`) and compares its one value with the
threshold: ``VALUE op threshold`` is the condition that holds while the SLO is met (an error ratio ``<``
0.01). Rules, as the docs say them (``docs/prometheus.md``):

- the query must give **one** value: a scalar, or an instant vector of exactly one series. Several series
  are an error (aggregate them: ``sum``, ``max``...); a range vector or a string is an error.
- **no data** (no series, or NaN, e.g. ``0/0`` without traffic) fails the check at once, unless
  ``no_data: ok`` (then it holds the condition).
- the server unreachable, an HTTP error, a PromQL error, a bad answer: the check fails, naming the reason
  (after ``attempts`` tries for the retryable ones, within the check's time). Never a pass.
- ``for: D``: a breach counts only once every evaluation for at least D has breached (an alerting rule's
  ``for``); an evaluation that holds starts it over. In a monitor the state lives across the rounds
  (``ctx.store``); elsewhere (preflight, verify) the check evaluates every ``interval`` until the condition
  holds (pass) or the breach has lasted D (fail), bounded by the check's ``timeout``.

The bearer token (``token_env`` or ``token_file``) is read when the check runs and goes only into the
request's header: messages and details name the variable or the file, never the value, and anything the
server answers is masked before it is quoted.
"""

from __future__ import annotations

import math
import operator
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from migrator.actions.context import CheckContext, PreviewLine
from migrator.checks.base import Checker, CheckResult, register_check
from migrator.checks.promql import MASK, URL_RE, PrometheusError, QueryAnswer, instant_query
from migrator.errors import CheckFailed
from migrator.plan.models import PromComparison, PrometheusCheck, PromNoData
from migrator.plan.types import format_duration

URL_ENV = "MIGRATOR_PROMETHEUS_URL"
STORE_KEY = "prometheus"
MAX_TOKEN_FILE_BYTES = 64 * 1024
MAX_SERIES_SHOWN = 5
RETRY_PAUSE_S = 1.0

COMPARE: dict[PromComparison, Callable[[float, float], bool]] = {
    PromComparison.LT: operator.lt,
    PromComparison.LE: operator.le,
    PromComparison.GT: operator.gt,
    PromComparison.GE: operator.ge,
    PromComparison.EQ: operator.eq,
    PromComparison.NE: operator.ne,
}


@dataclass
class GateState:
    """What the evaluations of one check have seen (one monitor, or one verify call)."""

    breach_since: float | None = None  # time.monotonic() of the first evaluation of the current breach
    evaluations: int = 0
    breached: int = 0  # evaluations that breached
    longest_breach_s: float = 0.0
    last: dict[str, Any] | None = None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    summary: str
    details: dict[str, Any]
    pending: bool = False  # breached, but not yet for `for`


def resolve_url(check: PrometheusCheck) -> str:
    """The server's base URL: the plan's ``url``, else ``$MIGRATOR_PROMETHEUS_URL``."""
    if check.url:
        return check.url.rstrip("/")
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        raise PrometheusError(f"no Prometheus URL: set url in the check or ${URL_ENV}", reason="config")
    if not URL_RE.match(url):
        raise PrometheusError(
            f"${URL_ENV} is not an http:// or https:// URL without credentials, query or fragment",
            reason="config",
        )
    return url.rstrip("/")


def read_token(check: PrometheusCheck) -> str | None:
    """The bearer token named by the check (None without one); errors name its source, never its value."""
    if check.token_env:
        token = os.environ.get(check.token_env, "").strip()
        source = f"token_env: environment variable {check.token_env}"
        if not token:
            raise PrometheusError(f"{source} is not set or empty", reason="config")
    elif check.token_file:
        source = f"token_file: {check.token_file}"
        try:
            with Path(check.token_file).open("rb") as fp:
                raw = fp.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise PrometheusError(f"{source}: cannot read it ({exc.strerror})", reason="config") from exc
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise PrometheusError(f"{source}: larger than 64 KiB, not a token", reason="config")
        token = raw.decode("utf-8", errors="replace").strip()
        if not token:
            raise PrometheusError(f"{source}: the file is empty", reason="config")
    else:
        return None
    if any(c.isspace() or not c.isprintable() for c in token):
        raise PrometheusError(f"{source}: the token has whitespace or control characters", reason="config")
    return token


def _describe(check: PrometheusCheck) -> str:
    text = f"{check.query} {check.op.value} {check.threshold:g}"
    if check.for_:
        text += f" (a breach counts after {format_duration(check.for_)})"
    return text


def _one_value(answer: QueryAnswer) -> tuple[float, dict[str, str]]:
    """The query's one value and its labels; NaN when there is no data; PrometheusError on several series."""
    if not answer.samples:
        return math.nan, {}
    if len(answer.samples) > 1:
        shown = ", ".join(str(s.labels) for s in answer.samples[:MAX_SERIES_SHOWN])
        more = (
            f" and {len(answer.samples) - MAX_SERIES_SHOWN} more"
            if len(answer.samples) > MAX_SERIES_SHOWN
            else ""
        )
        raise PrometheusError(
            f"the query returned {len(answer.samples)} series, the check needs one value: aggregate them"
            f" (e.g. sum(...) or max(...)); series: {shown}{more}",
            reason="promql",
        )
    sample = answer.samples[0]
    return sample.value, sample.labels


def _query(ctx: CheckContext, check: PrometheusCheck, url: str, token: str | None) -> QueryAnswer:
    """One evaluation, with ``attempts`` tries for the retryable errors, bounded by the check's time."""
    last: PrometheusError | None = None
    for attempt in range(check.attempts):
        if attempt and (ctx.remaining() < RETRY_PAUSE_S + 0.5 or ctx.cancel.wait(RETRY_PAUSE_S)):
            break
        timeout = max(0.5, min(check.request_timeout, ctx.remaining()))
        try:
            return instant_query(
                url, check.query, timeout=timeout, token=token, ca_file=check.ca_file or None
            )
        except PrometheusError as exc:
            if not exc.retryable:
                raise
            last = exc
            logger.debug("prometheus query failed (attempt {}): {}", attempt + 1, exc)
    assert last is not None
    tries = f" ({check.attempts} tries)" if check.attempts > 1 else ""
    raise PrometheusError(f"{last}{tries}", reason=last.reason)


def evaluate(ctx: CheckContext, check: PrometheusCheck, state: GateState) -> Verdict:
    """One evaluation judged with what ``state`` saw before; updates ``state``."""
    base: dict[str, Any] = {
        "query": check.query,
        "op": check.op.value,
        "threshold": check.threshold,
        "for_s": check.for_,
    }
    try:
        url = resolve_url(check)
        base["url"] = url
        token = read_token(check)
        answer = _query(ctx, check, url, token)
        value, labels = _one_value(answer)
    except PrometheusError as exc:
        state.breach_since = None
        details = {**base, "error": str(exc), "reason": exc.reason, "evaluations": state.evaluations}
        return Verdict(False, f"prometheus: {exc}", details)
    now = time.monotonic()
    state.evaluations += 1
    details = {**base, "value": None if math.isnan(value) else value, "labels": labels}
    if answer.warnings:
        details["warnings"] = list(answer.warnings)
    if math.isnan(value):
        what = "no series" if not answer.samples else "NaN (e.g. 0/0: no traffic)"
        if check.no_data is PromNoData.FAIL:
            details["no_data"] = True
            state.breach_since = None
            return Verdict(
                False,
                f"prometheus: no data: {check.query} gave {what}; is the target scraped? (no_data: ok"
                " makes no data hold, or add `or vector(0)` to the query)",
                details,
            )
        holds = True
        shown = f"no data ({what}), no_data: ok"
    else:
        holds = COMPARE[check.op](value, check.threshold)
        shown = f"{value:g}"
    details["holds"] = holds
    state.last = details
    if holds:
        state.breach_since = None
        return Verdict(True, f"{shown} {check.op.value} {check.threshold:g} holds ({check.query})", details)
    state.breached += 1
    if state.breach_since is None:
        state.breach_since = now
    lasted = now - state.breach_since
    state.longest_breach_s = max(state.longest_breach_s, lasted)
    details["breached_for_s"] = round(lasted, 3)
    head = f"SLO breached: {shown} {check.op.value} {check.threshold:g} does not hold ({check.query})"
    if lasted >= check.for_:
        lasted_text = f" for {lasted:.1f}s (for: {format_duration(check.for_)})" if check.for_ else ""
        return Verdict(False, head + lasted_text, details)
    pending = f"{head}, for {lasted:.1f}s of {format_duration(check.for_)}: not yet counted"
    return Verdict(True, pending, details, pending=True)


def _result(verdict: Verdict, state: GateState, token: str | None) -> CheckResult:
    details = {
        **verdict.details,
        "evaluations": state.evaluations,
        "breached_evaluations": state.breached,
        "longest_breach_s": round(state.longest_breach_s, 3),
    }
    if verdict.pending:
        details["pending"] = True
    return CheckResult(verdict.ok, _masked(verdict.summary, token), _masked(details, token))


def _masked(value: Any, token: str | None) -> Any:
    """Belt and braces: the token never leaves the check, even if something echoed it."""
    if not token:
        return value
    if isinstance(value, str):
        return value.replace(token, MASK)
    if isinstance(value, dict):
        return {k: _masked(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, token) for v in value]
    return value


def _token_for_masking(check: PrometheusCheck) -> str | None:
    try:
        return read_token(check)
    except PrometheusError:
        return None


@register_check("prometheus")
class PrometheusGate(Checker[PrometheusCheck]):
    def run(self, ctx: CheckContext, check: PrometheusCheck) -> CheckResult:
        token = _token_for_masking(check)
        state = ctx.store.get(STORE_KEY)
        if isinstance(state, GateState):  # a monitor round: one evaluation, the breach kept across rounds
            return _result(evaluate(ctx, check, state), state, token)
        return self._until_decided(ctx, check, token)

    def _until_decided(self, ctx: CheckContext, check: PrometheusCheck, token: str | None) -> CheckResult:
        """Outside a monitor: evaluate until the condition holds or the breach lasted ``for`` (bounded in
        count by ``for / interval`` and in time by the check's deadline)."""
        state = GateState()
        rounds = 2 + math.ceil(check.for_ / check.interval)
        verdict = evaluate(ctx, check, state)
        for _ in range(rounds):
            if not verdict.pending:
                return _result(verdict, state, token)
            wait = min(check.interval, max(0.0, ctx.remaining() - check.request_timeout))
            if wait <= 0 or ctx.cancel.wait(wait):
                break
            verdict = evaluate(ctx, check, state)
        if not verdict.pending:
            return _result(verdict, state, token)
        why = "cancelled" if ctx.cancel.is_set() else "out of time"
        undecided = Verdict(False, f"{verdict.summary}; {why} before the breach was decided", verdict.details)
        return _result(undecided, state, token)

    def monitor_start(self, ctx: CheckContext, check: PrometheusCheck) -> None:
        state = GateState()
        ctx.store[STORE_KEY] = state
        verdict = evaluate(ctx, check, state)
        if not verdict.ok:
            result = _result(verdict, state, _token_for_masking(check))
            raise CheckFailed(result.summary, details=result.details)

    def monitor_stop(self, ctx: CheckContext, check: PrometheusCheck) -> CheckResult | None:
        state = ctx.store.pop(STORE_KEY, None)
        if not isinstance(state, GateState):
            return None
        result = _result(evaluate(ctx, check, state), state, _token_for_masking(check))
        if result.ok:
            summary = (
                f"{result.summary}; {state.evaluations} evaluations, {state.breached} breached"
                f" (longest breach {state.longest_breach_s:.1f}s)"
            )
            return CheckResult(True, summary, result.details)
        return result

    def preview(self, ctx: CheckContext, check: PrometheusCheck) -> list[PreviewLine]:
        env_url = os.environ.get(URL_ENV, "")
        where = check.url or f"${URL_ENV}" + (f" ({env_url})" if URL_RE.match(env_url) else "")
        auth = ""
        if check.token_env:
            auth = f", bearer token from ${check.token_env}"
        elif check.token_file:
            auth = f", bearer token from {check.token_file}"
        lines: list[PreviewLine] = [f"prometheus at {where}: {_describe(check)}{auth}"]
        for probe in (resolve_url, read_token):
            try:
                probe(check)
            except PrometheusError as exc:
                lines.append(f"would fail: {exc}")
        return lines
