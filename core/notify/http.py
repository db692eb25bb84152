"""What every HTTP sink shares: checking and redacting URLs, one POST, and what an answer means.

The one rule for all HTTP services (each sink may add what its service says on top):

* 2xx: delivered;
* 401, 403, 404 (and 410): GONE - the address or its token is no longer valid; fix config, then `recover`;
* 429: RETRY after the server's ``Retry-After`` (also the pause before the next message);
* 408 and 5xx, a timeout, a refused or dropped connection: RETRY with backoff;
* any other 4xx: GONE - the service refused this message, sending it again cannot help.

This is the only module that imports ``requests``, and only when it sends. Nothing here knows Slurm.
Outcome details never hold a URL's secret parts: exception texts are reduced to their types, and an
error body is scrubbed of the URL's path segments, query values and any configured token.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Callable, Iterable, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from core.errors import ConfigError
from core.notify.outbox import Answer, Outcome
from core.notify.sink import Sink

ELLIPSIS = "…"
DETAIL_LIMIT = 300


# -------------------------------------------------------------------------- text


def fit(text: str, limit: int) -> str:
    """At most `limit` characters, keeping the head (an ellipsis marks a cut)."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: max(0, limit - len(ELLIPSIS))] + ELLIPSIS


def fit_tail(text: str, limit: int) -> str:
    """At most `limit` characters, keeping the end: a log's last lines matter most."""
    if limit <= len(ELLIPSIS):
        return ""
    return text if len(text) <= limit else ELLIPSIS + text[len(text) - (limit - len(ELLIPSIS)):]


def fit_bytes(text: str, limit: int, *, tail: bool = False) -> str:
    """At most `limit` bytes of UTF-8 (services count bytes), cut on a character boundary."""
    if len(text.encode("utf-8")) <= limit:
        return text
    mark = len(ELLIPSIS.encode("utf-8"))
    if limit <= mark:
        return ""
    data = text.encode("utf-8")
    if tail:
        return ELLIPSIS + data[len(data) - (limit - mark):].decode("utf-8", "ignore")
    return data[: limit - mark].decode("utf-8", "ignore") + ELLIPSIS


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by ****, longest first."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "****")
    return text


# -------------------------------------------------------------------------- URLs


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_url(url: str, *, name: str, hint: str) -> str:
    """The URL without surrounding blanks, or a ConfigError naming the key `name` (https only, but plain
    http to a loopback address is allowed for a local receiver or relay)."""
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ConfigError(f"{name} is empty; {hint}")
    shown = redact_url(text)
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ConfigError(f"{name} contains spaces or control characters ({shown}); {hint}")
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL ({shown}); {hint}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ConfigError(f"{name} must start with https:// ({shown}); {hint}")
    if not host:
        raise ConfigError(f"{name} has no host name ({shown}); {hint}")
    if scheme == "http" and not is_loopback(host):
        raise ConfigError(
            f"{name} must use https:// ({shown}); plain http is only allowed to 127.0.0.1, ::1 or localhost"
        )
    return text


def redact_url(url: str) -> str:
    """Where a URL points (scheme, host, a Discord webhook's id) without its path, token or query."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except (ValueError, AttributeError, TypeError):
        return "****"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme) or not re.fullmatch(r"[A-Za-z0-9.:-]+", host):
        return "****"
    shown = f"[{host}]" if ":" in host else host
    if port is not None:
        shown += f":{port}"
    webhook = re.match(r"(/api(?:/v\d+)?/webhooks/\d+)(?:/|$)", parts.path)
    if webhook:
        path = webhook.group(1) + "/****"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        path = "/****"
    else:
        path = ""
    return f"{parts.scheme}://{shown}{path}"


def secrets_of(url: str) -> List[str]:
    """Parts of the URL that may be a token: longer non-numeric path segments and query values.

    Short ones are left alone, as masking them would garble ordinary words (real tokens are long).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    candidates = parts.path.split("/") + [value for _, value in parse_qsl(parts.query)]
    if parts.password:
        candidates.append(parts.password)
    return sorted({c for c in candidates if len(c) >= 6 and not c.isdigit() and c != "webhooks"}, key=len, reverse=True)


# ------------------------------------------------------------------------ answers


def header(headers: Any, name: str) -> Optional[str]:
    """Case-insensitive header lookup that also works on a plain dict."""
    if not headers:
        return None
    lowered = name.lower()
    for key, value in headers.items():
        if str(key).lower() == lowered:
            return str(value).strip()
    return None


def seconds(value: Any) -> Optional[float]:
    """A non-negative finite number of seconds, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < float("inf") else None


def causes(exc: BaseException) -> List[BaseException]:
    """The exception and everything it wraps (requests hides the real cause deep down)."""
    found: List[BaseException] = []
    stack: List[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return found


def describe_transport(exc: BaseException, timeout: float) -> str:
    """Name the network problem from exception types only: their text may contain the token."""
    import ssl  # here, not at the top: an idle daemon should not pay for TLS until it sends
    from http.client import RemoteDisconnected

    found = causes(exc)

    def has(kind: type) -> bool:
        return any(isinstance(cause, kind) for cause in found)

    names = {cls.__name__ for cls in type(exc).__mro__}
    if has(ConnectionRefusedError):
        return "connection refused (is the host and port right, is the server up?)"
    if has(socket.gaierror):
        return "host name could not be resolved (DNS)"
    if has(ssl.SSLError):
        return "TLS handshake failed"
    if "ConnectTimeout" in names:
        return f"could not connect within {timeout:g}s"
    if "ReadTimeout" in names or has(socket.timeout) or has(TimeoutError):
        return f"no answer within {timeout:g}s"
    if has(ConnectionResetError) or has(RemoteDisconnected):
        return "connection closed by the server before it answered"
    return f"network error ({type(exc).__name__})"


def error_text(response: Any, secrets: Iterable[str]) -> str:
    """The server's explanation of a refusal, on one line, scrubbed of secrets."""
    text = str(getattr(response, "text", "") or "").strip() or "no explanation given"
    return one_line(scrub(text, secrets))


def classify_status(response: Any, service: str, secrets: Iterable[str]) -> Outcome:
    """The one rule above, for one HTTP answer of `service`."""
    status = int(response.status_code)
    if 200 <= status <= 299:
        return Outcome(Answer.DELIVERED, "delivered")
    if status in (401, 403, 404, 410):
        return Outcome(Answer.GONE, f"{service} address or token no longer valid "
                                    f"(HTTP {status}: {error_text(response, secrets)})")
    if status == 429:
        wait = seconds(header(response.headers, "Retry-After"))
        if wait is None:
            return Outcome(Answer.RETRY, "rate limited without a retry time")
        return Outcome(Answer.RETRY, f"rate limited for {wait:g}s", retry_after=wait, pace=wait)
    if status == 408 or 500 <= status <= 599:
        return Outcome(Answer.RETRY, f"server error HTTP {status}")
    return Outcome(Answer.GONE, f"{service} refused the message (HTTP {status}): {error_text(response, secrets)}")


def default_post() -> Callable[..., Any]:
    import requests  # here: only a process that sends pays for it

    return requests.post


def default_get() -> Callable[..., Any]:
    import requests  # here: only a process that asks a service pays for it

    return requests.get


def post(url: str, service: str, secrets: List[str], timeout: float, post_with: Optional[Callable[..., Any]] = None,
         classify: Optional[Callable[[Any], Outcome]] = None, **request: Any) -> Outcome:
    """One POST of `request` (json=, data=, headers=) to `url`, its answer classified; never raises for
    network or HTTP problems."""
    sender = post_with or default_post()
    try:
        response = sender(url, timeout=timeout, **request)
    except (OSError, ValueError) as exc:  # requests' exceptions derive from OSError too
        if isinstance(exc, ValueError):  # an unusable URL (urllib3's LocationParseError is no OSError)
            return Outcome(Answer.GONE, f"not a usable URL: {redact_url(url)}")
        return Outcome(Answer.RETRY, describe_transport(exc, timeout))
    return classify(response) if classify is not None else classify_status(response, service, secrets)


def transport_info() -> Tuple[str, str]:
    """(requests' version, the CA bundle it verifies TLS with): `jobmon doctor` checks that this
    interpreter can import it, and reaches the webhooks' hosts with the same certificates."""
    import requests
    import requests.certs

    return str(requests.__version__), str(requests.certs.where())


class UrlSink(Sink):
    """A sink that posts to one URL: the URL is where it delivers (its destination for pacing) and,
    redacted, how `status` and `test-notify` name it. `post_with` replaces the HTTP call in tests."""

    kind = "url"

    def __init__(self, name: str, url: str, post_with: Optional[Any] = None) -> None:
        super().__init__(name)
        self.url = url
        self._post = post_with

    @property
    def destination(self) -> str:
        return self.url.strip()

    def describe(self) -> str:
        return f"{self.kind} {redact_url(self.url)}"
