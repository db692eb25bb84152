"""The error kinds jobmon raises on purpose; the CLI prints them as one line."""
from __future__ import annotations


class JobmonError(Exception):
    """Base for expected failures: the message is what the user should read."""

    exit_code = 1


class ConfigError(JobmonError):
    """config.json (or an option) is missing, malformed or unsafe."""


class PatternError(JobmonError):
    """An error-patterns file has bad JSON, a bad regex or a missing field."""


class StateError(JobmonError):
    """A state file cannot be read or written."""


class StateWriteError(StateError):
    """The state folder refuses writes (full, read-only): a monitor keeps its record in memory meanwhile."""


class StateLocked(StateError):
    """Another jobmon process held a record's lock for the whole wait: try again later."""


class RecordExists(StateError):
    """The job has a record already: `submit`, `watch` or `watch --all` got there first."""


class AlreadyMonitored(StateError):
    """A live (or just started) monitor has the job: starting another would be a second one."""


class SlurmError(JobmonError):
    """A Slurm command failed in a way that is not a transient outage."""


class SlurmUnavailable(SlurmError):
    """The controller (or the accounting database) cannot be reached right now: retry later."""


class UnknownJob(SlurmError):
    """Slurm does not know this job id."""


class SbatchRejected(SlurmError):
    """sbatch refused the job; its own message and exit code are passed on unchanged."""

    def __init__(self, returncode: int, stderr: str) -> None:
        message = stderr.strip() or f"sbatch exited with code {returncode}"
        super().__init__(message)
        self.exit_code = returncode if returncode > 0 else 1
