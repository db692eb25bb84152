"""The attribution service (NVIDIA nvrx-attrsvc): its recommendation for a job that ended.

Not a destination like the other sinks: it is asked once, before a job's final message is first
delivered, and what it says (its `recommendation.action`, STOP, RESTART or CONTINUE, and the reason)
goes into that message, which every sink then sends. The contract, as the service and its own
client (nvrx smonsvc) use it:

* `POST /logs` with `{"log_path", "user", "job_id", "analysis_intent": "terminal"}` submits the
  ended job's output file (the intent asks for the final analysis, not progressive tracking);
* `GET /logs?log_path=...` answers the analysis: `status` is `completed` once it is done, with
  `recommendation: {"action", "reason", "source"}`;
* an error is `{"error_code", "message"}` with an HTTP status, read by the one rule for every HTTP
  answer (core.notify.http.classify_status): 503 `job_limit_reached` (the service is busy), other
  5xx, 408 and 429 (with its Retry-After) are worth asking again; a 4xx (INVALID_PATH, EMPTY_FILE,
  NOT_FOUND ...) is final.

Every call is bounded by one overall wait (ATTRIBUTION_WAIT): a slow or failing service delays the
final message by at most that, and then the message goes out without the attribution, saying why.
Knows nothing of Slurm or job records; only core.notify.http imports `requests`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Tuple, TypeVar

from core.notify.http import classify_status, default_get, default_post, describe_transport, one_line, redact_url
from core.notify.message import Field, Message
from core.notify.outbox import Answer

T = TypeVar("T")

#: The longest the final message waits for the service's answer, all attempts and polls included.
ATTRIBUTION_WAIT = 60.0
#: One request may take this long (less when the overall wait is nearly over).
REQUEST_TIMEOUT = 10.0
#: Pauses between polls and retries: 1, 2, 4 ... seconds, at most this.
MAX_PAUSE = 8.0


@dataclass(frozen=True)
class Attribution:
    """The service's answer: what it recommends (STOP, RESTART, CONTINUE ...) and why; or why there is none."""

    action: str = ""
    summary: str = ""
    problem: str = ""  # set when there is no recommendation: what went wrong, on one line

    @property
    def found(self) -> bool:
        return bool(self.action)


class _Retry(Exception):
    """An answer worth asking again (busy, rate limited, server error, no connection)."""

    def __init__(self, detail: str, wait: Optional[float] = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.wait = wait


class _Final(Exception):
    """An answer that asking again cannot change (the service refused this log)."""


class AttributionClient:
    """Asks one attribution service about one job's log, within `wait` seconds of `clock` time."""

    def __init__(self, url: str, *, wait: float = ATTRIBUTION_WAIT, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, post_with: Optional[Callable[..., Any]] = None,
                 get_with: Optional[Callable[..., Any]] = None) -> None:
        self.url = url.strip().rstrip("/")
        self.wait = wait
        self.clock = clock
        self.sleep = sleep
        self._post = post_with
        self._get = get_with

    def attribute(self, log_path: str, user: str, job_id: str) -> Attribution:
        """Submit the log, then poll until the analysis is completed or the wait is over; never raises
        for network or HTTP problems."""
        deadline = self.clock() + self.wait
        body = {"log_path": log_path, "user": user, "job_id": job_id, "analysis_intent": "terminal"}
        try:
            self._until(deadline, lambda timeout: self._submit(body, timeout))
            answer = self._until(deadline, lambda timeout: self._result(log_path, timeout))
        except _Final as exc:
            return Attribution(problem=str(exc))
        except _Retry as exc:
            return Attribution(problem=f"no answer within {self.wait:g}s (last: {exc.detail})")
        return answer

    def _until(self, deadline: float, call: Callable[[float], Optional[T]]) -> T:
        """Call until it returns an answer; a _Retry waits (with backoff) and tries again until the deadline."""
        pause, detail = 1.0, "out of time"
        while True:
            left = deadline - self.clock()
            if left <= 0:
                raise _Retry(detail)
            try:
                answer = call(min(REQUEST_TIMEOUT, left))
                if answer is not None:
                    return answer
                detail, wait = "analysis not completed yet", None
            except _Retry as exc:
                detail, wait = exc.detail, exc.wait
            left = deadline - self.clock()
            if left <= 0:
                raise _Retry(detail)
            self.sleep(min(left, pause if wait is None else max(wait, 1.0)))  # a Retry-After: 0 is no storm
            pause = min(MAX_PAUSE, pause * 2)

    def _submit(self, body: dict, timeout: float) -> Optional[bool]:
        post = self._post or default_post()
        self._call(lambda: post(f"{self.url}/logs", json=body, timeout=timeout,
                                headers={"accept": "application/json"}), timeout)
        return True

    def _result(self, log_path: str, timeout: float) -> Optional[Attribution]:
        get = self._get or default_get()
        response = self._call(lambda: get(f"{self.url}/logs", params={"log_path": log_path}, timeout=timeout,
                                          headers={"accept": "application/json"}), timeout)
        return parse_result(_json(response))

    def _call(self, send: Callable[[], Any], timeout: float) -> Any:
        """The response of a 2xx answer; raises _Retry or _Final for the others."""
        try:
            response = send()
        except (OSError, ValueError) as exc:  # requests' exceptions derive from OSError
            if isinstance(exc, ValueError):
                raise _Final(f"not a usable URL: {redact_url(self.url)}") from None
            raise _Retry(describe_transport(exc, timeout)) from None
        outcome = classify_status(response, "attribution service", ())  # the one rule for every HTTP answer
        if outcome.answer is Answer.DELIVERED:
            return response
        code, message = error_of(response)
        detail = f"HTTP {response.status_code}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if outcome.answer is Answer.RETRY:
            raise _Retry(detail, outcome.retry_after)
        raise _Final(f"the attribution service refused the log ({detail})")


def error_of(response: Any) -> Tuple[str, str]:
    """(error_code, message) of an error answer; empty when the body says neither."""
    body = _json(response)
    detail = body.get("detail") if isinstance(body.get("detail"), dict) else body  # FastAPI may nest it
    code = detail.get("error_code") if isinstance(detail, dict) else None
    message = detail.get("message") if isinstance(detail, dict) else None
    return (one_line(code, 60) if isinstance(code, str) else "",
            one_line(message, 200) if isinstance(message, str) else "")


def parse_result(body: Any) -> Optional[Attribution]:
    """The recommendation of a completed analysis; None while it is not completed yet."""
    if not isinstance(body, dict) or str(body.get("status", "")).lower() != "completed":
        return None
    recommendation = body.get("recommendation")
    if not isinstance(recommendation, dict) or not isinstance(recommendation.get("action"), str) \
            or not recommendation["action"].strip():
        return Attribution(problem="the analysis completed without a recommendation")
    summary = next((recommendation[key] for key in ("reason", "summary")
                    if isinstance(recommendation.get(key), str) and recommendation[key].strip()), "")
    return Attribution(action=one_line(recommendation["action"].strip().upper(), 40), summary=one_line(summary, 500))


def _json(response: Any) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def amend(message: Message, attribution: Attribution) -> Message:
    """The final message with the service's recommendation, or one line saying why there is none."""
    if attribution.found:
        value = attribution.action + (f": {attribution.summary}" if attribution.summary else "")
        line = Field("Attribution service recommends", value, inline=False)
    else:
        line = Field("Attribution service", f"no recommendation: {attribution.problem}", inline=False)
    return replace(message, fields=(*message.fields, line))
