"""Read a batch script and an sbatch command line the way sbatch (Slurm 22.05) does.

jobmon has to know, before the job runs, which files Slurm will write its output to
and which job id it got. Everything here is pure: text in, values out.

Facts taken from the sbatch man page and from sbatch's own parser:

* ``#SBATCH`` directives are read from the top of the script until the first line
  that is neither blank nor a comment; the shebang is a comment. Only lines that
  *start* with ``#SBATCH`` count: an indented ``#SBATCH`` is an ordinary comment.
* Directive words are split on whitespace; single and double quotes group (both
  alike), a backslash keeps the next character (but cannot join two words: a
  whitespace always ends an unquoted word), and an unquoted ``#`` ends the line.
  Shell syntax (``$HOME``, ``~``) is not expanded. That is close to, but not, shell
  quoting, so ``shlex`` is not used: shlex keeps backslashes inside single quotes
  and joins words at an escaped space, sbatch does neither.
* sbatch stops reading options at the first non-option argument (the script), so
  everything after it belongs to the script.
* Output goes to ``slurm-%j.out`` (``slurm-%A_%a.out`` for arrays), stderr to the
  same file unless ``--error`` is given; relative names are relative to the job's
  working directory (``--chdir``, itself relative to the submit directory).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from core.errors import JobmonError, SlurmError
from core.slurm.model import job_workdir

# What %a becomes for a job that is not an array task: Slurm's NO_VAL (0xfffffffe),
# printed as an unsigned number by the code that names the batch step's files.
NO_ARRAY_TASK = "4294967294"

# sbatch caps the zero-padding of a filename pattern field at this width.
_MAX_PAD = 10

# Short options that take a value, as in the sbatch(1) man page.
_SHORT_WITH_VALUE: dict[str, str] = {
    "A": "account", "a": "array", "B": "extra-node-info", "b": "begin",
    "C": "constraint", "c": "cpus-per-task", "D": "chdir", "d": "dependency",
    "e": "error", "F": "nodefile", "G": "gpus", "i": "input", "J": "job-name",
    "L": "licenses", "M": "clusters", "m": "distribution", "N": "nodes",
    "n": "ntasks", "o": "output", "p": "partition", "q": "qos",
    "S": "core-spec", "t": "time", "w": "nodelist", "x": "exclude",
}
# -k takes an optional value, which must then be glued to it (-koff).
_SHORT_OPTIONAL_VALUE: dict[str, str] = {"k": "no-kill"}
_SHORT_FLAGS: dict[str, str] = {
    "H": "hold", "h": "help", "O": "overcommit", "Q": "quiet",
    "s": "oversubscribe", "u": "usage", "V": "version", "v": "verbose", "W": "wait",
}

# Long options that take a value, either as --opt=value or as --opt value.
_LONG_WITH_VALUE = frozenset({
    "account", "acctg-freq", "array", "batch", "bb", "bbf", "begin", "chdir",
    "cluster-constraint", "clusters", "comment", "constraint", "container",
    "core-spec", "cores-per-socket", "cpu-freq", "cpus-per-gpu", "cpus-per-task",
    "deadline", "delay-boot", "dependency", "distribution", "error", "exclude",
    "export", "export-file", "extra-node-info", "gid", "gpu-bind", "gpu-freq",
    "gpus", "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres",
    "gres-flags", "hint", "input", "job-name", "kill-on-invalid-dep", "licenses",
    "mail-type", "mail-user", "mcs-label", "mem", "mem-bind", "mem-per-cpu",
    "mem-per-gpu", "mincpus", "network", "nodefile", "nodelist", "nodes",
    "ntasks", "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node",
    "ntasks-per-socket", "open-mode", "output", "partition", "power", "prefer",
    "priority", "profile", "qos", "reservation", "signal", "sockets-per-node",
    "switches", "thread-spec", "threads-per-core", "time", "time-min", "tmp",
    "uid", "wait-all-nodes", "wckey", "wrap",
})
# Long options whose value is optional: it can only be given as --opt=value.
_LONG_OPTIONAL_VALUE = frozenset({"exclusive", "get-user-env", "nice", "no-kill", "propagate"})
_LONG_FLAGS = frozenset({
    "contiguous", "help", "hold", "ignore-pbs", "no-requeue", "overcommit",
    "oversubscribe", "parsable", "quiet", "reboot", "requeue", "spread-job",
    "test-only", "usage", "use-min-nodes", "verbose", "version", "wait",
})
_ALL_LONG = _LONG_WITH_VALUE | _LONG_OPTIONAL_VALUE | _LONG_FLAGS

# A directive line naming this word starts the next component of a heterogeneous job.
_HET_SEPARATORS = ("hetjob", "packjob")

# One scanned option: (long name, value); name None if undocumented, ":" for a het separator.
_Option = tuple[Optional[str], Optional[str]]

_JOB_ID = re.compile(r"\d+(?:_\d+|\+\d+)?")
_SUBMITTED = re.compile(r"(?:sbatch: )?Submitted batch job (\d+)(?: on cluster (\S+))?", re.ASCII)
# How much of an unreadable sbatch line an error message quotes.
_QUOTE_LIMIT = 200


@dataclass(frozen=True)
class JobOptions:
    """The sbatch options jobmon cares about; None means "not given"."""

    output: Optional[str] = None
    error: Optional[str] = None
    job_name: Optional[str] = None
    chdir: Optional[str] = None
    array: Optional[str] = None
    parsable: bool = False


@dataclass(frozen=True)
class LogPaths:
    """Absolute paths of the files the batch step writes stdout and stderr to."""

    stdout: str
    stderr: str


def parse_directives(script_text: str) -> list[str]:
    """The sbatch arguments of the script's leading #SBATCH block, as one argv list.

    Only the first component of a heterogeneous job is read (up to a directive
    line containing "hetjob"), since its options name the batch step's files.
    """
    args: list[str] = []
    for lineno, line in enumerate(script_text.split("\n"), start=1):
        if not line.startswith("#SBATCH"):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                break
            continue
        body = line[len("#SBATCH"):]
        if any(word in body.lower() for word in _HET_SEPARATORS):
            break
        args.extend(_split_directive(body, lineno))
    return args


def _split_directive(body: str, lineno: int) -> list[str]:
    """Split one directive's text into words with sbatch's quoting rules."""
    words: list[str] = []
    pos, end = 0, len(body)
    while True:
        while pos < end and body[pos].isspace():
            pos += 1
        word: list[str] = []
        quote = ""
        escaped = False
        while pos < end and (quote or not body[pos].isspace()):
            char = body[pos]
            pos += 1
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
                continue
            elif quote:
                if char == quote:
                    quote = ""
                    continue
            elif char in "\"'":
                quote = char
                continue
            elif char == "#":
                pos = end
                break
            word.append(char)
        if quote:
            raise JobmonError(f"#SBATCH line {lineno}: unmatched {quote} (sbatch would refuse this script)")
        # sbatch ends the line at the first word that yields no characters ("" or a comment).
        if not word:
            return words
        words.append("".join(word))


def _long_name(name: str) -> Optional[str]:
    """The long option `name` stands for, allowing unique abbreviations as getopt does."""
    if name in _ALL_LONG:
        return name
    matches = [option for option in _ALL_LONG if option.startswith(name)] if name else []
    return matches[0] if len(matches) == 1 else None


def _scan_options(argv: Sequence[str]) -> tuple[list[_Option], int, int]:
    """Walk sbatch options the way getopt does, stopping at the first positional.

    Returns (options, flags_end, positional_start): options as (long name, value)
    pairs (name None for an option sbatch does not document, ":" for a
    heterogeneous-job separator), argv[:flags_end] are the option words and
    argv[positional_start:] the script and its arguments ("--" lies between).
    """
    options: list[_Option] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            return options, index, index + 1
        if word == ":":
            options.append((":", None))
        elif word.startswith("--"):
            name, has_value, value = word[2:].partition("=")
            option = _long_name(name)
            if option in _LONG_WITH_VALUE and not has_value:
                if index + 1 < len(argv):
                    index += 1
                    options.append((option, argv[index]))
                else:
                    options.append((option, None))
            else:
                options.append((option, value if has_value else None))
        elif word.startswith("-") and word != "-":
            index += _scan_short_cluster(word, argv[index + 1:], options)
        else:
            break
        index += 1
    return options, index, index


def _scan_short_cluster(word: str, rest: Sequence[str], options: list[_Option]) -> int:
    """Record the options of one "-xyz" word; return how many following words it used."""
    for offset in range(1, len(word)):
        letter = word[offset]
        glued = word[offset + 1:]
        if letter in _SHORT_WITH_VALUE:
            if glued:
                options.append((_SHORT_WITH_VALUE[letter], glued))
                return 0
            options.append((_SHORT_WITH_VALUE[letter], rest[0] if rest else None))
            return 1 if rest else 0
        if letter in _SHORT_OPTIONAL_VALUE:
            options.append((_SHORT_OPTIONAL_VALUE[letter], glued or None))
            return 0
        options.append((_SHORT_FLAGS.get(letter), None))
    return 0


def parse_sbatch_options(args: Sequence[str]) -> JobOptions:
    """Pull output, error, job name, chdir, array and --parsable out of an sbatch argv.

    Later occurrences win, as in sbatch. Reading stops at the first positional
    argument (the script) and at the first ":" (the next heterogeneous component).
    An undocumented long option without "=" is taken to be a flag.
    """
    found: dict[str, Optional[str]] = {}
    parsable = False
    for name, value in _scan_options(args)[0]:
        if name == ":":
            break
        if name == "parsable":
            parsable = True
        elif name in ("output", "error", "job-name", "chdir", "array") and value is not None:
            found[name] = value
    return JobOptions(
        output=found.get("output"),
        error=found.get("error"),
        job_name=found.get("job-name"),
        chdir=found.get("chdir"),
        array=found.get("array"),
        parsable=parsable,
    )


def split_submit_args(argv: Sequence[str]) -> tuple[list[str], str, list[str]]:
    """Split `jobmon submit` arguments into (sbatch flags, script, script arguments).

    The script is the first word that is neither an option nor an option's value;
    "--" ends the options explicitly and is dropped. --wrap is refused: jobmon
    needs a script file to read the #SBATCH block from.
    """
    options, flags_end, script_index = _scan_options(argv)
    if any(name == "wrap" for name, _ in options):
        raise JobmonError("jobmon submit does not support --wrap: put the command in a script file and submit that")
    if script_index >= len(argv):
        raise JobmonError("no batch script given: usage is jobmon submit [sbatch options] SCRIPT [ARGS...]")
    return list(argv[:flags_end]), argv[script_index], list(argv[script_index + 1:])


def merge_options(script_opts: JobOptions, cli_opts: JobOptions) -> JobOptions:
    """Combine #SBATCH options with command-line ones; the command line wins, as in sbatch."""
    return JobOptions(
        output=cli_opts.output if cli_opts.output is not None else script_opts.output,
        error=cli_opts.error if cli_opts.error is not None else script_opts.error,
        job_name=cli_opts.job_name if cli_opts.job_name is not None else script_opts.job_name,
        chdir=cli_opts.chdir if cli_opts.chdir is not None else script_opts.chdir,
        array=cli_opts.array if cli_opts.array is not None else script_opts.array,
        parsable=cli_opts.parsable or script_opts.parsable,
    )


def expand_pattern(
    pattern: str,
    *,
    job_id: str,
    array_job_id: Optional[str] = None,
    array_task_id: Optional[str] = None,
    job_name: str = "",
    user: str = "",
    node: str = "",
) -> str:
    """Fill in a filename pattern as Slurm does for the batch step.

    Any backslash turns expansion off; backslashes are then dropped ("\\\\"
    keeps one). %<width><letter> zero-pads numeric fields (width capped at 10).
    Without an array task, %A is the job id and %a is 4294967294 (Slurm's
    NO_VAL). %N is `node`; %n and %t are 0; %s is "batch" and %J "<job_id>.batch".
    An unknown %<letter> is kept as is; Slurm turns "%<digits><unknown>" into the
    last digit followed by the letter, and so does this.
    """
    if "\\" in pattern:
        return re.sub(r"\\(\\?)", r"\1", pattern)
    is_task = array_task_id is not None
    numeric = {
        "A": (array_job_id or job_id) if is_task else job_id,
        "a": array_task_id if is_task else NO_ARRAY_TASK,
        "j": job_id,
        "n": "0",
        "t": "0",
    }
    text = {"s": "batch", "N": node, "u": user, "x": job_name}
    out: list[str] = []
    pos, end = 0, len(pattern)
    while pos < end:
        char = pattern[pos]
        if char != "%":
            out.append(char)
            pos += 1
            continue
        if pattern.startswith("%%", pos):
            out.append("%")
            pos += 2
            continue
        digits_end = pos + 1
        while digits_end < end and pattern[digits_end] in "0123456789":  # ASCII only, as C's isdigit
            digits_end += 1
        digits = pattern[pos + 1:digits_end]
        letter = pattern[digits_end] if digits_end < end else ""
        # Three significant digits already exceed the cap; never int() a run of thousands.
        width = min(int(digits.lstrip("0")[:3] or 0), _MAX_PAD)
        if letter in numeric:
            out.append(str(numeric[letter]).rjust(width, "0"))
        elif letter == "J":
            out.append(job_id.rjust(width, "0") + ".batch")
        elif letter in text:
            out.append(text[letter])
        elif digits:
            out.append(digits[-1])
            pos = digits_end
            continue
        else:
            out.append("%")
            pos += 1
            continue
        pos = digits_end + 1
    return "".join(out)


def resolve_log_paths(
    options: JobOptions,
    *,
    submit_dir: str,
    job_id: str,
    user: str,
    default_job_name: str,
    node: str = "",
    array_task_id: Optional[str] = None,
    array_job_id: Optional[str] = None,
) -> LogPaths:
    """Where the batch step of this job writes stdout and stderr, as absolute paths.

    `job_id` is the job's own id (for an array task, its SLURM_JOB_ID);
    `default_job_name` is what sbatch names the job without --job-name: the
    script's file name. An array job needs `array_task_id`, because each task has
    its own files. "none" means /dev/null, as in sbatch.
    """
    if not posixpath.isabs(submit_dir):
        raise ValueError(f"submit_dir must be absolute, got {submit_dir!r}")
    if options.array is not None and array_task_id is None:
        raise JobmonError("this is a job array: its log files depend on the task, so give a task id (e.g. 12345_7)")
    is_task = array_task_id is not None
    default_pattern = "slurm-%A_%a.out" if is_task else "slurm-%j.out"
    stdout_pattern = options.output if options.output is not None else default_pattern
    stderr_pattern = options.error if options.error is not None else stdout_pattern
    workdir = job_workdir(submit_dir, options.chdir or "")

    def resolve(pattern: str) -> str:
        if pattern.lower() == "none":
            return "/dev/null"
        name = expand_pattern(
            pattern,
            job_id=job_id,
            array_job_id=array_job_id,
            array_task_id=array_task_id,
            job_name=options.job_name if options.job_name is not None else default_job_name,
            user=user,
            node=node,
        )
        return posixpath.normpath(posixpath.join(workdir, name))

    return LogPaths(stdout=resolve(stdout_pattern), stderr=resolve(stderr_pattern))


def parse_job_id(sbatch_stdout: str) -> tuple[str, Optional[str]]:
    """(job id, cluster or None) from sbatch's output, --parsable or not.

    Warnings may precede the id, so only the last non-empty line is read.
    """
    lines = [line.strip() for line in sbatch_stdout.splitlines() if line.strip()]
    if not lines:
        raise SlurmError("sbatch printed no job id")
    last = lines[-1]
    submitted = _SUBMITTED.fullmatch(last)
    if submitted:
        return submitted.group(1), submitted.group(2)
    job_id, _, cluster = last.partition(";")
    if job_id.isdigit() and job_id.isascii():
        return job_id, cluster or None
    raise SlurmError(f"could not read a job id from sbatch output {last[:_QUOTE_LIMIT]!r}")


def validate_job_id(text: str) -> str:
    """Check a job id typed by the user: 12345, an array task 12345_7 or a het component 12345+1."""
    candidate = text.strip()
    if candidate.isascii() and _JOB_ID.fullmatch(candidate):
        return candidate
    raise JobmonError(f"{text!r} is not a Slurm job id (expected digits, e.g. 12345, 12345_7 or 12345+1)")
