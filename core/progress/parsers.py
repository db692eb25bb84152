"""How far a job is, read from its own log lines: tqdm, Lightning, the HuggingFace Trainer, Keras,
Megatron, DeepSpeed, generic counters ("step 30/100", "Epoch 3/10", "[30/100]") and the user's
own regexes.

Pure: imports only `re`, `dataclasses`, `typing`, `enum` and the line cleaning of
core.analysis.lines. Every format is tested on lines captured from real jobs
(tests/unit/test_progress_parsers.py says where each comes from).

Cost: a frame is read at most `WINDOW_CHARS` from each end, every parser first checks for a
substring its format cannot do without, and no regex nests unbounded repetitions, so a 1 MB line
of bar characters costs what a short line costs.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable, Optional, Sequence, Tuple

from core.analysis.lines import CURSOR_UP, clean_frame, last_frames, strip_prefixes
from core.progress.reading import EPOCH, Reading, Source

#: Only this many characters at each end of a frame are read (a 1 MB frame is a broken bar).
WINDOW_CHARS = 4096
#: A count may run past its total by this fraction (scaled counts round: "1.00k/999").
OVERSHOOT = 0.01
# -- durations ------------------------------------------------------------------------------
# "MM:SS", "H:MM:SS" (tqdm, Keras; hours unbounded: "125:24:04"), "1 day, 2:03:04" (Lightning's
# Rich bar prints timedelta), "91s" (Keras).
_CLOCK = re.compile(r"(?:(\d+) days?, )?(\d+):(\d\d)(?::(\d\d))?\Z")
_SECONDS = re.compile(r"(\d+)s\Z")


def parse_duration(text: str) -> Optional[float]:
    """Seconds in a duration as progress bars print it, or None ("?", "-:--:--", anything else)."""
    text = text.strip()
    match = _CLOCK.match(text)
    if match:
        days, first, second, third = match.groups()
        if third is None:  # M:SS
            seconds = int(first) * 60 + int(second)
        else:  # H:MM:SS
            seconds = int(first) * 3600 + int(second) * 60 + int(third)
        return float(seconds + int(days or 0) * 86400)
    match = _SECONDS.match(text)
    return float(match.group(1)) if match else None


# -- helpers --------------------------------------------------------------------------------
_SCALE = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "Z": 1e21,
          "Y": 1e24}
_RATE = re.compile(r"(?:\d+(?:\.\d+)?|\?)(?P<unit>[A-Za-z]{0,20}/[A-Za-z]{1,20})")


def _last(pattern: re.Pattern[str], text: str) -> Optional[re.Match[str]]:
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def _counts(done: float, total: Optional[float]) -> bool:
    """A believable count: not negative, a positive total, done not (much) past it."""
    if done < 0:
        return False
    return total is None or (total > 0 and done <= total * (1 + OVERSHOOT))


def _rate_unit(rate: Optional[str], scaled: bool) -> str:
    """The unit in a tqdm rate: "4.47s/it" and "88.73batch/s" say "it" and "batch"; "60.6MB/s" scaled says "B"."""
    if not rate:
        return "it"
    match = _RATE.match(rate)
    if match is None:
        return "it"
    unit = match.group("unit")
    if unit.startswith("s/"):
        unit = unit[2:]
    elif unit.endswith("/s"):
        unit = unit[:-2]
    else:
        return "it"
    if scaled and len(unit) > 1 and unit[0] in _SCALE:
        unit = unit[1:]
    return unit or "it"


def _description(text: str, start: int) -> str:
    """The text before a bar's counts, back to the end of a previous bar glued before it."""
    before = text[max(0, start - 1000):start]
    return before[before.rfind("]") + 1:].strip()


# Lightning's training bars: "Epoch 3:" (tqdm) and "Epoch 0/7" (Rich), both 0-based; its other
# bars say "Validation", "Sanity Checking" (a pause of training, not its progress).
_EPOCH_DESC = re.compile(r"\bEpoch (\d+)(?:/(-?\d+))?(:?)")
_NOT_TRAINING = re.compile(r"\b(?:Validation|Sanity Checking)\b")


# -- tqdm -----------------------------------------------------------------------------------
# tqdm's clock: MM:SS, or H:MM:SS past an hour (the hours unbounded: "125:24:04").
_TQDM_CLOCK = r"(?:\d+:)?\d\d:\d\d"
# Its rate: "7.20it/s", "  4.47s/it" (slower than one a second), "88.73batch/s", "223MB/s", "?it/s".
_TQDM_RATE = r"(?:\d+(?:\.\d+)?|\?)[A-Za-z]{0,20}/[A-Za-z]{1,20}"
# r_bar: "| 450/1000 [01:02<01:16, 7.20it/s, loss=0.3]", unit-scaled "| 8.89G/27.9G [00:42<01:31, 223MB/s]",
# and with ncols=0 "Epoch 0:  50% 1/2 [00:00<00:00,  6.54it/s]". The closing "]" is not required: a
# bar cut by its width, or by a log line glued after it, still counts.
_TQDM = re.compile(
    r"(?<![\w.])(?P<done>\d+(?:\.\d+)?)(?P<dscale>[kKMGTPEZY]?)/(?P<total>\d+(?:\.\d+)?)(?P<tscale>[kKMGTPEZY]?)"
    r" \[(?P<elapsed>" + _TQDM_CLOCK + r")<(?P<remaining>" + _TQDM_CLOCK + r"|\?)(?:, *(?P<rate>" + _TQDM_RATE + r"))?"
)
# Without a total: "0it [00:00, ?it/s]", "10.0Mit [00:02, 3.58Mit/s]", "75.2MB [00:00, 217MB/s]".
_TQDM_OPEN = re.compile(
    r"(?<![\w.])(?P<done>\d+(?:\.\d+)?)(?P<unit>[A-Za-z][\w/]{0,20}) \[(?P<elapsed>" + _TQDM_CLOCK + r"),"
    r" *(?P<rate>" + _TQDM_RATE + r")"
)


def _tqdm(text: str) -> Optional[Reading]:
    if " [" not in text:
        return None
    match = _last(_TQDM, text) if "<" in text else None
    if match is not None:
        description = _description(text, match.start())
        if _NOT_TRAINING.search(description):
            return None
        done = float(match.group("done")) * _SCALE[match.group("dscale")]
        total = float(match.group("total")) * _SCALE[match.group("tscale")]
        if not _counts(done, total):
            return None
        scaled = bool(match.group("dscale") or match.group("tscale"))
        reading = Reading(done, total, _rate_unit(match.group("rate"), scaled), Source.TQDM,
                          remaining=parse_duration(match.group("remaining")))
        return _with_description(reading, description)
    match = _last(_TQDM_OPEN, text)
    if match is None:
        return None
    description = _description(text, match.start())
    if _NOT_TRAINING.search(description):
        return None
    unit, rate_unit = match.group("unit"), _rate_unit(match.group("rate"), True)
    scale = 1.0
    if unit != rate_unit and len(unit) > 1 and unit[0] in _SCALE and unit[1:] == rate_unit:
        scale, unit = _SCALE[unit[0]], rate_unit
    reading = Reading(float(match.group("done")) * scale, None, unit, Source.TQDM)
    return _with_description(reading, description)


def _with_description(reading: Reading, description: str) -> Reading:
    """A tqdm reading with what its description says: Lightning's 0-based "Epoch 3:", or "Epoch 3/10:"."""
    match = _last(_EPOCH_DESC, description) if "Epoch" in description else None
    if match is None or not match.group(3):
        return reading
    number, of = int(match.group(1)), match.group(2)
    if of is None:  # PyTorch Lightning's TQDMProgressBar: the epoch counts from 0
        return replace(reading, source=Source.LIGHTNING, epoch=number + 1)
    epochs = int(of)
    if 1 <= number <= epochs:  # a script's own description, counted from 1
        return replace(reading, epoch=number, epochs=epochs)
    return reading


# -- PyTorch Lightning's Rich bar -----------------------------------------------------------
# "Epoch 0/7 ━━━━━━ 2300/20019 0:07:19 • 0:55:30 5.24it/s v_num: 0 ..." (elapsed • remaining, each a
# timedelta or "-:--:--"); "Epoch N/M" is 0-based on both sides (M is max_epochs - 1).
_DELTA = r"(?:\d+ days?, )?\d+:\d\d:\d\d|-:--:--"
_RICH = re.compile(
    r"(?<![\w.])(?P<done>\d+)/(?P<total>\d+(?:\.\d+)?|--) +(?P<elapsed>" + _DELTA + r") • (?P<remaining>"
    + _DELTA + r")"
)


def _rich(text: str) -> Optional[Reading]:
    if "•" not in text:
        return None
    match = _last(_RICH, text)
    if match is None:
        return None
    description = _description(text, match.start())
    if _NOT_TRAINING.search(description):
        return None
    done = float(match.group("done"))
    total = None if match.group("total") == "--" else float(match.group("total"))
    if not _counts(done, total):
        return None
    epoch = epochs = None
    described = _last(_EPOCH_DESC, description) if "Epoch" in description else None
    if described is not None:
        epoch = int(described.group(1)) + 1
        last = int(described.group(2)) if described.group(2) else None
        epochs = last + 1 if last is not None and last + 1 >= epoch else None
    return Reading(done, total, "it", Source.LIGHTNING, remaining=parse_duration(match.group("remaining")),
                   epoch=epoch, epochs=epochs)


# -- Keras ----------------------------------------------------------------------------------
# Keras 3: "188/655 ━━━━━━━━━━━━━━━━━━━━ 1:31:46 12s/step - loss: 0.47" (ETA while running, the
# elapsed time once done==total) and "    123/Unknown 5s 40ms/step".
_KERAS3 = re.compile(
    r"(?<![\w.])(?P<done>\d+)/(?:(?P<total>\d+) ━{1,500}|Unknown) +(?P<time>\d+(?::\d\d){1,2}|\d+s)"
    r" +\d+(?:\.\d+)?(?:ms|us|s)/(?P<unit>[a-z]{1,20})"
)
# Keras 2: "821/1000 [=======================>......] - ETA: 3:35 - loss: 1.0181",
# finished "60000/60000 [==============================] - 5s 87us/step", and "13440/Unknown - 2s".
_KERAS2 = re.compile(
    r"(?<![\w.])(?P<done>\d+)/(?:(?P<total>\d+) \[[=>.]{1,500}\]|Unknown) - (?:ETA: (?P<eta>\d+(?::\d\d){1,2}|\d+s))?"
)


def _keras(text: str) -> Optional[Reading]:
    if "━" in text:
        match = _last(_KERAS3, text)
        if match is not None:
            return _keras_reading(match, match.group("time"), match.group("unit"))
    if " - " in text and ("] - " in text or "Unknown - " in text):
        match = _last(_KERAS2, text)
        if match is not None:
            return _keras_reading(match, match.group("eta"), "step")
    return None


def _keras_reading(match: re.Match[str], time: Optional[str], unit: str) -> Optional[Reading]:
    done = float(match.group("done"))
    total = float(match.group("total")) if match.group("total") else None
    if not _counts(done, total):
        return None
    remaining = None
    if total is not None:  # with a total, Keras shows the ETA until the last step, then the time taken
        remaining = 0.0 if done >= total else (parse_duration(time) if time else None)
    return Reading(done, total, unit, Source.KERAS, remaining=remaining)


# -- Megatron-LM, DeepSpeed -----------------------------------------------------------------
# " iteration      182/  250000 | consumed samples: 186368 | elapsed time per iteration (ms): ..."
_MEGATRON = re.compile(r"\biteration\s{1,20}(?P<done>\d+)/\s{0,20}(?P<total>\d+)\s{0,20}\|")
# "[Rank 0] step=2000, skipped=1995, lr=[0.001, 0.001], mom=[0.0, 0.0]": no total.
_DEEPSPEED = re.compile(r"\bstep=(?P<done>\d+), skipped=\d+")


def _megatron(text: str) -> Optional[Reading]:
    if "iteration" not in text or "|" not in text:
        return None
    match = _last(_MEGATRON, text)
    if match is None:
        return None
    done, total = float(match.group("done")), float(match.group("total"))
    return Reading(done, total, "iteration", Source.MEGATRON) if _counts(done, total) else None


def _deepspeed(text: str) -> Optional[Reading]:
    if "step=" not in text:
        return None
    match = _last(_DEEPSPEED, text)
    return Reading(float(match.group("done")), None, "step", Source.DEEPSPEED) if match else None


# -- the HuggingFace Trainer's log lines ----------------------------------------------------
# "{'loss': 0.41, 'learning_rate': 5e-05, 'epoch': 0.5}" (evaluation dicts carry 'epoch' too) and
# its header "  Num Epochs = 3". Its tqdm bar counts the steps of the whole run: read by _tqdm.
_HF_EPOCH = re.compile(r"'epoch': (?:np\.float\d\d\()?(?P<epoch>\d+(?:\.\d+)?)")
_HF_EPOCHS = re.compile(r"\bNum Epochs = (?P<epochs>\d+)\b")


def _huggingface(text: str) -> Optional[Reading]:
    if "'epoch'" in text and "{'" in text:
        match = _last(_HF_EPOCH, text)
        if match is not None:
            return Reading(float(match.group("epoch")), None, EPOCH, Source.HUGGINGFACE)
    if "Num Epochs" in text:
        match = _last(_HF_EPOCHS, text)
        if match is not None and int(match.group("epochs")) > 0:
            epochs = int(match.group("epochs"))
            return Reading(0.0, float(epochs), EPOCH, Source.HUGGINGFACE, epoch=1, epochs=epochs)
    return None


# -- generic counters -----------------------------------------------------------------------
# "step 30/100", "Step 30 of 100", "Epoch 3/10", "Epoch [3/10]", "Training Epoch:[541/1500]",
# "epoch 1/50 - it 6/100". A number that continues into a date or a ratio ("2024/05/01",
# "0.5/1.0") is not a count.
_COUNTER = re.compile(
    r"(?i)\b(?P<word>epoch|step|iter(?:ation)?|batch|it)s?\b[ \t:#=\[(]{0,4}(?P<done>\d{1,12}) ?(?:/|of) ?"
    r"(?P<total>\d{1,12})(?![\d/.])"
)
# "[30/100]", "Train Epoch: 1 [640/60000 (1%)]".
_BRACKET = re.compile(
    r"(?i)(?:\bepoch:? ?(?P<epoch>\d{1,9}) )?\[(?P<done>\d{1,12})/(?P<total>\d{1,12})(?:\]| \()"
)
_UNITS = {"epoch": EPOCH, "step": "step", "iter": "iteration", "iteration": "iteration", "batch": "batch", "it": "it"}


def _generic(text: str) -> Optional[Reading]:
    if "/" not in text and " of " not in text:
        return None
    epoch_match: Optional[re.Match[str]] = None
    step_match: Optional[re.Match[str]] = None
    for match in _COUNTER.finditer(text):
        if match.group("word").lower() == "epoch":
            epoch_match = match
        else:
            step_match = match
    if "[" in text:
        taken = [(m.start(), m.end()) for m in (epoch_match, step_match) if m is not None]
        for match in _BRACKET.finditer(text):
            inside = any(start <= match.start("done") < end for start, end in taken)
            if not inside and (step_match is None or match.start() > step_match.start()):
                step_match = match
    if step_match is not None:
        done, total = float(step_match.group("done")), float(step_match.group("total"))
        if not _counts(done, total):
            return None
        word = step_match.groupdict().get("word")
        unit = _UNITS.get(word.lower(), "it") if word else "it"
        epoch = epochs = None
        if epoch_match is not None:
            epoch, epochs = _epoch_of(epoch_match)
        elif step_match.groupdict().get("epoch"):
            epoch = max(int(step_match.group("epoch")), 1)
        return Reading(done, total, unit, Source.GENERIC, epoch=epoch, epochs=epochs)
    if epoch_match is not None:
        epoch, epochs = _epoch_of(epoch_match)
        if epoch is not None and epochs is not None:
            return Reading(float(epoch - 1), float(epochs), EPOCH, Source.GENERIC, epoch=epoch, epochs=epochs)
    return None


def _epoch_of(match: re.Match[str]) -> Tuple[Optional[int], Optional[int]]:
    """(epoch, epochs) of an "Epoch N/M" counter: N counted from 1 (a 0 is taken as the first)."""
    number, epochs = int(match.group("done")), int(match.group("total"))
    if epochs <= 0 or number > epochs:
        return None, None
    return max(number, 1), epochs


# -- the user's own regexes -----------------------------------------------------------------
def _custom(text: str, patterns: Sequence[re.Pattern[str]]) -> Optional[Reading]:
    """The first of the user's regexes that matches: named groups `done`, optional `total`, `epoch`, `epochs`."""
    for pattern in patterns:
        match = _last(pattern, text)
        if match is None:
            continue
        groups = match.groupdict()
        try:
            done = float(groups["done"])
            total = float(groups["total"]) if groups.get("total") else None
            epoch = int(groups["epoch"]) if groups.get("epoch") else None
            epochs = int(groups["epochs"]) if groups.get("epochs") else None
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if not _counts(done, total) or done != done:  # NaN is not a count either
            continue
        return Reading(done, total, "it", Source.CUSTOM, epoch=epoch, epochs=epochs)
    return None


_PARSERS: Tuple[Callable[[str], Optional[Reading]], ...] = (
    _tqdm, _rich, _keras, _megatron, _deepspeed, _huggingface, _generic,
)


# -- one line -------------------------------------------------------------------------------
def parse_line(line: str, custom: Sequence[re.Pattern[str]] = ()) -> Optional[Reading]:
    """The progress one log line shows, or None.

    `line` may be a cleaned line, one frame, or a raw physical line (its newest frame is read;
    escapes, backspaces and "[rank3]:"-style prefixes are dealt with). The user's regexes are tried
    first. A bar tqdm draws below another one (an evaluation bar, the inner bar of nested loops:
    its frames end by moving the cursor up) and Lightning's validation bars are not the run's
    progress and give None.
    """
    if "\r" in line:
        newest = last_frames(line, 1)
        if not newest:
            return None
        line = newest[0]
    return _parse_frame(line, custom)


def _parse_frame(frame: str, custom: Sequence[re.Pattern[str]]) -> Optional[Reading]:
    if CURSOR_UP in frame and frame.rstrip(" \n").endswith(CURSOR_UP):
        return None
    windows = (frame,) if len(frame) <= 2 * WINDOW_CHARS else (frame[-WINDOW_CHARS:], frame[:WINDOW_CHARS])
    for window in windows:
        text = strip_prefixes(clean_frame(window))
        if not text:
            continue
        reading = _custom(text, custom) if custom else None
        for parse in _PARSERS:
            if reading is not None:
                break
            reading = parse(text)
        if reading is not None:
            return reading
    return None


def _parse_physical(line: str, custom: Sequence[re.Pattern[str]]) -> Optional[Reading]:
    """The newest frame of a line that parses (the one before it when the newest is, say, a crash message)."""
    if "\r" not in line:
        return _parse_frame(line, custom)
    for frame in last_frames(line, 2):
        reading = _parse_frame(frame, custom)
        if reading is not None:
            return reading
    return None


# -- pauses ---------------------------------------------------------------------------------
# Lines saying that training stops for a while on purpose: a checkpoint being written, an
# evaluation or validation starting.
_PAUSE = re.compile(
    r"(?i)\bsav(?:e|ing) (?:the )?(?:model )?checkpoints?\b"  # "Saving model checkpoint to", Megatron, TF
    r"|\bsaving (?:the )?model to\b"  # Keras and Lightning ModelCheckpoint
    r"|\bcheckpoint \S{1,200} is about to be saved"  # DeepSpeed
    r"|\brunning (?:evaluation|validation|prediction)\b"  # the Trainer's "***** Running Evaluation *****"
    r"|\bvalidation dataloader\b|\bsanity checking\b"  # Lightning
    r"|^(?:validation|validating|evaluating|evaluation)\b"
)


def announces_pause(line: str) -> bool:
    """Whether a log line announces a checkpoint, an evaluation or a validation (a stall gets more grace)."""
    if "\r" in line:
        newest = last_frames(line, 1)
        line = newest[0] if newest else ""
    if len(line) > 2 * WINDOW_CHARS:
        line = line[:WINDOW_CHARS]
    return _PAUSE.search(strip_prefixes(clean_frame(line))) is not None


# -- the newest reading of many lines -------------------------------------------------------
#: Readings that accompany a bar rather than being one: the Trainer's dict lines and header,
#: DeepSpeed's step=N. They count only when no bar is seen.
_COMPANIONS = (Source.HUGGINGFACE, Source.DEEPSPEED)
#: Bars that may sit inside an epoch counter printed on a line of its own ("Epoch 3/10" then steps).
_EPOCH_INNER = (Source.TQDM, Source.KERAS, Source.GENERIC, Source.CUSTOM)


def _epoch_counter(reading: Reading) -> bool:
    return reading.unit == EPOCH and reading.source in (Source.GENERIC, Source.CUSTOM) and reading.epoch is not None


def _wants_epoch(reading: Reading) -> bool:
    return reading.unit != EPOCH and reading.epoch is None and reading.source in _EPOCH_INNER


def _same_bar(older: Reading, newer: Reading) -> bool:
    """Whether `older` is an earlier frame of the bar `newer` shows (it has not restarted since)."""
    same = (older.source, older.unit, older.total) == (newer.source, newer.unit, newer.total)
    return same and older.done <= newer.done


def _in_epoch(reading: Reading, counter: Reading) -> Reading:
    return replace(reading, epoch=counter.epoch, epochs=counter.epochs)


def latest(lines: Sequence[str], context: Optional[Reading] = None,
           custom: Sequence[re.Pattern[str]] = ()) -> Optional[Reading]:
    """The newest progress reading in `lines` (oldest line first), or None when they hold none.

    `context` is the reading an earlier call returned, for what these lines leave out. A bar
    inside an epoch loop gets the epoch counter printed before it ("Epoch 3/10" then
    "123/456 [====>...]"), from these lines or from `context`. The Trainer's dict lines and
    DeepSpeed's step=N count only when no bar is seen in these lines, and never replace a
    `context` bar that had a total with a reading that has none. Lines are read from the end, each
    once at most, and the scan stops as soon as the answer is known.
    """
    primary: Optional[Reading] = None
    companion: Optional[Reading] = None
    trainer_epochs: Optional[int] = None
    another_bar = False  # a different bar seen before the primary one: the context is older still
    for raw in reversed(lines):
        reading = _parse_physical(raw, custom)
        if reading is None:
            continue
        if primary is None:
            if reading.source in _COMPANIONS:
                if companion is None:
                    companion = reading
                if reading.source is Source.HUGGINGFACE and reading.epochs and trainer_epochs is None:
                    trainer_epochs = reading.epochs
                continue
            primary = reading
            if not _wants_epoch(primary):
                break
            continue
        if _epoch_counter(reading):
            return _in_epoch(primary, reading)
        if not _same_bar(reading, primary):
            another_bar = True
            break
    if primary is not None:
        if _wants_epoch(primary) and context is not None and not another_bar:
            if _epoch_counter(context):
                return _in_epoch(primary, context)
            if context.epoch is not None and _same_bar(context, primary):
                return _in_epoch(primary, context)
        return primary
    if companion is None:
        return None
    if companion.source is Source.HUGGINGFACE and companion.total is None:
        if trainer_epochs is None and context is not None and context.source is Source.HUGGINGFACE:
            trainer_epochs = context.epochs
        if trainer_epochs:
            epoch = min(int(companion.done) + 1, trainer_epochs)
            companion = replace(companion, total=float(trainer_epochs), epoch=epoch, epochs=trainer_epochs)
    if companion.fraction is None and context is not None and context.fraction is not None \
            and context.source not in _COMPANIONS:
        return None  # a step=N or a dict line says less than the bar already known
    return companion
