"""House rules that keep the design honest, checked on the source itself."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORE = os.path.join(ROOT, "core")
SLURM_COMMANDS = {"sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo"}


def core_modules():
    """Dotted names under core/ ("slurm.client", "config"), package __init__ files left out."""
    found = []
    for folder, _subdirs, files in os.walk(CORE):
        for name in files:
            if name.endswith(".py") and name != "__init__.py":
                relative = os.path.relpath(os.path.join(folder, name[:-3]), CORE)
                found.append(relative.replace(os.sep, "."))
    return sorted(found)


def parse(module: str) -> ast.Module:
    with open(os.path.join(CORE, *module.split(".")) + ".py", encoding="utf-8") as handle:
        return ast.parse(handle.read())


def imported(tree: ast.Module) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def command_lists(tree: ast.Module) -> set:
    """First words of list literals: how an argv like ["squeue", "-h"] is spelled."""
    return {
        node.elts[0].value for node in ast.walk(tree)
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant)
        and isinstance(node.elts[0].value, str)
    }


@pytest.mark.parametrize("module", core_modules())
def test_only_the_adapter_runs_slurm_commands(module):
    tree = parse(module)
    if module == "slurm.client":
        return
    assert "subprocess" not in imported(tree), f"core/{module}.py must not start processes"
    assert not SLURM_COMMANDS & command_lists(tree), f"core/{module}.py builds a Slurm command line"


@pytest.mark.parametrize("module", core_modules())
def test_no_printing_and_no_shell_in_core(module):
    tree = parse(module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"core/{module}.py prints"
        if isinstance(node, ast.keyword) and node.arg == "shell":
            assert not (isinstance(node.value, ast.Constant) and node.value.value), f"core/{module}.py uses shell=True"


def test_notifier_knows_nothing_of_slurm_and_is_the_only_requests_user():
    assert not any(name.startswith("core.slurm.client") for name in imported(parse("notify.discord")))
    for module in core_modules():
        if module != "notify.discord":
            assert "requests" not in imported(parse(module)), f"core/{module}.py imports requests"


def test_analyzer_is_pure():
    allowed = {"re", "json", "dataclasses", "typing", "__future__", "core.errors"}
    assert imported(parse("analysis.analyzer")) <= allowed


def test_requests_is_not_imported_at_module_level_anywhere():
    """An idle daemon must not pay for requests: it is imported inside the sending function only."""
    for module in core_modules():
        top_level = [n for n in parse(module).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert "requests" not in imported(ast.Module(body=top_level, type_ignores=[])), module


def test_ruff_is_clean_and_targets_python_3_9():
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.fail("ruff is not installed: scripts/test.sh installs it into .venv")
    done = subprocess.run([ruff, "check", "--target-version", "py39", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
