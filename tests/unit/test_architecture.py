"""House rules that keep the design honest, checked on the source itself: who may run processes and
Slurm commands, who may talk HTTP, what the pure modules import, and that imports flow one way
through the layers `ls core/` shows."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from typing import Iterator, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORE = os.path.join(ROOT, "core")
SLURM_COMMANDS = {"sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo", "sstat", "srun"}

#: Layers, lowest first: a module imports only from its own layer or below (lazy imports included).
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("errors", "logs", "locking", "files", "analysis.finding", "analysis.lines", "analysis.jobend"),  # leaves
    ("slurm", "notify", "progress"),  # the Slurm adapter; messages, outbox and sinks; reading a running job's logs
    ("state",),  # the job record and its storage
    ("outcome", "analysis"),  # how a job ended; what its logs say
    ("chain",),  # escalation policy and (re)submission
    ("config",),
    ("monitor",),  # polling, checks, chains, dispatching: one job's monitor
    ("daemon", "views", "doctor"),  # processes, liveness, composition; what the CLI shows; `jobmon doctor`
    ("serve",),  # `jobmon serve`: HTTP endpoints and the dashboard over what the views show
)


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


def imported(tree: ast.AST) -> Set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "core":
                names.update(f"core.{alias.name}" for alias in node.names)
    return names


def layer_of(module: str) -> int:
    """The layer of a module: its most specific entry in LAYERS."""
    best: Tuple[int, int] = (-1, -1)
    for rank, entries in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best[1]:
                best = (rank, len(entry))
    assert best[0] >= 0, f"core/{module} is in no layer: add it to LAYERS"
    return best[0]


def core_imports(module: str) -> Iterator[str]:
    for name in imported(parse(module)):
        if name.startswith("core."):
            yield name[len("core."):]


def command_lists(tree: ast.Module) -> set:
    """First words of list literals: how an argv like ["squeue", "-h"] is spelled."""
    return {
        node.elts[0].value for node in ast.walk(tree)
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant)
        and isinstance(node.elts[0].value, str)
    }


def called_attributes(tree: ast.Module) -> Set[str]:
    """`os.fork`, `os.execve`, ...: every attribute call spelled module.name."""
    return {f"{node.func.value.id}.{node.func.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)}


@pytest.mark.parametrize("module", core_modules())
def test_imports_flow_down_the_layers(module):
    own = layer_of(module)
    upward = {name: layer_of(name) for name in core_imports(module) if layer_of(name) > own}
    assert not upward, f"core/{module} (layer {own}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("module", core_modules())
def test_only_the_adapter_runs_slurm_and_only_one_module_starts_processes(module):
    tree = parse(module)
    if module != "slurm.client":
        assert not SLURM_COMMANDS & command_lists(tree), f"core/{module}.py builds a Slurm command line"
    if module not in ("slurm.client", "daemon.process"):
        assert "subprocess" not in imported(tree), f"core/{module}.py must not start processes"
        assert not {"os.fork", "os.execve", "os.execv", "os.spawnv", "os.system", "os.popen"} & called_attributes(
            tree), f"core/{module}.py starts a process"


@pytest.mark.parametrize("module", core_modules())
def test_no_printing_and_no_shell_in_core(module):
    tree = parse(module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"core/{module}.py prints"
        if isinstance(node, ast.keyword) and node.arg == "shell":
            assert not (isinstance(node.value, ast.Constant) and node.value.value), f"core/{module}.py uses shell=True"


def test_sinks_know_nothing_of_slurm_or_job_records():
    for module in core_modules():
        if module.startswith("notify."):
            foreign = {name for name in core_imports(module)
                       if not name.startswith("notify.") and name not in ("errors", "logs", "files", "locking")}
            assert not foreign, f"core/{module}.py imports {sorted(foreign)}"


def test_only_the_sinks_http_module_imports_requests_and_only_when_it_sends():
    for module in core_modules():
        tree = parse(module)
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert "requests" not in imported(ast.Module(body=top_level, type_ignores=[])), module
        assert not {"smtplib", "ssl"} & imported(ast.Module(body=top_level, type_ignores=[])), module
        if module != "notify.http":
            assert "requests" not in imported(tree), f"core/{module}.py imports requests"


def test_the_analyzer_is_pure():
    allowed = {"re", "json", "dataclasses", "typing", "__future__", "core.errors", "core.analysis.finding",
               "core.analysis.lines", "core.analysis.jobend"}
    assert imported(parse("analysis.analyzer")) <= allowed


def test_pure_rules_touch_no_files_processes_or_clocks():
    """The outbox rules, the escalation policy, outcomes and messages are functions of their arguments."""
    impure = {"os", "subprocess", "time", "socket", "requests", "filelock", "core.locking", "core.files"}
    converting = {"mktime", "localtime", "strftime"}  # from time: calendar arithmetic, not the clock
    for module in ("notify.outbox", "notify.events", "notify.message", "chain.policy", "outcome", "monitor.messages",
                   "slurm.parse", "slurm.model", "state.model", "state.codec", "state.migrate", "analysis.lines",
                   "progress.parsers", "progress.eta", "progress.health", "progress.reading", "monitor.alerts",
                   "doctor.rules", "doctor.model"):
        tree = parse(module)
        conversions = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "time"
                       and {alias.name for alias in node.names} <= converting]
        for node in conversions:
            tree.body.remove(node)
        assert not imported(tree) & impure, f"core/{module}.py is meant to be pure"


def test_only_the_entry_points_read_argv():
    """jobmon.py for the CLI; `python -m core.daemon`, `python -m core.daemon.deliver`, `python -m
    core.daemon.watchall` and `python -m core.serve` for the children."""
    for module in core_modules():
        if module not in ("daemon.__main__", "daemon.deliver", "daemon.watchall", "serve.__main__"):
            assert "sys.argv" not in ast.unparse(parse(module)), f"core/{module}.py reads argv"


def test_layers_name_every_package():
    packages = {name for name in os.listdir(CORE) if os.path.isdir(os.path.join(CORE, name)) and
                not name.startswith("__")}
    named = {entry.split(".")[0] for entries in LAYERS for entry in entries}
    assert packages <= named, f"packages in no layer: {packages - named}"


def test_ruff_is_clean_and_targets_python_3_9():
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.fail("ruff is not installed: scripts/test.sh installs it into .venv")
    done = subprocess.run([ruff, "check", "--target-version", "py39", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean_on_core_and_the_cli():
    mypy = shutil.which("mypy") or os.path.join(os.path.dirname(sys.executable), "mypy")
    if not os.path.exists(mypy):
        pytest.fail("mypy is not installed: scripts/test.sh installs it into .venv")
    done = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True)  # files and flags: pyproject.toml
    assert done.returncode == 0, done.stdout + done.stderr



def test_every_core_package_is_installed_by_pyproject():
    """`pip install .` ships the packages pyproject lists: a new folder under core/ must be listed there."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as handle:
        text = handle.read()
    listed = set(text.split("packages = [", 1)[1].split("]", 1)[0].replace('"', "").replace("\n", "").split(", "))
    listed = {name.strip() for name in listed}
    found = {"core." + os.path.relpath(folder, CORE).replace(os.sep, ".") if folder != CORE else "core"
             for folder, _, files in os.walk(CORE) if "__init__.py" in files}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_test_modules_have_unique_names():
    """pytest imports test modules by their base name (tests/ has no packages): two `test_x.py` in
    different folders fail the whole run's collection."""
    seen: dict = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                assert name not in seen, f"{name} is in {seen[name]} and {folder}: rename one"
                seen[name] = folder
