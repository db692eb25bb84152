"""Het jobs replayed from real Slurm 22.05 captures (tests/fixtures/slurm/*het*): the parsers and the
grouping code (and the whole monitor, in test_het_stories.py) must tell one story, one summary, for
`838+0` + `838+1`.

No het job can start on the single-node test cluster (see the fixtures' README), so the captured
outcomes are DEADLINE for one component, CANCELLED, and a dependency that can never be satisfied.
"""
from __future__ import annotations

import pytest

from core import outcome as groups
from core.errors import SlurmError
from core.slurm.client import Slurm
from core.slurm.model import CommandResult, JobState
from core.slurm.shared import members_of
from tests.support import accounting, queue, slurm_output

HET = "838"  # component 1 ended DEADLINE on its own, then the job was cancelled


# --- parsers and groups ----------------------------------------------------------------------

def test_components_keep_their_plus_ids_and_own_raw_ids():
    records = accounting("sacct_het_pending.txt")
    assert [(r.job_id, r.job_id_raw, r.state) for r in records.values()] == [
        ("838+0", "838", JobState.PENDING), ("838+1", "839", JobState.PENDING)]
    assert not any(r.is_placeholder for r in records.values())
    assert list(queue("squeue_het_pending_r.txt")) == ["838+0", "838+1"]
    assert groups.is_group(HET, list(records))


def test_a_component_that_ended_alone_does_not_end_the_het_job():
    entries = queue("squeue_het_deadline_r.txt")
    assert [e.job_id for e in groups.active_members(entries)] == ["838+0"]
    assert groups.headline_entry(groups.active_members(entries)).state is JobState.PENDING
    assert groups.failed_queue_members(HET, entries) == ["838+1"]
    tasks = groups.collect_tasks(HET, accounting("sacct_het_deadline.txt"))
    assert not groups.all_final(tasks, accounting("sacct_het_deadline.txt"))


def test_summary_counts_each_component_and_names_the_one_that_failed_first():
    records = accounting("sacct_het_deadline_cancelled.txt")
    tasks = groups.collect_tasks(HET, records)
    assert [(t.task_id, t.raw_id, t.state, t.exit_code) for t in tasks] == [
        ("+0", "838", JobState.CANCELLED, 0), ("+1", "839", JobState.DEADLINE, 1)]
    assert all(isinstance(t.state, JobState) for t in tasks)
    assert [t.is_failure for t in tasks] == [True, True]
    assert groups.all_final(tasks, records)
    final = groups.summarize(tasks, records, now=1.0)
    assert final.state is JobState.DEADLINE and not final.is_success and final.is_group
    assert final.task_counts == {"CANCELLED": 1, "DEADLINE": 1}
    assert final.state_text == "1 CANCELLED, 1 DEADLINE"
    assert final.failed_tasks == "+0, +1" and final.exit_code == 1
    assert final.nodes == "" and final.start == "" and final.end == "2026-11-21T23:09:12"


def test_het_job_cancelled_while_pending():
    records = accounting("sacct_het_cancelled.txt")
    final = groups.summarize(groups.collect_tasks("829", records), records, now=1.0)
    assert final.state is JobState.CANCELLED and final.task_counts == {"CANCELLED": 2}
    assert [e.state for e in queue("squeue_het_cancelled_r.txt").values()] == [JobState.CANCELLED] * 2


@pytest.mark.parametrize("counts, headline", [
    ({"CANCELLED": 1, "DEADLINE": 1}, JobState.DEADLINE),  # the most telling state any member has
    ({"COMPLETED": 9, "OUT_OF_MEMORY": 1}, JobState.OUT_OF_MEMORY),
    ({"COMPLETED": 2}, JobState.COMPLETED),
    ({"PENDING": 2}, JobState.PENDING),  # a state not ranked counts when it is alone
    ({"UNKNOWN": 1, "PENDING": 3}, JobState.UNKNOWN),
    ({}, JobState.UNKNOWN),
])
def test_headline_state_is_a_job_state(counts, headline):
    assert groups.headline_state(counts) is headline


def test_the_shared_snapshot_gives_a_monitor_every_component_and_nothing_else():
    snapshot = {**queue("squeue_het_cancelled_r.txt"), **queue("squeue_het_deadline_r.txt")}
    assert sorted(members_of(snapshot, [HET])) == ["838+0", "838+1"]
    assert sorted(members_of(snapshot, ["829"])) == ["829+0", "829+1"]


def test_scontrol_lists_the_leader_first_so_its_log_is_the_one_jobmon_reads():
    slurm = Slurm(lambda argv, timeout: CommandResult(0, slurm_output("scontrol_show_job_het.txt"), ""))
    assert [job.job_id for job in slurm.show_jobs("836")] == ["836", "837"]
    assert slurm.show_job("836").stdout == "/tmp/hetprobe/hetfail-836.out"


def test_a_single_component_cannot_be_cancelled():
    slurm = Slurm(lambda argv, timeout: CommandResult(60, "", slurm_output("scancel_het_component.stderr")))
    with pytest.raises(SlurmError, match="individual component of heterogeneous job"):
        slurm.cancel("836+1")


def test_only_het_components_count_as_a_complete_list():
    het = accounting("sacct_het_deadline_cancelled.txt")
    listed = queue("squeue_het_deadline_cancelled_r.txt")
    assert groups.het_components_recorded(HET, listed, groups.collect_tasks(HET, het))
    leader_only = {key: record for key, record in het.items() if key == "838+0"}
    assert not groups.het_components_recorded(HET, listed, groups.collect_tasks(HET, leader_only))
    array = accounting("sacct_array.txt")  # array tasks leave squeue one by one: their list proves nothing
    assert not groups.het_components_recorded("7", queue("squeue_array_done_r.txt"), groups.collect_tasks("7", array))
