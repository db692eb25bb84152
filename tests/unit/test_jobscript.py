"""Table-driven tests for core.slurm.jobscript: #SBATCH parsing, sbatch argv, log paths, job ids."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.errors import JobmonError, SlurmError
from core.slurm.jobscript import (
    JobOptions,
    LogPaths,
    expand_pattern,
    merge_options,
    parse_directives,
    parse_job_id,
    parse_sbatch_options,
    resolve_log_paths,
    split_submit_args,
    validate_job_id,
)

TRAIN_SCRIPT = """\
#!/bin/bash
# Train the model on one GPU.
#
#SBATCH --job-name=train
#SBATCH -p gpu --mem 4G   # memory is per node
#SBATCH --output=logs/%x-%j.out

#SBATCH -e logs/%x-%j.err
module load python/3.11
#SBATCH --time=1:00:00
python train.py "$@"
"""


# --- parse_directives -------------------------------------------------------------------

@pytest.mark.parametrize(
    "script, expected",
    [
        pytest.param(
            TRAIN_SCRIPT,
            ["--job-name=train", "-p", "gpu", "--mem", "4G", "--output=logs/%x-%j.out",
             "-e", "logs/%x-%j.err"],
            id="realistic-script-stops-at-first-command",
        ),
        pytest.param("#!/bin/sh\necho hi\n#SBATCH -J late\n", [], id="no-directives"),
        pytest.param("echo first\n#SBATCH -J x\n", [], id="command-on-line-one"),
        pytest.param("", [], id="empty-script"),
        pytest.param("#!/bin/bash\n\n   \n#SBATCH -J a\n", ["-J", "a"], id="blank-lines-skipped"),
        pytest.param(
            "#!/bin/bash\n  #SBATCH -J indented\n#SBATCH -p gpu\n",
            ["-p", "gpu"],
            id="indented-directive-is-a-comment",
        ),
        pytest.param("#!/bin/bash\n#sbatch -J lower\n#SBATCH -p a\n", ["-p", "a"], id="case-sensitive"),
        pytest.param(
            "#!/bin/bash\n   # indented comment\n#SBATCH -p a\n", ["-p", "a"], id="indented-comment-skipped"
        ),
        pytest.param(
            '#SBATCH --job-name="my job" --comment=\'a # b\'\n',
            ["--job-name=my job", "--comment=a # b"],
            id="quotes-group-and-protect-hash",
        ),
        pytest.param('#SBATCH -J "a b"c\n', ["-J", "a bc"], id="quote-inside-word"),
        pytest.param("#SBATCH -J a#b -p gpu\n", ["-J", "a"], id="unquoted-hash-ends-line"),
        pytest.param("#SBATCH -J x #comment -p gpu\n", ["-J", "x"], id="trailing-comment"),
        pytest.param("#SBATCH # only a comment\n#SBATCH -p a\n", ["-p", "a"], id="comment-only-directive"),
        pytest.param("#SBATCH -J a\\#b\n", ["-J", "a#b"], id="escaped-hash-kept"),
        pytest.param('#SBATCH --comment=say\\"hi\\"\n', ['--comment=say"hi"'], id="escaped-quote"),
        pytest.param("#SBATCH -J a\\ b\n", ["-J", "a", "b"], id="escaped-space-does-not-join"),
        pytest.param("#SBATCH -o out\\\\%j.log\n", ["-o", "out\\%j.log"], id="double-backslash-keeps-one"),
        pytest.param("#SBATCH -o out\\%j.log\n", ["-o", "out%j.log"], id="single-backslash-consumed"),
        pytest.param("#SBATCH --comment='it\\'s'\n", ["--comment=it's"], id="backslash-inside-single-quotes"),
        pytest.param('#SBATCH -J "" -p gpu\n', ["-J"], id="empty-quotes-end-line"),
        pytest.param("#SBATCH -o $HOME/~/x.out\n", ["-o", "$HOME/~/x.out"], id="no-shell-expansion"),
        pytest.param("#SBATCH--mem=4G\n", ["--mem=4G"], id="no-space-after-magic-word"),
        pytest.param(
            "#!/bin/bash\r\n#SBATCH -J crlf\r\n\r\necho hi\r\n", ["-J", "crlf"], id="crlf-line-endings"
        ),
        pytest.param(
            "#!/bin/bash\n#SBATCH -o first.out\n#SBATCH hetjob\n#SBATCH -o second.out\nsrun x\n",
            ["-o", "first.out"],
            id="het-job-first-component-only",
        ),
    ],
)
def test_parse_directives(script, expected):
    assert parse_directives(script) == expected


@pytest.mark.parametrize("line", ['#SBATCH -J "unterminated\n', "#SBATCH --comment='x\n"])
def test_parse_directives_unmatched_quote(line):
    with pytest.raises(JobmonError, match="line 2: unmatched"):
        parse_directives("#!/bin/bash\n" + line)


# --- parse_sbatch_options ---------------------------------------------------------------

@pytest.mark.parametrize(
    "args, expected",
    [
        pytest.param([], JobOptions(), id="nothing"),
        pytest.param(["-o", "out.log"], JobOptions(output="out.log"), id="short-separate"),
        pytest.param(["-oout.log"], JobOptions(output="out.log"), id="short-glued"),
        pytest.param(["--output=out.log"], JobOptions(output="out.log"), id="long-equals"),
        pytest.param(["--output", "out.log"], JobOptions(output="out.log"), id="long-separate"),
        pytest.param(["--out", "o.log"], JobOptions(output="o.log"), id="unique-abbreviation"),
        pytest.param(["-e", "err"], JobOptions(error="err"), id="error-short"),
        pytest.param(["--error", "err"], JobOptions(error="err"), id="error-long"),
        pytest.param(["-J", "name"], JobOptions(job_name="name"), id="job-name-short"),
        pytest.param(["-Jname"], JobOptions(job_name="name"), id="job-name-glued"),
        pytest.param(["--job-name=name"], JobOptions(job_name="name"), id="job-name-long"),
        pytest.param(["--job-name", "a b"], JobOptions(job_name="a b"), id="job-name-with-space"),
        pytest.param(["-D", "/scratch/w"], JobOptions(chdir="/scratch/w"), id="chdir-short"),
        pytest.param(["--chdir=w"], JobOptions(chdir="w"), id="chdir-long"),
        pytest.param(["-a", "1-3"], JobOptions(array="1-3"), id="array-short"),
        pytest.param(["--array=0-9%2"], JobOptions(array="0-9%2"), id="array-long"),
        pytest.param(["--parsable"], JobOptions(parsable=True), id="parsable"),
        pytest.param(
            ["--mem", "4G", "-p", "gpu", "-t", "10", "-o", "x"], JobOptions(output="x"),
            id="values-of-other-options-skipped",
        ),
        pytest.param(["-vvJname"], JobOptions(job_name="name"), id="flag-cluster-then-value"),
        pytest.param(["-Ho", "x"], JobOptions(output="x"), id="flag-then-value-in-next-word"),
        pytest.param(["--exclusive", "-o", "x"], JobOptions(output="x"), id="optional-value-not-taken"),
        pytest.param(["--nice", "-o", "x"], JobOptions(output="x"), id="nice-without-value"),
        pytest.param(["-koff", "-o", "x"], JobOptions(output="x"), id="short-optional-value-glued"),
        pytest.param(["-J", "a", "-J", "b"], JobOptions(job_name="b"), id="last-one-wins"),
        pytest.param(["-o", "x", "job.sh", "-o", "y"], JobOptions(output="x"), id="stops-at-script"),
        pytest.param(["--unknown-flag", "-o", "x"], JobOptions(output="x"), id="unknown-long-is-flag"),
        pytest.param(["--o", "x"], JobOptions(), id="ambiguous-abbreviation-is-unknown"),
        pytest.param(["--", "-o", "x"], JobOptions(), id="double-dash-ends-options"),
        pytest.param(["-o", "x", ":", "-o", "y"], JobOptions(output="x"), id="het-first-component"),
        pytest.param(["-o"], JobOptions(), id="missing-value"),
        pytest.param(["--wrap", "-o x"], JobOptions(), id="wrap-value-not-parsed"),
    ],
)
def test_parse_sbatch_options(args, expected):
    assert parse_sbatch_options(args) == expected


def test_directives_feed_options():
    options = parse_sbatch_options(parse_directives(TRAIN_SCRIPT))
    assert options == JobOptions(output="logs/%x-%j.out", error="logs/%x-%j.err", job_name="train")


# --- split_submit_args ------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, expected",
    [
        pytest.param(["job.sh"], ([], "job.sh", []), id="script-only"),
        pytest.param(
            ["--mem", "4G", "job.sh", "a", "-o", "b"],
            (["--mem", "4G"], "job.sh", ["a", "-o", "b"]),
            id="mem-value-is-not-the-script",
        ),
        pytest.param(
            ["-p", "gpu", "--parsable", "-Jx", "job.sh"],
            (["-p", "gpu", "--parsable", "-Jx"], "job.sh", []),
            id="mixed-forms",
        ),
        pytest.param(
            ["-o", "out", "--", "job.sh", "--x"], (["-o", "out"], "job.sh", ["--x"]), id="double-dash"
        ),
        pytest.param(["--", "-odd.sh"], ([], "-odd.sh", []), id="double-dash-allows-dash-script"),
        pytest.param(["job.sh", "--", "a"], ([], "job.sh", ["--", "a"]), id="dashes-after-script-are-args"),
        pytest.param(
            ["-w", "n1", ":", "-w", "n2", "job.sh"], (["-w", "n1", ":", "-w", "n2"], "job.sh", []),
            id="het-separator-kept",
        ),
    ],
)
def test_split_submit_args(argv, expected):
    assert split_submit_args(argv) == expected


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param([], "no batch script given", id="empty"),
        pytest.param(["--mem", "4G"], "no batch script given", id="only-flag-and-value"),
        pytest.param(["-p"], "no batch script given", id="dangling-option"),
        pytest.param(["-o", "x", "--"], "no batch script given", id="nothing-after-double-dash"),
        pytest.param(["--wrap", "echo hi"], "--wrap", id="wrap-separate"),
        pytest.param(["--wrap=echo hi"], "--wrap", id="wrap-equals"),
        pytest.param(["--wrap", "echo hi", "job.sh"], "--wrap", id="wrap-and-script"),
    ],
)
def test_split_submit_args_errors(argv, message):
    with pytest.raises(JobmonError, match=message) as caught:
        split_submit_args(argv)
    assert "\n" not in str(caught.value)


# --- merge_options ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "script_opts, cli_opts, expected",
    [
        pytest.param(JobOptions(output="s"), JobOptions(), JobOptions(output="s"), id="script-only"),
        pytest.param(JobOptions(output="s"), JobOptions(output="c"), JobOptions(output="c"), id="cli-wins"),
        pytest.param(
            JobOptions(output="s", error="se", job_name="sj", chdir="sd", array="1-2"),
            JobOptions(error="ce", chdir="cd"),
            JobOptions(output="s", error="ce", job_name="sj", chdir="cd", array="1-2"),
            id="field-by-field",
        ),
        pytest.param(JobOptions(parsable=True), JobOptions(), JobOptions(parsable=True), id="parsable-script"),
        pytest.param(JobOptions(), JobOptions(parsable=True), JobOptions(parsable=True), id="parsable-cli"),
        pytest.param(JobOptions(job_name="s"), JobOptions(job_name=""), JobOptions(job_name=""), id="empty-wins"),
    ],
)
def test_merge_options(script_opts, cli_opts, expected):
    assert merge_options(script_opts, cli_opts) == expected


# --- expand_pattern ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "pattern, fields, expected",
    [
        pytest.param("slurm-%j.out", {}, "slurm-128.out", id="job-id"),
        pytest.param("job%4j.out", {}, "job0128.out", id="man-page-padding"),
        pytest.param("%12j", {}, "0000000128", id="padding-capped-at-10"),
        pytest.param("%2j", {}, "128", id="padding-narrower-than-value"),
        pytest.param("%x-%j.out", {"job_name": "train"}, "train-128.out", id="job-name"),
        pytest.param("%8x", {"job_name": "train"}, "train", id="no-padding-for-text"),
        pytest.param("%u/%N.log", {"user": "alice", "node": "n01"}, "alice/n01.log", id="user-and-node"),
        pytest.param("%n-%t-%s", {}, "0-0-batch", id="node-task-step"),
        pytest.param("%2t", {}, "00", id="padded-task"),
        pytest.param("job%J.out", {}, "job128.batch.out", id="jobid-stepid"),
        pytest.param("%A_%a", {}, "128_4294967294", id="not-an-array"),
        pytest.param(
            "%A_%a-%j", {"array_job_id": "120", "array_task_id": "2"}, "120_2-128", id="array-task"
        ),
        pytest.param("%A_%4a", {"array_task_id": "7"}, "128_0007", id="array-task-padded"),
        pytest.param("%%j", {}, "%j", id="percent-escape"),
        pytest.param("100%%", {}, "100%", id="literal-percent"),
        pytest.param("%%%j", {}, "%128", id="escape-then-field"),
        pytest.param("%q", {}, "%q", id="unknown-kept"),
        pytest.param("%4q", {}, "4q", id="unknown-with-width-keeps-last-digit"),
        pytest.param("%12q", {}, "2q", id="unknown-with-long-width"),
        pytest.param("end%", {}, "end%", id="trailing-percent"),
        pytest.param("end%4", {}, "end4", id="trailing-width"),
        pytest.param("out\\%j.log", {}, "out%j.log", id="backslash-disables"),
        pytest.param("a\\\\b%j", {}, "a\\b%j", id="double-backslash-keeps-one"),
        pytest.param("\\logs/%x", {"job_name": "t"}, "logs/%x", id="leading-backslash"),
        pytest.param("plain.log", {}, "plain.log", id="no-fields"),
    ],
)
def test_expand_pattern(pattern, fields, expected):
    assert expand_pattern(pattern, job_id="128", **fields) == expected


# --- resolve_log_paths ------------------------------------------------------------------

SUBMIT_DIR = "/home/alice/proj"


@pytest.mark.parametrize(
    "options, extra, stdout, stderr",
    [
        pytest.param(
            JobOptions(), {}, "/home/alice/proj/slurm-128.out", "/home/alice/proj/slurm-128.out",
            id="defaults",
        ),
        pytest.param(
            JobOptions(output="logs/%x-%j.out", chdir="run"), {},
            "/home/alice/proj/run/logs/train.sh-128.out", "/home/alice/proj/run/logs/train.sh-128.out",
            id="relative-chdir-and-default-name",
        ),
        pytest.param(
            JobOptions(chdir="/scratch/alice"), {},
            "/scratch/alice/slurm-128.out", "/scratch/alice/slurm-128.out",
            id="absolute-chdir",
        ),
        pytest.param(
            JobOptions(output="/tmp/%u/%j.out", chdir="run"), {}, "/tmp/alice/128.out", "/tmp/alice/128.out",
            id="absolute-output-ignores-chdir",
        ),
        pytest.param(
            JobOptions(error="%j.err"), {}, "/home/alice/proj/slurm-128.out", "/home/alice/proj/128.err",
            id="error-only",
        ),
        pytest.param(
            JobOptions(output="o.log", error="e.log", job_name="named"), {},
            "/home/alice/proj/o.log", "/home/alice/proj/e.log",
            id="both-given",
        ),
        pytest.param(
            JobOptions(output="%x.log", job_name="named"), {}, "/home/alice/proj/named.log",
            "/home/alice/proj/named.log", id="job-name-beats-default",
        ),
        pytest.param(JobOptions(output="none"), {}, "/dev/null", "/dev/null", id="none"),
        pytest.param(
            JobOptions(error="NONE"), {}, "/home/alice/proj/slurm-128.out", "/dev/null", id="none-uppercase"
        ),
        pytest.param(
            JobOptions(output="../logs/./x.out"), {}, "/home/alice/logs/x.out", "/home/alice/logs/x.out",
            id="normalised",
        ),
        pytest.param(
            JobOptions(array="0-3"), {"array_task_id": "2", "array_job_id": "120"},
            "/home/alice/proj/slurm-120_2.out", "/home/alice/proj/slurm-120_2.out",
            id="array-default",
        ),
        pytest.param(
            JobOptions(output="%N-%j.out"), {"node": "gpu07"},
            "/home/alice/proj/gpu07-128.out", "/home/alice/proj/gpu07-128.out",
            id="node",
        ),
        pytest.param(
            JobOptions(output="lit\\%j.out"), {}, "/home/alice/proj/lit%j.out", "/home/alice/proj/lit%j.out",
            id="backslash-output",
        ),
    ],
)
def test_resolve_log_paths(options, extra, stdout, stderr):
    paths = resolve_log_paths(
        options, submit_dir=SUBMIT_DIR, job_id="128", user="alice", default_job_name="train.sh", **extra
    )
    assert paths == LogPaths(stdout=stdout, stderr=stderr)


def test_resolve_log_paths_array_needs_task():
    with pytest.raises(JobmonError, match="task id"):
        resolve_log_paths(
            JobOptions(array="0-3"), submit_dir=SUBMIT_DIR, job_id="120", user="a", default_job_name="x"
        )


def test_resolve_log_paths_needs_absolute_submit_dir():
    with pytest.raises(ValueError):
        resolve_log_paths(JobOptions(), submit_dir="proj", job_id="1", user="a", default_job_name="x")


def test_command_line_overrides_script_end_to_end():
    flags, script, script_args = split_submit_args(["-o", "cli-%j.log", "--mem", "4G", "train.sh", "--lr", "3"])
    assert (script, script_args) == ("train.sh", ["--lr", "3"])
    options = merge_options(parse_sbatch_options(parse_directives(TRAIN_SCRIPT)), parse_sbatch_options(flags))
    paths = resolve_log_paths(
        options, submit_dir=SUBMIT_DIR, job_id="128", user="alice", default_job_name="train.sh"
    )
    # -o on the command line replaces the script's --output; the script's -e still applies.
    assert paths == LogPaths(stdout="/home/alice/proj/cli-128.log", stderr="/home/alice/proj/logs/train-128.err")


# --- parse_job_id -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "output, expected",
    [
        pytest.param("12345\n", ("12345", None), id="parsable"),
        pytest.param("12345;cluster1\n", ("12345", "cluster1"), id="parsable-with-cluster"),
        pytest.param("  42;  \n", ("42", None), id="empty-cluster"),
        pytest.param(
            "sbatch: warning: can't honor --ntasks-per-node\n\n12345\n\n", ("12345", None), id="warnings-first"
        ),
        pytest.param("Submitted batch job 12345\n", ("12345", None), id="human-form"),
        pytest.param("sbatch: Submitted batch job 65541\n", ("65541", None), id="human-form-prefixed"),
        pytest.param("Submitted batch job 7 on cluster c2\n", ("7", "c2"), id="human-form-cluster"),
    ],
)
def test_parse_job_id(output, expected):
    assert parse_job_id(output) == expected


@pytest.mark.parametrize(
    "output",
    [
        pytest.param("", id="empty"),
        pytest.param("\n  \n", id="blank"),
        pytest.param(
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n", id="error-line"
        ),
        pytest.param("12a45\n", id="not-digits"),
        pytest.param("\u0661\u0662\u0663\n", id="non-ascii-digits"),
        pytest.param("12345\nsbatch: error: late\n", id="id-not-last"),
    ],
)
def test_parse_job_id_errors(output):
    with pytest.raises(JobmonError) as caught:
        parse_job_id(output)
    assert isinstance(caught.value, SlurmError)
    assert "\n" not in str(caught.value)


# --- validate_job_id --------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [("123", "123"), ("123_4", "123_4"), ("123+1", "123+1"), (" 123 \n", "123")],
)
def test_validate_job_id(text, expected):
    assert validate_job_id(text) == expected


@pytest.mark.parametrize(
    "text", ["abc", "", "123_[1-3]", "123_", "_4", "12.3", "-1", "123\n456", "1_2_3", "\u0661\u0662"]
)
def test_validate_job_id_errors(text):
    with pytest.raises(JobmonError, match="is not a Slurm job id") as caught:
        validate_job_id(text)
    assert "\n" not in str(caught.value)


def test_validate_job_id_message_names_the_input():
    with pytest.raises(JobmonError) as caught:
        validate_job_id("abc")
    assert str(caught.value).startswith("'abc' is not a Slurm job id (expected digits, e.g. 12345")


# --- purity -----------------------------------------------------------------------------

def test_module_imports_only_pure_stdlib():
    source = Path(__file__).resolve().parents[2] / "core" / "slurm" / "jobscript.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    allowed = {"__future__", "re", "shlex", "dataclasses", "typing", "posixpath", "os.path", "core.errors",
               "core.slurm.model"}
    assert imported <= allowed, imported - allowed
