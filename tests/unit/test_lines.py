"""core.analysis.lines: prefixes, backspaces and carriage-return frames, on output captured from real jobs
(tests/fixtures/progress/README.md says where each sample comes from)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.analysis.lines import (
    apply_backspaces,
    clean_frame,
    clean_line,
    frames,
    last_complete_frame,
    last_frames,
    strip_prefixes,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "progress"


def syslog_decoded(line: str) -> str:
    """rsyslog writes control characters as '#' and three octal digits: #015 is \\r, #033 is ESC."""
    return line.replace("#015", "\r").replace("#033", "\x1b")


def caret_decoded(text: str) -> str:
    """`cat -v` notation back to bytes: ^H is a backspace, ^M a carriage return."""
    return text.replace("^H", "\b").replace("^M", "\r")


# -- prefixes -------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("[rank3]: Epoch 3/10", "Epoch 3/10"),  # torchrun
    ("[default0]:  45%|████▌     | 450/1000", "45%|████▌     | 450/1000"),  # torchrun (elastic agent)
    ("3: step 30/100", "step 30/100"),  # srun --label
    ("host12: Epoch 3/10", "Epoch 3/10"),  # pdsh-style host tags
    ("[1,0]<stderr>:Epoch 1/20", "Epoch 1/20"),  # mpirun --tag-output
    # DeepSpeed's logger, from deepspeedai/DeepSpeed via Xirider/finetune-gpt2xl#9
    # (https://github.com/Xirider/finetune-gpt2xl/issues/9): the timestamp goes, the level stays
    ("[2021-05-07 19:21:35,769] [INFO] [logging.py:60:log_dist] [Rank 0] step=0, skipped=0",
     "[INFO] [logging.py:60:log_dist] [Rank 0] step=0, skipped=0"),
    ("Epoch 3: 45%", "Epoch 3: 45%"),  # a description, not a host: no digit in the tag
    ("  0%|          | 0/32 [00:00<?, ?it/s]", "0%|          | 0/32 [00:00<?, ?it/s]"),
])
def test_strip_prefixes(raw, expected):
    assert strip_prefixes(raw.strip()) == expected


def test_clean_line_is_the_analyzers():
    from core.analysis import analyzer
    assert analyzer.clean_line is clean_line


# -- backspaces -----------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("abc\b\bX", "aX"),
    ("abc\b\b", "abc"),  # a trailing run prepares the next frame: what is shown stays
    ("\b\bab", "ab"),
    ("ab\b\b\b\bcd", "cd"),
    ("no backspace", "no backspace"),
    ("", ""),
])
def test_apply_backspaces(raw, expected):
    assert apply_backspaces(raw) == expected


def test_keras_in_a_docker_log_erases_its_frame_with_backspaces():
    # sql-machine-learning/elasticdl#328 (https://github.com/sql-machine-learning/elasticdl/issues/328):
    # each JSON record is one write of keras' Progbar: backspaces over the old frame, \r, the new one.
    records = [json.loads(line)["stream"] for line in (FIXTURES / "keras_progbar_docker.jsonl").read_text().split("\n")
               if line]
    physical = "".join(records)
    assert clean_frame(last_frames(physical, 1)[0]) == "21987328/26421880 [=======================>......] - ETA: 40s"
    # the end of a file still being written: the newest frame may be cut, the one before is whole
    assert clean_frame(last_complete_frame(physical, terminated=False)) == (
        "21970944/26421880 [=======================>......] - ETA: 40s")
    # an old Keras wrote backspaces without a carriage return: they erase the previous frame
    assert apply_backspaces(records[0].split("\r")[1] + records[1].replace("\r", "")) == (
        "21987328/26421880 [=======================>......] - ETA: 40s")


def test_keras2_slurm_output_with_backspaces_and_carriage_returns():
    # keras-team/keras#7523 (https://github.com/keras-team/keras/issues/7523), shown with `cat -v`
    # and wrapped by the paste every 116 columns: one physical line once joined and decoded.
    physical = caret_decoded((FIXTURES / "keras2_slurm_caret.txt").read_text().replace("\n", ""))
    shown = [clean_frame(frame) for frame in frames(physical)]
    assert shown == [  # the run of backspaces before the first frame is no frame
        "975/2808 [=========>....................] - ETA: 91s - loss: 5.3113 - dense_1_loss: 1.4563",
        "1040/2808 [==========>...................] - ETA: 88s - l",
        "1105/2808 [==========>...................] - ETA: 84s - loss: 5.3184 - dense_1_loss: 1.4460 - "
        "dense_2_loss: 3.8725 - d",
    ]
    assert clean_frame(last_complete_frame(physical, terminated=True)) == shown[-1]
    assert clean_frame(last_complete_frame(physical, terminated=False)) == shown[-2]


# -- carriage-return frames -----------------------------------------------------------------
def test_frames_of_lightning_bars_through_mpirun_and_syslog():
    # aws-samples/sagemaker-distributed-training-workshop#6
    # (https://github.com/aws-samples/sagemaker-distributed-training-workshop/issues/6)
    sample = (FIXTURES / "lightning_tqdm_sagemaker_syslog.txt").read_text()
    lines = [syslog_decoded(line) for line in sample.split("\n")]
    two_bars = lines[13]
    assert [clean_frame(frame) for frame in frames(two_bars)] == [
        "[1,mpirank:0,algo-1]<stdout>:",
        "Epoch 0:   0% 0/2 [00:00<?, ?it/s, loss=2.29, v_num=0, val_acc=0.166]",
        "Epoch 1:   0% 0/2 [00:00<?, ?it/s, loss=2.29, v_num=0, val_acc=0.166]",
    ]
    assert [clean_frame(frame) for frame in last_frames(two_bars, 2)] == [
        "Epoch 1:   0% 0/2 [00:00<?, ?it/s, loss=2.29, v_num=0, val_acc=0.166]",
        "Epoch 0:   0% 0/2 [00:00<?, ?it/s, loss=2.29, v_num=0, val_acc=0.166]",
    ]
    cleared = lines[11]  # the validation bar clearing itself: blanks, then cursor up
    assert clean_frame(last_frames(cleared, 1)[0]) == ""
    # the excerpt ends mid-frame, like a log still being written: nothing after the last \r is whole
    assert last_complete_frame(lines[-1], terminated=False) == "[1,mpirank:0,algo-1]<stdout>:"
    assert last_complete_frame(lines[-1], terminated=True).startswith("Epoch 1:  50% 1/2")


@pytest.mark.parametrize("physical, terminated, expected", [
    ("a\rb\rc\n", True, "c"),
    ("a\rb\r   \r\n", True, "b"),  # a bar that cleared itself (leave=False) shows the frame before
    ("a\rb\rc\r\n", True, "c"),  # CRLF
    ("a\rb\rc", False, "b"),  # "c" may still be being written
    ("a\rb\r", False, "b"),  # frames written as "frame\r" (print(end="\r"))
    ("abc", False, ""),  # no carriage return yet: nothing known whole
    ("abc\n", True, "abc"),
    ("", True, ""),
    ("\r\r\r", True, ""),
])
def test_last_complete_frame(physical, terminated, expected):
    assert last_complete_frame(physical, terminated) == expected


def test_last_frames_reads_only_the_end_of_a_huge_line():
    frame = "\r 45%|████▌     | 450/1000 [01:02<01:16,  7.20it/s]"
    physical = frame * 200_000 + "\r 46%|████▌     | 460/1000 [01:03<01:15,  7.20it/s]"  # ~10 MB
    started = time.perf_counter()
    for _ in range(100):
        newest = last_frames(physical, 2)
    assert time.perf_counter() - started < 1.0  # splitting the line 100 times would take far longer
    assert [clean_frame(f) for f in newest] == ["46%|████▌     | 460/1000 [01:03<01:15,  7.20it/s]",
                                                "45%|████▌     | 450/1000 [01:02<01:16,  7.20it/s]"]


def test_clean_frame_drops_escapes_and_keeps_the_text():
    # Keras 3's Progbar colours its counts and bar (keras-team/keras, keras/src/utils/progbar.py)
    raw = "\x1b[1m188/655\x1b[0m \x1b[32m━━━━━\x1b[0m\x1b[37m━━━━━━━━━━━━━━━\x1b[0m \x1b[1m1:31:46\x1b[0m 12s/step"
    assert clean_frame(raw) == "188/655 ━━━━━━━━━━━━━━━━━━━━ 1:31:46 12s/step"
