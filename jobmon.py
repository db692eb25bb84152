#!/usr/bin/env python3
"""jobmon: submit or watch Slurm jobs and get one Discord message saying how and why they ended.

This module alone reads argv, prints and chooses exit codes; `core/` does the work.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from core.config import (
    Config,
    Paths,
    config_permission_warning,
    load_config,
    load_patterns,
    parse_config,
    read_text_file,
    resolve_paths,
)
from core.errors import ConfigError, JobmonError

if TYPE_CHECKING:  # each command imports what it needs: `jobmon --version` stays quick
    from core.slurm.client import Slurm
    from core.slurm.shared import SharedSlurm
    from core.state.store import StateStore
    from core.views.status import StatusRow

__version__ = "0.1.0"
#: How long `status` gives squeue, and another process's refresh of the shared snapshot: then it shows
#: the last known states (a controller going down can leave squeue hanging until its own timeout).
CLI_SLURM_TIMEOUT = 20.0
CLI_LOCK_WAIT = 10.0
#: `status` and `show` refresh the shared squeue snapshot when it is older than this (seconds); the monitors
#: refresh it at their poll interval, and `status --watch` reads theirs.
STATUS_FRESHNESS = 5.0
#: `status --watch` refreshes this often by default (seconds); its detail shows this many lines of each log.
WATCH_INTERVAL = 3.0
WATCH_LOG_LINES = 40
#: `show` cuts lines at this width when stdout is not a terminal.
SHOW_WIDTH = 160


class Context:
    """Lazily built collaborators shared by the commands."""

    def __init__(self) -> None:
        self.paths: Paths = resolve_paths()

    def ready_paths(self) -> Paths:
        self.paths.ensure()
        return self.paths

    def store(self) -> StateStore:
        from core.state.store import StateStore

        store = StateStore(self.ready_paths().state)
        if store.needs_layout():
            self.warn(f"first use of {store.folder} by this jobmon: indexing its records (once; "
                      "tens of thousands take a few seconds)")
        return store

    def slurm(self) -> Slurm:
        from core.slurm.client import Slurm

        return Slurm()

    def shared_slurm(self, config: Config, *, fresh: bool = False) -> SharedSlurm:
        """Slurm queries through the snapshots every monitor shares (see core/slurm/shared.py), as a
        person waiting for an answer needs them: squeue given 20 s, another process's refresh 10 s.
        `fresh`: a snapshot older than STATUS_FRESHNESS is refreshed (one squeue for every row, under
        the lock the monitors take, so never two refreshes at once; the monitors then use it too)."""
        from core.slurm.client import Slurm
        from core.slurm.shared import SharedSlurm

        max_age = min(STATUS_FRESHNESS, config.running_interval) if fresh else config.running_interval
        return SharedSlurm(Slurm(timeout=CLI_SLURM_TIMEOUT), self.ready_paths().state, max_age=max_age,
                           lock_timeout=CLI_LOCK_WAIT, impatient=True)

    def warn(self, message: str) -> None:
        print(f"jobmon: {message}", file=sys.stderr)

    def config(self, *, require_webhook: bool, need_secrets: bool = True) -> Config:
        config = load_config(self.paths, require_webhook=require_webhook, need_secrets=need_secrets)
        warning = config_permission_warning(self.paths)
        if warning:
            self.warn(warning)
        return config

    def config_or_defaults(self) -> Config:
        """For the commands that send nothing (status, analyze): a broken config.json is one warning
        line, and they go on with the defaults (and the environment's overrides)."""
        try:
            return self.config(require_webhook=False, need_secrets=False)
        except ConfigError as exc:
            self.warn(f"warning: {exc} (ignored here; submit, watch, recover and test-notify refuse to run "
                      "until it is fixed)")
        try:
            return parse_config("{}", self.paths.config, None)
        except ConfigError:  # a bad JOBMON_POLL_INTERVAL or the like: already said above
            return Config()


def _command(sub: Any, name: str, example: str, *, epilog: str = "", **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose help ends with one example (and `epilog`, wrapped, before it)."""
    import textwrap

    notes = textwrap.fill(epilog, 100) + "\n\n" if epilog else ""
    parser: argparse.ArgumentParser = sub.add_parser(name, epilog=f"{notes}example:\n  {example}",
                                                     formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    return parser


# -- init -----------------------------------------------------------------------------------
def _add_init(sub: Any) -> None:
    parser = _command(sub, "init", 'jobmon init --success-webhook https://discord.com/api/webhooks/ID/TOKEN',
                      help="create config.json (mode 0600) with your webhooks")
    parser.add_argument("--success-webhook", default="", metavar="URL", help="webhook for clean completions")
    parser.add_argument("--error-webhook", default="", metavar="URL", help="webhook for everything else")
    parser.add_argument("--force", action="store_true", help="replace an existing config.json")
    parser.set_defaults(handler=_cmd_init)


def _cmd_init(args: argparse.Namespace, ctx: Context) -> int:
    from core.config import write_new_config
    from core.notify.discord import redact_url

    paths = ctx.ready_paths()
    write_new_config(paths, args.success_webhook.strip(), args.error_webhook.strip(), overwrite=args.force)
    for name, url in (("success", args.success_webhook), ("error", args.error_webhook)):
        if url:
            print(f"jobmon: {name} webhook {redact_url(url.strip())}")
    print(f"jobmon: wrote {paths.config} (mode 0600); check it with `jobmon test-discord`")
    return 0


# -- submit ---------------------------------------------------------------------------------
def _add_submit(sub: Any) -> None:
    parser = _command(
        sub, "submit", 'jobmon submit --mem=32G --gres=gpu:1 train.sbatch --lr 3e-4',
        help="sbatch a script and start its monitor",
        description="Run sbatch with all flags unchanged, then start a detached monitor for the job.",
        usage="jobmon submit [--escalate ...] [--watch-files GLOB ...] [sbatch flags...] SCRIPT [script args...]",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=_cmd_submit)


def _cmd_submit(args: argparse.Namespace, ctx: Context) -> int:
    from core.chain.policy import load_ladder_text, parse_policy
    from core.chain.submitter import split_jobmon_flags, submit
    from core.daemon.launcher import start_monitor
    from core.errors import AlreadyMonitored

    config = ctx.config(require_webhook=True)
    load_patterns(ctx.paths)  # a broken user patterns file must stop us before sbatch, not the daemon later
    flags, argv = split_jobmon_flags(args.argv)
    policy = None
    if flags.escalate:
        ladder_text = read_text_file(flags.ladder_file, "ladder file") if flags.ladder_file else ""
        ladder = load_ladder_text(ladder_text, flags.ladder_file) if flags.ladder_file else ()
        policy = parse_policy(config.escalation, ctx.paths.config, ladder=ladder, max_retries=flags.max_retries)
    ctx.ready_paths()
    record = submit(ctx.store(), ctx.slurm(), argv, cwd=os.getcwd(), policy=policy, watch_files=flags.watch_files)
    print(f"Submitted batch job {record.job_id}")
    if record.chain is not None:
        how = f"ladder of {len(record.chain.ladder)} levels" if record.chain.ladder else "doubling on OOM/TIMEOUT"
        print(f"jobmon: escalation on: up to {record.chain.max_retries} resubmissions, {how}")
    try:
        pid = start_monitor(ctx.paths, record.job_id)
    except AlreadyMonitored as exc:  # `watch --all` found the job first and started its one monitor
        print(f"jobmon: {exc}: started by `jobmon watch --all`, it monitors the job with this submission's "
              f"settings (log {ctx.paths.monitor_log(record.job_id)})")
        return 0
    _say_monitoring(ctx, record.job_id, pid)
    return 0


def _say_monitoring(ctx: Context, job_id: str, pid: int) -> None:
    """The line naming the new monitor, and a warning when this login's end will kill it (`jobmon doctor`)."""
    from core.doctor.diagnose import logout_warning

    print(f"jobmon: monitoring job {job_id} (daemon pid {pid}, log {ctx.paths.monitor_log(job_id)})")
    warning = logout_warning()
    if warning:
        print(warning, file=sys.stderr)


# -- watch ----------------------------------------------------------------------------------
def _add_watch(sub: Any) -> None:
    parser = _command(sub, "watch", 'jobmon watch 48213 --output slurm-48213.out',
                      help="monitor a job submitted with plain sbatch (--all: every new job of yours)",
                      usage="jobmon watch JOBID [--error PATH] [--output PATH] [--resend]\n"
                            "       jobmon watch --all [--partition P,...] [--name REGEX] [--since 10m] | --all --stop",
                      epilog="--all starts one background watcher (it survives logout; `status` shows it, `recover` "
                             "restarts it) that gives every new job of yours matching the filters a monitor, "
                             "whatever submitted it (sbatch, snakemake, submitit, ...). It finds them in the squeue "
                             "snapshot the monitors share.")
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--all", action="store_true", help="watch every new job of yours (a background watcher)")
    parser.add_argument("--partition", default="", metavar="P,...", help="--all: only jobs in these partitions")
    parser.add_argument("--name", default="", metavar="REGEX", help="--all: only jobs whose name matches (searched)")
    parser.add_argument("--since", default="", metavar="WHEN",
                        help="--all: also jobs submitted this long before now (10m, 2h; default: from now on)")
    parser.add_argument("--stop", action="store_true", help="--all: stop the watcher")
    parser.add_argument("--error", metavar="PATH", help="the job's stderr file (default: from scontrol)")
    parser.add_argument("--output", metavar="PATH", help="the job's stdout file (default: from scontrol)")
    parser.add_argument("--resend", action="store_true",
                        help="watch an array task on its own even when jobmon already covers its array (a second "
                             "message about it)")
    parser.set_defaults(handler=_cmd_watch)


def _cmd_watch(args: argparse.Namespace, ctx: Context) -> int:
    from core.chain.submitter import attach
    from core.daemon.launcher import start_monitor
    from core.daemon.main import run_inline
    from core.notify.outbox import problems, summary_status

    if args.all or args.stop:
        return _watch_all(args, ctx)
    if args.job_id is None:
        raise JobmonError("give a job id, or --all to watch every new job of yours")
    if args.partition or args.name or args.since:
        raise JobmonError("--partition, --name and --since go with --all")
    config = ctx.config(require_webhook=True)
    load_patterns(ctx.paths)
    ctx.ready_paths()
    if not args.resend and _covered_by_its_array(ctx.store(), args.job_id):
        return 0
    record, finished = attach(ctx.store(), ctx.slurm(), args.job_id, stdout=args.output, stderr=args.error)
    if not finished:
        pid = start_monitor(ctx.paths, record.job_id)
        _say_monitoring(ctx, record.job_id, pid)
        return 0
    print(f"jobmon: job {record.job_id} has already ended; analysing and notifying now")
    record = run_inline(ctx.paths, config, record.job_id)
    final = record.final
    if final is not None:
        causes = ", ".join(record.categories) or "no known error pattern"
        print(f"jobmon: job {record.job_id} ended {final.state.value} (exit {final.exit_code}:{final.signal}); "
              f"findings: {causes}")
    trouble = problems(record.outbox)
    print(f"jobmon: notification {summary_status(record.outbox)}" + (f": {'; '.join(trouble)}" if trouble else ""))
    return 0 if record.done else 1


def _watch_all(args: argparse.Namespace, ctx: Context) -> int:
    import time

    from core.daemon.watchall import make_filter, start_watcher, stop_watcher, watch_log
    from core.views.history import parse_since

    if args.job_id is not None or args.resend or args.error or args.output:
        raise JobmonError("--all takes no job id, --resend, --error or --output")
    paths = ctx.ready_paths()
    if args.stop:
        if not args.all:
            raise JobmonError("--stop goes with --all: `jobmon watch --all --stop`")
        stopped = stop_watcher(paths)
        print(f"jobmon: stopped the watcher (pid {stopped.pid})" if stopped else "jobmon: no running watcher to stop")
        return 0
    ctx.config(require_webhook=True)  # every monitor it starts needs the config (and its ${ENV} secrets)
    load_patterns(paths)
    now = time.time()
    wanted = make_filter(args.partition, args.name, parse_since(args.since, now) if args.since else now)
    ctx.store()
    record = start_watcher(paths, wanted)
    print(f"jobmon: watching every new job of yours ({wanted.describe()}); watcher pid {record.pid}, "
          f"log {watch_log(paths)}; `jobmon watch --all --stop` stops it")
    return 0


def _covered_by_its_array(store: StateStore, job_id_text: str) -> bool:
    """A task of an array jobmon already watches or summarised: say so, and start nothing (defect: a second
    message about a task the summary already told)."""
    from core.notify.outbox import summary_status
    from core.slurm.jobscript import validate_job_id
    from core.views.history import covering_array

    job_id = validate_job_id(job_id_text)
    array = covering_array(store, job_id)
    if array is None:
        return False
    if array.final is not None:
        print(f"jobmon: task {job_id} belongs to array {array.job_id}, which jobmon already summarised "
              f"({array.final.state.value}); its notification: {summary_status(array.outbox)}. Nothing was sent. "
              f"`jobmon show {array.job_id}` shows it; `jobmon watch --resend {job_id}` sends a message about "
              "this task alone")
    else:
        print(f"jobmon: task {job_id} belongs to array {array.job_id}, which jobmon monitors already: its summary "
              f"will cover this task. Nothing was started; `jobmon watch --resend {job_id}` watches the task on "
              "its own (a second message)")
    return True


# -- status ---------------------------------------------------------------------------------
def _add_status(sub: Any) -> None:
    parser = _command(
        sub, "status", 'jobmon status --watch', help="one row per monitored job",
        epilog="--watch: q quits, arrows or j/k select, Enter shows the selected job's detail (Esc goes back). "
               "Colours follow NO_COLOR. When stdout is not a terminal, the table is printed again every "
               "interval under a timestamp line until Ctrl-C (or --count refreshes).",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output")
    output.add_argument("--watch", action="store_true",
                        help="a live full-screen view (plain repeated output when stdout is not a terminal)")
    parser.add_argument("--all", action="store_true", help="include jobs finished more than a day ago")
    parser.add_argument("--interval", type=_interval, default=None, metavar="SECONDS",
                        help=f"--watch refreshes this often (default {WATCH_INTERVAL:g}, at least 1)")
    parser.add_argument("--count", type=_positive_int, default=None, metavar="N",
                        help="--watch stops after N refreshes (default: at q or Ctrl-C)")
    parser.set_defaults(handler=_cmd_status)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 1 and 3600 seconds")
    return value


def _cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    from core.views.status import collect_status, rows_as_json

    if not args.watch and (args.interval is not None or args.count is not None):
        raise JobmonError("--interval and --count go with --watch")
    store = ctx.store()
    config = ctx.config_or_defaults()
    if args.watch:
        return _watch_status(args, ctx, store, config)
    rows, warning = collect_status(store, ctx.shared_slurm(config, fresh=True), include_old=args.all)
    if warning:
        ctx.warn(warning)
    services = _services(ctx)
    if args.json:
        data = rows_as_json(rows)
        data.update(services)
        print(json.dumps(data, indent=1))
        return 0
    _print_status(rows, args.all)
    for name, service in services.items():
        where = service["url"] if name == "serve" else service["filters"]
        print(f"{'watch --all' if name == 'watch_all' else name}: {service['health']} pid {service['pid']} "
              f"on {service['host']}, {where}")
    if not rows:
        from core.config import other_home_hint

        elsewhere = other_home_hint(ctx.paths, "state")
        if elsewhere:  # a switched install method switched JOBMON_HOME: the jobs did not vanish
            ctx.warn(f"this JOBMON_HOME ({ctx.paths.home}) has no jobs, but {elsewhere}")
    return 0


def _services(ctx: Context) -> dict:
    """The background services `status` shows (`serve`, `watch_all`), unless never started or stopped on purpose."""
    import time

    from core.daemon.liveness import Health, this_host
    from core.daemon.service import service_health
    from core.daemon.watchall import load_watcher, parse_filter_args
    from core.serve.record import load_server

    state = ctx.ready_paths().state
    found = {}
    for name, record in (("serve", load_server(state)), ("watch_all", load_watcher(state))):
        if record is None:
            continue
        health = service_health(record, this_host(), time.time())
        if health is Health.DONE:
            continue
        found[name] = {"health": health.value, "pid": record.pid, "host": record.host, "started_at": record.started_at}
        if name == "serve":
            found[name]["url"] = record.url
        else:
            try:
                found[name]["filters"] = parse_filter_args(record.args).describe()
            except JobmonError:
                found[name]["filters"] = " ".join(record.args)
    return found


def _print_status(rows: Sequence[StatusRow], include_old: bool) -> None:
    from core.views.status import COLUMNS
    from core.views.table import text_table

    if not rows:
        print("No monitored jobs." + ("" if include_old else " (--all shows older ones)"))
        return
    print(text_table([header for header, _ in COLUMNS], [row.cells() for row in rows]))
    for row in rows:
        if row.problem:
            print(f"  {row.job_id}: {row.problem}")


def _watch_status(args: argparse.Namespace, ctx: Context, store: StateStore, config: Config) -> int:
    """`status --watch`: the curses view on a terminal, else the table again every interval."""
    import time

    from core.views.detail import load_detail
    from core.views.status import collect_status

    slurm = ctx.shared_slurm(config)
    interval = WATCH_INTERVAL if args.interval is None else args.interval

    def fetch() -> Tuple[List[StatusRow], str]:
        return collect_status(store, slurm, include_old=args.all)

    if _on_terminal():
        try:
            from core.views.watch import run_watch
        except ImportError:  # a Python built without curses
            ctx.warn("this Python has no curses module: printing plain refreshes instead")
        else:
            try:
                run_watch(fetch, lambda row: load_detail(store, row, WATCH_LOG_LINES), interval=interval,
                          count=args.count, color=not os.environ.get("NO_COLOR"))
            except KeyboardInterrupt:
                pass
            return 0
    shown = 0
    try:
        while True:
            try:
                rows, warning = fetch()
            except JobmonError as exc:  # keep watching: the next refresh may read it
                rows, warning = [], str(exc)
            print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} (every {interval:g}s, Ctrl-C stops) ---")
            if warning:
                ctx.warn(warning)
            _print_status(rows, args.all)
            sys.stdout.flush()
            shown += 1
            if args.count is not None and shown >= args.count:
                return 0
            time.sleep(interval)
            print()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `| head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _on_terminal() -> bool:
    """Both ends are a terminal that curses can drive (not `| less`, not cron, not TERM=dumb)."""
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb"


# -- show -----------------------------------------------------------------------------------
def _add_show(sub: Any) -> None:
    parser = _command(sub, "show", 'jobmon show 48213 --lines 50',
                      help="one job's detail: progress, its history, findings, events, log tails")
    parser.add_argument("job_id", help="the job's id, or the id of any attempt of its chain")
    parser.add_argument("--lines", type=_positive_int, default=20, metavar="N",
                        help="the last N lines of each log (default 20)")
    parser.set_defaults(handler=_cmd_show)


def _cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    import shutil

    from core.slurm.jobscript import validate_job_id
    from core.views.detail import detail_of, glyphs_for, render_detail

    job_id = validate_job_id(args.job_id)
    config = ctx.config(require_webhook=False)
    detail, warning = detail_of(ctx.store(), ctx.shared_slurm(config, fresh=True), job_id, log_lines=args.lines)
    if warning:
        ctx.warn(warning)
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else SHOW_WIDTH
    print("\n".join(render_detail(detail, width, glyphs=glyphs_for(sys.stdout.encoding))))
    return 0


# -- cancel / recover -----------------------------------------------------------------------
def _add_cancel(sub: Any) -> None:
    parser = _command(sub, "cancel", 'jobmon cancel --job 48213',
                      help="stop monitoring a job or chain (the Slurm job keeps running)")
    parser.add_argument("job_id", help="the job's id, or the id of any attempt of its chain")
    parser.add_argument("--job", action="store_true", help="also scancel the job (the chain's current attempt)")
    parser.set_defaults(handler=_cmd_cancel)


def _cmd_cancel(args: argparse.Namespace, ctx: Context) -> int:
    from core.daemon.control import cancel
    from core.slurm.jobscript import validate_job_id
    from core.views.history import find_record

    store = ctx.store()
    record = find_record(store, validate_job_id(args.job_id))
    done = cancel(store, record, ctx.slurm() if args.job else None)
    job_id = done.record.job_id
    if not args.job:
        print(f"jobmon: stopped monitoring job {job_id}; the Slurm job itself keeps running "
              f"(scancel {done.record.target} or `jobmon cancel --job {job_id}` stops it)")
        return 0
    jobs = ", ".join(done.cancelled_jobs) or "none"
    print(f"jobmon: stopped monitoring job {job_id}; cancelled Slurm job(s): {jobs}")
    if done.failures:
        raise JobmonError("; ".join(done.failures))
    return 0


# -- report / history -----------------------------------------------------------------------
def _add_report(sub: Any) -> None:
    parser = _command(sub, "report", 'jobmon report 48213 --markdown',
                      help="attempts, levels, states and runtimes of a job or chain")
    parser.add_argument("job_id", help="the job's id, or the id of any attempt of its chain")
    _add_format_flags(parser, markdown=True)
    parser.set_defaults(handler=_cmd_report)


def _add_format_flags(parser: argparse.ArgumentParser, *, markdown: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    if markdown:
        group.add_argument("--markdown", dest="fmt", action="store_const", const="markdown")
    group.add_argument("--json", dest="fmt", action="store_const", const="json")
    group.add_argument("--csv", dest="fmt", action="store_const", const="csv")
    parser.set_defaults(fmt="table")


def _cmd_report(args: argparse.Namespace, ctx: Context) -> int:
    from core.slurm.jobscript import validate_job_id
    from core.views.history import find_record, report_columns, report_rows, report_title
    from core.views.table import render

    record = find_record(ctx.store(), validate_job_id(args.job_id))
    print(render(report_rows(record), report_columns(record), args.fmt, report_title(record)))
    return 0


def _add_history(sub: Any) -> None:
    parser = _command(sub, "history", 'jobmon history --since 7d --csv',
                      help="past jobs and chains with their outcome and causes")
    parser.add_argument("--since", default="", metavar="WHEN", help="e.g. 7d, 12h, 2026-11-01")
    _add_format_flags(parser, markdown=False)
    parser.set_defaults(handler=_cmd_history)


def _cmd_history(args: argparse.Namespace, ctx: Context) -> int:
    import time

    from core.views.history import HISTORY_COLUMNS, history_entries, history_row, parse_since
    from core.views.table import render

    since = parse_since(args.since, time.time()) if args.since else 0.0
    rows = [history_row(entry) for entry in history_entries(ctx.store(), since)]
    if not rows and args.fmt == "table":
        print("No jobs in the history" + (f" since {args.since}." if args.since else "."))
        return 0
    print(render(rows, HISTORY_COLUMNS, args.fmt))
    return 0


def _add_recover(sub: Any) -> None:
    parser = _command(sub, "recover", 'jobmon recover', help="restart dead monitors and deliver pending notifications")
    parser.set_defaults(handler=_cmd_recover)


def _cmd_recover(args: argparse.Namespace, ctx: Context) -> int:
    from core.daemon.control import recover_all

    try:
        config = ctx.config(require_webhook=False)
    except ConfigError as exc:  # every monitor it would start trusts the file: nothing is touched before it is fixed
        raise ConfigError(f"{exc}; nothing was recovered or changed: fix it, then run `jobmon recover` again") from None
    actions = recover_all(ctx.ready_paths(), ctx.store(), config)
    server = _recover_server(ctx)
    if server:
        actions.append(f"serve: {server}")
    for line in actions:
        print(f"jobmon: {line}")
    if not actions:
        print("jobmon: nothing to recover: every monitor is alive or done")
    return 0


# -- serve --------------------------------------------------------------------------------
def _add_serve(sub: Any) -> None:
    parser = _command(
        sub, "serve", "jobmon serve --detach   # then open http://127.0.0.1:8642/",
        help="a read-only web dashboard and JSON/Prometheus endpoints over your jobs",
        epilog="Pages: / (dashboard), /healthz, /stats, /jobs, /jobs/<id>, /metrics. Loopback only unless --bind "
               "names another address; then JOBMON_SERVE_TOKEN must be set and every request must carry it "
               "(Authorization: Bearer TOKEN, or ?token=TOKEN in the browser once).",
    )
    parser.add_argument("--port", type=int, default=None, metavar="N", help="TCP port (default 8642; 0: any free port)")
    parser.add_argument("--bind", default=None, metavar="ADDRESS", help="address to listen on (default 127.0.0.1)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="run in the background like the monitors (survives logout)")
    mode.add_argument("--stop", action="store_true", help="stop the background server")
    parser.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    from core.logs import log_to
    from core.serve.main import DEFAULT_BIND, DEFAULT_PORT, open_server, run_server, shared_slurm, start_detached
    from core.serve.record import load_server, stop_server
    from core.serve.server import TOKEN_ENV

    paths = ctx.ready_paths()
    if args.stop:
        if args.port is not None or args.bind is not None:
            raise JobmonError("--stop takes no --port or --bind")
        record = load_server(paths.state)
        if record is None or record.stopped_at or not stop_server(record):
            where = f" on {record.host}" if record is not None and record.host and not record.stopped_at else ""
            print(f"jobmon: no running server to stop{where}")
            return 0
        print(f"jobmon: stopped the server (pid {record.pid}, {record.url})")
        return 0
    bind = DEFAULT_BIND if args.bind is None else args.bind
    port = DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise JobmonError(f"--port {port}: must be between 0 and 65535")
    token = os.environ.get(TOKEN_ENV, "")
    ctx.store()  # the first-use notice, if any
    config = ctx.config_or_defaults()
    if args.detach:
        record = start_detached(paths, bind, port, token)
        print(f"jobmon: serving {record.url} (pid {record.pid}, log {os.path.join(paths.logs, 'serve.log')}); "
              "`jobmon serve --stop` stops it")
        return 0
    server = open_server(paths, shared_slurm(paths, config.running_interval), bind, port, token)
    log_to(sys.stderr)
    url = server.record.url if server.record is not None else f"{bind}:{port}"
    print(f"jobmon: serving {url} (Ctrl-C stops)", flush=True)
    run_server(server)
    return 0


def _recover_server(ctx: Context) -> str:
    """Start `jobmon serve --detach` again on its address when it died (not when it was stopped)."""
    import time

    from core.daemon.liveness import Health, this_host
    from core.serve.main import start_detached
    from core.serve.record import load_server, server_health
    from core.serve.server import TOKEN_ENV

    record = load_server(ctx.paths.state)
    if record is None or server_health(record, this_host(), time.time()) is not Health.DEAD:
        return ""
    try:
        started = start_detached(ctx.paths, record.bind, record.port, os.environ.get(TOKEN_ENV, ""))
    except JobmonError as exc:
        return f"not restarted: {exc}"
    return f"server restarted (pid {started.pid}, {started.url})"


# -- test-notify ----------------------------------------------------------------------------
def _add_test_notify(sub: Any) -> None:
    for command, summary in (("test-notify", "send a test message to each configured sink (or those named)"),
                             ("test-discord", "the same as test-notify (its former name)")):
        parser = _command(sub, command, f"jobmon {command}" + (" team phone" if command == "test-notify" else ""),
                          help=summary)
        parser.add_argument("sinks", nargs="*", metavar="SINK", help="sink names from config.json (default: all)")
        parser.set_defaults(handler=_cmd_test_notify)


def _cmd_test_notify(args: argparse.Namespace, ctx: Context) -> int:
    from core.doctor.sinks import send_test_messages

    failures = 0
    for report in send_test_messages(ctx.config(require_webhook=True), args.sinks, args.command or "test-notify"):
        if report.error:
            print(f"{report.label}: FAILED ({report.described}): {report.error}")
            failures += 1
        else:
            print(f"{report.label}: OK ({report.described})")
    return 1 if failures else 0


# -- doctor ---------------------------------------------------------------------------------
def _add_doctor(sub: Any) -> None:
    parser = _command(
        sub, "doctor", 'jobmon doctor --send',
        help="check what will and will not work here (Slurm, files, webhooks, logout)",
        description="One line per check, OK/WARN/FAIL, with what to do. Exits 1 when a check FAILs.",
    )
    parser.add_argument("--send", action="store_true", help="send a test message to each webhook "
                        "(default: only check that its host answers)")
    parser.set_defaults(handler=_cmd_doctor)


# -- completion -----------------------------------------------------------------------------
def _add_completion(sub: Any) -> None:
    from core.views.completion import SHELLS

    parser = _command(sub, "completion", 'eval "$(jobmon completion bash)"   # in ~/.bashrc',
                      help="print a bash or zsh completion script",
                      epilog="bash: put the example line in ~/.bashrc, or save the output as "
                             "~/.local/share/bash-completion/completions/jobmon. "
                             "zsh: eval \"$(jobmon completion zsh)\" in ~/.zshrc after compinit, "
                             "or save it as _jobmon in a folder of your $fpath.")
    parser.add_argument("shell", choices=SHELLS)
    parser.set_defaults(handler=_cmd_completion)


def _cmd_completion(args: argparse.Namespace, ctx: Context) -> int:
    from core.views.completion import completion_script

    print(completion_script(build_parser(), args.shell) or "", end="")
    return 0


def _cmd_doctor(args: argparse.Namespace, ctx: Context) -> int:
    from core.doctor.diagnose import run_doctor
    from core.doctor.model import Level, worst

    checks = run_doctor(ctx.paths, ctx.slurm(), send=args.send)
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{check.level.value:<4}  {check.name:<{width}}  {check.detail}")
        if check.advice:
            print(f"{'':<4}  {'':<{width}}  -> {check.advice}")
    verdict = worst(checks)
    counts = {level: sum(check.level is level for check in checks) for level in Level}
    print(f"jobmon {__version__}: {counts[Level.OK]} OK, {counts[Level.WARN]} WARN, {counts[Level.FAIL]} FAIL")
    return 1 if verdict is Level.FAIL else 0


# -- analyze --------------------------------------------------------------------------------
def _add_analyze(sub: Any) -> None:
    parser = _command(sub, "analyze", 'jobmon analyze slurm-48190.out --state FAILED --exit-code 1 --explain',
                      help="run the error analyzer on log files")
    parser.add_argument("logs", nargs="+", metavar="LOG",
                        help="a log file, a directory (each file in it) or - (standard input)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--lines", type=_positive_int, default=None, metavar="N",
                        help="analyse the last N lines (default: config's analysis.tail_lines, 500)")
    parser.add_argument("--explain", action="store_true",
                        help="show which pattern and regex matched each finding and why the order")
    parser.add_argument("--state", default=None, metavar="STATE",
                        help="how Slurm ended the job (COMPLETED, TIMEOUT, OUT_OF_MEMORY...): its cause leads, "
                             "and a clean end has warnings only")
    parser.add_argument("--exit-code", type=int, default=0, metavar="N", help="the job's exit code (with --state)")
    parser.add_argument("--signal", type=int, default=0, metavar="N", help="the signal that ended it (with --state)")
    parser.set_defaults(handler=_cmd_analyze)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _analyze_inputs(names: Sequence[str]) -> List[str]:
    """The files to analyse: each name, a directory's regular files (sorted), or "-" for standard input."""
    found: List[str] = []
    for name in names:
        if name == "-":
            found.append(name)
        elif os.path.isdir(name):
            files = sorted(os.path.join(name, entry) for entry in os.listdir(name)
                           if not entry.startswith(".") and os.path.isfile(os.path.join(name, entry)))
            if not files:
                raise JobmonError(f"{name} is a directory with no files in it")
            found.extend(files)
        elif not os.path.exists(name):
            raise JobmonError(f"{name}: no such file")
        elif not os.access(name, os.R_OK):
            raise JobmonError(f"{name}: permission denied")
        else:
            found.append(name)
    if found.count("-") > 1:
        raise JobmonError("standard input (-) can be read only once")
    return found


def _cmd_analyze(args: argparse.Namespace, ctx: Context) -> int:
    from core.analysis.analyzer import explain
    from core.analysis.jobend import JobEnd
    from core.analysis.logtail import read_tail, tail_of_text
    from core.slurm.model import JobState

    if args.state is None and (args.exit_code or args.signal):
        raise JobmonError("--exit-code and --signal describe how the job ended: give --state too")
    outcome = None
    if args.state is not None:
        state = JobState.parse(args.state)
        if state is JobState.UNKNOWN:
            raise JobmonError(f"--state {args.state!r} is not a Slurm job state (COMPLETED, FAILED, TIMEOUT, ...)")
        outcome = JobEnd(state.value, args.exit_code, args.signal)
    names = _analyze_inputs(args.logs)
    lines = args.lines or ctx.config_or_defaults().tail_lines
    patterns = load_patterns(ctx.paths)
    reports = []
    for index, name in enumerate(names):
        tail = tail_of_text(sys.stdin.read(), lines) if name == "-" else read_tail(name, lines)
        analysis, explained = explain(tail.lines, patterns, outcome)
        label = "(standard input)" if name == "-" else name
        if args.json:
            report = {"path": label, **analysis.to_json_dict()}
            if args.explain:
                report["explain"] = [dataclasses.asdict(e) for e in explained]
            reports.append(report)
            continue
        if index:
            print()
        _print_analysis(label, tail, analysis, explained if args.explain else ())
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=1))
    return 0


def _print_analysis(label: str, tail: Any, analysis: Any, explained: Sequence[Any]) -> None:
    scope = "whole file" if tail.whole else f"last {len(tail.lines)} lines"

    def number(line_no: int) -> str:
        if line_no == 0:
            return "slurm"
        return str(line_no) if tail.whole else f"-{len(tail.lines) - line_no + 1}"

    if not analysis.findings and not analysis.warnings:
        print(f"No known error pattern in {label} ({scope}).")
        return
    if analysis.categories:
        print(f"{label} ({scope}): root cause first: {', '.join(analysis.categories)}")
        hints = {f.category: f.hint for f in analysis.findings}
        for category in analysis.categories:
            print(f"  {category}: {hints[category]}")
    else:
        print(f"{label} ({scope}): no failure cause; warnings seen: "
              f"{', '.join(dict.fromkeys(w.category for w in analysis.warnings))}")
    for title, shown in (("", analysis.findings), ("WARNINGS SEEN", analysis.warnings)):
        if not shown:
            continue
        print()
        if title:
            print(title)
        print(f"{'LINE':>6}  {'SEVERITY':<9} {'CATEGORY':<24} TEXT")
        for finding in shown:
            print(f"{number(finding.line_no):>6}  {finding.severity:<9} {finding.category:<24} {finding.line[:160]}")
    if explained:
        print()
        print("WHY (root cause first, then warnings)")
        for item in explained:
            where = "from Slurm's final state" if item.line_no == 0 else f"line {number(item.line_no)}"
            print(f"  {item.category} (library rank {item.library_rank}, {where}): {item.reason}")
            if item.regex:
                print(f"      matched regex: {item.regex}")
    if not tail.whole:
        print("(negative line numbers count from the end of the file)")


COMMANDS: Sequence[Callable[[Any], None]] = (
    _add_init, _add_submit, _add_watch, _add_status, _add_show, _add_cancel, _add_recover, _add_report, _add_history,
    _add_test_notify, _add_analyze, _add_doctor, _add_completion, _add_serve,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobmon",
        description="Monitor Slurm jobs and get a Discord message saying how and why they ended.",
        epilog="New here? `jobmon doctor` checks what works on this machine. Files live in $JOBMON_HOME "
               "(see README). Example: jobmon submit --mem=8G train.sbatch",
    )
    parser.add_argument("--version", action="version", version=f"jobmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["submit"] and argv[1:2] not in (["-h"], ["--help"]):
        # Everything after `submit` belongs to sbatch and the script, options included.
        args = argparse.Namespace(handler=_cmd_submit, argv=argv[1:])
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    from core.errors import SbatchRejected

    try:
        return args.handler(args, Context())
    except SbatchRejected as exc:
        print(str(exc), file=sys.stderr)  # sbatch's own words, unchanged
        return exc.exit_code
    except JobmonError as exc:
        print(f"jobmon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("jobmon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
