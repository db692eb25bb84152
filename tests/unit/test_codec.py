"""core.state.codec: JSON <-> dataclasses by type hints, table-driven, plus a hypothesis round trip."""
from __future__ import annotations

import dataclasses
import enum
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.notify.message import Field, Message, Tone
from core.state.codec import DecodeError, decode, encode
from core.state.model import SCHEMA_VERSION, Attempt, Chain, JobRecord, Level
from core.state.store import format_record, parse_record
from tests.support import full_record


class Colour(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    name: str
    size: int = 0


@dataclass
class Every:
    """One field per kind of type hint the persisted dataclasses use."""

    text: str = ""
    count: int = 0
    ratio: float = 0.0
    flag: bool = False
    colour: Colour = Colour.RED
    maybe: Optional[int] = None
    maybe_inner: Optional[Inner] = None
    maybe_list: Optional[List[str]] = None
    words: List[str] = field(default_factory=list)
    numbers: Tuple[int, ...] = ()
    scores: Dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=lambda: Inner("default"))
    inners: List[Inner] = field(default_factory=list)
    by_name: Dict[str, Inner] = field(default_factory=dict)
    colours: List[Colour] = field(default_factory=list)
    grid: List[List[int]] = field(default_factory=list)
    anything: Any = None


@dataclass
class Node:
    """A type that refers to itself: its decoder is built lazily."""

    label: str
    children: List[Node] = field(default_factory=list)


# --- decode: good values ----------------------------------------------------------------------

GOOD = [
    ({}, Every()),
    ({"text": "naïve ✓", "count": -3, "flag": True}, Every(text="naïve ✓", count=-3, flag=True)),
    ({"ratio": 2}, Every(ratio=2.0)),
    ({"ratio": 1e300}, Every(ratio=1e300)),
    ({"colour": "blue", "colours": ["red", "blue"]}, Every(colour=Colour.BLUE, colours=[Colour.RED, Colour.BLUE])),
    ({"maybe": None, "maybe_inner": None, "maybe_list": None}, Every()),
    ({"maybe": 0, "maybe_inner": {"name": "n"}, "maybe_list": []},
     Every(maybe=0, maybe_inner=Inner("n"), maybe_list=[])),
    ({"words": ["a", ""], "numbers": [1, 2, 3]}, Every(words=["a", ""], numbers=(1, 2, 3))),
    ({"scores": {"a": 1, "b": 0.5}}, Every(scores={"a": 1.0, "b": 0.5})),
    ({"inner": {"name": "x", "size": 2}}, Every(inner=Inner("x", 2))),
    ({"inners": [{"name": "a"}, {"name": "b", "size": 1}]}, Every(inners=[Inner("a"), Inner("b", 1)])),
    ({"by_name": {"k": {"name": "v"}}}, Every(by_name={"k": Inner("v")})),
    ({"grid": [[1], [], [2, 3]]}, Every(grid=[[1], [], [2, 3]])),
    ({"anything": {"free": ["form", 1]}}, Every(anything={"free": ["form", 1]})),
]


@pytest.mark.parametrize(("data", "expected"), GOOD, ids=[str(i) for i in range(len(GOOD))])
def test_decode_good_values(data, expected):
    decoded = decode(Every, data)
    assert decoded == expected
    assert type(decoded.ratio) is float
    assert type(decoded.numbers) is tuple
    assert all(type(v) is float for v in decoded.scores.values())
    assert decode(Every, json.loads(json.dumps(encode(decoded)))) == decoded


def test_decode_ignores_unknown_keys_at_every_level():
    data = {"count": 1, "new": 1, "inner": {"name": "x", "new": 2}, "inners": [{"name": "a", "new": [3]}],
            "by_name": {"k": {"name": "v", "new": {}}}, "maybe_inner": {"name": "m", "new": None}}
    assert decode(Every, data) == Every(count=1, inner=Inner("x"), inners=[Inner("a")], by_name={"k": Inner("v")},
                                        maybe_inner=Inner("m"))


def test_decode_of_a_self_referring_type():
    data = {"label": "root", "children": [{"label": "a", "children": [{"label": "a1"}]}, {"label": "b"}]}
    assert decode(Node, data) == Node("root", [Node("a", [Node("a1")]), Node("b")])
    with pytest.raises(DecodeError, match=r"^Node\.children\[0\]\.children\[0\]\.label: expected str, got 1$"):
        decode(Node, {"label": "root", "children": [{"label": "a", "children": [{"label": 1}]}]})


def test_decode_runs_post_init():
    message = decode(Message, {"title": "t", "tone": "failure", "fields": [{"name": "n", "value": "v"}]})
    assert message == Message("t", tone=Tone.FAILURE, fields=(Field("n", "v"),))
    assert isinstance(message.fields, tuple)


# --- decode: errors name the path -----------------------------------------------------------

BAD = [
    ({"text": 5}, "Every.text: expected str, got 5"),
    ({"text": None}, "Every.text: expected str, got None"),
    ({"count": True}, "Every.count: expected int, got True"),
    ({"count": 1.5}, "Every.count: expected int, got 1.5"),
    ({"count": "1"}, "Every.count: expected int, got '1'"),
    ({"ratio": "1.0"}, "Every.ratio: expected a number, got '1.0'"),
    ({"ratio": False}, "Every.ratio: expected a number, got False"),
    ({"ratio": 10 ** 400}, "Every.ratio: expected a number"),
    ({"flag": 1}, "Every.flag: expected bool, got 1"),
    ({"colour": "green"}, "Every.colour: expected one of red, blue, got 'green'"),
    ({"colour": ["red"]}, "Every.colour: expected one of red, blue, got ['red']"),
    ({"colour": "RED"}, "Every.colour: expected one of red, blue, got 'RED'"),
    ({"maybe": "1"}, "Every.maybe: expected int, got '1'"),
    ({"maybe_inner": {"size": 1}}, "Every.maybe_inner: "),
    ({"maybe_list": [None]}, "Every.maybe_list[0]: expected str, got None"),
    ({"words": "abc"}, "Every.words: expected a list, got 'abc'"),
    ({"words": ["a", 1]}, "Every.words[1]: expected str, got 1"),
    ({"numbers": [1, "2"]}, "Every.numbers[1]: expected int, got '2'"),
    ({"numbers": {"0": 1}}, "Every.numbers: expected a list, got {'0': 1}"),
    ({"scores": []}, "Every.scores: expected an object, got []"),
    ({"scores": {"a": "x"}}, "Every.scores.a: expected a number, got 'x'"),
    ({"inner": 5}, "Every.inner: expected an object (Inner), got 5"),
    ({"inner": None}, "Every.inner: expected an object (Inner), got None"),
    ({"inners": [{"name": "a"}, {"name": 3}]}, "Every.inners[1].name: expected str, got 3"),
    ({"by_name": {"k": {"name": "v", "size": "2"}}}, "Every.by_name.k.size: expected int, got '2'"),
    ({"colours": ["red", "pink"]}, "Every.colours[1]: expected one of red, blue, got 'pink'"),
    ({"grid": [[1], [2, "x"]]}, "Every.grid[1][1]: expected int, got 'x'"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_decode_errors_name_the_path(data, message):
    with pytest.raises(DecodeError) as caught:
        decode(Every, data)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError catch it too


def test_a_missing_required_field_names_where():
    with pytest.raises(DecodeError, match=r"^Every\.inners\[0\]: .*name"):
        decode(Every, {"inners": [{"size": 1}]})
    with pytest.raises(DecodeError, match=r"^Inner: .*name"):
        decode(Inner, {})


@pytest.mark.parametrize("data", [None, [], "x", 5])
def test_decode_of_a_non_object(data):
    with pytest.raises(DecodeError, match=r"^Every: expected an object \(Every\)"):
        decode(Every, data)


def test_a_long_bad_value_is_shortened_in_the_message():
    with pytest.raises(DecodeError) as caught:
        decode(Every, {"count": "x" * 10_000})
    assert len(str(caught.value)) < 120


def test_errors_in_a_job_record_name_the_path():
    data = {"job_id": "1", "chain": {"attempts": [{"job_id": "1"}, {"job_id": "2", "state": "RUNNIN"}]}}
    with pytest.raises(DecodeError, match=r"^JobRecord\.chain\.attempts\[1\]\.state: expected one of PENDING"):
        decode(JobRecord, data)
    data = {"job_id": "1", "outbox": [{"key": "1:final:1", "kind": "final", "route": "error",
                                       "deliveries": {"discord-error": {"status": "lost"}}}]}
    with pytest.raises(DecodeError, match=r"^JobRecord\.outbox\[0\]\.deliveries\.discord-error\.status: "):
        decode(JobRecord, data)
    with pytest.raises(DecodeError, match=r"^JobRecord\.chain\.pending\.submissions\[0\]: .*action"):
        decode(JobRecord, {"job_id": "1", "chain": {"pending": {"round": 2, "decided_at": 1.0, "submissions": [
            {"level_index": 1, "level": {}}]}}})
    with pytest.raises(DecodeError, match=r"^JobRecord\.observation\.state: .*got ''"):
        decode(JobRecord, {"job_id": "1", "observation": {"state": ""}})  # schema 2 writes null, never ""


@dataclass
class BadUnion:
    value: Union[int, str] = 0


@dataclass
class BadTuple:
    value: Tuple[int, str] = (0, "")


@dataclass
class BadDict:
    value: Dict[int, str] = field(default_factory=dict)


@dataclass
class BadSet:
    value: Set[int] = field(default_factory=set)


@pytest.mark.parametrize("kind", [BadUnion, BadTuple, BadDict, BadSet])
def test_an_unsupported_type_hint_is_a_programming_error(kind):
    with pytest.raises(TypeError, match="unsupported"):
        decode(kind, {"value": 1})


# --- encode -----------------------------------------------------------------------------------

def test_encode_gives_plain_json_values():
    value = Every(text="t", count=1, ratio=0.5, flag=True, colour=Colour.BLUE, maybe_inner=Inner("m", 1),
                  numbers=(1, 2), scores={"a": 1.5}, inners=[Inner("i")], by_name={"k": Inner("v")},
                  colours=[Colour.RED], grid=[[1]])
    encoded = encode(value)
    assert encoded == {
        "text": "t", "count": 1, "ratio": 0.5, "flag": True, "colour": "blue", "maybe": None,
        "maybe_inner": {"name": "m", "size": 1}, "maybe_list": None, "words": [], "numbers": [1, 2],
        "scores": {"a": 1.5}, "inner": {"name": "default", "size": 0}, "inners": [{"name": "i", "size": 0}],
        "by_name": {"k": {"name": "v", "size": 0}}, "colours": ["red"], "grid": [[1]], "anything": None,
    }
    assert type(encoded["colour"]) is str  # the enum's value, not the member
    assert json.loads(json.dumps(encoded)) == encoded


def test_encode_copies_containers():
    value = Every(words=["a"], scores={"a": 1.0})
    encoded = encode(value)
    encoded["words"].append("b")
    encoded["scores"]["b"] = 2.0
    assert value == Every(words=["a"], scores={"a": 1.0})


def test_encode_of_a_job_record_writes_enums_and_nulls():
    data = encode(full_record())
    assert data["source"] == "watch"
    assert data["final"]["source"] == "squeue"
    assert data["chain"]["attempts"][1]["state"] is None
    assert data["chain"]["pending"]["submissions"][0]["action"] == "escalate_time"
    assert data["outbox"][0]["message"]["fields"][0] == {"name": "Exit code", "value": "3", "inline": True}
    assert data["outbox"][0]["deliveries"]["discord-error"]["status"] == "failed"
    assert data["schema_version"] == SCHEMA_VERSION


def test_full_record_sets_every_field():
    """The round-trip tests prove something only if each field of each persisted type is set somewhere."""
    every_field, set_fields = set(), set()

    def walk(value):
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                every_field.add((type(value).__name__, f.name))
                if getattr(value, f.name) != default:
                    set_fields.add((type(value).__name__, f.name))
                walk(getattr(value, f.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(full_record())
    assert sorted(every_field - set_fields) == [("JobRecord", "schema_version")]
    kinds = {kind for kind, _ in every_field}
    assert {"Attempt", "PendingSubmission", "Round", "TaskTrack", "OutboxEntry", "SinkDelivery", "Message", "Field",
            "Finding", "TaskOutcome", "LogOptions", "FinalRecord", "Observation", "MonitorInfo"} <= kinds


# --- round trips ------------------------------------------------------------------------------

def _strategy(tp: Any) -> st.SearchStrategy:
    """Values of any persisted type hint, built from the hints themselves (independently of the codec)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        inner = [arg for arg in args if arg is not type(None)][0]
        return st.none() | _strategy(inner)
    if origin is list:
        return st.lists(_strategy(args[0]), max_size=2)
    if origin is tuple:
        return st.lists(_strategy(args[0]), max_size=2).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=4), _strategy(args[1]), max_size=2)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _strategy(hints[f.name]) for f in dataclasses.fields(tp)}
        if tp is JobRecord:
            kwargs["schema_version"] = st.just(SCHEMA_VERSION)
        return st.builds(tp, **kwargs)
    return {
        str: st.text(max_size=8), int: st.integers(), bool: st.booleans(),
        float: st.floats(allow_nan=False, allow_infinity=False),
    }[tp]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_strategy(JobRecord))
def test_any_job_record_round_trips_through_json(record):
    assert decode(JobRecord, json.loads(json.dumps(encode(record)))) == record
    assert parse_record(format_record(record)) == record


@pytest.mark.parametrize("record", [full_record(), JobRecord(job_id="7_4")], ids=["full", "defaults"])
def test_job_record_round_trip(record):
    back = decode(JobRecord, json.loads(json.dumps(encode(record))))
    assert back == record
    assert back is not record


def test_missing_keys_take_the_defaults():
    record = decode(JobRecord, {"job_id": "5", "chain": {"attempts": [{"job_id": "5"}]}})
    assert record == JobRecord(job_id="5", chain=Chain(attempts=[Attempt(job_id="5")]))
    assert record.chain is not None and record.chain.level == Level()
