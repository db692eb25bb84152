"""core.progress.parsers on lines captured from real jobs.

Every line below is copied from the public thread or file its comment names; longer samples live in
tests/fixtures/progress (README.md there says where each comes from). The few lines built from a
framework's own format string rather than captured say so.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.progress import parsers
from core.progress.parsers import announces_pause, latest, parse_duration, parse_line
from core.progress.reading import EPOCH, Reading, Source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "progress"


def fixture_lines(name: str) -> List[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


def syslog_decoded(line: str) -> str:
    """rsyslog writes control characters as '#' and three octal digits: #015 is \\r, #033 is ESC."""
    return line.replace("#015", "\r").replace("#033", "\x1b")


def has(reading: Optional[Reading], **expected: Any) -> bool:
    assert reading is not None
    actual = {name: getattr(reading, name) for name in expected}
    assert actual == expected
    return True


# -- one line, one reading ------------------------------------------------------------------
CASES = [
    # --- tqdm ---
    # CompRhys/roost#19 (https://github.com/CompRhys/roost/pull/19): a Slurm log, seconds per iteration
    pytest.param("  3%|▎         | 1/32 [00:02<01:31,  2.95s/it]",
                 dict(done=1, total=32, unit="it", source=Source.TQDM, remaining=91), id="tqdm-s/it"),
    # ...and a bar without a total
    pytest.param("Reading file data/datasets/bandgap/mp+pettifor-bandgap.json.gz: 0it [00:00, ?it/s]",
                 dict(done=0, total=None, unit="it", source=Source.TQDM, remaining=None), id="tqdm-no-total"),
    # wandb/wandb#1265 (https://github.com/wandb/wandb/issues/1265)
    pytest.param(" 32%|███▏      | 228/715 [03:43<04:21,  1.86it/s]",
                 dict(done=228, total=715, unit="it", remaining=261), id="tqdm-it/s"),
    # nteract/papermill#765 (https://github.com/nteract/papermill/issues/765)
    pytest.param(" 20%|██▍         | 1/5 [00:00<00:00,  9.99it/s]", dict(done=1, total=5, remaining=0),
                 id="tqdm-short"),
    # pytorch/tutorials#1204 (https://github.com/pytorch/tutorials/pull/1204): no percentage, no bar
    pytest.param("1498/1498 [23:08<00:00, 1.08it/s]", dict(done=1498, total=1498, remaining=0), id="tqdm-bare"),
    # huggingface/transformers#14531 (https://github.com/huggingface/transformers/issues/14531): hours,
    # and a DeepSpeed line glued after the bar (the bar, which has a total, is read)
    pytest.param("  8%|█████████████                                                                       "
                 "| 1999/24128 [1:52:09<20:27:23,  3.33s/it][2021-11-26 03:07:16,494] [INFO] [logging.py:69:log_dist]"
                 " [Rank 0] step=2000, skipped=1995, lr=[0.001, 0.001], mom=[0.0, 0.0]",
                 dict(done=1999, total=24128, unit="it", source=Source.TQDM, remaining=20 * 3600 + 27 * 60 + 23),
                 id="tqdm-hours"),
    # huggingface/transformers#36076 (https://github.com/huggingface/transformers/issues/36076): the bar's
    # closing bracket lost to the log line printed after it
    pytest.param("  1%|▉                                         | 40/4500 [07:21<4:45:21,  3.84s/it"
                 "[INFO|trainer.py:3850]",
                 dict(done=40, total=4500, unit="it", remaining=4 * 3600 + 45 * 60 + 21), id="tqdm-cut"),
    # pytorch/vision#8556 (https://github.com/pytorch/vision/pull/8556): unit-scaled bytes
    pytest.param("  3%|███▏                                                                  | 5.54M/169M "
                 "[00:03<00:47, 3.47MB/s]", dict(done=5.54e6, total=169e6, unit="B", remaining=47), id="tqdm-bytes"),
    # tqdm/tqdm README.rst (https://github.com/tqdm/tqdm/blob/master/README.rst), `tqdm --bytes --total`
    pytest.param(" 32%|██████████▍                      | 8.89G/27.9G [00:42<01:31, 223MB/s]",
                 dict(done=8.89e9, total=27.9e9, unit="B", remaining=91), id="tqdm-gigabytes"),
    # ...`tqdm --unit_scale` and `tqdm --bytes` without a total
    pytest.param("10.0Mit [00:02, 3.58Mit/s]", dict(done=10e6, total=None, unit="it"), id="tqdm-scaled-no-total"),
    pytest.param("75.2MB [00:00, 217MB/s]", dict(done=75.2e6, total=None, unit="B"), id="tqdm-bytes-no-total"),
    pytest.param("857366it [00:03, 246471.31it/s]", dict(done=857366, total=None, unit="it"), id="tqdm-count"),
    # ...an older README: `--unit loc --unit_scale` ("K"), and `--unit files`
    pytest.param("100%|███████████████████████████████████| 857K/857K [00:04<00:00, 246Kloc/s]",
                 dict(done=857e3, total=857e3, unit="loc"), id="tqdm-kilo"),
    pytest.param("100%|███████████████████████████████▉| 8014/8014 [01:37<00:00, 82.29files/s]",
                 dict(done=8014, total=8014, unit="files"), id="tqdm-unit"),
    # neuralmagic/sparsezoo#149 (https://github.com/neuralmagic/sparsezoo/pull/149), before and after
    pytest.param("downloading...: 100%|█████████████████████████████████| 29120126/29120126 [00:00<00:00, "
                 "67847687.64it/s]", dict(done=29120126, total=29120126, unit="it"), id="tqdm-desc"),
    pytest.param("downloading...: 100%|██████████████████████████████████████████████| 27.8M/27.8M "
                 "[00:00<00:00, 60.6MB/s]", dict(done=27.8e6, total=27.8e6, unit="B"), id="tqdm-desc-bytes"),

    # --- PyTorch Lightning (tqdm): "Epoch N:" counts from 0 ---
    # Lightning-AI/pytorch-lightning#4225 (https://github.com/Lightning-AI/pytorch-lightning/issues/4225)
    pytest.param("Epoch 0:  22%|██▏       | 4/18 [00:17<01:02,  4.47s/it, loss=10.072, v_num=193315]",
                 dict(done=4, total=18, source=Source.LIGHTNING, epoch=1, epochs=None, remaining=62), id="lightning"),
    # Lightning-AI/pytorch-lightning#675 (https://github.com/Lightning-AI/pytorch-lightning/issues/675)
    pytest.param("Epoch 32: 100%|██████████| 331/331 [00:05<00:00, 88.73batch/s, batch_idx=17, loss=1.148, "
                 "train_batch_loss=1.02, v_num=0, val_loss=1.05]",
                 dict(done=331, total=331, unit="batch", source=Source.LIGHTNING, epoch=33), id="lightning-batch"),
    # ecmwf/anemoi-core#614 (https://github.com/ecmwf/anemoi-core/issues/614): 125 hours remaining
    pytest.param("Epoch 0:   2%|▏         | 3744/150000 [3:12:36<125:24:04,  0.32it/s, v_num=35a4, ...]",
                 dict(done=3744, total=150000, epoch=1, remaining=125 * 3600 + 24 * 60 + 4), id="lightning-hours"),
    # official-stockfish/nnue-pytorch#83 (https://github.com/official-stockfish/nnue-pytorch/issues/83)
    pytest.param("Epoch 1:  39%|█████████▍              | 4846/12331 [05:59<09:15, 13.47it/s, loss=0.0136, v_num=1]",
                 dict(done=4846, total=12331, epoch=2, source=Source.LIGHTNING), id="lightning-epoch1"),
    # Lightning-AI/pytorch-lightning#3866 (https://github.com/Lightning-AI/pytorch-lightning/issues/3866):
    # the bar without its bar (ncols=0)
    pytest.param("Epoch 0:  93% 1586/1702 [12:50<00:56,  2.06it/s, loss=0.158, v_num=0, train_loss=0.149]",
                 dict(done=1586, total=1702, epoch=1, remaining=56), id="lightning-ncols0"),

    # --- PyTorch Lightning (Rich) ---
    # Lightning-AI/pytorch-lightning#12720 (https://github.com/Lightning-AI/pytorch-lightning/issues/12720):
    # an older RichProgressBar in Spyder ("Epoch 4", padded, ASCII bar), elapsed • remaining
    pytest.param("Epoch 4    --------------- ---- 232/291 0:00:33 • 0:00:09 7.00it/s loss: 0.398",
                 dict(done=232, total=291, source=Source.LIGHTNING, epoch=5, epochs=None, remaining=9),
                 id="rich-old"),
    # Built from Lightning's own format, not captured: `_get_train_description` prints
    # f"Epoch {current_epoch}/{max_epochs - 1}" and CustomTimeColumn str(timedelta) (src/lightning/pytorch/
    # callbacks/progress/rich_progress.py in Lightning-AI/pytorch-lightning), numbers from issue 10.
    pytest.param("Epoch 0/7  ━━━━━━━━━━━━━━━━━━━━━━━━━━━ 2300/20019 0:07:19 • 0:55:30 5.24it/s v_num: 0.000",
                 dict(done=2300, total=20019, epoch=1, epochs=8, remaining=55 * 60 + 30), id="rich"),
    pytest.param("Epoch 3/9  ━━━━━━━━━━━━━━━━━━━━━━━━━━━ 2300/90019 1 day, 2:03:04 • 2 days, 0:00:01 0.03it/s",
                 dict(done=2300, total=90019, epoch=4, epochs=10, remaining=2 * 86400 + 1), id="rich-days"),
    pytest.param("Epoch 3/-2 ━━━━━━━━━━━━━━━━━━━━━━━━━━━ 12/--  0:00:04 • -:--:-- 2.90it/s",
                 dict(done=12, total=None, epoch=4, epochs=None, remaining=None), id="rich-infinite"),

    # --- HuggingFace Trainer ---
    # huggingface/transformers#14531: its dict lines; the epoch is progress only with a total (see latest)
    pytest.param("{'loss': 6.2645, 'learning_rate': 0.001, 'epoch': 0.02}",
                 dict(done=0.02, total=None, unit=EPOCH, source=Source.HUGGINGFACE), id="trainer-dict"),
    # huggingface/transformers#36076: an evaluation dict carries the epoch too
    pytest.param("{'eval_loss': 0.7353992462158203, 'eval_runtime': 132.7399, 'eval_samples_per_second': 80.39, "
                 "'eval_steps_per_second': 10.05, 'epoch': 0.03}", dict(done=0.03, unit=EPOCH), id="trainer-eval-dict"),
    # huggingface/transformers#4946 (https://github.com/huggingface/transformers/pull/4946): the header, after a
    # date that is no count
    pytest.param("06/12/2020 10:05:38 - INFO - transformers.trainer_tf -     Num Epochs = 3",
                 dict(done=0, total=3, unit=EPOCH, source=Source.HUGGINGFACE, epoch=1, epochs=3), id="trainer-header"),

    # --- Keras 2 ---
    # keras-team/keras#8169 (https://github.com/keras-team/keras/pull/8169)
    pytest.param("13184/60000 [=====>........................] - ETA: 3s - loss: 0.0952 - acc: 0.9743",
                 dict(done=13184, total=60000, unit="step", source=Source.KERAS, remaining=3), id="keras2"),
    pytest.param("60000/60000 [==============================] - 5s 87us/step - loss: 0.3437 - acc: 0.8957",
                 dict(done=60000, total=60000, remaining=0), id="keras2-done"),
    pytest.param("  60000/Unknown - 5s 87us/step - loss: 0.3281 - acc: 0.8997 - val_loss: 0.0761",
                 dict(done=60000, total=None, source=Source.KERAS), id="keras2-unknown"),
    # qqwweee/keras-yolo3#299 (https://github.com/qqwweee/keras-yolo3/issues/299): H:MM:SS and M:SS
    pytest.param("  1/110 [..............................] - ETA: 1:02:52 - loss: 6837.2021",
                 dict(done=1, total=110, remaining=3772), id="keras2-hours"),
    pytest.param("  7/110 [..............................] - ETA: 8:47 - loss: 6742.9335 ",
                 dict(done=7, total=110, remaining=527), id="keras2-minutes"),
    # tensorflow/tensorflow#36332 (https://github.com/tensorflow/tensorflow/issues/36332): frames glued
    # together once the carriage returns were lost; the last one counts
    pytest.param(" - ETA: 38s - loss: 0.6116 - accuracy: 0.9248 61/82 [=====================>........] - ETA: 37s "
                 "- loss: 0.6016 - accuracy: 0.9260 62/82 [=====================>........] - ETA: 35s - loss: 0.5919",
                 dict(done=62, total=82, remaining=35), id="keras2-glued"),

    # --- Keras 3 ---
    # keras-team/keras-io examples/vision/md/mnist_moe.md
    pytest.param("   1/469 ━━━━━━━━━━━━━━━━━━━━  8:21 1s/step - accuracy: 0.1406 - loss: 0.1000 - moe_loss: 3.8421",
                 dict(done=1, total=469, unit="step", source=Source.KERAS, remaining=501), id="keras3"),
    pytest.param("   4/469 ━━━━━━━━━━━━━━━━━━━━  8s 17ms/step - accuracy: 0.1637 - loss: 0.1000 - moe_loss: 11.5298",
                 dict(done=4, total=469, remaining=8), id="keras3-seconds"),
    # Keras 3 colours its counts and bar (keras/src/utils/progbar.py in keras-team/keras); the same frame raw
    pytest.param("\x1b[1m   4/469\x1b[0m \x1b[32m\x1b[0m\x1b[37m━━━━━━━━━━━━━━━━━━━━\x1b[0m \x1b[1m8s\x1b[0m 17ms/step"
                 " - accuracy: 0.1637", dict(done=4, total=469, remaining=8), id="keras3-ansi"),

    # --- Megatron-LM ---
    # epfLLM/Megatron-LLM#11 (https://github.com/epfLLM/Megatron-LLM/issues/11)
    pytest.param(" iteration      182/  250000 | consumed samples:       186368 | elapsed time per iteration (ms): "
                 "126995.3 | learning rate: 1.365E-05 | global batch size:  1024 | lm loss: 2.382640E+00 |",
                 dict(done=182, total=250000, unit="iteration", source=Source.MEGATRON), id="megatron"),

    # --- DeepSpeed: no total ---
    # Xirider/finetune-gpt2xl#9 (https://github.com/Xirider/finetune-gpt2xl/issues/9)
    pytest.param("[2021-05-07 19:21:35,769] [INFO] [logging.py:60:log_dist] [Rank 0] step=0, skipped=0, lr=[5e-06], "
                 "mom=[[0.9, 0.999]]", dict(done=0, total=None, unit="step", source=Source.DEEPSPEED), id="deepspeed"),

    # --- generic counters ---
    # pytorch/tutorials#1204: the PyTorch MNIST example's "Train Epoch: N [done/total (pct)]"
    pytest.param("Train Epoch: 1 [2560/84843 (3%)]\tLoss: 3.397839",
                 dict(done=2560, total=84843, source=Source.GENERIC, epoch=1, epochs=None), id="generic-mnist"),
    # tensorflow/tensorflow#73457 (https://github.com/tensorflow/tensorflow/issues/73457): epoch and step
    pytest.param("epoch 1/50 - it 6/100 - loss: 2.473 - acc: 0.305",
                 dict(done=6, total=100, unit="it", epoch=1, epochs=50), id="generic-epoch-and-step"),
    # dk-liang/CLTR#15 (https://github.com/dk-liang/CLTR/issues/15): an epoch counter on its own
    pytest.param("2023-06-23 17:01:31,824 - CLTR - INFO - Training Epoch:[541/1500]\t loss=10.21882\t lr=0.000100",
                 dict(done=540, total=1500, unit=EPOCH, epoch=541, epochs=1500), id="generic-epoch"),
    # MrCogito/Deep_learning_2023 outputs/WorkingSetup/Markdown/WorkingSetup_3.md (an HPC job's output)
    pytest.param("Epoch [1/650], Train Loss: 0.0311, Train L1 Loss: 0.8707",
                 dict(done=0, total=650, unit=EPOCH, epoch=1, epochs=650), id="generic-epoch-brackets"),
    # keras-team/keras#8169: Keras' own "Epoch N/M" line
    pytest.param("Epoch 3/12", dict(done=2, total=12, unit=EPOCH, epoch=3, epochs=12), id="generic-keras-epoch"),
    # tensorflow/tensor2tensor#1761 (https://github.com/tensorflow/tensor2tensor/issues/1761): "[N/M]"
    pytest.param("INFO:tensorflow:Evaluation [40/100]", dict(done=40, total=100, unit="it"), id="generic-bracket"),
]


@pytest.mark.parametrize("line, expected", CASES)
def test_parse_line(line: str, expected: Dict[str, Any]) -> None:
    assert has(parse_line(line), **expected)


@pytest.mark.parametrize("line", [
    # huggingface/transformers#4946: dates and a step count that is no progress
    "06/12/2020 10:05:38 - INFO - transformers.trainer_tf -   ***** Running training *****",
    "06/12/2020 10:05:38 - INFO - transformers.trainer_tf -     Total optimization steps = 29",
    # huggingface/transformers#14531: DeepSpeed's timer: "0/2000" is no bar
    "[2021-11-26 03:07:16,494] [INFO] [timer.py:181:stop] 0/2000, SamplesPerSec=9.526738918021234",
    # Lightning-AI/pytorch-lightning#675: checkpoint line, 0-padded epoch, no count
    "Epoch 00031: val_loss reached 1.04545 (best 1.04545), saving model to "
    "/dummy/version_0/checkpoints/_ckpt_epoch_31.ckpt",
    # CompRhys/roost#19
    "Time: Fri 18 Jun 06:46:24 BST 2021",
    "Nodes allocated: num_tasks=1, num_nodes=1",
    # Megatron-LLM#11's metrics without the iteration
    "| lm loss: 2.382640E+00 | loss scale: 1.0 | grad norm: 0.227 | number of skipped iterations:   0 |",
    # tests/fixtures/logs/clean_training_run.log (this repository)
    "Training finished: exit code 0",
    # made up to pin the guards: dates, ratios, paths, a total below the count
    "2024/05/01 12:00:00 step 2024/05/01 loss 0.5/1.0",
    "checkpoint saved to /scratch/run/step/100/200/model.pt",
    "Epoch 11/10",
    "step 300/100",
    "",
    "   ",
])
def test_no_reading_from_lines_that_show_no_progress(line: str) -> None:
    assert parse_line(line) is None


def test_lightning_validation_bars_are_not_training_progress() -> None:
    # aws-samples/sagemaker-distributed-training-workshop#6: validation bars (below the training bar,
    # so tqdm ends their frames with cursor-up) and Lightning's "Validation" descriptions
    lines = [syslog_decoded(line) for line in fixture_lines("lightning_tqdm_sagemaker_syslog.txt")]
    assert [parse_line(lines[i]) for i in (2, 4, 5, 7)] == [None] * 4
    assert parse_line("Validation DataLoader 0: 100% 1/1 [00:00<00:00, 1113.73it/s]") is None
    assert parse_line("Sanity Checking DataLoader 0: 100%|██████████| 2/2 [00:00<00:00, 12.5it/s]") is None
    assert has(parse_line(lines[0]), done=1, total=2, epoch=1, source=Source.LIGHTNING)
    assert has(parse_line(lines[13]), done=0, total=2, epoch=2)  # the newest of the two frames


def test_a_frame_past_the_window_is_read_at_both_ends() -> None:
    metrics = " - ".join(f"metric_{i}: 0.{i:04d}" for i in range(600))  # ~12 000 characters
    assert has(parse_line("  12/469 ━━━━━━━━━━━━━━━━━━━━  7s 17ms/step - " + metrics), done=12, total=469)
    assert has(parse_line(metrics + " step 30/100"), done=30, total=100)


# -- durations and fractions ----------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [
    ("01:31", 91), ("4:45:21", 17121), ("125:24:04", 451444), ("1 day, 2:03:04", 93784),
    ("2 days, 0:00:01", 172801), ("91s", 91), ("8:21", 501), ("?", None), ("-:--:--", None), ("", None),
])
def test_parse_duration(text: str, seconds: Optional[float]) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("reading, fraction", [
    (Reading(450, 1000, "it", Source.TQDM), 0.45),
    (Reading(450, 1000, "it", Source.TQDM, epoch=3, epochs=10), 0.245),
    (Reading(450, 1000, "it", Source.LIGHTNING, epoch=4), 0.45),  # epochs unknown: this epoch's bar
    (Reading(2, 10, EPOCH, Source.GENERIC, epoch=3, epochs=10), 0.2),
    (Reading(0.5, 3, EPOCH, Source.HUGGINGFACE, epoch=1, epochs=3), 0.5 / 3),
    (Reading(0.5, None, EPOCH, Source.HUGGINGFACE), None),
    (Reading(12, None, "step", Source.DEEPSPEED), None),
    (Reading(12, None, "step", Source.KERAS, epoch=3, epochs=10), 0.2),  # "123/Unknown" inside epoch 3 of 10
    (Reading(1001, 1000, "it", Source.TQDM), 1.0),
    (Reading(5, 0, "it", Source.CUSTOM), None),
    (Reading(5, 10, "it", Source.CUSTOM, epoch=12, epochs=10), 0.5),  # an epoch past the total is ignored
])
def test_fraction(reading: Reading, fraction: Optional[float]) -> None:
    assert reading.fraction == pytest.approx(fraction) if fraction is not None else reading.fraction is None


# -- many lines: the newest reading, combined with an epoch counter --------------------------
def test_keras3_steps_inside_the_epoch_counter() -> None:
    lines = fixture_lines("keras3_mnist_moe.txt")  # keras-io mnist_moe.md: "Epoch 1/20", then frames
    reading = latest(lines)
    assert has(reading, done=28, total=469, source=Source.KERAS, epoch=1, epochs=20)
    assert reading is not None and reading.fraction == pytest.approx((28 / 469) / 20)
    # the next poll reads only frames: the epoch comes from what the last poll returned
    assert has(latest(lines[-2:], context=reading), done=28, epoch=1, epochs=20)
    # or from the counter itself, when the last poll saw only "Epoch 2/20"
    counter = latest(["Epoch 2/20"])
    assert has(counter, done=1, total=20, unit=EPOCH, epoch=2, epochs=20)
    assert has(latest(lines[1:3], context=counter), done=4, epoch=2, epochs=20)
    # a bar that restarted (a new epoch whose counter was not seen) does not inherit the old epoch
    assert has(latest(lines[1:2], context=reading), done=1, epoch=None)


def test_keras2_in_a_slurm_log_with_backspaces() -> None:
    # keras-team/keras#7523: one physical line once the paste's wrapping is undone (see test_lines)
    text = (FIXTURES / "keras2_slurm_caret.txt").read_text().replace("\n", "")
    physical = text.replace("^H", "\b").replace("^M", "\r")
    assert has(parse_line(physical), done=1105, total=2808, source=Source.KERAS, remaining=84)
    assert has(latest(["Epoch 4/30", physical]), done=1105, epoch=4, epochs=30)  # counter added for the test


def test_keras_progbar_in_a_docker_log() -> None:
    # sql-machine-learning/elasticdl#328: the bytes of two writes, backspaces and carriage returns
    physical = "".join(json.loads(line)["stream"] for line in fixture_lines("keras_progbar_docker.jsonl"))
    assert has(parse_line(physical), done=21987328, total=26421880, remaining=40)


def test_lightning_tqdm_through_mpirun_and_syslog() -> None:
    lines = [syslog_decoded(line) for line in fixture_lines("lightning_tqdm_sagemaker_syslog.txt")]
    # the excerpt ends mid-frame: read as a whole line, the frame is still understood
    assert has(latest(lines), done=1, total=2, epoch=2, source=Source.LIGHTNING)
    # without it, the newest bar is epoch 1 (0-based "Epoch 1") just started; validation bars never win
    assert has(latest(lines[:-1]), done=0, total=2, epoch=2)
    assert has(latest(lines[:9]), done=2, total=2, epoch=1)


def test_trainer_bar_wins_over_its_dict_lines_and_deepspeed() -> None:
    lines = fixture_lines("huggingface_deepspeed_t5.txt")  # transformers#14531
    assert has(latest(lines), done=1999, total=24128, source=Source.TQDM)


def test_trainer_dict_lines_alone_need_the_epoch_count() -> None:
    header = "06/12/2020 10:05:38 - INFO - transformers.trainer_tf -     Num Epochs = 3"  # transformers#4946
    dicts = [line for line in fixture_lines("huggingface_deepspeed_t5.txt") if line.startswith("{")]  # #14531
    reading = latest([header] + dicts)
    assert has(reading, done=0.1, total=3, unit=EPOCH, source=Source.HUGGINGFACE, epoch=1, epochs=3)
    assert reading is not None and reading.fraction == pytest.approx(0.1 / 3)
    assert has(latest(dicts[-1:], context=reading), done=0.1, total=3)  # the count from the last poll
    assert has(latest(dicts), done=0.1, total=None)  # never told how many epochs: no fraction


def test_a_companion_line_does_not_replace_a_bar_with_a_total() -> None:
    bar = parse_line(" 32%|███▏      | 228/715 [03:43<04:21,  1.86it/s]")  # wandb#1265
    deepspeed = "[2021-05-07 19:21:35,769] [INFO] [logging.py:60:log_dist] [Rank 0] step=0, skipped=0, lr=[5e-06]"
    assert latest([deepspeed], context=bar) is None
    assert has(latest([deepspeed]), source=Source.DEEPSPEED)
    assert has(latest([deepspeed], context=parse_line("Reading file x: 0it [00:00, ?it/s]")), source=Source.DEEPSPEED)


def test_megatron_and_trainer_fixtures() -> None:
    assert has(latest(fixture_lines("megatron_iterations.txt")), done=185, total=250000, source=Source.MEGATRON)
    assert has(latest(fixture_lines("huggingface_trainer_eval_save.txt")), done=40, total=4500)


def test_roost_slurm_log_newest_bar_wins() -> None:
    lines = fixture_lines("tqdm_slurm_roost.txt")  # CompRhys/roost#19
    assert has(latest(lines), done=0, total=None)  # its last line: another bar, without a total
    assert has(latest(lines[:-1]), done=4, total=32, remaining=72)


def test_latest_of_nothing() -> None:
    assert latest([]) is None
    assert latest(["no progress here", ""], context=Reading(1, 2, "it", Source.TQDM)) is None


def test_latest_reads_from_the_end_and_stops() -> None:
    read: List[str] = []

    class Counting(str):
        def __contains__(self, item: object) -> bool:
            read.append(str(self))
            return str.__contains__(self, item)  # type: ignore[operator]

    # Megatron counts the whole run: the newest line is the answer, nothing older is read
    megatron = [Counting(f" iteration {i:8d}/    1000 | lm loss: 2.0 |") for i in range(1, 1001)]
    assert has(latest(megatron), done=1000, total=1000)
    assert set(read) == {str(megatron[-1])}
    # a step bar looks back for its epoch counter, over its own older frames, and no further
    read.clear()
    older = [Counting(f"step {i}/50 (epoch one)") for i in range(1, 51)]
    lines = older + [Counting("Epoch 2/5")] + [Counting(f"step {i}/50") for i in range(1, 31)]
    assert has(latest(lines), done=30, total=50, epoch=2, epochs=5)
    assert not set(read) & {str(line) for line in older}


# -- the user's own regexes -----------------------------------------------------------------
def test_custom_patterns_come_first() -> None:
    # armaanpriyadarshan/Training-a-Custom-TensorFlow-2.X-Object-Detector#6
    # (https://github.com/armaanpriyadarshan/Training-a-Custom-TensorFlow-2.X-Object-Detector/issues/6)
    line = "INFO:tensorflow:Step 100 per-step time 0.813s loss=1.396"
    assert parse_line(line) is None
    custom = [re.compile(r"Step (?P<done>\d+) per-step")]
    assert has(parse_line(line, custom), done=100, total=None, source=Source.CUSTOM)
    with_total = [re.compile(r"Step (?P<done>\d+) per-step"), re.compile(r"\[(?P<done>\d+)/(?P<total>\d+)\]")]
    # dk-liang/CLTR#15: the user's pattern wins over the generic epoch counter
    cltr = "2023-06-23 17:01:31,824 - CLTR - INFO - Training Epoch:[541/1500]\t loss=10.21882"
    assert has(parse_line(cltr, with_total), done=541, total=1500, source=Source.CUSTOM, unit="it")
    # a match that is no count falls through to the built-in parsers
    assert has(parse_line(cltr, [re.compile(r"Epoch:\[(?P<total>\d+)/(?P<done>\d+)\]")]), source=Source.GENERIC)
    assert has(parse_line("epoch 3 of 7: 12/40", [re.compile(
        r"epoch (?P<epoch>\d+) of (?P<epochs>\d+): (?P<done>\d+)/(?P<total>\d+)")]), epoch=3, epochs=7, done=12)


# -- pauses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("line", [
    # huggingface/transformers#36076
    "2025-02-07 15:29:09,695 >> Saving model checkpoint to data/tmp-checkpoint-pe8ry7n_",
    "***** Running Evaluation *****",
    # Lightning-AI/pytorch-lightning#2667 (https://github.com/Lightning-AI/pytorch-lightning/issues/2667)
    "Epoch 00000: val_loss reached 0.67374 (best 0.67374), saving model to ../checkpoints/epoch=0.ckpt as top 1",
    # aws-samples/sagemaker-distributed-training-workshop#6
    "[1,mpirank:0,algo-1]<stdout>:\rValidation: 0it [00:00, ?it/s]\x1b[A",
    "Validation DataLoader 0:   0% 0/1 [00:00<?, ?it/s]",
    # google-research/bert#296 (https://github.com/google-research/bert/issues/296)
    "INFO:tensorflow:Saving checkpoints for 0 into output/model.ckpt.",
    # Built from format strings, not captured: Megatron-LM's checkpointing.py and DeepSpeed's engine
    "saving checkpoint at iteration     500 to /checkpoints/gpt",
    "[2024-01-01 00:00:00,000] [INFO] [logging.py:96:log_dist] [Torch] Checkpoint global_step500 is about to be saved!",
    "Sanity Checking DataLoader 0: 100%|██████████| 2/2 [00:00<00:00, 12.5it/s]",
])
def test_announces_pause(line: str) -> None:
    assert announces_pause(line)


@pytest.mark.parametrize("line", [
    # MrCogito/Deep_learning_2023 WorkingSetup_3.md: validation numbers after the fact
    "Epoch [1/650], Validation Loss: 0.0104, Validation L1: 0.7376, Smoothed Validation Loss: 0.0104",
    # aws-samples#6: the training bar, with a val_ metric
    "Epoch 0: 100% 2/2 [00:00<00:00, 12.10it/s, loss=2.29, v_num=0, val_acc=0.166]",
    # huggingface/transformers#36076
    "[INFO|configuration_utils.py:420] 2025-02-07 15:29:09,701 >> Configuration saved in "
    "data/tmp-checkpoint-pe8ry7n_/config.json",
    "",
])
def test_does_not_announce_pause(line: str) -> None:
    assert not announces_pause(line)


# -- robustness and cost --------------------------------------------------------------------
NOISE = st.lists(st.sampled_from([
    "Epoch", "epoch", "step", "Step", "iteration", "it", "batch", " ", "/", ":", "[", "]", "(", ")", "|", "%", "<",
    ",", ".", "-", "━", "█", "=", ">", "•", "\r", "\n", "\b", "\x1b[A", "\x1b[32m", "it/s", "s/it", "ETA: ", " - ",
    "'epoch': ", "{'", "Num Epochs = ", "step=", ", skipped=", "Unknown", "0", "1", "7", "12", "999", "1000", "0.5",
    "1:02", "00:10", "1:02:03", "1 day, ", "-:--:--", "?", "k", "M", "G", "B", "ms/step", "Validation", "of",
]), max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), NOISE))
def test_parse_line_never_raises_and_fraction_is_in_range(text: str) -> None:
    reading = parse_line(text)
    if reading is not None:
        assert reading.fraction is None or 0.0 <= reading.fraction <= 1.0
        assert reading.done >= 0 and (reading.total is None or reading.total > 0)
        assert reading.epoch is None or reading.epoch >= 1
    assert isinstance(announces_pause(text), bool)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=80), NOISE), max_size=12),
       st.one_of(st.none(), st.builds(Reading, st.floats(0, 1e6), st.one_of(st.none(), st.floats(1, 1e6)),
                                      st.sampled_from(["it", EPOCH]), st.sampled_from(list(Source)),
                                      st.none(), st.one_of(st.none(), st.integers(1, 50)),
                                      st.one_of(st.none(), st.integers(1, 50)))))
def test_latest_never_raises(lines: List[str], context: Optional[Reading]) -> None:
    reading = latest(lines, context)
    assert reading is None or reading.fraction is None or 0.0 <= reading.fraction <= 1.0


@pytest.mark.parametrize("fill", ["█", "=", "━", "1/", "[1/", "1", " ", "\b", "\r", "Epoch ", "0it [",
                                  "step=1, skipped=", " \r", "1/2 [00:00<00:01, "])
def test_a_megabyte_line_costs_little(fill: str) -> None:
    line = fill * (1_000_000 // len(fill))
    started = time.perf_counter()
    parse_line(line)
    announces_pause(line)
    latest([line, line])
    assert time.perf_counter() - started < 2.0  # generous: the window keeps it to milliseconds


def _repeats(pattern: str) -> List[Any]:
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]  # Python 3.11+
    except ImportError:  # pragma: no cover - Python < 3.11
        import sre_parse  # type: ignore[no-redef]
    return list(sre_parse.parse(pattern))


def _nested_unbounded(items: Any, inside: bool = False) -> bool:
    try:
        from re import _constants as sre_constants  # type: ignore[attr-defined]  # Python 3.11+
    except ImportError:  # pragma: no cover - Python < 3.11
        import sre_constants  # type: ignore[no-redef]
    for op, value in items:
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, high, sub = value
            unbounded = high == sre_constants.MAXREPEAT
            if unbounded and inside:
                return True
            if _nested_unbounded(sub, inside or unbounded):
                return True
        elif op == sre_constants.SUBPATTERN:
            if _nested_unbounded(value[-1], inside):
                return True
        elif op == sre_constants.BRANCH:
            if any(_nested_unbounded(branch, inside) for branch in value[1]):
                return True
    return False


def test_no_regex_nests_unbounded_repetitions() -> None:
    compiled = [value for value in vars(parsers).values() if isinstance(value, re.Pattern)]
    assert len(compiled) >= 10
    for pattern in compiled:
        assert not _nested_unbounded(_repeats(pattern.pattern)), pattern.pattern
