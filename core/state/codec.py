"""JSON <-> dataclasses, driven by the dataclasses' own type hints (no key sniffing).

`decode(JobRecord, data)` walks the type hints: nested dataclasses, Optional, List, Tuple, Dict with
string keys, str-valued enums, and the JSON scalars. Unknown keys are ignored (a newer jobmon's
extra field does not break an older reader of the same schema), missing keys take the field's
default, and a value of the wrong type is a DecodeError naming where it is (`chain.attempts[1].state`).
Decoders are built once per type, so reading thousands of records costs little more than json.loads.
"""
from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Callable, Dict, List, Tuple, Type, TypeVar

T = TypeVar("T")
Decoder = Callable[[Any, str], Any]

_NONE = type(None)
_DECODERS: Dict[Any, Decoder] = {}


class DecodeError(ValueError):
    """The data does not have the shape the types ask for."""


def encode(value: Any) -> Any:
    """A dataclass (or anything inside one) as plain JSON values; enums by their value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    return value


def decode(kind: Type[T], data: Any, where: str = "") -> T:
    """An instance of the dataclass `kind` from JSON data; raises DecodeError."""
    result: T = _decoder(kind)(data, where or kind.__name__)
    return result


def _decoder(tp: Any) -> Decoder:
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _build(tp)
    return found


def _fail(where: str, expected: str, value: Any) -> DecodeError:
    shown = repr(value)
    return DecodeError(f"{where}: expected {expected}, got {shown[:60]}")


def _build(tp: Any) -> Decoder:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        options = [arg for arg in args if arg is not _NONE]
        if len(options) != 1 or len(args) != 2:
            raise TypeError(f"unsupported union {tp!r}: only Optional[X] is persisted")
        inner = _decoder(options[0])
        return lambda value, where: None if value is None else inner(value, where)
    if origin in (list, List):
        return _sequence(_decoder(args[0]), list)
    if origin in (tuple, Tuple):
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"unsupported tuple {tp!r}: only Tuple[X, ...] is persisted")
        return _sequence(_decoder(args[0]), tuple)
    if origin in (dict, Dict):
        if args[0] is not str:
            raise TypeError(f"unsupported dict {tp!r}: JSON keys are strings")
        return _mapping(_decoder(args[1]))
    if tp is Any:
        return lambda value, where: value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp)
    if tp in (str, int, float, bool):
        return _scalar(tp)
    raise TypeError(f"unsupported type {tp!r} in a persisted dataclass")


def _sequence(item: Decoder, container: type) -> Decoder:
    def decode_sequence(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            raise _fail(where, "a list", value)
        return container(item(element, f"{where}[{index}]") for index, element in enumerate(value))
    return decode_sequence


def _mapping(item: Decoder) -> Decoder:
    def decode_mapping(value: Any, where: str) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        return {str(key): item(element, f"{where}.{key}") for key, element in value.items()}
    return decode_mapping


def _enum(kind: Type[enum.Enum]) -> Decoder:
    def decode_enum(value: Any, where: str) -> enum.Enum:
        try:
            return kind(value)
        except ValueError:
            raise _fail(where, f"one of {', '.join(str(m.value) for m in kind)}", value) from None
    return decode_enum


def _scalar(kind: type) -> Decoder:
    if kind is float:
        def decode_float(value: Any, where: str) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(where, "a number", value)
            try:
                return float(value)
            except OverflowError:  # an integer beyond any float: a corrupt file, not a crash
                raise _fail(where, "a number", value) from None
        return decode_float

    def decode_scalar(value: Any, where: str) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _fail(where, kind.__name__, value)
        return value
    return decode_scalar


def _dataclass(kind: type) -> Decoder:
    hints = typing.get_type_hints(kind)
    fields = [(f.name, hints[f.name]) for f in dataclasses.fields(kind) if f.init]
    decoders: List[Tuple[str, Decoder]] = []

    def decode_dataclass(value: Any, where: str) -> Any:
        if not decoders:  # built on first use: the types may refer to each other
            decoders.extend((name, _decoder(tp)) for name, tp in fields)
        if not isinstance(value, dict):
            raise _fail(where, f"an object ({kind.__name__})", value)
        values = {name: decode_field(value[name], f"{where}.{name}") for name, decode_field in decoders
                  if name in value}
        try:
            return kind(**values)
        except TypeError as exc:  # a required field is missing
            raise DecodeError(f"{where}: {exc}") from None
    return decode_dataclass
