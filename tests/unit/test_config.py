"""core.config: config.json validation, environment overrides, paths, user patterns."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from core import config as config_module
from core.config import (
    DEFAULT_ACCOUNTING_WAIT,
    DEFAULT_PENDING_INTERVAL,
    DEFAULT_RUNNING_INTERVAL,
    DEFAULT_TAIL_LINES,
    Config,
    Paths,
    SinkConfig,
    config_permission_warning,
    load_config,
    load_patterns,
    parse_config,
    resolve_paths,
)
from core.errors import ConfigError, PatternError
from core.notify.discord import validate_webhook_url
from core.notify.events import EventKind, Route, RouteFacts

EXAMPLE = Path(__file__).resolve().parents[2] / "config.json.example"
SUCCESS_URL = "https://discord.com/api/webhooks/111111111111111111/success-token-abc"
ERROR_URL = "https://discord.com/api/webhooks/222222222222222222/error-token-def"
ENV_VARS = ("JOBMON_POLL_INTERVAL", "JOBMON_PENDING_INTERVAL", "JOBMON_HEARTBEAT_GRACE", "JOBMON_HOME")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def parse(data, path="/home/alice/jobmon/config.json") -> Config:
    text = data if isinstance(data, str) else json.dumps(data)
    return parse_config(text, path, validate_webhook_url)


def good_config() -> dict:
    return {
        "discord": {"success_webhook": SUCCESS_URL, "error_webhook": ERROR_URL, "username": " bot "},
        "poll": {"running_interval": 5, "pending_interval": 7.5, "accounting_wait": 0},
        "analysis": {"tail_lines": 200, "send_excerpt": False},
    }


# --- parse_config -----------------------------------------------------------------------

def test_good_config():
    config = parse(good_config())
    assert config.success_webhook == SUCCESS_URL
    assert config.error_webhook == ERROR_URL
    assert config.username == "bot"
    assert (config.running_interval, config.pending_interval, config.accounting_wait) == (5.0, 7.5, 0.0)
    assert (config.tail_lines, config.send_excerpt) == (200, False)
    assert config.sinks == {"discord-success": SinkConfig("discord", SUCCESS_URL, "bot"),
                            "discord-error": SinkConfig("discord", ERROR_URL, "bot")}
    assert config.sinks_for(RouteFacts(EventKind.FINAL, Route.SUCCESS)) == ("discord-success",)
    assert config.sinks_for(RouteFacts(EventKind.FINAL, Route.ERROR)) == ("discord-error",)


def test_example_config_parses():
    config = parse(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    assert config.success_webhook.startswith("https://discord.com/api/webhooks/")
    assert list(config.sinks) == ["discord-success", "discord-error"]


@pytest.mark.parametrize(
    "data",
    ["{}", {"discord": {}}, {"poll": {}, "analysis": {}}, {"discord": {"success_webhook": "", "error_webhook": None}}],
)
def test_missing_sections_take_defaults(data):
    config = parse(data)
    assert config == Config()
    assert config.running_interval == DEFAULT_RUNNING_INTERVAL
    assert config.pending_interval == DEFAULT_PENDING_INTERVAL
    assert config.accounting_wait == DEFAULT_ACCOUNTING_WAIT
    assert config.tail_lines == DEFAULT_TAIL_LINES
    assert config.send_excerpt is True
    assert config.sinks == {} and config.sinks_for(RouteFacts(EventKind.FINAL, Route.ERROR)) == ()


@pytest.mark.parametrize(
    "data, key",
    [
        ({"discord": []}, "discord"),
        ({"discord": "https://x"}, "discord"),
        ({"poll": 5}, "poll"),
        ({"analysis": "x"}, "analysis"),
        ({"discord": {"success_webhook": 5}}, "success_webhook"),
        ({"discord": {"error_webhook": ["x"]}}, "error_webhook"),
        ({"discord": {"username": ""}}, "username"),
        ({"discord": {"username": 3}}, "username"),
        ({"poll": {"running_interval": "30"}}, "running_interval"),
        ({"poll": {"running_interval": True}}, "running_interval"),
        ({"poll": {"running_interval": None}}, "running_interval"),
        ({"poll": {"running_interval": 0}}, "running_interval"),
        ({"poll": {"pending_interval": -1}}, "pending_interval"),
        ({"poll": {"pending_interval": [60]}}, "pending_interval"),
        ({"poll": {"accounting_wait": -1}}, "accounting_wait"),
        ({"poll": {"accounting_wait": "600"}}, "accounting_wait"),
        ({"analysis": {"tail_lines": 0}}, "tail_lines"),
        ({"analysis": {"tail_lines": 100001}}, "tail_lines"),
        ({"analysis": {"tail_lines": "500"}}, "tail_lines"),
        ({"analysis": {"tail_lines": 1.5}}, "tail_lines"),
        ({"analysis": {"tail_lines": True}}, "tail_lines"),
        ({"analysis": {"send_excerpt": "yes"}}, "send_excerpt"),
        ({"analysis": {"send_excerpt": 1}}, "send_excerpt"),
    ],
)
def test_wrong_types_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        parse(data)


@pytest.mark.parametrize(
    "text, key",
    [
        ('{"poll": {"running_interval": NaN}}', "running_interval"),
        ('{"poll": {"pending_interval": Infinity}}', "pending_interval"),
        ('{"poll": {"accounting_wait": NaN}}', "accounting_wait"),
    ],
)
def test_non_finite_numbers_are_refused(text, key):
    # Python's json accepts NaN/Infinity; time.sleep() then raises ValueError/OverflowError in the daemon.
    with pytest.raises(ConfigError, match=key):
        parse(text)


@pytest.mark.parametrize("text", ["[]", '"text"', "3", "null"])
def test_top_level_must_be_an_object(text):
    with pytest.raises(ConfigError, match="config.json"):
        parse(text)


@pytest.mark.parametrize("text", ["{", "", "{'discord': {}}", '{"poll": {"running_interval": 30,}}'])
def test_invalid_json_names_the_file(text):
    with pytest.raises(ConfigError) as caught:
        parse(text, path="/srv/x/my-config.json")
    assert "/srv/x/my-config.json" in str(caught.value)
    assert "JSON" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://discord.com/api/webhooks/123456789012345678/SUPERSECRETTOKEN",
        "ftp://discord.com/api/webhooks/123456789012345678/SUPERSECRETTOKEN",
        "discord.com/api/webhooks/123456789012345678/SUPERSECRETTOKEN",
        "http://10.0.0.5:8080/api/webhooks/123456789012345678/SUPERSECRETTOKEN?wait=SUPERSECRETTOKEN",
    ],
)
@pytest.mark.parametrize("key", ["success_webhook", "error_webhook"])
def test_non_https_webhook_is_refused_without_leaking_the_token(url, key):
    with pytest.raises(ConfigError) as caught:
        parse({"discord": {key: url}})
    message = str(caught.value)
    assert f"discord.{key}" in message
    assert "SUPERSECRETTOKEN" not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765/api/webhooks/1/tok",
        "http://localhost/api/webhooks/1/tok",
        "http://[::1]:9000/api/webhooks/1/tok",
    ],
)
def test_http_loopback_is_accepted(url):
    assert parse({"discord": {"success_webhook": url}}).success_webhook == url


def test_webhook_is_stripped():
    assert parse({"discord": {"error_webhook": f"  {ERROR_URL}\n"}}).error_webhook == ERROR_URL


@pytest.mark.parametrize("key, sink", [("success_webhook", "discord-success"), ("error_webhook", "discord-error")])
def test_one_webhook_serves_both_routes(key, sink):
    config = parse({"discord": {key: SUCCESS_URL}})
    assert list(config.sinks) == [sink] and config.sinks[sink].url == SUCCESS_URL
    success, error = RouteFacts(EventKind.FINAL, Route.SUCCESS), RouteFacts(EventKind.FINAL, Route.ERROR)
    assert config.sinks_for(success) == config.sinks_for(error) == (sink,)


# --- environment overrides --------------------------------------------------------------

def test_env_overrides_intervals(monkeypatch):
    monkeypatch.setenv("JOBMON_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("JOBMON_PENDING_INTERVAL", "2")
    config = parse(good_config())
    assert (config.running_interval, config.pending_interval) == (0.5, 2.0)


def test_empty_env_value_keeps_the_file_value(monkeypatch):
    monkeypatch.setenv("JOBMON_POLL_INTERVAL", "")
    monkeypatch.setenv("JOBMON_PENDING_INTERVAL", "")
    config = parse(good_config())
    assert (config.running_interval, config.pending_interval) == (5.0, 7.5)


@pytest.mark.parametrize("name", ["JOBMON_POLL_INTERVAL", "JOBMON_PENDING_INTERVAL"])
@pytest.mark.parametrize("value", ["abc", "0", "-1", "1s", "nan", "inf"])
def test_bad_env_values(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        parse("{}")


# --- load_config ------------------------------------------------------------------------

def test_load_config_without_file_when_webhook_required(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.json\.example"):
        load_config(Paths(str(tmp_path)), require_webhook=True)


def test_load_config_without_file_when_not_required(tmp_path):
    assert load_config(Paths(str(tmp_path)), require_webhook=False) == Config()


def test_load_config_reads_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(good_config()))
    config = load_config(Paths(str(tmp_path)), require_webhook=True)
    assert config.error_webhook == ERROR_URL


def test_load_config_without_any_webhook_when_required(tmp_path):
    (tmp_path / "config.json").write_text('{"poll": {"running_interval": 5}}')
    with pytest.raises(ConfigError, match="webhook"):
        load_config(Paths(str(tmp_path)), require_webhook=True)
    assert load_config(Paths(str(tmp_path)), require_webhook=False).running_interval == 5.0


def test_load_config_bad_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{ nope")
    with pytest.raises(ConfigError, match=str(tmp_path / "config.json")):
        load_config(Paths(str(tmp_path)), require_webhook=False)


def test_load_config_unreadable_is_config_error(tmp_path):
    (tmp_path / "config.json").mkdir()  # reading a folder fails with an OSError other than "not found"
    with pytest.raises(ConfigError, match="config.json"):
        load_config(Paths(str(tmp_path)), require_webhook=False)


# --- config_permission_warning ----------------------------------------------------------

@pytest.mark.parametrize("mode, warns", [(0o644, True), (0o640, True), (0o604, True), (0o600, False), (0o400, False)])
def test_config_permission_warning(tmp_path, mode, warns):
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, mode)
    warning = config_permission_warning(Paths(str(tmp_path)))
    if warns:
        assert warning is not None
        assert "chmod 600" in warning and str(path) in warning
    else:
        assert warning is None


def test_config_permission_warning_without_file(tmp_path):
    assert config_permission_warning(Paths(str(tmp_path))) is None


# --- paths ------------------------------------------------------------------------------

def test_resolve_paths_honours_jobmon_home(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBMON_HOME", str(tmp_path / "jm"))
    paths = resolve_paths()
    assert paths.home == str(tmp_path / "jm")
    assert paths.config == str(tmp_path / "jm" / "config.json")
    assert paths.state == str(tmp_path / "jm" / "state")
    assert paths.logs == str(tmp_path / "jm" / "logs")
    assert paths.user_patterns == str(tmp_path / "jm" / "user_patterns.json")
    assert paths.monitor_log("7_4") == str(tmp_path / "jm" / "logs" / "7_4.monitor.log")


def test_resolve_paths_makes_relative_and_tilde_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBMON_HOME", "rel/jm")
    assert resolve_paths().home == str(tmp_path / "rel" / "jm")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.setenv("JOBMON_HOME", "~/jm")
    assert resolve_paths().home == str(tmp_path / "h" / "jm")


def test_resolve_paths_without_jobmon_home_is_absolute():
    assert os.path.isabs(resolve_paths().home)


def test_ensure_creates_folders_0700(tmp_path):
    paths = Paths(str(tmp_path / "a" / "jm"))
    old_umask = os.umask(0o022)
    try:
        paths.ensure()
        paths.ensure()  # idempotent
    finally:
        os.umask(old_umask)
    for folder in (paths.home, paths.state, paths.logs):
        assert os.path.isdir(folder)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def test_ensure_under_a_regular_file_is_config_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="JOBMON_HOME"):
        Paths(str(blocker / "sub")).ensure()


def test_ensure_in_unwritable_home_is_config_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write into a read-only folder")
    home = tmp_path / "ro"
    home.mkdir()
    os.chmod(home, 0o500)
    try:
        with pytest.raises(ConfigError, match="JOBMON_HOME"):
            Paths(str(home)).ensure()
    finally:
        os.chmod(home, 0o700)


# --- load_patterns ----------------------------------------------------------------------

def pattern_entry(pattern_id: str, regex: str, hint: str = "do something") -> dict:
    return {"id": pattern_id, "severity": "error", "regexes": [regex], "description": "d", "hint": hint}


def patterns_file(*entries: dict) -> str:
    return json.dumps({"schema_version": 1, "patterns": list(entries)})


@pytest.fixture
def builtin_patterns(tmp_path, monkeypatch):
    path = tmp_path / "builtin_patterns.json"
    path.write_text(patterns_file(
        pattern_entry("slurm_oom", r"oom-kill"),
        pattern_entry("python_traceback", r"^Traceback", hint="builtin hint"),
    ))
    monkeypatch.setattr(config_module, "BUILTIN_PATTERNS", str(path))
    return path


def test_load_patterns_without_user_file_is_the_builtin_library(tmp_path, builtin_patterns):
    home = tmp_path / "home"
    home.mkdir()
    patterns = load_patterns(Paths(str(home)))
    assert [p.id for p in patterns] == ["slurm_oom", "python_traceback"]


def test_load_patterns_merges_user_file(tmp_path, builtin_patterns):
    home = tmp_path / "home"
    home.mkdir()
    (home / "user_patterns.json").write_text(patterns_file(
        pattern_entry("python_traceback", r"^Traceback \(most recent", hint="user hint"),
        pattern_entry("my_project_error", r"MYPROJ-\d+"),
    ))
    patterns = load_patterns(Paths(str(home)))
    # new user ids first; a redefined built-in keeps its place but takes the user's content
    assert [p.id for p in patterns] == ["my_project_error", "slurm_oom", "python_traceback"]
    assert patterns[2].hint == "user hint"


def test_load_patterns_bad_user_file_names_it(tmp_path, builtin_patterns):
    home = tmp_path / "home"
    home.mkdir()
    (home / "user_patterns.json").write_text('{"schema_version": 1, "patterns": [{"id": "x"}]}')
    with pytest.raises(PatternError, match="user_patterns.json"):
        load_patterns(Paths(str(home)))


def test_load_patterns_missing_builtin_is_pattern_error(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "BUILTIN_PATTERNS", str(tmp_path / "gone.json"))
    with pytest.raises(PatternError, match="gone.json"):
        load_patterns(Paths(str(tmp_path)))


@pytest.mark.skipif(not os.path.exists(config_module.BUILTIN_PATTERNS), reason="built-in library not present")
def test_user_file_on_top_of_the_real_builtin_library(tmp_path):
    from core.analysis.analyzer import parse_patterns

    builtin = parse_patterns(Path(config_module.BUILTIN_PATTERNS).read_text(encoding="utf-8"), "builtin")
    home = tmp_path / "home"
    home.mkdir()
    replaced = builtin[-1].id
    (home / "user_patterns.json").write_text(patterns_file(
        pattern_entry("my_project_error", r"MYPROJ-\d+"),
        pattern_entry(replaced, r"MY-OWN-REGEX", hint="mine"),
    ))
    merged = load_patterns(Paths(str(home)))
    assert [p.id for p in merged] == ["my_project_error"] + [p.id for p in builtin]
    assert merged[-1].hint == "mine"


def test_the_daemon_trusts_the_config_its_cli_checked(tmp_path):
    """The daemon skips the URL and ladder checks (their modules cost an idle daemon ~1 MB)."""
    from core.config import Paths, load_config

    paths = Paths(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({
        "discord": {"error_webhook": " http://example.com/api/webhooks/1/t "},
        "escalation": {"max_retries": "many"}}))
    with pytest.raises(ConfigError, match="must use https"):
        load_config(paths, require_webhook=True)
    trusted = load_config(paths, require_webhook=False, trusted=True)
    assert trusted.error_webhook == "http://example.com/api/webhooks/1/t"
    assert trusted.escalation == {"max_retries": "many"}


# -- health (live checks) -------------------------------------------------------------------------
def test_health_defaults_and_durations_with_units():
    from core.config import parse_config
    from core.progress.health import StallRule, Threshold

    default = parse_config("{}", "c.json", None).health
    assert default.stall == StallRule(5.0, 600.0, 7200.0, 3600.0)
    assert default.time_limit_warn == (Threshold(fraction=0.8), Threshold(fraction=0.9))
    assert default.cancel_on_stall is None and not default.on_start and default.progress_every_fraction is None
    health = parse_config(json.dumps({
        "health": {"stall_factor": 3, "stall_floor": "90s", "stall_cap": "2h", "stall_after": 1800,
                   "time_limit_warn": ["75%", "10m"], "cancel_on_stall": True,
                   "progress_patterns": [r"processed (?P<done>\d+) of (?P<total>\d+)"]},
        "notify": {"on_start": True, "progress_every": "6h"},
    }), "c.json", None).health
    assert health.stall == StallRule(3.0, 90.0, 7200.0, 1800.0)
    assert health.time_limit_warn == (Threshold(fraction=0.75), Threshold(seconds_left=600.0))
    assert health.cancel_on_stall == 7200.0  # true: the cap, after the stalled message
    assert health.on_start and health.progress_every_seconds == 6 * 3600.0
    assert parse_config('{"notify": {"progress_every": "25%"}}', "c.json", None).health.progress_every_fraction == 0.25
    assert parse_config('{"health": {"cancel_on_stall": "3h"}}', "c.json", None).health.cancel_on_stall == 10800.0


@pytest.mark.parametrize("section, message", [
    ({"health": {"stall_floor": "ten minutes"}}, r"health\.stall_floor must be seconds .* got 'ten minutes'"),
    ({"health": {"stall_floor": "2h", "stall_cap": "1h"}}, r"stall_cap must not be shorter than stall_floor"),
    ({"health": {"stall_factor": 0.5}}, r"health\.stall_factor must be a number >= 1"),
    ({"health": {"time_limit_warn": "80%"}}, r"time_limit_warn must be a list"),
    ({"health": {"time_limit_warn": ["120%"]}}, r"time_limit_warn\[0\] must be a percentage from 1% to 100%"),
    ({"health": {"progress_patterns": ["(unclosed"]}}, r"progress_patterns\[0\] is not a valid regular expression"),
    ({"health": {"progress_patterns": [r"step \d+"]}}, r"progress_patterns\[0\] needs a named group \(\?P<done>"),
    ({"health": {"cancel_on_stall": "soon"}}, r"health\.cancel_on_stall must be seconds"),
    ({"health": {"cancel_on_stall": 0}}, r"health\.cancel_on_stall must be false or a duration .* 0 would cancel"),
    ({"notify": {"on_start": "yes"}}, r"notify\.on_start must be true or false"),
    ({"notify": {"progress_every": "5s"}}, r"notify\.progress_every must be a percentage .* or at least a minute"),
    ({"health": []}, r"'health' must be an object"),
])
def test_bad_health_settings_are_one_clear_line_naming_the_key(section, message):
    from core.config import parse_config
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_config(json.dumps(section), "c.json", None)
