"""Bad input gets one clear line and a non-zero exit, never a traceback (no Slurm needed)."""
from __future__ import annotations

import io
import json
import os

import pytest

import jobmon
from core.errors import JobmonError

GOOD_CONFIG = {"discord": {"success_webhook": "http://127.0.0.1:9/api/webhooks/1/tok",
                           "error_webhook": "http://127.0.0.1:9/api/webhooks/2/tok"}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBMON_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(home, data) -> None:
    path = home / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(0o600)


def run(capsys, *argv):
    code = jobmon.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.mark.parametrize("argv, expected", [
    (["submit"], "script"),
    (["submit", "missing.sbatch"], "not found"),
    (["submit", "--mem", "4G"], "script"),
    (["submit", "."], "is a directory"),
])
def test_submit_refuses_bad_scripts_before_sbatch(home, capsys, monkeypatch, argv, expected):
    write_config(home, GOOD_CONFIG)
    monkeypatch.setenv("PATH", "/nonexistent")  # sbatch must not even be looked for
    code, _, err = run(capsys, *argv)
    assert code != 0
    assert expected in err and err.count("\n") == 1


def test_submit_without_config_points_at_the_example(home, capsys):
    (home / "job.sbatch").write_text("#!/bin/bash\necho hi\n")
    code, _, err = run(capsys, "submit", "job.sbatch")
    assert code != 0 and "config.json.example" in err


@pytest.mark.parametrize("config, expected", [
    ("{not json", "not valid JSON"),
    ({"discord": {"error_webhook": "http://example.com/api/webhooks/1/secret-token"}}, "discord.error_webhook"),
    ({"discord": {"success_webhook": 42}}, "discord.success_webhook"),
    ({"discord": {"success_webhook": "https://discord.com/api/webhooks/1/t"}, "poll": {"running_interval": "fast"}},
     "running_interval"),
])
def test_bad_config_is_one_clear_line(home, capsys, config, expected):
    write_config(home, config)
    (home / "job.sbatch").write_text("#!/bin/bash\necho hi\n")
    code, _, err = run(capsys, "submit", "job.sbatch")
    assert code != 0 and expected in err
    assert "secret-token" not in err


def test_broken_user_patterns_stop_submit_and_name_the_entry(home, capsys, monkeypatch):
    write_config(home, GOOD_CONFIG)
    (home / "user_patterns.json").write_text(json.dumps({"schema_version": 1, "patterns": [
        {"id": "mine", "severity": "error", "regexes": ["oops("], "description": "d", "hint": "h"}]}))
    (home / "job.sbatch").write_text("#!/bin/bash\necho hi\n")
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run(capsys, "submit", "job.sbatch")
    assert code != 0 and "'mine'" in err and "user_patterns.json" in err


@pytest.mark.parametrize("argv, expected", [
    (["watch", "abc"], "is not a Slurm job id"),
    (["cancel", "12x"], "is not a Slurm job id"),
    (["cancel", "4242"], "not monitored"),
    (["analyze", "nope.log"], "no such file"),
    (["analyze", "empty"], "is a directory with no files in it"),
    (["analyze", "-", "-"], "standard input (-) can be read only once"),
    (["analyze", "--exit-code", "1", "x.log"], "give --state too"),
    (["analyze", "--state", "EXPLODED", "x.log"], "is not a Slurm job state"),
])
def test_bad_ids_and_paths(home, capsys, argv, expected):
    write_config(home, GOOD_CONFIG)
    (home / "empty").mkdir()
    (home / "x.log").write_text("Killed\n")
    code, _, err = run(capsys, *argv)
    assert code != 0 and expected in err


def test_missing_slurm_commands_are_named(home, capsys, monkeypatch):
    write_config(home, GOOD_CONFIG)
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run(capsys, "watch", "123")
    assert code != 0 and "'scontrol' is not on PATH" in err


def test_unwritable_home_is_reported(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JOBMON_HOME", str(blocker / "home"))
    code, _, err = run(capsys, "status")
    assert code != 0 and "JOBMON_HOME" in err


def test_status_with_no_jobs_and_analyze_json(home, capsys):
    code, out, _ = run(capsys, "status")
    assert code == 0 and "No monitored jobs" in out
    log = home / "train.err"
    log.write_text("step 1\nTraceback (most recent call last):\n"
                   "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB\n")
    code, out, _ = run(capsys, "analyze", "--json", str(log))
    assert code == 0
    result = json.loads(out)
    assert result["categories"] == ["cuda_oom", "python_traceback"]
    assert result["findings"][0] == {"category": "python_traceback", "severity": result["findings"][0]["severity"],
                                     "line_no": 2, "line": "Traceback (most recent call last):"}
    code, out, _ = run(capsys, "analyze", str(log))
    assert code == 0 and "root cause first: cuda_oom, python_traceback" in out


def test_analyze_reads_several_files_a_directory_and_standard_input(home, capsys, monkeypatch):
    logs = home / "logs"
    logs.mkdir()
    (logs / "a.err").write_text(
        "slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2024-04-20T09:09:37 DUE TO TIME LIMIT ***\n")
    (logs / "b.err").write_text("OSError: [Errno 24] Too many open files\n")
    (logs / ".hidden").write_text("Killed\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("step 3\nKilled\n"))
    code, out, _ = run(capsys, "analyze", "--json", str(logs), "-")
    assert code == 0
    reports = json.loads(out)
    assert [(r["path"], r["categories"]) for r in reports] == [
        (str(logs / "a.err"), ["slurm_timeout"]), (str(logs / "b.err"), ["too_many_open_files"]),
        ("(standard input)", ["killed_signal"])]
    assert all(r["warnings"] == [] for r in reports)


def test_analyze_knows_how_the_job_ended_and_explains_the_order(home, capsys):
    log = home / "train.err"
    log.write_text("epoch 3 loss: nan\nTraceback (most recent call last):\n"
                   "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB\n")
    code, out, _ = run(capsys, "analyze", "--json", "--state", "TIMEOUT", "--signal", "15", str(log))
    assert json.loads(out)["categories"] == ["slurm_timeout", "nan_loss", "cuda_oom", "python_traceback"]
    code, out, _ = run(capsys, "analyze", "--json", "--state", "COMPLETED", str(log))
    result = json.loads(out)
    assert result["categories"] == [] and result["findings"] == []
    assert [w["category"] for w in result["warnings"]] == ["nan_loss", "python_traceback", "cuda_oom"]
    code, out, _ = run(capsys, "analyze", "--explain", str(log))
    assert code == 0 and "root cause first: nan_loss, cuda_oom, python_traceback" in out
    assert "nan_loss (library rank" in out and "root cause: a cause first seen on line 1" in out
    assert "python_traceback (library rank" in out and "wraps a cause printed elsewhere" in out
    assert "matched regex: Traceback \\(most recent call last\\):" in out
    code, out, _ = run(capsys, "analyze", "--explain", "--state", "TIMEOUT", str(log))
    assert "slurm_timeout (library rank" in out and "from Slurm's final state" in out
    assert "the job ended TIMEOUT, a state this pattern names ('states'): it leads" in out


def test_config_readable_by_others_warns(home, capsys):
    write_config(home, GOOD_CONFIG)
    os.chmod(home / "config.json", 0o644)
    code, _, err = run(capsys, "analyze", "--json", str(home / "config.json"))
    assert code == 0 and "chmod 600" in err


def test_init_writes_a_private_config_and_refuses_to_overwrite(home, capsys):
    url = "https://discord.com/api/webhooks/123456/very-secret-token"
    code, out, _ = run(capsys, "init", "--success-webhook", url, "--error-webhook", url)
    assert code == 0 and "very-secret-token" not in out
    assert (home / "config.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((home / "config.json").read_text())["discord"]["error_webhook"] == url
    code, _, err = run(capsys, "init", "--success-webhook", url)
    assert code != 0 and "--force" in err
    code, _, err = run(capsys, "init", "--success-webhook", "http://example.com/api/webhooks/1/leak-me")
    assert code != 0 and "leak-me" not in err


def test_state_and_log_folders_are_made_private(home, capsys):
    (home / "state").mkdir(mode=0o755)
    (home / "state").chmod(0o755)
    code, _, _ = run(capsys, "status")
    assert code == 0
    assert (home / "state").stat().st_mode & 0o777 == 0o700
    assert (home / "logs").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("ladder, expected", [
    (None, "cannot read ladder file"),
    ("[{\"mem\": \"4 gigs\"}]", "level 0: mem '4 gigs'"),
    ("not json", "is not valid JSON"),
])
def test_bad_ladders_stop_submit_before_sbatch(home, capsys, monkeypatch, ladder, expected):
    write_config(home, GOOD_CONFIG)
    (home / "job.sbatch").write_text("#!/bin/bash\necho hi\n")
    if ladder is not None:
        (home / "ladder.json").write_text(ladder)
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run(capsys, "submit", "--escalate", "--ladder", str(home / "ladder.json"), "job.sbatch")
    assert code != 0 and expected in err


def test_report_and_history_read_the_state_files(home, capsys):
    from core.slurm.model import JobState
    from core.state.model import Attempt, Chain, FinalRecord, JobRecord, Level
    from core.state.store import StateStore

    (home / "state").mkdir()
    store = StateStore(str(home / "state"))
    chain = Chain(current_job="12", attempts=[
        Attempt("11", resources=Level(mem="1G"), state=JobState.OUT_OF_MEMORY, elapsed="00:00:09", core_hours=0.01,
                decision="OUT_OF_MEMORY is set to escalate_mem"),
        Attempt("12", level_index=1, resources=Level(mem="2G"), state=JobState.COMPLETED, elapsed="00:01:00")])
    store.create(JobRecord("11", name="train", created_at=1_790_000_000.0, chain=chain,
                           final=FinalRecord(state=JobState.COMPLETED, elapsed="00:01:00")))
    code, out, _ = run(capsys, "report", "--markdown", "12")
    assert code == 0
    assert "| 1 | 11 | 1G | OUT_OF_MEMORY |" in out and "| 2 | 12 | 2G | COMPLETED |" in out
    code, out, _ = run(capsys, "history", "--csv")
    assert code == 0 and out.splitlines()[1].startswith("11->12,train,")
    code, out, _ = run(capsys, "history", "--since", "1h")
    assert code == 0 and "No jobs in the history since 1h" in out
    code, _, err = run(capsys, "history", "--since", "yesterday")
    assert code != 0 and "--since 'yesterday'" in err


def test_report_and_status_of_an_array_chain_show_rounds_and_tasks(home, capsys, monkeypatch):
    from core.slurm.model import JobState
    from core.state.model import Attempt, Chain, JobRecord, Level, Round
    from core.state.store import StateStore

    (home / "state").mkdir()
    store = StateStore(str(home / "state"))
    chain = Chain(current_job="601", round=2, level=Level(mem="2G"), attempts=[
        Attempt("500", resources=Level(mem="1G"), state=JobState.OUT_OF_MEMORY,
                task_counts={"COMPLETED": 7, "OUT_OF_MEMORY": 3}, failed_tasks="3,5,8"),
        Attempt("600", level_index=1, resources=Level(mem="2G"), round=2, tasks="3,5"),
        Attempt("601", level_index=1, resources=Level(mem="2G"), round=2, tasks="8")],
        rounds=[Round(1, jobs=["500"], task_counts={"COMPLETED": 7, "OUT_OF_MEMORY": 3}, retried_tasks="3,5,8")])
    store.create(JobRecord("500", name="sweep", array_spec="0-9", created_at=1_790_000_000.0, chain=chain))
    code, out, _ = run(capsys, "report", "--csv", "601")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("attempt,round,job_id,tasks,")
    assert lines[1].startswith("1,1,500,0-9,1G,\"7 COMPLETED, 3 OUT_OF_MEMORY\",\"3,5,8\"")
    assert lines[3].startswith("3,2,601,8,2G,")
    monkeypatch.setenv("PATH", "/nonexistent")  # no squeue: status still answers from the state files
    code, out, _ = run(capsys, "status")
    assert "round 2 of 4, 2G" in out


def test_telling_a_finished_job_inline_while_a_daemon_holds_it_is_one_clear_line(home):
    from core.config import Config
    from core.daemon.main import run_inline
    from core.errors import StateError
    from core.locking import FlockLock
    from core.state.model import JobRecord
    from core.state.store import StateStore

    ctx = jobmon.Context()
    store = StateStore(ctx.ready_paths().state)
    store.create(JobRecord("31"))
    held = FlockLock(str(home / "state" / "31.monitor.lock"), 0)  # what a daemon started by `recover` holds
    held.acquire()
    try:
        with pytest.raises(StateError, match="job 31 is already being monitored by another process"):
            run_inline(ctx.paths, Config(), "31")
    finally:
        held.release()


def test_recover_checks_the_config_before_starting_a_daemon_that_trusts_it(home, capsys):
    from core.state.model import JobRecord
    from core.state.store import StateStore

    (home / "state").mkdir()
    StateStore(str(home / "state")).create(JobRecord("41", created_at=1_790_000_000.0))  # no monitor: DEAD
    write_config(home, {"discord": {"error_webhook": "http://hooks.example.com/api/webhooks/1/token"}})
    code, _, err = run(capsys, "recover")
    assert code != 0 and "must use https://" in err and "token" not in err
    assert StateStore(str(home / "state")).load("41").monitor.pid == 0  # nothing was started


#: config.json cut off mid-write (a full disk, an editor killed): not valid JSON.
TRUNCATED_CONFIG = '{"discord": {"success_webhook": "http://127.0.0.1:9/api/webhooks/1/tok", "error_web'


@pytest.mark.parametrize("config", [TRUNCATED_CONFIG, ""])
def test_recover_with_a_broken_config_says_so_fails_and_changes_nothing(home, capsys, config):
    from core.state.model import JobRecord
    from core.state.store import StateStore

    (home / "state").mkdir()
    StateStore(str(home / "state")).create(JobRecord("42", created_at=1_790_000_000.0))  # no monitor: DEAD
    record = home / "state" / "42.json"
    before = record.read_bytes()
    write_config(home, config)
    code, out, err = run(capsys, "recover")
    assert code != 0
    assert "config.json is not valid JSON" in err and "nothing was recovered or changed" in err
    assert err.count("\n") == 1 and "nothing to recover" not in out
    assert record.read_bytes() == before and not (home / "logs" / "42.monitor.log").exists()


def test_status_runs_with_one_warning_when_the_config_is_broken(home, capsys, monkeypatch):
    from core.state.model import JobRecord
    from core.state.store import StateStore

    monkeypatch.setenv("PATH", "/nonexistent")  # squeue cannot answer: status shows what the record knows
    (home / "state").mkdir()
    StateStore(str(home / "state")).create(JobRecord("43", name="train", created_at=1_790_000_000.0))
    write_config(home, TRUNCATED_CONFIG)
    code, out, err = run(capsys, "status", "--json")
    assert code == 0
    assert [row["job_id"] for row in json.loads(out)["jobs"]] == ["43"]
    warnings = [line for line in err.splitlines() if "config.json" in line]
    assert len(warnings) == 1 and "not valid JSON" in warnings[0] and "ignored here" in warnings[0]
    assert "tok" not in err


def test_analyze_runs_with_one_warning_when_the_config_is_broken(home, capsys):
    write_config(home, TRUNCATED_CONFIG)
    log = home / "train.err"
    log.write_text("Traceback (most recent call last):\nModuleNotFoundError: No module named 'flash_attn'\n")
    code, out, err = run(capsys, "analyze", "--json", str(log))
    assert code == 0 and json.loads(out)["categories"][0] == "import_error"
    assert err.count("\n") == 1 and "not valid JSON" in err and "ignored here" in err


def test_submit_still_refuses_a_broken_config(home, capsys, monkeypatch):
    write_config(home, TRUNCATED_CONFIG)
    (home / "job.sbatch").write_text("#!/bin/bash\necho hi\n")
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run(capsys, "submit", "job.sbatch")
    assert code != 0 and "not valid JSON" in err and "ignored" not in err


def test_cancel_job_also_cancels_the_jobs_of_a_round_being_submitted(home, capsys, monkeypatch):
    from core.state.model import Action, Attempt, Chain, JobRecord, Level, PendingRound, PendingSubmission
    from core.state.store import StateStore

    (home / "state").mkdir()
    level = Level(mem="2G")
    chain = Chain(current_job="500", attempts=[Attempt("500")], pending=PendingRound(2, decided_at=1.0, submissions=[
        PendingSubmission(1, level, Action.ESCALATE_MEM, tasks="0", job_id="600"),
        PendingSubmission(1, level, Action.ESCALATE_MEM, tasks="1", job_id="601"),
        PendingSubmission(1, level, Action.ESCALATE_MEM, tasks="2")]))
    StateStore(str(home / "state")).create(JobRecord("500", array_spec="0-2", chain=chain))
    cancelled = []

    class RecordingSlurm:
        def cancel(self, job_id):
            if job_id == "601":
                raise JobmonError("scancel 601 failed: Invalid job id specified")
            cancelled.append(job_id)

    monkeypatch.setattr(jobmon.Context, "slurm", lambda self: RecordingSlurm())
    code, out, err = run(capsys, "cancel", "--job", "500")
    assert cancelled == ["500", "600"] and code != 0
    assert "cancelled Slurm job(s): 500, 600" in out and "scancel 601 failed" in err


def test_test_discord_reports_each_webhook_and_the_routes_it_serves(home, capsys, receiver):
    write_config(home, {"discord": {"success_webhook": receiver.webhook_url("ok"),
                                    "error_webhook": receiver.webhook_url("bad")}})
    receiver.delete_webhook("bad")
    code, out, _ = run(capsys, "test-discord")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith("success: OK (discord http://127.0.0.1:")
    assert lines[1].startswith("error: FAILED (") and "HTTP 404" in lines[1]
    assert [m["payload"]["embeds"][0]["title"] for m in receiver.messages("ok")] == ["jobmon test message"]
    one_url = receiver.webhook_url("ok")
    for discord in ({"error_webhook": one_url}, {"success_webhook": one_url, "error_webhook": one_url}):
        write_config(home, {"discord": discord})
        code, out, _ = run(capsys, "test-discord")
        assert code == 0 and out.startswith("success+error: OK") and len(out.splitlines()) == 1
    assert len(receiver.messages("ok")) == 3  # one message per webhook, however many keys name it


def test_the_first_use_of_an_older_jobmons_folder_says_it_indexes_once(home, capsys, monkeypatch):
    from tests.support import copy_v1_state

    jobs = copy_v1_state(str(home / "state"))
    monkeypatch.setenv("PATH", "/nonexistent")  # no squeue: status answers from the state files
    code, out, err = run(capsys, "status", "--all")
    assert code == 0 and "indexing its records (once" in err
    assert all(job_id in out for job_id in jobs.values())
    code, _, err = run(capsys, "status")
    assert code == 0 and "indexing" not in err


def test_history_as_the_first_command_on_an_older_folder_lists_its_old_jobs(home, capsys):
    from tests.support import v1_data, v1_names

    (home / "state").mkdir()
    ten_days = 10 * 86400
    for name in v1_names()[:5]:
        data = v1_data(name)
        data["created_at"] -= ten_days
        if data.get("final"):
            data["final"]["decided_at"] -= ten_days
        (home / "state" / f"{data['job_id']}.json").write_text(json.dumps(data))
    code, out, err = run(capsys, "history", "--csv")
    assert code == 0 and "indexing its records" in err
    assert len(out.splitlines()) == 1 + 5  # the header and every job, though none is current any more


@pytest.fixture
def two_homes(tmp_path, monkeypatch):
    """The active home (JOBMON_HOME) and the other known ones: a checkout and the per-user folder."""
    import core.config

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "config.json.example").write_text("{}")
    monkeypatch.setattr(core.config, "CHECKOUT_DIR", str(checkout))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    active = tmp_path / "active"
    active.mkdir()
    monkeypatch.setenv("JOBMON_HOME", str(active))
    monkeypatch.chdir(tmp_path)
    return checkout, tmp_path / "xdg" / "jobmon", active


def test_no_config_names_jobmon_init(two_homes, capsys):
    (two_homes[2] / "job.sbatch").write_text("#!/bin/bash\necho hi\n")
    code, _, err = run(capsys, "submit", "job.sbatch")
    assert code != 0 and "jobmon init --success-webhook URL" in err and "JOBMON_HOME=" not in err


def test_no_config_here_but_in_another_known_home_says_which_and_how_to_choose(two_homes, capsys):
    checkout, user_home, active = two_homes
    user_home.mkdir(parents=True)
    write_config(user_home, GOOD_CONFIG)
    (active / "job.sbatch").write_text("#!/bin/bash\necho hi\n")
    code, _, err = run(capsys, "submit", "job.sbatch")
    assert code != 0 and "jobmon init" in err
    assert f"{user_home}/config.json exists in the per-user folder" in err
    assert f"export JOBMON_HOME={user_home}" in err and f"to {active}" in err
    assert err.count("\n") == 1


def test_status_with_no_jobs_here_points_at_the_home_that_has_them(two_homes, capsys):
    checkout, _, active = two_homes
    (checkout / "state").mkdir()
    (checkout / "state" / "4242.json").write_text("{}")
    code, out, err = run(capsys, "status")
    assert code == 0 and "No monitored jobs" in out
    assert f"this JOBMON_HOME ({active}) has no jobs, but {checkout}/state exists in the checkout" in err
    assert f"export JOBMON_HOME={checkout}" in err


@pytest.mark.parametrize("argv, expected", [
    (["watch"], "give a job id, or --all"),
    (["watch", "123", "--name", "^sweep-"], "go with --all"),
    (["watch", "--all", "123"], "takes no job id"),
    (["watch", "--stop"], "--stop goes with --all"),
    (["watch", "--all", "--name", "sweep-("], "not a valid regular expression"),
    (["watch", "--all", "--since", "yesterday"], "--since 'yesterday'"),
    (["serve", "--bind", "0.0.0.0", "--port", "0"], "JOBMON_SERVE_TOKEN"),
    (["serve", "--port", "70000"], "between 0 and 65535"),
    (["serve", "--stop", "--port", "1"], "--stop takes no"),
])
def test_watch_all_and_serve_refuse_bad_arguments_in_one_line(home, capsys, monkeypatch, argv, expected):
    write_config(home, GOOD_CONFIG)
    monkeypatch.delenv("JOBMON_SERVE_TOKEN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # nothing is started, no Slurm command is looked for
    code, _, err = run(capsys, *argv)
    assert code != 0 and expected in err and err.count("\n") == 1, err


def test_stopping_services_that_never_ran_says_so(home, capsys):
    assert run(capsys, "watch", "--all", "--stop")[:2] == (0, "jobmon: no running watcher to stop\n")
    assert run(capsys, "serve", "--stop")[:2] == (0, "jobmon: no running server to stop\n")


def test_status_lists_a_dead_watcher_and_a_live_server_and_json_carries_them(home, capsys):
    from core.daemon.liveness import process_start_ticks, this_host
    from core.daemon.service import ServiceRecord, save_service
    from core.daemon.watchall import make_filter, watch_path
    from core.serve.record import save_server

    run(capsys, "status")  # creates the folders
    state = str(home / "state")
    save_service(watch_path(state), ServiceRecord(pid=0, host=this_host(), args=make_filter("", "^s", 0).as_args()))
    save_server(state, ServiceRecord(pid=os.getpid(), start_ticks=process_start_ticks(os.getpid()) or 0,
                                     host=this_host(), bind="127.0.0.1", port=8642))
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert f"serve: ALIVE pid {os.getpid()} on {this_host()}, http://127.0.0.1:8642/" in out
    assert "watch --all: DEAD pid 0" in out and "name matching '^s'" in out
    data = json.loads(run(capsys, "status", "--json")[1])
    assert data["serve"]["health"] == "ALIVE" and data["watch_all"]["health"] == "DEAD"


def test_recover_restarts_a_dead_server_on_its_address_and_not_a_stopped_one(home, capsys, monkeypatch):
    from core.daemon.liveness import this_host
    from core.serve import main as serve_main
    from core.serve.record import ServerRecord, save_server

    write_config(home, GOOD_CONFIG)
    run(capsys, "status")
    started = []

    def fake_start(paths, bind, port, token):
        started.append((bind, port))
        return ServerRecord(pid=77, bind=bind, port=port)

    monkeypatch.setattr(serve_main, "start_detached", fake_start)
    dead = ServerRecord(pid=0, host=this_host(), bind="127.0.0.1", port=8650)
    save_server(str(home / "state"), dead)
    code, out, _ = run(capsys, "recover")
    assert code == 0 and "serve: server restarted (pid 77, http://127.0.0.1:8650/)" in out
    dead.stopped_at = 1.0
    save_server(str(home / "state"), dead)
    assert "serve:" not in run(capsys, "recover")[1] and started == [("127.0.0.1", 8650)]
