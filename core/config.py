"""Where jobmon keeps its files, and config.json: loaded, validated, with environment overrides."""
from __future__ import annotations

import enum
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from core.errors import ConfigError
from core.notify.events import EventKind, Route, RouteFacts
from core.progress.health import StallRule, Threshold

if TYPE_CHECKING:
    from core.analysis.analyzer import Pattern

CHECKOUT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: In a checkout the library sits in patterns/; an installed package carries it as core/patterns/.
BUILTIN_PATTERNS = next(
    (path for path in (
        os.path.join(CHECKOUT_DIR, "patterns", "error_patterns.json"),
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "patterns", "error_patterns.json"),
    ) if os.path.exists(path)),
    os.path.join(CHECKOUT_DIR, "patterns", "error_patterns.json"),
)
USER_PATTERNS_NAME = "user_patterns.json"

DEFAULT_RUNNING_INTERVAL = 30.0
DEFAULT_PENDING_INTERVAL = 60.0
DEFAULT_ACCOUNTING_WAIT = 600.0
#: Extra time past a daemon's announced next poll before its heartbeat counts as stale: covers a
#: hung squeue/sacct call (timeout 60 s) or a slow webhook; another host relies on this alone.
DEFAULT_HEARTBEAT_GRACE = 120.0
DEFAULT_TAIL_LINES = 500
DEFAULT_TIME_LIMIT_WARN = (Threshold(fraction=0.8), Threshold(fraction=0.9))


def _user_home() -> str:
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "jobmon")


def default_home() -> str:
    """The checkout when jobmon runs from a writable one (as the seed tool did), else a per-user folder."""
    if os.path.exists(os.path.join(CHECKOUT_DIR, "config.json.example")) and os.access(CHECKOUT_DIR, os.W_OK):
        return CHECKOUT_DIR
    return _user_home()


def known_homes() -> Tuple[Tuple[str, str], ...]:
    """Where a JOBMON_HOME may be without JOBMON_HOME set, with how to call it: the checkout jobmon runs
    from (the folder install) and the per-user folder (pipx, a venv). Switching install method switches
    between them."""
    homes = [(_user_home(), "the per-user folder")]
    if os.path.exists(os.path.join(CHECKOUT_DIR, "config.json.example")):
        homes.insert(0, (CHECKOUT_DIR, "the checkout jobmon runs from"))
    return tuple((os.path.abspath(home), what) for home, what in homes)


def other_home_hint(paths: Paths, what: str) -> str:
    """When the active home lacks `what` ("config.json" or "state") but another known home has it: which,
    and how to choose. Empty otherwise."""
    for home, described in known_homes():
        if os.path.realpath(home) == os.path.realpath(paths.home):
            continue
        found = os.path.join(home, what)
        has = os.path.isfile(found) if what == "config.json" else any(
            name.endswith(".json") for name in _listing(found))
        if has:
            return (f"{found} exists in {described}: to use it, `export JOBMON_HOME={home}` (in ~/.profile), or move "
                    f"config.json, state/ and logs/ from {home} to {paths.home} while no monitor runs")
    return ""


def _listing(folder: str) -> Tuple[str, ...]:
    try:
        return tuple(os.listdir(folder))
    except OSError:
        return ()


@dataclass(frozen=True)
class Paths:
    home: str

    @property
    def config(self) -> str:
        return os.path.join(self.home, "config.json")

    @property
    def state(self) -> str:
        return os.path.join(self.home, "state")

    @property
    def logs(self) -> str:
        return os.path.join(self.home, "logs")

    @property
    def user_patterns(self) -> str:
        return os.path.join(self.home, USER_PATTERNS_NAME)

    def monitor_log(self, job_id: str) -> str:
        return os.path.join(self.logs, f"{job_id}.monitor.log")

    def ensure(self) -> None:
        """Create the state and log folders (0700: they hold job details and delivery status)."""
        for folder in (self.home, self.state, self.logs):
            try:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create {folder}: {exc.strerror or exc}; set JOBMON_HOME to a writable folder"
                ) from None
        if not os.access(self.state, os.W_OK) or not os.access(self.logs, os.W_OK):
            raise ConfigError(f"{self.home} is not writable; set JOBMON_HOME to a writable folder")
        for folder in (self.state, self.logs):
            if os.stat(folder).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                os.chmod(folder, 0o700)  # e.g. a checkout's state/ from git: job details stay private


def resolve_paths() -> Paths:
    home = os.environ.get("JOBMON_HOME") or default_home()
    return Paths(os.path.abspath(os.path.expanduser(home)))


class SinkKind(str, enum.Enum):
    """The services jobmon can deliver to (config `notify.sinks.<name>.type`)."""

    DISCORD = "discord"
    SLACK = "slack"
    TEAMS = "teams"
    NTFY = "ntfy"
    EMAIL = "email"
    WEBHOOK = "webhook"
    ATTRSVC = "attrsvc"  # not a destination: the attribution service enriches the final message


@dataclass(frozen=True)
class SinkConfig:
    """One destination as configured, secrets resolved (`${VAR}`); only the keys of its kind are set.

    Lives only in memory: config.json keeps the `${VAR}` text, the environment keeps the value.
    """

    kind: SinkKind
    url: str = ""  # discord, slack, teams, ntfy (the topic URL), webhook
    username: str = "jobmon"  # discord
    token: str = ""  # ntfy: an access token, sent as a bearer token
    secret: str = ""  # webhook: signs each body (X-Jobmon-Signature)
    source: str = ""  # webhook: the CloudEvents `source`
    smtp: str = ""  # email: host:port; empty with `sendmail`
    sendmail: str = ""  # email: the local sendmail program instead of SMTP
    sender: str = ""  # email: From
    to: Tuple[str, ...] = ()  # email: recipients
    starttls: bool = False  # email: STARTTLS on a plain connection
    ssl: bool = False  # email: TLS from the start (port 465)
    user: str = ""  # email: SMTP login
    password: str = ""

    def secrets(self) -> Tuple[str, ...]:
        """What must never be shown: the token, shared secret and password (URLs are redacted separately)."""
        return tuple(value for value in (self.token, self.secret, self.password) if value)


@dataclass(frozen=True)
class RouteRule:
    """One entry of `notify.routes`: which events go to which sinks. An empty filter matches everything."""

    sinks: Tuple[str, ...]
    events: Tuple[EventKind, ...] = ()
    states: Tuple[str, ...] = ()
    names: str = ""  # a regular expression searched in the job name
    routes: Tuple[Route, ...] = ()  # only the `discord` shorthand uses this (success/error webhooks)

    def matches(self, facts: RouteFacts) -> bool:
        return ((not self.events or facts.kind in self.events)
                and (not self.states or facts.state.upper() in self.states)
                and (not self.names or re.search(self.names, facts.name) is not None)
                and (not self.routes or facts.route in self.routes))


#: The sink names the `discord` shorthand defines, one per webhook key.
SUCCESS_SINK = "discord-success"
ERROR_SINK = "discord-error"


class GpuQuery(str, enum.Enum):
    """How GPU use is read (config `health.gpu_query`)."""

    OFF = "off"
    SSTAT = "sstat"  # `gres/gpuutil`, `gres/gpumem` in sstat's TRES usage, where the site accounts them
    SRUN = "srun"  # also `srun --overlap --jobid ID nvidia-smi ...` (creates a job step at each look)


#: disk_free_warn's default: below 5 % or 10 GiB free, whichever is larger.
DEFAULT_DISK_FREE_WARN = (0.05, 10 * 1024 ** 3)


@dataclass(frozen=True)
class UsageConfig:
    """What a running job's resources are checked against (config `health`, issue 11 parts 1-2)."""

    memory_warn: Optional[float] = 0.9  # MaxRSS / the request; None: off
    cpu_low_warn: Optional[float] = None  # CPU use / AllocCPUS below this; None: off
    gpu_idle_after: Optional[float] = 1800.0  # a GPU at 0 % this long; None: off
    gpu_query: GpuQuery = GpuQuery.SSTAT  # free: the same sstat call; nothing where GPUs are not accounted
    sstat_interval: float = 60.0  # sstat, globs and statvfs at most this often
    disk_free_fraction: float = DEFAULT_DISK_FREE_WARN[0]  # warn below this share free ...
    disk_free_bytes: int = DEFAULT_DISK_FREE_WARN[1]  # ... or this many bytes, whichever is larger
    checkpoint_stale_after: Optional[float] = None  # nothing new in watch_files this long; None: off
    watch_files: Tuple[str, ...] = ()  # globs relative to the job's working directory


@dataclass(frozen=True)
class HealthConfig:
    """What a monitor watches while the job runs (config `health`, `notify.on_start`, `notify.progress_every`)."""

    stall: StallRule = StallRule()
    time_limit_warn: Tuple[Threshold, ...] = DEFAULT_TIME_LIMIT_WARN
    cancel_on_stall: Optional[float] = None  # scancel when still stalled this long after the stalled message
    progress_patterns: Tuple[str, ...] = ()  # the user's regexes with groups `done` (and `total`)
    on_start: bool = False
    progress_every_fraction: Optional[float] = None  # a message at every such step of progress
    progress_every_seconds: Optional[float] = None  # or this often
    usage: UsageConfig = UsageConfig()


@dataclass(frozen=True)
class Config:
    success_webhook: str = ""
    error_webhook: str = ""
    username: str = "jobmon"
    running_interval: float = DEFAULT_RUNNING_INTERVAL
    pending_interval: float = DEFAULT_PENDING_INTERVAL
    accounting_wait: float = DEFAULT_ACCOUNTING_WAIT
    heartbeat_grace: float = DEFAULT_HEARTBEAT_GRACE
    tail_lines: int = DEFAULT_TAIL_LINES
    send_excerpt: bool = True
    notify_first_failure: bool = False
    escalation: Dict[str, Any] = field(default_factory=dict)  # validated by core.chain.policy.parse_policy
    health: HealthConfig = HealthConfig()
    named_sinks: Dict[str, SinkConfig] = field(default_factory=dict)  # notify.sinks
    attribution: Optional[SinkConfig] = None  # the notify.sinks entry of type attrsvc: enriches final messages
    routes: Tuple[RouteRule, ...] = ()  # notify.routes (all named sinks hear everything when it is absent)

    @property
    def sinks(self) -> Dict[str, SinkConfig]:
        """Every configured destination by name: `discord.success_webhook` is the sink "discord-success",
        `discord.error_webhook` the sink "discord-error", then those of `notify.sinks`."""
        found = {}
        if self.success_webhook:
            found[SUCCESS_SINK] = SinkConfig(SinkKind.DISCORD, self.success_webhook, self.username)
        if self.error_webhook:
            found[ERROR_SINK] = SinkConfig(SinkKind.DISCORD, self.error_webhook, self.username)
        found.update(self.named_sinks)
        return found

    @property
    def rules(self) -> Tuple[RouteRule, ...]:
        """The `discord` shorthand's rules (each route to its own webhook, else to the other one: one URL
        may serve both), then `notify.routes` in order."""
        shorthand: List[RouteRule] = []
        if self.success_webhook and self.error_webhook:
            shorthand = [RouteRule((SUCCESS_SINK,), routes=(Route.SUCCESS,)),
                         RouteRule((ERROR_SINK,), routes=(Route.ERROR,))]
        elif self.success_webhook or self.error_webhook:
            shorthand = [RouteRule((SUCCESS_SINK if self.success_webhook else ERROR_SINK,))]
        configured = self.routes or ((RouteRule(tuple(self.named_sinks)),) if self.named_sinks else ())
        return (*shorthand, *configured)

    def sinks_for(self, facts: RouteFacts) -> Tuple[str, ...]:
        """The sinks that hear an event: those of every rule it matches, in order, each once."""
        return tuple(dict.fromkeys(name for rule in self.rules if rule.matches(facts) for name in rule.sinks))


def _section(data: Dict[str, Any], name: str, path: str) -> Dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{name}' must be an object, got {type(value).__name__}")
    return value


def _number(section: Dict[str, Any], key: str, default: float, where: str, minimum: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value < math.inf:
        raise ConfigError(f"{where}.{key} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _env_interval(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 < value < math.inf:  # also refuses nan and inf, which time.sleep() rejects
        raise ConfigError(f"{name}={raw!r} must be a finite number greater than 0")
    return value


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_env(value: Any, env: Mapping[str, str], where: str, missing: Optional[List[str]] = None) -> Any:
    """`value` (parsed JSON) with every `${VAR}` in its strings replaced from `env`.

    A variable that is not set is a ConfigError naming the key and the variable, unless `missing` is
    given: then its name is added there and it is left as written (for commands that send nothing).
    """
    if isinstance(value, dict):
        return {key: resolve_env(item, env, f"{where}.{key}" if where else str(key), missing)
                for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_env(item, env, f"{where}[{n}]", missing) for n, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name in env:
            return env[name]
        if missing is None:
            raise ConfigError(f"{where}: ${{{name}}} is not set in this environment; export {name} before "
                              "`jobmon submit` (the monitor keeps its value in memory only, never on disk)")
        missing.append(name)
        return match.group(0)

    return _ENV_REFERENCE.sub(lookup, value)


_SINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: The keys each kind of sink takes besides `type` (the first ones are required).
_SINK_KEYS: Dict[SinkKind, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    SinkKind.DISCORD: (("url",), ("username",)),
    SinkKind.SLACK: (("url",), ()),
    SinkKind.TEAMS: (("url",), ()),
    SinkKind.NTFY: (("url",), ("token",)),
    SinkKind.WEBHOOK: (("url",), ("secret", "source")),
    SinkKind.EMAIL: (("from", "to"), ("smtp", "sendmail", "starttls", "ssl", "user", "password")),
    SinkKind.ATTRSVC: (("url",), ()),
}
_URL_HINTS = {
    SinkKind.DISCORD: "copy it from Discord: channel settings > Integrations > Webhooks > Copy Webhook URL",
    SinkKind.SLACK: "copy it from your Slack app: Incoming Webhooks > Webhook URL (https://hooks.slack.com/...)",
    SinkKind.TEAMS: "copy it from the Teams workflow 'Post to a channel when a webhook request is received'",
    SinkKind.NTFY: "the topic's URL, like https://ntfy.sh/my-topic",
    SinkKind.WEBHOOK: "the https:// address that receives jobmon's CloudEvents",
    SinkKind.ATTRSVC: "the attribution service's base address, like http://localhost:8000",
}
_EMAIL_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")


def _text(entry: Dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value.strip()


def _flag(entry: Dict[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false")
    return value


def _smtp_address(text: str, where: str) -> None:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigError(f"{where}.smtp must be host:port, like \"smtp.example.org:587\"; got {text!r}")


def parse_sink(entry: Any, where: str, check_urls: bool) -> SinkConfig:
    """One `notify.sinks.<name>` object; every mistake is a ConfigError naming its key."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object with a \"type\"")
    kinds = ", ".join(kind.value for kind in SinkKind)
    try:
        kind = SinkKind(entry.get("type"))
    except ValueError:
        raise ConfigError(f"{where}.type must be one of {kinds}; got {entry.get('type')!r}") from None
    required, optional = _SINK_KEYS[kind]
    unknown = sorted(set(entry) - {"type", *required, *optional})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for a {kind.value} sink "
                          f"(it takes {', '.join((*required, *optional))})")
    for key in required:
        if key not in entry or entry[key] in ("", [], None):
            raise ConfigError(f"{where}.{key} is required for a {kind.value} sink")
    if kind is SinkKind.EMAIL:
        return _parse_email(entry, where)
    url = _text(entry, "url", where)
    if check_urls:
        from core.notify.http import validate_url

        url = validate_url(url, name=f"{where}.url", hint=_URL_HINTS[kind])
    username = _text(entry, "username", where, "jobmon") or "jobmon"
    return SinkConfig(kind, url, username=username, token=_text(entry, "token", where),
                      secret=_text(entry, "secret", where), source=_text(entry, "source", where))


def _parse_email(entry: Dict[str, Any], where: str) -> SinkConfig:
    sender = _text(entry, "from", where)
    recipients = entry["to"] if isinstance(entry["to"], list) else [entry["to"]]
    for n, address in enumerate([sender, *recipients]):
        if not isinstance(address, str) or not _EMAIL_ADDRESS.fullmatch(address.strip()):
            key = "from" if n == 0 else f"to[{n - 1}]" if isinstance(entry["to"], list) else "to"
            raise ConfigError(f"{where}.{key} must be an e-mail address like me@example.org; got {address!r}")
    smtp = _text(entry, "smtp", where)
    sendmail = entry.get("sendmail", False)
    if sendmail is True:
        sendmail = "/usr/sbin/sendmail"
    if sendmail is False:
        sendmail = ""
    if not isinstance(sendmail, str):
        raise ConfigError(f"{where}.sendmail must be true or the path of the sendmail program")
    if bool(smtp) == bool(sendmail):
        raise ConfigError(f"{where}: give either \"smtp\": \"host:port\" or \"sendmail\": true")
    if smtp:
        _smtp_address(smtp, where)
    starttls, ssl = _flag(entry, "starttls", where), _flag(entry, "ssl", where)
    if starttls and ssl:
        raise ConfigError(f"{where}: starttls and ssl exclude each other (ssl: TLS from the start, port 465; "
                          "starttls: upgrade a plain connection, port 587)")
    user, password = _text(entry, "user", where), _text(entry, "password", where)
    if bool(user) != bool(password):
        raise ConfigError(f"{where}: give both user and password (from the environment: \"${{SMTP_PASSWORD}}\"), "
                          "or neither")
    return SinkConfig(SinkKind.EMAIL, smtp=smtp, sendmail=sendmail, sender=sender,
                      to=tuple(address.strip() for address in recipients), starttls=starttls, ssl=ssl,
                      user=user, password=password)


def parse_route(entry: Any, where: str, known_sinks: Tuple[str, ...]) -> RouteRule:
    """One `notify.routes[n]` object: `sinks` (required), optional filters `events`, `states`, `names`."""
    from core.slurm.model import JobState

    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object like {{\"events\": [\"final\"], \"sinks\": [\"team\"]}}")
    unknown = sorted(set(entry) - {"sinks", "events", "states", "names"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (a route takes sinks, events, states, names)")
    sinks = entry.get("sinks")
    if not isinstance(sinks, list) or not sinks or not all(isinstance(name, str) for name in sinks):
        raise ConfigError(f"{where}.sinks must be a non-empty list of sink names")
    for n, name in enumerate(sinks):
        if name not in known_sinks:
            shown = ", ".join(known_sinks) or "none"
            raise ConfigError(f"{where}.sinks[{n}]: no sink named {name!r} (configured: {shown})")
    events: List[EventKind] = []
    for n, name in enumerate(_string_list(entry, "events", where)):
        try:
            events.append(EventKind(name))
        except ValueError:
            raise ConfigError(f"{where}.events[{n}]: unknown event {name!r} (events: "
                              f"{', '.join(kind.value for kind in EventKind)})") from None
    states = tuple(state.strip().upper() for state in _string_list(entry, "states", where))
    for n, state in enumerate(states):
        if state not in JobState.__members__:
            raise ConfigError(f"{where}.states[{n}]: {state!r} is no Slurm job state (like FAILED, "
                              "OUT_OF_MEMORY, TIMEOUT, COMPLETED)")
    names = entry.get("names", "")
    if not isinstance(names, str):
        raise ConfigError(f"{where}.names must be a regular expression (a string) matched against the job name")
    try:
        re.compile(names)
    except re.error as exc:
        raise ConfigError(f"{where}.names is not a valid regular expression: {exc}") from None
    return RouteRule(tuple(dict.fromkeys(sinks)), tuple(events), states, names)


def _string_list(entry: Dict[str, Any], key: str, where: str) -> List[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}.{key} must be a list of strings")
    return value


def parse_notify_sinks(notify: Dict[str, Any], where: str, shorthand: Tuple[str, ...],
                       check_urls: bool) -> Tuple[Dict[str, SinkConfig], Tuple[RouteRule, ...]]:
    """`notify.sinks` and `notify.routes`: the named sinks, and the routes (checked against every sink name)."""
    sinks = notify.get("sinks", {})
    if not isinstance(sinks, dict):
        raise ConfigError(f"{where}.sinks must be an object: sink name -> {{\"type\": ..., ...}}")
    named: Dict[str, SinkConfig] = {}
    for name, entry in sinks.items():
        if not _SINK_NAME.fullmatch(name):
            raise ConfigError(f"{where}.sinks: {name!r} is not a usable sink name (letters, digits, - _ .)")
        if name in shorthand:
            raise ConfigError(f"{where}.sinks.{name}: that name is taken by the discord section's webhook")
        named[name] = parse_sink(entry, f"{where}.sinks.{name}", check_urls)
    attribution = [name for name, sink in named.items() if sink.kind is SinkKind.ATTRSVC]
    if len(attribution) > 1:
        raise ConfigError(f"{where}.sinks.{attribution[1]}: only one sink of type attrsvc can be configured "
                          f"({attribution[0]} is one)")
    routes = notify.get("routes", [])
    if not isinstance(routes, list):
        raise ConfigError(f"{where}.routes must be a list of routes")
    known = (*shorthand, *(name for name in named if name not in attribution))
    for n, entry in enumerate(routes):
        listed = entry.get("sinks") if isinstance(entry, dict) else None
        for name in attribution:
            if isinstance(listed, list) and name in listed:
                raise ConfigError(f"{where}.routes[{n}].sinks: {name!r} is the attribution service, which no route "
                                  "sends to (it adds its recommendation to every final message)")
    return named, tuple(parse_route(entry, f"{where}.routes[{n}]", known) for n, entry in enumerate(routes))


def parse_config(text: str, path: str, validate_url: Optional[Callable[..., str]],
                 env: Optional[Mapping[str, str]] = None, missing: Optional[List[str]] = None) -> Config:
    """Validate config.json text; `validate_url(url, name=...)` checks each webhook.

    With no `validate_url`, webhook URLs and the escalation section are taken as they are: see
    load_config's `trusted`. `${VAR}` in any string is taken from `env` (default: this process's
    environment); see resolve_env for `missing`.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}; compare with config.json.example") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object; compare with config.json.example")
    try:
        data = resolve_env(data, os.environ if env is None else env, "", missing)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    discord = _section(data, "discord", path)
    webhooks = {}
    for key in ("success_webhook", "error_webhook"):
        value = discord.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ConfigError(f"{path}: discord.{key} must be a string URL")
        url = value.strip()
        webhooks[key] = validate_url(url, name=f"discord.{key}") if url and validate_url else url
    username = discord.get("username", "jobmon")
    if not isinstance(username, str) or not username.strip():
        raise ConfigError(f"{path}: discord.username must be a non-empty string")
    poll = _section(data, "poll", path)
    analysis = _section(data, "analysis", path)
    tail_lines = analysis.get("tail_lines", DEFAULT_TAIL_LINES)
    if isinstance(tail_lines, bool) or not isinstance(tail_lines, int) or not 1 <= tail_lines <= 100000:
        raise ConfigError(f"{path}: analysis.tail_lines must be an integer from 1 to 100000")
    send_excerpt = analysis.get("send_excerpt", True)
    if not isinstance(send_excerpt, bool):
        raise ConfigError(f"{path}: analysis.send_excerpt must be true or false")
    arrays = _section(data, "arrays", path)
    notify_first_failure = arrays.get("notify_first_failure", False)
    if not isinstance(notify_first_failure, bool):
        raise ConfigError(f"{path}: arrays.notify_first_failure must be true or false")
    escalation = _section(data, "escalation", path)
    if validate_url is not None:
        from core.chain.policy import parse_policy

        parse_policy(escalation, path)
    running = _number(poll, "running_interval", DEFAULT_RUNNING_INTERVAL, "poll", 0.1)
    pending = _number(poll, "pending_interval", DEFAULT_PENDING_INTERVAL, "poll", 0.1)
    shorthand = tuple(name for name, key in ((SUCCESS_SINK, "success_webhook"), (ERROR_SINK, "error_webhook"))
                      if webhooks[key])
    named, routes = parse_notify_sinks(_section(data, "notify", path), f"{path}: notify", shorthand,
                                       validate_url is not None)
    attribution = next((sink for sink in named.values() if sink.kind is SinkKind.ATTRSVC), None)
    return Config(
        named_sinks={name: sink for name, sink in named.items() if sink.kind is not SinkKind.ATTRSVC},
        attribution=attribution,
        routes=routes,
        success_webhook=webhooks["success_webhook"],
        error_webhook=webhooks["error_webhook"],
        username=username.strip(),
        running_interval=_env_interval("JOBMON_POLL_INTERVAL", running),
        pending_interval=_env_interval("JOBMON_PENDING_INTERVAL", pending),
        accounting_wait=_number(poll, "accounting_wait", DEFAULT_ACCOUNTING_WAIT, "poll", 0),
        heartbeat_grace=_env_interval(
            "JOBMON_HEARTBEAT_GRACE", _number(poll, "heartbeat_grace", DEFAULT_HEARTBEAT_GRACE, "poll", 1)),
        tail_lines=tail_lines,
        send_excerpt=send_excerpt,
        notify_first_failure=notify_first_failure,
        escalation=escalation,
        health=parse_health(data, path),
    )


_DURATION_SETTING = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_setting(value: Any, where: str) -> float:
    """A duration in config: seconds as a number, or a string with a unit (`"90s"`, `"10m"`, `"2h"`, `"1d"`)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf:
        return float(value)
    match = _DURATION_SETTING.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{where} must be seconds (a number) or a duration like \"10m\", \"2h\"; got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _percent(value: Any) -> Optional[float]:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1])
        except ValueError:
            return None
        return number / 100 if 0 < number <= 100 else None
    return None


def _threshold(value: Any, where: str) -> Threshold:
    fraction = _percent(value)
    if fraction is not None:
        return Threshold(fraction=fraction)
    if isinstance(value, str) and value.strip().endswith("%"):
        raise ConfigError(f"{where} must be a percentage from 1% to 100%, got {value!r}")
    return Threshold(seconds_left=parse_duration_setting(value, where))


def parse_health(data: Dict[str, Any], path: str) -> HealthConfig:
    """The `health` section (and the live-message switches under `notify`), with clear errors."""
    health = _section(data, "health", path)
    where = f"{path}: health"
    default = StallRule()
    durations = {
        key: parse_duration_setting(health[key], f"{where}.{key}") if key in health else fallback
        for key, fallback in (("stall_floor", default.floor), ("stall_cap", default.cap),
                              ("stall_after", default.quiet))
    }
    if durations["stall_cap"] < durations["stall_floor"]:
        raise ConfigError(f"{where}.stall_cap must not be shorter than stall_floor")
    stall = StallRule(_number(health, "stall_factor", default.factor, where, 1), durations["stall_floor"],
                      durations["stall_cap"], durations["stall_after"])
    warn = health.get("time_limit_warn", None)
    thresholds: Tuple[Threshold, ...]
    if warn is None:
        thresholds = DEFAULT_TIME_LIMIT_WARN
    elif isinstance(warn, list):
        thresholds = tuple(_threshold(item, f"{where}.time_limit_warn[{n}]") for n, item in enumerate(warn))
    else:
        raise ConfigError(f"{where}.time_limit_warn must be a list like [\"80%\", \"90%\", \"10m\"]")
    cancel = health.get("cancel_on_stall", False)
    if cancel is True:
        cancel_after: Optional[float] = stall.cap
    elif cancel is False or cancel is None:
        cancel_after = None
    else:
        cancel_after = parse_duration_setting(cancel, f"{where}.cancel_on_stall")
        if cancel_after <= 0:
            raise ConfigError(f"{where}.cancel_on_stall must be false or a duration after the stalled message "
                              "(\"2h\"); 0 would cancel at once")
    patterns = health.get("progress_patterns", [])
    if not isinstance(patterns, list) or not all(isinstance(item, str) for item in patterns):
        raise ConfigError(f"{where}.progress_patterns must be a list of regular expressions")
    for n, pattern in enumerate(patterns):
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}.progress_patterns[{n}] is not a valid regular expression: {exc}") from None
        if "done" not in compiled.groupindex:
            raise ConfigError(f"{where}.progress_patterns[{n}] needs a named group (?P<done>...) "
                              "(and optionally (?P<total>...))")
    notify = _section(data, "notify", path)
    on_start = notify.get("on_start", False)
    if not isinstance(on_start, bool):
        raise ConfigError(f"{path}: notify.on_start must be true or false")
    every = notify.get("progress_every", None)
    every_fraction = every_seconds = None
    if every not in (None, False):
        every_fraction = _percent(every)
        if every_fraction is None:
            every_seconds = parse_duration_setting(every, f"{path}: notify.progress_every")
            if every_seconds < 60:
                raise ConfigError(f"{path}: notify.progress_every must be a percentage (\"25%\") "
                                  "or at least a minute (\"6h\")")
    return HealthConfig(stall, thresholds, cancel_after, tuple(patterns), on_start, every_fraction, every_seconds,
                        parse_usage(health, where))


def _off(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str) and value.strip().lower() == "off")


def _share(health: Dict[str, Any], key: str, default: Optional[float], where: str) -> Optional[float]:
    value = health.get(key, default if default is None else f"{default * 100:g}%")
    if _off(value):
        return None
    fraction = _percent(value)
    if fraction is None:
        raise ConfigError(f"{where}.{key} must be a percentage from 1% to 100% (\"90%\") or \"off\", got {value!r}")
    return fraction


def _duration_or_off(health: Dict[str, Any], key: str, default: Optional[float], where: str) -> Optional[float]:
    value = health.get(key, default)
    if _off(value):
        return None
    seconds = parse_duration_setting(value, f"{where}.{key}")
    if seconds <= 0:
        raise ConfigError(f"{where}.{key} must be a positive duration (\"30m\") or \"off\"")
    return seconds


def _disk_free(value: Any, where: str) -> Tuple[float, int]:
    """`["5%", "10G"]`, `"5%"` or `"10G"`: warn below the larger of a share and a size."""
    from core.slurm.parse import parse_size

    items = value if isinstance(value, list) else [value]
    fraction, size = 0.0, 0
    for item in items:
        share = _percent(item)
        if share is not None:
            fraction = max(fraction, share)
            continue
        text = item.strip() if isinstance(item, str) else ""
        bytes_ = parse_size(text) if re.fullmatch(r"\d+(\.\d+)?\s*[KMGTP]", text, re.IGNORECASE) else None
        if bytes_ is None:
            raise ConfigError(f"{where} must be a percentage (\"5%\"), a size (\"10G\") or a list of both, "
                              f"got {item!r}")
        size = max(size, bytes_)
    return fraction, size


def parse_usage(health: Dict[str, Any], where: str) -> UsageConfig:
    """memory_warn, cpu_low_warn, gpu_idle_after, gpu_query, sstat_interval, disk_free_warn,
    checkpoint_stale_after and watch_files, with clear errors."""
    default = UsageConfig()
    query = health.get("gpu_query", default.gpu_query.value)
    try:
        gpu_query = GpuQuery(query)
    except ValueError:
        raise ConfigError(f"{where}.gpu_query must be \"off\", \"sstat\" or \"srun\", got {query!r}") from None
    interval = parse_duration_setting(health.get("sstat_interval", default.sstat_interval), f"{where}.sstat_interval")
    if interval < 1:
        raise ConfigError(f"{where}.sstat_interval must be at least 1 second")
    if "disk_free_warn" in health and _off(health["disk_free_warn"]):
        fraction, size = 0.0, 0
    elif "disk_free_warn" in health:
        fraction, size = _disk_free(health["disk_free_warn"], f"{where}.disk_free_warn")
    else:
        fraction, size = default.disk_free_fraction, default.disk_free_bytes
    globs = health.get("watch_files", [])
    if isinstance(globs, str):
        globs = [globs]
    if not isinstance(globs, list) or not all(isinstance(item, str) and item.strip() for item in globs):
        raise ConfigError(f"{where}.watch_files must be a list of file patterns like [\"ckpt/*.pt\"]")
    return UsageConfig(
        memory_warn=_share(health, "memory_warn", default.memory_warn, where),
        cpu_low_warn=_share(health, "cpu_low_warn", None, where),
        gpu_idle_after=_duration_or_off(health, "gpu_idle_after", default.gpu_idle_after, where),
        gpu_query=gpu_query, sstat_interval=interval, disk_free_fraction=fraction, disk_free_bytes=size,
        checkpoint_stale_after=_duration_or_off(health, "checkpoint_stale_after", None, where),
        watch_files=tuple(globs),
    )


def load_config(paths: Paths, *, require_webhook: bool, trusted: bool = False, need_secrets: bool = True) -> Config:
    """Read config.json; without one, monitoring still works only if no webhook is required.

    `trusted` is for the daemon: start_monitor has just loaded this file with every check before
    starting it, and skipping the URL and ladder checks keeps the Discord sink and escalation modules out of
    an idle daemon's memory (a bad URL would still fail, and be recorded, when sending).

    Without `need_secrets` (commands that send nothing), a `${VAR}` missing from the environment is no
    error (it stays as written) and URLs are not checked.
    """
    missing: Optional[List[str]] = None if need_secrets else []
    validate_url: Optional[Callable[..., str]] = None
    if not trusted:
        from core.notify.discord import validate_webhook_url as validate_url

    try:
        with open(paths.config, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if require_webhook:
            elsewhere = other_home_hint(paths, "config.json")
            raise ConfigError(
                f"no config at {paths.config}: run `jobmon init --success-webhook URL --error-webhook URL` "
                "(or copy config.json.example there and set your Discord webhooks)"
                + (f"; {elsewhere}" if elsewhere else "")
            ) from None
        return parse_config("{}", paths.config, validate_url)
    except OSError as exc:
        raise ConfigError(f"cannot read {paths.config}: {exc.strerror or exc}") from None
    config = parse_config(text, paths.config, validate_url if need_secrets else None, missing=missing)
    if require_webhook and not config.sinks:
        raise ConfigError(f"{paths.config}: set discord.success_webhook and/or discord.error_webhook, "
                          "or name sinks under notify.sinks")
    return config


def write_new_config(paths: Paths, success_webhook: str, error_webhook: str, *, overwrite: bool) -> None:
    """Create config.json with mode 0600 from the start (it holds webhook secrets)."""
    from core.notify.discord import validate_webhook_url

    if not success_webhook and not error_webhook:
        raise ConfigError("give --success-webhook and/or --error-webhook")
    discord = {
        key: validate_webhook_url(url, name=key) for key, url in
        (("success_webhook", success_webhook), ("error_webhook", error_webhook)) if url
    }
    text = json.dumps({"discord": discord}, indent=2) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(paths.config, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{paths.config} already exists; use --force to replace it") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {paths.config}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(paths.config, 0o600)


def config_permission_warning(paths: Paths) -> Optional[str]:
    """Webhook URLs are secrets: warn when config.json is readable by group or others."""
    try:
        mode = os.stat(paths.config).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"warning: {paths.config} is readable by others (it holds webhook secrets); "
                f"run: chmod 600 {paths.config}")
    return None


def load_patterns(paths: Paths) -> Tuple[Pattern, ...]:
    """The built-in pattern library merged with the user's own file beside config.json, if any."""
    from core.analysis.analyzer import merge_patterns, parse_patterns

    builtin = parse_patterns(read_patterns_file(BUILTIN_PATTERNS), BUILTIN_PATTERNS)
    if not os.path.exists(paths.user_patterns):
        return builtin
    user = parse_patterns(read_patterns_file(paths.user_patterns), paths.user_patterns)
    return merge_patterns(builtin, user)


def read_text_file(path: str, what: str, error: type = ConfigError) -> str:
    """A small text file the user points us at; unreadable is one clear line of `error`."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_patterns_file(path: str) -> str:
    from core.errors import PatternError

    return read_text_file(path, "patterns file", PatternError)
