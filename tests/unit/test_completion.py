"""`jobmon completion bash|zsh` completes what the parser defines, and every command's help shows an example."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jobmon  # noqa: E402
from core.views.completion import bash_script, completion_script, zsh_script  # noqa: E402


def complete_bash(script: str, *words: str):
    """What bash offers for the last word of `words` (the line typed so far), through the generated function."""
    array = " ".join(f"'{word}'" for word in words)
    program = (f'{script}\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _jobmon; '
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def bash() -> str:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    return bash_script(jobmon.build_parser())


def test_bash_completes_subcommands(bash):
    assert complete_bash(bash, "jobmon", "st") == ["status"]
    assert complete_bash(bash, "jobmon", "do") == ["doctor"]
    assert set(complete_bash(bash, "jobmon", "")) >= {"submit", "watch", "status", "doctor", "completion", "--version"}
    assert complete_bash(bash, "jobmon", "zzz") == []


def test_bash_completes_each_commands_options_and_choices(bash):
    assert complete_bash(bash, "jobmon", "status", "--j") == ["--json"]
    assert complete_bash(bash, "jobmon", "doctor", "--s") == ["--send"]
    assert complete_bash(bash, "jobmon", "completion", "") == ["bash", "zsh"]
    assert complete_bash(bash, "jobmon", "status", "--watch", "--c") == ["--count"]
    assert complete_bash(bash, "jobmon", "show", "--lines", "") == []  # a value: left to readline


def test_the_script_follows_the_parser():
    parser = argparse.ArgumentParser(prog="jobmon")
    sub = parser.add_subparsers()
    sub.add_parser("frobnicate", help="a new command").add_argument("--quux", action="store_true")
    script = bash_script(parser)
    assert complete_bash(script, "jobmon", "fro") == ["frobnicate"]
    assert complete_bash(script, "jobmon", "frobnicate", "--q") == ["--quux"]


def test_the_cli_prints_the_scripts(capsys):
    assert jobmon.main(["completion", "bash"]) == 0
    assert "complete -o default -o bashdefault -F _jobmon jobmon" in capsys.readouterr().out
    assert completion_script(jobmon.build_parser(), "fish") is None


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_script_parses_and_registers_itself(tmp_path):
    path = tmp_path / "_jobmon"
    path.write_text(zsh_script(jobmon.build_parser()))
    assert subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True).returncode == 0
    program = f"autoload -U compinit && compinit -u -d {tmp_path}/zcompdump; source {path}; print -r -- $_comps[jobmon]"
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30,
                          env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")})
    assert done.stdout.strip() == "_jobmon", done.stdout + done.stderr


def test_every_help_shows_one_example():
    parser = jobmon.build_parser()
    assert "Example: jobmon submit" in parser.format_help()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        assert text.count("example:\n  ") == 1, name
        example = text.split("example:\n  ", 1)[1].strip()
        assert example.startswith(("jobmon " + name, 'eval "$(jobmon ' + name)), (name, example)
