"""Start and run `jobmon serve`, in the foreground or detached (`python -m core.serve`, like the monitors)."""
from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import List, Optional

from core.config import Config, Paths, load_config, resolve_paths
from core.daemon.liveness import Health, this_host
from core.daemon.process import child_env, module_argv
from core.daemon.service import detach_service
from core.errors import ConfigError, JobmonError
from core.logs import log, log_to
from core.monitor.poller import SlurmView
from core.serve.record import ServerRecord, load_server, save_server, server_health, this_server
from core.serve.server import TOKEN_ENV, App, JobmonHTTPServer, Source, check_access
from core.slurm.client import Slurm
from core.slurm.shared import SharedSlurm
from core.state.store import StateStore

DEFAULT_PORT = 8642
DEFAULT_BIND = "127.0.0.1"
#: squeue given this long, another process's snapshot refresh this long (as for `jobmon status`).
SLURM_TIMEOUT = 20.0
LOCK_WAIT = 10.0


def shared_slurm(paths: Paths, max_age: float) -> SlurmView:
    return SharedSlurm(Slurm(timeout=SLURM_TIMEOUT), paths.state, max_age=max_age, lock_timeout=LOCK_WAIT,
                       impatient=True)


def running_server(paths: Paths) -> Optional[ServerRecord]:
    """The server recorded in this state folder if it still runs."""
    record = load_server(paths.state)
    if record is not None and server_health(record, this_host(), time.time()) is Health.ALIVE:
        return record
    return None


def open_server(paths: Paths, slurm: SlurmView, bind: str, port: int, token: str) -> JobmonHTTPServer:
    """Bind (port 0: any free port) and record the server in state/serve.json; refuses a second one."""
    check_access(bind, token)
    other = running_server(paths)
    if other is not None and other.pid != os.getpid():
        raise JobmonError(f"jobmon serve already runs for this JOBMON_HOME (pid {other.pid} on {other.host}, "
                          f"{other.url}); `jobmon serve --stop` stops it")
    store = StateStore(paths.state)
    store.ensure_layout()
    record = this_server(bind, port, time.time())
    app = App(Source(store, slurm), paths.state,
              server_info={"pid": record.pid, "host": record.host, "started_at": record.started_at})
    try:
        server = JobmonHTTPServer((bind, port), app, token, paths.state, record)
    except OSError as exc:
        raise JobmonError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    record.port = server.server_address[1]
    app.server_info.update(bind=bind, port=record.port)
    save_server(paths.state, record)
    return server


def run_server(server: JobmonHTTPServer) -> None:
    """Serve until SIGTERM or Ctrl-C, then record that it stopped."""
    def stop(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if server.record is not None and server.state_folder:
            current = load_server(server.state_folder)
            if current is None or current.pid == server.record.pid:  # a newer server's record stays
                server.record.stopped_at = time.time()
                save_server(server.state_folder, server.record)


def serve_log(paths: Paths) -> str:
    return os.path.join(paths.logs, "serve.log")


def start_detached(paths: Paths, bind: str, port: int, token: str) -> ServerRecord:
    """`serve --detach`: start `python -m core.serve` like a monitor and wait until it listens."""
    check_access(bind, token)
    other = running_server(paths)
    if other is not None:
        raise JobmonError(f"jobmon serve already runs for this JOBMON_HOME (pid {other.pid}, {other.url}); "
                          "`jobmon serve --stop` stops it")
    return detach_service(module_argv("core.serve", "--bind", bind, "--port", str(port)), serve_log(paths),
                          child_env(paths), lambda: load_server(paths.state), "the server")


def main(argv: List[str]) -> int:
    """`python -m core.serve --bind ADDRESS --port N`: the detached server (its output goes to logs/serve.log)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.serve")
    parser.add_argument("--bind", default=DEFAULT_BIND)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    log_to(sys.stderr, f"serve pid={os.getpid()}")
    paths = resolve_paths()
    try:
        config = load_config(paths, require_webhook=False, need_secrets=False)
    except ConfigError as exc:  # the server sends nothing: the defaults serve as well
        log.warning("%s (ignored: using the default poll interval)", exc)
        config = Config()
    try:
        server = open_server(paths, shared_slurm(paths, config.running_interval), args.bind, args.port,
                             os.environ.get(TOKEN_ENV, ""))
    except JobmonError as exc:
        log.error("%s", exc)
        return 1
    log.info("listening on %s", server.record.url if server.record else args.bind)
    run_server(server)
    log.info("stopped")
    return 0
