"""JSON <-> protobuf for the HTTP door, with tables computed once per message type.

Responses follow the OpenAI JSON rather than plain proto3 JSON:

* field names are the proto names (`b64_json`, `owned_by`), which are OpenAI's;
* fields with presence (`optional` scalars, messages) are omitted when unset
  and emitted when set, even to zero; fields without presence (plain proto3
  scalars, repeated, maps) are always emitted, as OpenAI always sends
  `created`, `data` and every `usage` count;
* 64-bit integers are JSON numbers, not strings;
* bytes are standard base64; enums are their names; non-finite floats are
  `"NaN"`/`"Infinity"`/`"-Infinity"`; well-known types use their proto3 JSON form.

Requests: with `body: "*"` the JSON object fills the request message; with
`body: "field"` the JSON value fills that field. Path variables, and query
parameters when the body is not `"*"`, are then set by field path
(`RequestDecoder.fill_url`, where `multipart/form-data` bodies, decoded by
`gateway_http.multipart` with these same rules, end too). Decisions:

* Only proto field names are accepted (not lowerCamelCase `json_name`s), so an
  OpenAI parameter this contract lacks is never silently mapped to another.
* Top-level scalars are type-checked like the OpenAI API does: `"n": "10"` is
  `invalid_type` even though proto3 JSON parsers accept strings for integers.
  Nested messages follow the proto3 JSON mapping (`json_format.ParseDict`).
* `null` means unset.
* What the door builds must parse in the core: a message nested deeper than
  protobuf's parsers accept (`MAX_MESSAGE_DEPTH`), or a string that has no
  UTF-8 form (a lone UTF-16 surrogate, which a JSON escape can make), is
  refused with a 400 naming the parameter, wherever it is (typed fields,
  unknown keys, well-known types). JSON's `NaN`/`Infinity` extensions are
  invalid JSON.
* A top-level key the message does not declare is rejected (`unknown_parameter`),
  unless the message has a `google.protobuf.Struct` field marked
  `(gateway_http.api.v1.collects_unknown_fields) = true`: such keys are collected
  there, and the core decides. That field cannot be set by its own name.

Refusals are raised as `HttpError`s carrying a `Reason` and its facts (the
param, and noun phrases such as "an integer"); the dialect words them.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, cast

import pybase64  # SIMD base64: several times faster on multi-MB images
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway_http.api.v1 import annotations_pb2
from gateway_http.errors import HttpError, Reason, door_error

__all__ = ["MAX_MESSAGE_DEPTH", "Marshaler", "RequestDecoder", "ResponseEncoder"]

_Conv = Callable[[Any], Any]
_FD = FieldDescriptor

# protoc's .pyi types an extension as a plain FieldDescriptor, which
# types-protobuf's `Extensions[...]` refuses: used untyped.
_COLLECTS_UNKNOWN_FIELDS: Any = annotations_pb2.collects_unknown_fields

# protobuf's parsers (upb, C++, pure Python) refuse a message nested more than
# this many levels below the top-level one (each message, map entry and
# Struct/Value/ListValue counts): the core's parser would, so the door does first.
MAX_MESSAGE_DEPTH = 100
# json_format.ParseDict's own depth check counts differently (not map entries):
# set out of the way, `MAX_MESSAGE_DEPTH` is checked on what it built.
_PARSE_DICT_DEPTH = 10_000

_INT_TYPES = frozenset(
    {_FD.CPPTYPE_INT32, _FD.CPPTYPE_INT64, _FD.CPPTYPE_UINT32, _FD.CPPTYPE_UINT64}
)
_FLOAT_TYPES = frozenset({_FD.CPPTYPE_FLOAT, _FD.CPPTYPE_DOUBLE})

# Well-known types whose JSON form is not an object of their fields.
_WRAPPERS = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_SPECIAL_JSON = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Duration",
        "google.protobuf.Empty",
        "google.protobuf.FieldMask",
        "google.protobuf.ListValue",
        "google.protobuf.Struct",
        "google.protobuf.Timestamp",
        "google.protobuf.Value",
    }
)


def _descriptor_of(message_class: type[Message]) -> Descriptor:
    return cast(Descriptor, message_class.DESCRIPTOR)


def _message_type(fd: FieldDescriptor) -> Descriptor:
    if fd.message_type is None:
        raise ValueError(f"{fd.full_name} is not a message field")
    return fd.message_type


def _enum_type(fd: FieldDescriptor) -> EnumDescriptor:
    if fd.enum_type is None:
        raise ValueError(f"{fd.full_name} is not an enum field")
    return fd.enum_type


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _is_repeated_message(fd: FieldDescriptor) -> bool:
    """A list of messages whose JSON form is an object (not a map; not a well-known type)."""
    return (
        fd.is_repeated
        and fd.message_type is not None
        and not _is_map(fd)
        and not fd.message_type.full_name.startswith("google.protobuf.")
    )


def _json_kind(value: Any) -> str:
    """The JSON type of a decoded value, as a noun phrase (a fact for the dialect)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: Any) -> HttpError:
    return door_error(Reason.INVALID_TYPE, param=param, expected=expected, got=_json_kind(value))


def _invalid_value(param: str, why: str) -> HttpError:
    return door_error(Reason.INVALID_VALUE, param=param, why=why)


def _unknown_parameter(param: str) -> HttpError:
    return door_error(Reason.UNKNOWN_PARAMETER, param=param)


def _too_deep(param: str) -> HttpError:
    return door_error(Reason.NESTED_TOO_DEEPLY, param=param)


def _not_utf8(param: str) -> HttpError:
    return door_error(Reason.INVALID_UTF8, param=param)


def _levels_below(descriptor: Descriptor, outer: frozenset[str] = frozenset()) -> float:
    """How many levels of messages a message of this type can hold (inf: no bound)."""
    if descriptor.full_name in outer:
        return math.inf  # recursive (Struct, Value, trees): only a check can tell
    inner = outer | {descriptor.full_name}
    deepest = 0.0
    for fd in descriptor.fields:
        if fd.message_type is not None:
            deepest = max(deepest, 1 + _levels_below(fd.message_type, inner))
    return deepest


def _nests_deeper(msg: Message, room: int) -> bool:
    """Whether `msg` holds a message more than `room` levels below it."""
    for fd, value in msg.ListFields():
        if fd.message_type is not None and _value_nests_deeper(fd, value, room):
            return True
    return False


def _value_nests_deeper(fd: FieldDescriptor, value: Any, room: int) -> bool:
    """Whether a message field's value goes more than `room` levels below its message."""
    if not _is_map(fd):
        values = value if fd.is_repeated else (value,)
        return any(room < 1 or _nests_deeper(v, room - 1) for v in values)
    # A map's entries are messages one level down; message values one more.
    if _message_type(fd).fields_by_name["value"].message_type is None:
        return room < 1 and len(value) > 0
    return any(room < 2 or _nests_deeper(v, room - 2) for v in value.values())


def _has_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value has a key or string with no UTF-8 form."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if not item.isascii() and not _encodable(item):
                return True
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
    return False


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads' NaN/Infinity extension


# --------------------------------------------------------------------------- requests


class _InField:
    """How one top-level JSON key is checked and stored (computed once)."""

    __slots__ = ("convert", "direct", "expected", "fd", "levels", "name", "nested", "types")

    def __init__(self, fd: FieldDescriptor) -> None:
        self.fd = fd
        self.name = fd.name
        self.direct = False  # True: setattr; False: nested plan or ParseDict
        self.nested = False  # a singular message field filled by its own plan
        self.convert: _Conv | None = None  # applied before setattr
        # Levels of messages the value can take below its message (inf: no bound).
        self.levels = 0.0 if fd.message_type is None else 1 + _levels_below(fd.message_type)
        types: tuple[type, ...] | None
        if fd.is_repeated:
            types, self.expected = ((dict,), "an object") if _is_map(fd) else ((list,), "an array")
        elif fd.cpp_type == _FD.CPPTYPE_MESSAGE:
            full = _message_type(fd).full_name
            if full in _WRAPPERS or full in _SPECIAL_JSON:
                types, self.expected = None, "a valid value"
            else:
                types, self.expected, self.nested = (dict,), "an object", True
        elif fd.cpp_type in _INT_TYPES:
            types, self.expected, self.direct = (int,), "an integer", True
        elif fd.cpp_type in _FLOAT_TYPES:
            types, self.expected, self.direct = (int, float), "a number", True
        elif fd.cpp_type == _FD.CPPTYPE_BOOL:
            types, self.expected, self.direct = (bool,), "a boolean", True
        elif fd.cpp_type == _FD.CPPTYPE_ENUM:
            types, self.expected = (str, int), "a string"
        elif fd.type == _FD.TYPE_BYTES:
            types, self.expected, self.direct = (str,), "a base64 string", True
            self.convert = _decode_b64
        else:
            types, self.expected, self.direct = (str,), "a string", True
        self.types = types


class _MessagePlan:
    """Request-side table of one message type."""

    __slots__ = ("_plans", "collector", "descriptor", "fields")

    def __init__(self, descriptor: Descriptor, plans: Callable[[Descriptor], _MessagePlan]) -> None:
        self.descriptor = descriptor
        self._plans = plans  # resolves nested message plans lazily (recursive types)
        self.collector: str | None = None
        for fd in descriptor.fields:
            if (
                fd.message_type is not None
                and fd.message_type.full_name == "google.protobuf.Struct"
                and not fd.is_repeated
                and fd.GetOptions().Extensions[_COLLECTS_UNKNOWN_FIELDS]
            ):
                self.collector = fd.name
        self.fields: dict[str, _InField] = {
            fd.name: _InField(fd) for fd in descriptor.fields if fd.name != self.collector
        }

    def fill(self, msg: Message, obj: Mapping[str, Any], prefix: str = "", depth: int = 0) -> None:
        """Sets `msg` from a decoded JSON object (the hot path).

        Args:
            msg: The message to fill.
            obj: The decoded JSON object.
            prefix: Dotted path of `msg` inside the request, for error `param`s.
            depth: Levels of `msg` below the request message.

        Raises:
            HttpError: A 400 naming the offending key.
        """
        if depth > MAX_MESSAGE_DEPTH:
            raise _too_deep(prefix.rstrip("."))
        fields = self.fields
        delegated: dict[str, Any] | None = None
        unknown: dict[str, Any] | None = None
        for key, value in obj.items():
            spec = fields.get(key)
            if spec is None:
                if self.collector is None:
                    raise _unknown_parameter(prefix + key)
                if unknown is None:
                    unknown = {}
                unknown[key] = value
                continue
            if value is None:
                continue
            if spec.types is not None and type(value) not in spec.types:
                raise _invalid_type(prefix + key, spec.expected, value)
            if spec.direct:
                try:
                    if spec.convert is not None:
                        value = spec.convert(value)
                    setattr(msg, spec.name, value)
                except UnicodeError:
                    raise _not_utf8(prefix + key) from None
                except (TypeError, ValueError, OverflowError) as exc:
                    raise _invalid_value(prefix + key, _short(exc)) from None
            elif spec.nested:
                sub = getattr(msg, spec.name)
                sub.SetInParent()
                self._plans(_message_type(spec.fd)).fill(sub, value, f"{prefix}{key}.", depth + 1)
            else:
                if delegated is None:
                    delegated = {}
                delegated[key] = value
        if delegated:
            self._parse_delegated(msg, delegated, prefix, depth)
        if unknown:
            self.collect(msg, unknown, prefix, depth)

    def _parse_delegated(
        self, msg: Message, delegated: dict[str, Any], prefix: str, depth: int
    ) -> None:
        """Repeated, map, enum, bytes and well-known-type fields: proto3 JSON rules."""
        try:
            json_format.ParseDict(delegated, msg, max_recursion_depth=_PARSE_DICT_DEPTH)
        except (json_format.ParseError, TypeError, ValueError, OverflowError):
            self._find_fault(msg, delegated, prefix)
        room = MAX_MESSAGE_DEPTH - depth
        for key in delegated:
            spec = self.fields[key]
            if spec.levels > room and _value_nests_deeper(spec.fd, getattr(msg, spec.name), room):
                raise _too_deep(prefix + key)

    @staticmethod
    def _find_fault(msg: Message, delegated: dict[str, Any], prefix: str) -> NoReturn:
        """Raises the error of the delegated key at fault (slow path, errors only)."""
        for key, value in delegated.items():
            fd = cast(FieldDescriptor, msg.DESCRIPTOR.fields_by_name[key])
            if _is_repeated_message(fd) and isinstance(value, list):
                # Elements of a list of messages must be objects: protobuf's
                # error for a string would read its letters as field names.
                for index, item in enumerate(value):
                    if not isinstance(item, dict):
                        raise _invalid_type(f"{prefix}{key}[{index}]", "an object", item)
            try:
                json_format.ParseDict(
                    {key: value}, type(msg)(), max_recursion_depth=_PARSE_DICT_DEPTH
                )
            except (json_format.ParseError, TypeError, ValueError, OverflowError) as exc:
                if _has_surrogate(value):
                    raise _not_utf8(prefix + key) from None
                raise _invalid_value(prefix + key, _short(exc)) from None
        raise _invalid_value(prefix + next(iter(delegated)), "could not be parsed.")

    def collect(self, msg: Message, unknown: Mapping[str, Any], prefix: str, depth: int) -> None:
        """Puts undeclared keys in the collector Struct, checked as the core will parse them.

        Args:
            msg: The message with the collector field.
            unknown: The undeclared keys and their decoded JSON values.
            prefix: Dotted path of `msg` inside the request, for error `param`s.
            depth: Levels of `msg` below the request message.

        Raises:
            HttpError: A 400 naming the offending key.
        """
        struct: Any = getattr(msg, str(self.collector))
        # Each key's Value sits three levels below `msg`: Struct, map entry, Value.
        room = MAX_MESSAGE_DEPTH - depth - 3
        for key, value in unknown.items():
            try:
                struct.update({key: value})
            except UnicodeError:
                raise _not_utf8(prefix + key) from None
            except RecursionError:
                raise _too_deep(prefix + key) from None
            except (TypeError, ValueError, OverflowError) as exc:
                raise _invalid_value(prefix + key, _short(exc)) from None
            if room < 0 or _nests_deeper(struct.fields[key], room):
                raise _too_deep(prefix + key)


def _decode_b64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional (proto3 JSON); strict otherwise."""
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise ValueError("expected a base64-encoded string") from None


def _short(exc: BaseException) -> str:
    """A one-line, bounded description of a conversion error (no repr, no trace)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OverflowError) or "out of range" in text:
        # Python's and protobuf's words name their internals ("convert to float").
        return "the number is out of range for this field."
    unknown = _NO_SUCH_FIELD.search(text)
    if unknown is not None:
        # protobuf's words name the message type; the caller knows only fields.
        return f"it has no field {unknown[1]!r}."
    if text.startswith("Message type"):
        text = text.split(" at ", 1)[0]
    return text[:200].rstrip(".") + "."


_NO_SUCH_FIELD = re.compile(r'has no field named "([^"]{0,100})"')


def _from_text(fd: FieldDescriptor, text: str, param: str) -> Any:
    """Converts a path or query string to a value for a scalar field."""
    cpp = fd.cpp_type
    try:
        if cpp == _FD.CPPTYPE_STRING:
            return _decode_b64(text) if fd.type == _FD.TYPE_BYTES else text
        if cpp in _INT_TYPES:
            return int(text, 10)
        if cpp in _FLOAT_TYPES:
            return float(text)
        if cpp == _FD.CPPTYPE_BOOL:
            if text in ("true", "false"):
                return text == "true"
            raise ValueError(text)
        if cpp == _FD.CPPTYPE_ENUM:
            value = _enum_type(fd).values_by_name.get(text)
            return value.number if value is not None else int(text, 10)
    except ValueError:
        pass
    else:
        raise _invalid_value(param, "this field cannot be set from the URL.")
    kinds = {_FD.CPPTYPE_BOOL: "a boolean", _FD.CPPTYPE_ENUM: "an enum name"}
    expected = (
        "an integer"
        if cpp in _INT_TYPES
        else "a number"
        if cpp in _FLOAT_TYPES
        else kinds.get(cpp, "base64")
    )
    raise door_error(Reason.INVALID_TYPE_IN_TEXT, param=param, expected=expected, text=text[:100])


def _resolve(descriptor: Descriptor, field_path: str) -> list[FieldDescriptor] | None:
    """The field chain for a dotted path, or None when it does not exist."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in field_path.split("."):
        if current is None:
            return None
        fd = current.fields_by_name.get(part)
        if fd is None:
            return None
        chain.append(fd)
        current = fd.message_type if not fd.is_repeated else None
    last = chain[-1]
    if last.cpp_type == _FD.CPPTYPE_MESSAGE and _message_type(last).full_name not in _WRAPPERS:
        return None
    return chain


def _set_text(msg: Message, chain: list[FieldDescriptor], text: str, param: str) -> None:
    """Sets (or appends to) the field at the end of `chain` from a string."""
    for fd in chain[:-1]:
        msg = getattr(msg, fd.name)
    last = chain[-1]
    try:
        if last.cpp_type == _FD.CPPTYPE_MESSAGE:  # a wrapper type
            target = getattr(msg, last.name)
            target.value = _from_text(target.DESCRIPTOR.fields_by_name["value"], text, param)
        elif last.is_repeated:
            getattr(msg, last.name).append(_from_text(last, text, param))
        else:
            setattr(msg, last.name, _from_text(last, text, param))
    except UnicodeError:
        raise _not_utf8(param) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise _invalid_value(param, _short(exc)) from None


class RequestDecoder:
    """Builds the request message of one route from body, path and query."""

    __slots__ = (
        "_body_field",
        "_body_plan",
        "_chains",
        "_message_class",
        "_path_chains",
        "_plan",
        "uses_body",
        "uses_query",
    )

    def __init__(
        self,
        marshaler: Marshaler,
        message_class: type[Message],
        body: str,
        path_variables: Iterable[str],
    ) -> None:
        """Prepares the tables for one route.

        Args:
            marshaler: Owner of the per-type caches.
            message_class: The request message class.
            body: The HttpRule `body`: `"*"`, a top-level field name, or `""`.
            path_variables: The field paths bound by the path template.

        Raises:
            ValueError: `body` or a path variable names no suitable field.
        """
        descriptor = _descriptor_of(message_class)
        self._message_class = message_class
        self._plan = marshaler.plan(descriptor)
        self._body_field: _InField | None = None
        self._body_plan: _MessagePlan | None = None
        self.uses_body = body != ""
        self.uses_query = body != "*"
        if body not in ("", "*"):
            fd = descriptor.fields_by_name.get(body)
            if fd is None:
                raise ValueError(f"{descriptor.full_name} has no body field {body!r}")
            spec = _InField(fd)
            self._body_field = spec
            if spec.nested:
                self._body_plan = marshaler.plan(_message_type(fd))
        self._path_chains: dict[str, list[FieldDescriptor]] = {}
        for var in path_variables:
            chain = _resolve(descriptor, var)
            if chain is None:
                raise ValueError(f"{descriptor.full_name} has no scalar field {var!r}")
            self._path_chains[var] = chain
        self._chains: dict[str, list[FieldDescriptor]] = {}

    def decode(
        self,
        body: bytes | None,
        path_vars: Mapping[str, str],
        query: Iterable[tuple[str, str]] | None,
    ) -> Message:
        """Decodes one request.

        Args:
            body: The raw request body (None or empty: no body).
            path_vars: Variables bound by the path template.
            query: Query parameters (pairs, repeated keys allowed), or None.

        Returns:
            The request message.

        Raises:
            HttpError: A 400 naming the problem.
        """
        msg = self._message_class()
        if body and self.uses_body:
            try:
                value = json.loads(body, parse_constant=_reject_constant)
            except ValueError:
                raise door_error(Reason.INVALID_JSON) from None
            except RecursionError:  # a hostile body can nest past Python's stack
                raise door_error(Reason.NESTED_TOO_DEEPLY) from None
            try:
                self._fill_body(msg, value)
            except RecursionError:
                raise door_error(Reason.NESTED_TOO_DEEPLY) from None
        self.fill_url(msg, path_vars, query)
        return msg

    def fill_url(
        self,
        msg: Message,
        path_vars: Mapping[str, str],
        query: Iterable[tuple[str, str]] | None,
    ) -> None:
        """Sets what the URL gives on a message whose body is already decoded.

        Query parameters count unless the body is `"*"`; path variables come
        last, so they win over the body. Bodies other than JSON (forms) end here too.

        Args:
            msg: The request message, its body fields set.
            path_vars: Variables bound by the path template.
            query: Query parameters (pairs, repeated keys allowed), or None.

        Raises:
            HttpError: A 400 naming the problem.
        """
        if query is not None and self.uses_query:
            self._fill_query(msg, query)
        for var, text in path_vars.items():
            _set_text(msg, self._path_chains[var], text, var)

    def _fill_body(self, msg: Message, value: Any) -> None:
        spec = self._body_field
        if spec is None:  # body "*"
            if type(value) is not dict:
                raise door_error(Reason.BODY_NOT_OBJECT, got=_json_kind(value))
            self._plan.fill(msg, value)
        elif value is None:
            return
        elif spec.types is not None and type(value) not in spec.types:
            raise _invalid_type(spec.name, spec.expected, value)
        elif self._body_plan is not None:
            sub = getattr(msg, spec.name)
            sub.SetInParent()
            self._body_plan.fill(sub, value, depth=1)
        else:
            # Same path as a top-level key, without the unknown-key check.
            self._plan.fill(msg, {spec.name: value})

    def _fill_query(self, msg: Message, query: Iterable[tuple[str, str]]) -> None:
        collected: dict[str, Any] | None = None
        for key, text in query:
            chain = self._chains.get(key)
            if chain is None:
                chain = _resolve(self._plan.descriptor, key)
                if chain is None or chain[0].name == self._plan.collector:
                    if self._plan.collector is None or "." in key:
                        raise _unknown_parameter(key)
                    if collected is None:
                        collected = {}
                    collected[key] = text
                    continue
                self._chains[key] = chain  # only names that exist: bounded
            _set_text(msg, chain, text, key)
        if collected:
            self._plan.collect(msg, collected, "", 0)


# -------------------------------------------------------------------------- responses


def _float_json(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


_PACK_F = struct.Struct("<f")


def _float32_json(value: float) -> float | str:
    """A float32 as the shortest decimal that reads back as the same float32."""
    if not math.isfinite(value):
        return _float_json(value)
    for digits in (6, 7, 8):
        shorter = float(f"{value:.{digits}g}")
        if _PACK_F.unpack(_PACK_F.pack(shorter))[0] == value:
            return shorter
    return value


# Bytes at least this long are spliced into the body as base64 after the rest
# is serialized, instead of going through the JSON string encoder (which scans
# and copies every character: ~4x slower for a 20 MB response of images).
_SPLICE_MIN_BYTES = 32 * 1024
_PLACEHOLDER = "\ue000\ue001"
_QUOTED_PLACEHOLDER = f'"{_PLACEHOLDER}"'


class _Blob:
    """A large bytes value, base64-encoded only when the body is assembled."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _b64(value: bytes) -> str | _Blob:
    if len(value) >= _SPLICE_MIN_BYTES:
        return _Blob(value)
    return pybase64.b64encode(value).decode("ascii")


def _encode_with_blobs(jsonable: Any) -> bytes:
    """Serializes a value holding `_Blob`s: skeleton first, then one join."""
    blobs: list[_Blob] = []

    def default(obj: Any) -> str:
        if type(obj) is not _Blob:
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        blobs.append(obj)
        return _PLACEHOLDER

    skeleton = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=default).encode(
        jsonable
    )
    parts = skeleton.split(_QUOTED_PLACEHOLDER)
    if len(parts) != len(blobs) + 1:
        # A string of the response equals the placeholder: take the slow path.
        return _dumps_plain(jsonable).encode("utf-8")
    out = [parts[0].encode("utf-8")]
    for blob, part in zip(blobs, parts[1:], strict=True):
        out += (b'"', pybase64.b64encode(blob.data), b'"', part.encode("utf-8"))
    return b"".join(out)


def _dumps_plain(jsonable: Any) -> str:
    def default(obj: Any) -> str:
        if type(obj) is not _Blob:
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        return pybase64.b64encode(obj.data).decode("ascii")

    return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=default).encode(
        jsonable
    )


def _bool_key(value: bool) -> str:
    return "true" if value else "false"


class ResponseEncoder:
    """Serializes the response message of one route to JSON bytes."""

    __slots__ = ("_dumps", "_field", "_field_conv", "_message_conv")

    def __init__(
        self, marshaler: Marshaler, message_class: type[Message], response_body: str = ""
    ) -> None:
        """Prepares the tables for one route.

        Args:
            marshaler: Owner of the per-type caches.
            message_class: The response message class.
            response_body: The HttpRule `response_body`: a top-level field whose
                value is the whole HTTP body, or `""` for the whole message.

        Raises:
            ValueError: `response_body` names no field.
        """
        descriptor = _descriptor_of(message_class)
        self._dumps = marshaler.dumps
        self._message_conv = marshaler.message_converter(descriptor)
        self._field: str | None = None
        self._field_conv: _Conv | None = None
        if response_body:
            fd = descriptor.fields_by_name.get(response_body)
            if fd is None:
                raise ValueError(f"{descriptor.full_name} has no field {response_body!r}")
            self._field = fd.name
            self._field_conv = marshaler.field_converter(fd)

    def encode(self, msg: Message) -> bytes:
        """The UTF-8 JSON body for `msg` (or for its `response_body` field)."""
        if self._field is None:
            jsonable = self._message_conv(msg)
        else:
            value = getattr(msg, self._field)
            jsonable = value if self._field_conv is None else self._field_conv(value)
        try:
            return self._dumps(jsonable).encode("utf-8")
        except TypeError:  # large bytes values (_Blob) present
            return _encode_with_blobs(jsonable)


class Marshaler:
    """Owns the per-message-type tables (built once, reused by every route)."""

    def __init__(self) -> None:
        """Starts with empty tables."""
        self._plans: dict[str, _MessagePlan] = {}
        self._converters: dict[str, _Conv] = {}
        self.dumps: Callable[[Any], str] = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":")
        ).encode

    def plan(self, descriptor: Descriptor) -> _MessagePlan:
        """The request-side table of a message type."""
        plan = self._plans.get(descriptor.full_name)
        if plan is None:
            plan = self._plans[descriptor.full_name] = _MessagePlan(descriptor, self.plan)
        return plan

    def request_decoder(
        self, message_class: type[Message], body: str, path_variables: Iterable[str] = ()
    ) -> RequestDecoder:
        """A decoder for one route (see `RequestDecoder`)."""
        return RequestDecoder(self, message_class, body, path_variables)

    def response_encoder(
        self, message_class: type[Message], response_body: str = ""
    ) -> ResponseEncoder:
        """An encoder for one route (see `ResponseEncoder`)."""
        return ResponseEncoder(self, message_class, response_body)

    def message_converter(self, descriptor: Descriptor) -> _Conv:
        """A function turning a message of this type into a JSON-ready value."""
        conv = self._converters.get(descriptor.full_name)
        if conv is not None:
            return conv
        full = descriptor.full_name
        if full in _WRAPPERS:
            inner = self._scalar_converter(descriptor.fields_by_name["value"])

            def wrapper(msg: Message) -> Any:
                value = msg.value  # type: ignore[attr-defined]
                return value if inner is None else inner(value)

            conv = wrapper
        elif full in _SPECIAL_JSON:

            def special(msg: Message) -> Any:
                return json_format.MessageToDict(msg, preserving_proto_field_name=True)

            conv = special
        else:
            # (name, has presence, converter), in field order. Fields without
            # presence (plain proto3 scalars, repeated, maps) are always
            # emitted, zero included, as OpenAI sends e.g. `"output_tokens": 0`;
            # fields with presence only when set.
            fields: list[tuple[str, bool, _Conv | None]] = []

            def message(msg: Message) -> dict[str, Any]:
                out: dict[str, Any] = {}
                for name, has_presence, convert in fields:
                    if has_presence and not msg.HasField(name):
                        continue
                    value = getattr(msg, name)
                    out[name] = value if convert is None else convert(value)
                return out

            conv = message
            # Registered before the fields so recursive types terminate.
            self._converters[full] = conv
            for fd in descriptor.fields:
                fields.append((fd.name, fd.has_presence, self.field_converter(fd)))
        self._converters[full] = conv
        return conv

    def field_converter(self, fd: FieldDescriptor) -> _Conv | None:
        """Converter for a field's value as returned by the message (None: as is)."""
        if _is_map(fd):
            entry = _message_type(fd)
            key_fd = entry.fields_by_name["key"]
            val_conv = self.field_converter(entry.fields_by_name["value"])
            key_conv: _Conv = _bool_key if key_fd.cpp_type == _FD.CPPTYPE_BOOL else str

            def map_conv(value: Any) -> dict[str, Any]:
                if val_conv is None:
                    return {key_conv(k): v for k, v in value.items()}
                return {key_conv(k): val_conv(v) for k, v in value.items()}

            return map_conv
        single = self._scalar_converter(fd)
        if not fd.is_repeated:
            return single
        if single is None:
            return list

        def repeated(value: Any) -> list[Any]:
            return [single(v) for v in value]

        return repeated

    def _scalar_converter(self, fd: FieldDescriptor) -> _Conv | None:
        cpp = fd.cpp_type
        if cpp == _FD.CPPTYPE_MESSAGE:
            return self.message_converter(_message_type(fd))
        if fd.type == _FD.TYPE_BYTES:
            return _b64
        if cpp == _FD.CPPTYPE_DOUBLE:
            return _float_json
        if cpp == _FD.CPPTYPE_FLOAT:
            return _float32_json
        if cpp == _FD.CPPTYPE_ENUM:
            names = {v.number: v.name for v in _enum_type(fd).values}

            def enum_name(value: int) -> str | int:
                return names.get(value, value)

            return enum_name
        # int32/int64/uint*/bool/string: Python values are already JSON-ready,
        # and 64-bit integers stay numbers.
        return None
