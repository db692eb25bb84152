"""core.slurm.efficiency (CPU, memory and time used of what was asked, like seff/reportseff), on sacct
text captured from the local Slurm 22.05 (tests/fixtures/slurm_headers/README.md), the efficiency and
"how far it got" in the final message, and `efficiency` in `report --json` / `history --json`."""
from __future__ import annotations

import json

import pytest

from core.monitor.messages import build_message, progress_reached
from core.outcome import collect_tasks, final_from_accounting, summarize
from core.progress.reading import Reading, Source
from core.slurm.efficiency import (
    Efficiency,
    advice,
    cpu_percent,
    gpu_percent,
    memory_percent,
    req_mem_bytes,
    spread_of,
    time_percent,
)
from core.slurm.model import JobState
from core.slurm.parse import SACCT_DELIMITER, parse_sacct, tres_number
from core.state.history import summarize as history_summary
from core.state.model import FinalRecord, JobRecord, LiveState
from core.views.history import history_row, report_rows
from core.views.table import render
from tests.support import HEADERS, read_text, sacct_row, slurm_output
from tests.unit.test_chains import JOB, PerJobSlurm, chain_story, chained

K = 1024
M = K * K
G = K * M


def captured(name: str):
    """A real capture with its header (these were made without `-n`), by job id."""
    return {record.job_id: record for record in parse_sacct(read_text(HEADERS, name))}


# --- the captured jobs: a CPU burner, a sleeper on 2 CPUs, a memory holder, 2 srun tasks -------

@pytest.mark.parametrize(
    "job_id, total_cpu, used, cpu, memory, time",
    [
        ("885", "00:19.746", 2908 * K, 98.7, 1.4, 16.7),  # python busy loop 20 s, -c 1 --mem=200M -t 2
        ("886", "00:00.002", 212 * K, 0.0, 0.1, 11.1),  # sleep 20, -c 2 --mem-per-cpu=100M -t 3
        ("887", "00:00.169", 310112 * K, 1.1, 75.7, 12.5),  # holds 300 MiB for 15 s, --mem=400M -t 2
        ("888", "00:00.148", 2 * 125684 * K, 0.7, 61.4, 8.3),  # srun -n 2, each task holding 120 MiB
    ],
)
@pytest.mark.parametrize("capture", ["sacct_19_fields.txt", "sacct_21_fields.txt"])
def test_efficiency_of_real_jobs(capture, job_id, total_cpu, used, cpu, memory, time):
    record = captured(capture)[job_id]
    assert record.total_cpu == total_cpu and record.used_mem_bytes == used and record.alloc_nodes == 1
    assert record.alloc_gpus == 0 and record.gpu_util is None  # Slurm 22.05 here: no GPU, no GPU accounting
    final = final_from_accounting(record, now=0.0)
    assert final.efficiency == Efficiency(cpu_percent=cpu, memory_percent=memory, time_percent=time, gpu_percent=None)


def test_a_step_of_two_tasks_counts_twice_its_maxrss_but_the_peak_stays_one_task():
    record = captured("sacct_19_fields.txt")["888"]
    assert record.max_rss_bytes == 125684 * K  # what "Peak memory" shows, as before
    assert record.used_mem_bytes == 251368 * K  # what TRESUsageInTot's mem= said for step 888.0 (README)


def test_slurm_22_05_prints_a_per_cpu_request_as_the_total():
    record = captured("sacct_19_fields.txt")["886"]  # --mem-per-cpu=100M -c 2
    assert (record.req_mem, record.alloc_cpus) == ("200M", 2)
    assert req_mem_bytes(record.req_mem, record.alloc_cpus) == 200 * M


@pytest.mark.parametrize(
    "name, memory, time",
    [("sacct_completed_alloccpus.txt", 0.0, 0.0), ("sacct_timeout.txt", 0.0, 103.3)],
)
def test_older_captures_without_totalcpu_give_no_cpu_value_but_still_parse(name, memory, time):
    (record,) = parse_sacct(slurm_output(name))
    assert record.total_cpu == "" and record.used_mem_bytes == record.max_rss_bytes
    efficiency = final_from_accounting(record, now=0.0).efficiency
    assert efficiency == Efficiency(cpu_percent=None, memory_percent=memory, time_percent=time, gpu_percent=None)


# --- the rules, one at a time ------------------------------------------------------------------

@pytest.mark.parametrize(
    "req_mem, cpus, nodes, expected",
    [
        ("200M", 2, 1, 200 * M),  # Slurm >= 21.08: the total, whatever the option
        ("1G", 0, 0, G),
        ("100Mc", 4, 1, 400 * M),  # older Slurm: per CPU
        ("4Gn", 8, 2, 8 * G),  # older Slurm: per node
        ("4Gn", 8, 0, 4 * G),  # no NNodes column: one node
        ("2000", 1, 1, 2000 * M),  # a bare number is MB
        ("16?", 1, 1, None),  # sacct's placeholder
        ("", 1, 1, None),
        ("0", 1, 1, None),  # no limit
        ("0n", 1, 1, None),
    ],
)
def test_req_mem_bytes(req_mem, cpus, nodes, expected):
    assert req_mem_bytes(req_mem, cpus, nodes) == expected


@pytest.mark.parametrize(
    "total_cpu, elapsed, cpus, expected",
    [
        ("00:19.746", "00:00:20", 1, 98.7),
        ("1-00:00:00", "12:00:00", 4, 50.0),
        ("", "00:00:20", 1, None),  # no TotalCPU column
        ("00:00:05", "00:00:00", 1, None),  # never ran
        ("00:00:05", "00:00:10", 0, None),  # no AllocCPUS
    ],
)
def test_cpu_percent(total_cpu, elapsed, cpus, expected):
    assert cpu_percent(total_cpu, elapsed, cpus) == expected


@pytest.mark.parametrize(
    "used, req_mem, cpus, expected",
    [(G, "4G", 1, 25.0), (G, "512Mc", 4, 50.0), (None, "4G", 1, None), (G, "", 1, None), (G, "16?", 1, None)],
)
def test_memory_percent(used, req_mem, cpus, expected):
    assert memory_percent(used, req_mem, cpus) == expected


@pytest.mark.parametrize(
    "elapsed, limit, expected",
    [("00:30:00", "01:00:00", 50.0), ("00:01:00", "UNLIMITED", None), ("00:01:00", "Partition_Limit", None),
     ("00:01:03", "00:01:00", 105.0), ("", "01:00:00", None)],
)
def test_time_percent(elapsed, limit, expected):
    assert time_percent(elapsed, limit) == expected


@pytest.mark.parametrize(
    "util, gpus, expected",
    [
        (None, 1, None),  # the site accounts no GPU use (Slurm 22.05, or no NVML/RSMI)
        (87.0, 1, 87.0),
        (350.0, 4, 87.5),  # above 100 with 4 GPUs: a sum over them (Slurm >= 24.05)
        (90.0, 4, None),  # one GPU's value (before 24.05) or a sum (from 24.05): sacct does not say
        (50.0, 0, None),  # no GPU in AllocTRES
    ],
)
def test_gpu_percent(util, gpus, expected):
    assert gpu_percent(util, gpus) == expected


#: TRES strings as real sites printed them, copied from public pages (no GPU here to capture them):
#: AllocTRES of job 8117678, pasted in neilmunday/slurm-mail issue #142 (2024-10-08);
GPU_ALLOC_TRES = "billing=192,cpu=16,gres/cpu=16,gres/gpu:h100=1,gres/gpu=1,mem=180G,node=1"
#: TRESUsageInAve of job 18194943's steps in CU Boulder's docs (ResearchComputing/Documentation PR #498).
GPU_BATCH_AVE = ("cpu=00:56:24,energy=0,fs/disk=350130624578,gres/gpumem=40777023488,gres/gpuutil=100,"
                 "mem=10621726720,pages=3465,vmem=10439041024")
GPU_EXTERN_AVE = "cpu=00:00:00,energy=0,fs/disk=5273,gres/gpumem=0,gres/gpuutil=0,mem=262144,pages=0,vmem=0"


def test_gpu_use_is_read_from_the_steps_where_the_site_accounts_it():
    assert tres_number(GPU_ALLOC_TRES, "gres/gpu") == 1.0  # not the typed `gres/gpu:h100`
    assert tres_number(GPU_BATCH_AVE, "gres/gpuutil") == 100.0 and tres_number(GPU_BATCH_AVE, "gres/gpu") is None
    header = read_text(HEADERS, "sacct_21_fields.txt").splitlines()[0]
    job = ["7", "7", "train", "COMPLETED", "0:0", "01:00:00", "02:00:00", "", "180G", "g1", "gpu", "/w",
           "s", "e", "alice", "16", "14:00:00", "", "1", GPU_ALLOC_TRES, ""]
    batch = ["7.batch", "7.batch", "batch", "COMPLETED", "0:0", "01:00:00", "", "10372780K", "", "g1", "", "",
             "s", "e", "", "16", "14:00:00", "1", "1", "cpu=16,gres/gpu=1,mem=180G,node=1", GPU_BATCH_AVE]
    extern = ["7.extern", *batch[1:7], "256K", *batch[8:20], GPU_EXTERN_AVE]
    text = "\n".join([header, *(SACCT_DELIMITER.join(row) for row in (job, batch, extern))]) + "\n"
    (record,) = parse_sacct(text)
    assert (record.alloc_gpus, record.gpu_util) == (1, 100.0)
    assert final_from_accounting(record, now=0.0).efficiency.gpu_percent == 100.0


def test_spread_of_leaves_unknown_values_out():
    assert spread_of([None, None]) is None
    values = spread_of([3.0, None, 1.0, 10.0, 2.0])
    assert values is not None
    assert (values.min, values.median, values.max, values.count) == (1.0, 2.5, 10.0, 4)


# --- advice: one or two lines, only when clear ----------------------------------------------------

@pytest.mark.parametrize(
    "efficiency, used, req_mem, cpus, elapsed, expected",
    [
        (Efficiency(95.0, 3.8, 50.0), int(1.2 * G), "32G", 1, "01:00:00", ["used 1.2G of 32G: 2G would do"]),
        (Efficiency(3.0, 80.0, 50.0), 26 * G, "32G", 16, "01:00:00", ["used 3 % of 16 CPUs"]),
        (Efficiency(3.0, 3.8, 50.0), int(1.2 * G), "32G", 16, "01:00:00",
         ["used 1.2G of 32G: 2G would do", "used 3 % of 16 CPUs"]),
        # less than 1G asked: no memory advice
        (Efficiency(3.0, 40.0, 50.0), 80 * M, "200M", 2, "01:00:00", ["used 3 % of 2 CPUs"]),
        # too short a run to say anything about CPUs
        (Efficiency(3.0, 3.0, 1.0), 30 * M, "1G", 16, "00:00:20", ["used 30M of 1G: 100M would do"]),
        (Efficiency(90.0, 70.0, 50.0), 22 * G, "32G", 16, "01:00:00", []),  # nothing clear to say
        (Efficiency(3.0, None, None), None, "", 1, "01:00:00", []),  # one CPU: nothing to give back
    ],
)
def test_advice(efficiency, used, req_mem, cpus, elapsed, expected):
    assert advice(efficiency, used_mem_bytes=used, req_mem=req_mem, alloc_cpus=cpus, elapsed=elapsed) == expected


def test_no_advice_after_a_failure_and_none_for_a_group():
    failed = FinalRecord(state=JobState.FAILED, exit_code=1, elapsed="01:00:00", total_cpu="00:01:00", alloc_cpus=16,
                         used_mem_bytes=G, req_mem="32G")
    assert failed.efficiency.cpu_percent is not None and failed.advice == []
    timeout = FinalRecord(state=JobState.TIMEOUT, elapsed="01:00:00", time_limit="01:00:00", total_cpu="00:30:00",
                          alloc_cpus=16, used_mem_bytes=G, req_mem="32G")
    assert timeout.advice == ["used 1G of 32G: 2G would do", "used 3 % of 16 CPUs"]


# --- the final message ------------------------------------------------------------------------

def fields_of(message) -> dict:
    return {f.name: f.value for f in message.fields}


def test_final_message_shows_efficiency_of_a_real_job():
    final = final_from_accounting(captured("sacct_19_fields.txt")["887"], now=0.0)
    message = build_message(JobRecord(job_id="887", name="eff-mem", final=final))
    assert fields_of(message)["Efficiency"] == "CPU 1 %, memory 76 %, time 12 %"


def test_final_message_has_no_efficiency_field_when_slurm_gave_nothing():
    message = build_message(JobRecord(job_id="9", final=FinalRecord(state=JobState.CANCELLED, state_text="CANCELLED")))
    assert "Efficiency" not in fields_of(message)


def test_final_message_of_an_array_shows_the_spread_across_tasks():
    records = captured("sacct_19_fields_array.txt")
    tasks = collect_tasks("889", records)
    record = JobRecord(job_id="889", array_spec="0-2", tasks=tasks, final=summarize(tasks, records, now=0.0))
    assert fields_of(build_message(record))["Efficiency"] == (
        "CPU 66–90 % (median 83 %), memory 3–3 % (median 3 %), time 3–13 % (median 8 %)")
    row = report_rows(record)[0]
    assert row["efficiency"]["tasks"] == 3
    assert row["efficiency"]["cpu_percent"] == {"min": 65.8, "median": 82.8, "max": 89.7, "count": 3}
    assert row["efficiency"]["gpu_percent"] is None


def reading(**extra) -> Reading:
    return Reading(done=extra.pop("done", 30.0), total=100.0, unit="it", source=Source.TQDM, **extra)


@pytest.mark.parametrize(
    "state, live, expected",
    [
        (JobState.TIMEOUT, LiveState(target="5", reading=reading(epoch=5, epochs=7)),
         "Reached 61%, 30/100 it, epoch 5/7."),
        (JobState.FAILED, LiveState(target="5", reading=reading()), "Reached 30%, 30/100 it."),
        (JobState.OUT_OF_MEMORY, LiveState(target="5", reading=None), ""),  # no progress line understood
        (JobState.FAILED, None, ""),
        (JobState.COMPLETED, LiveState(target="5", reading=reading()), ""),  # it got all the way
        (JobState.FAILED, LiveState(target="4", reading=reading()), ""),  # an earlier attempt's progress
    ],
)
def test_how_far_a_failed_or_timed_out_job_got(state, live, expected):
    exit_code = 1 if state is JobState.FAILED else 0
    record = JobRecord(job_id="5", final=FinalRecord(state=state, state_text=state.value, exit_code=exit_code),
                       live=live)
    assert progress_reached(record) == expected
    description = build_message(record).description
    assert (expected in description) if expected else "Reached" not in description


# --- report --json and history --json ---------------------------------------------------------

def test_report_and_history_json_carry_the_efficiency():
    final = final_from_accounting(captured("sacct_19_fields.txt")["885"], now=0.0)
    record = JobRecord(job_id="885", name="eff-cpu", final=final)
    expected = {"cpu_percent": 98.7, "memory_percent": 1.4, "time_percent": 16.7, "gpu_percent": None}
    report = json.loads(render(report_rows(record), ["job_id"], "json"))
    assert report["rows"][0]["efficiency"] == expected
    assert history_row(history_summary(record))["efficiency"] == expected


def test_a_job_still_running_has_no_efficiency_yet():
    record = JobRecord(job_id="7")
    assert report_rows(record)[0]["efficiency"] is None
    assert history_row(history_summary(record))["efficiency"] is None


def test_each_attempt_of_a_chain_keeps_its_own_efficiency(story_store, patterns):
    chained(story_store)
    slurm = PerJobSlurm({
        JOB: sacct_row(JOB, "OUT_OF_MEMORY", "0:125", req_mem="100M", max_rss="100M", elapsed="00:02:00",
                       time_limit="00:10:00", total_cpu="00:01:00"),
        "500": sacct_row("500", "COMPLETED", req_mem="200M", max_rss="50M", elapsed="00:05:00",
                         time_limit="00:10:00", total_cpu="00:04:30"),
    })
    chain_story(story_store, patterns, slurm, resubmit=lambda *args: ("500", "", "")).run()
    record = story_store.load(JOB)
    first, second = (a.efficiency for a in record.chain.attempts)
    assert first == Efficiency(cpu_percent=50.0, memory_percent=100.0, time_percent=20.0)
    assert second == Efficiency(cpu_percent=90.0, memory_percent=25.0, time_percent=50.0)
    rows = report_rows(record)
    assert [row["efficiency"]["cpu_percent"] for row in rows] == [50.0, 90.0]
    assert history_row(history_summary(record))["efficiency"]["memory_percent"] == 25.0  # the chain's last job


def test_final_message_adds_the_advice_under_the_values():
    final = FinalRecord(state=JobState.COMPLETED, state_text="COMPLETED", elapsed="02:00:00", time_limit="04:00:00",
                        total_cpu="00:57:36", alloc_cpus=16, used_mem_bytes=int(1.2 * G), req_mem="32G")
    value = fields_of(build_message(JobRecord(job_id="8", final=final)))["Efficiency"]
    assert value.splitlines() == ["CPU 3 %, memory 4 %, time 50 %", "used 1.2G of 32G: 2G would do",
                                  "used 3 % of 16 CPUs"]
