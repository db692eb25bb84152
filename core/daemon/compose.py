"""The composition root: the one place a Monitor is assembled, for the daemon and for the inline path.

The daemon's monitor delivers through a short-lived process and keeps its imports lean; the
inline monitor (the CLI telling a job that already ended) delivers in its own process.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

from core.config import Config, Paths, load_patterns
from core.daemon.delivery import ChildDelivery, InProcessDelivery
from core.daemon.liveness import this_process
from core.daemon.process import with_site_packages
from core.errors import PatternError
from core.logs import log
from core.monitor.checks import checks_for, sampler
from core.monitor.dispatcher import Deliverer, Dispatcher
from core.monitor.monitor import Identity, Monitor
from core.monitor.poller import Poller
from core.monitor.records import Records
from core.slurm.client import Slurm
from core.slurm.shared import SharedSlurm, UsageSnapshot
from core.state.model import JobRecord, Level
from core.state.store import StateStore

if TYPE_CHECKING:  # an idle daemon imports neither the analyzer nor the escalation policy
    from core.analysis.analyzer import Pattern
    from core.monitor.chains import ChainRunner


def daemon_monitor(paths: Paths, config: Config, job_id: str, should_stop: Callable[[], bool]) -> Monitor:
    """The monitor a daemon runs: outbox delivered by a child process."""
    store = StateStore(paths.state)
    identity = this_process()

    def in_process() -> InProcessDelivery:
        with_site_packages()  # the daemon runs without them (launcher); delivering needs requests
        return InProcessDelivery(store, config, owner=identity.owner)

    return _assemble(paths, config, store, job_id, identity, ChildDelivery(paths, in_process, should_stop),
                     should_stop)


def inline_monitor(paths: Paths, config: Config, job_id: str) -> Monitor:
    """The monitor the CLI runs itself (a job that already ended): outbox delivered in this process."""
    store = StateStore(paths.state)
    identity = this_process()
    deliverer = InProcessDelivery(store, config, owner=identity.owner)
    return _assemble(paths, config, store, job_id, identity, deliverer, lambda: False)


def _assemble(
    paths: Paths, config: Config, store: StateStore, job_id: str, identity: Identity, deliverer: Deliverer,
    should_stop: Callable[[], bool],
) -> Monitor:
    slurm = Slurm()
    shared = SharedSlurm(slurm, paths.state, max_age=config.running_interval)

    def chains() -> ChainRunner:
        from core.monitor.chains import ChainRunner

        return ChainRunner(
            escalation=config.escalation, host=identity.host, clock=time.time, should_stop=should_stop,
            retry_delay=config.running_interval,
            resubmit=lambda record, level, attempt, tasks: _resubmit(slurm, record, level, attempt, tasks),
            find_submitted=lambda record, attempt, tasks: _find_submitted(slurm, record, attempt, tasks),
        )

    def patterns() -> Sequence[Pattern]:
        return patterns_or_builtin(paths)

    return Monitor(
        Records(store, job_id), config=config, poller=Poller(shared, config, checks_for(config, patterns),
                                                       sampler(UsageView(shared, slurm), config.health.usage)),
        dispatcher=Dispatcher(deliverer, config.sinks_for, identity.host), chains=chains,
        patterns=patterns, identity=identity, should_stop=should_stop, scancel=slurm.cancel,
    )


class UsageView:
    """What the resource sampler asks Slurm: the sstat snapshot shared through the state folder; srun direct."""

    def __init__(self, shared: SharedSlurm, slurm: Slurm) -> None:
        self.shared, self.slurm = shared, slurm

    def usage_snapshot(self, job_ids: Sequence[str], max_age: float) -> UsageSnapshot:
        return self.shared.usage_snapshot(job_ids, max_age)

    def gpu_text(self, job_id: str) -> str:
        return self.slurm.gpu_text(job_id)


def patterns_or_builtin(paths: Paths) -> Sequence[Pattern]:
    """The user's patterns merged in; if that file broke since submission, the built-ins still work."""
    from core.analysis.analyzer import parse_patterns
    from core.config import BUILTIN_PATTERNS, read_patterns_file

    try:
        return load_patterns(paths)
    except PatternError as exc:
        log.error("%s; analysing with the built-in patterns only", exc)
        return parse_patterns(read_patterns_file(BUILTIN_PATTERNS), BUILTIN_PATTERNS)


def _resubmit(slurm: Slurm, record: JobRecord, level: Level, attempt: int, tasks: str) -> Tuple[str, str, str]:
    from core.chain.submitter import chain_comment, resubmit

    return resubmit(slurm, record, level, chain_comment(record, attempt), tasks)


def _find_submitted(slurm: Slurm, record: JobRecord, attempt: int, tasks: str) -> Optional[Tuple[str, str, str]]:
    """(job id, stdout, stderr) of an attempt already submitted before a crash, or None."""
    from core.chain.submitter import attempt_log_paths, chain_comment

    pending = record.chain.pending if record.chain is not None else None
    job_id = slurm.find_by_comment(chain_comment(record, attempt), since=pending.decided_at if pending else 0.0)
    return (job_id, *attempt_log_paths(slurm, record, job_id, tasks)) if job_id else None
