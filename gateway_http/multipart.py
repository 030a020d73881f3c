"""multipart/form-data -> protobuf for the HTTP door, read part by part as the body arrives.

A form is the JSON object of the same request, sent another way: each part
sets the top-level field of its name (with `body: "*"`), or a field of the
body message (with `body: "field"` naming a message); with `body: "field"`
naming any other field, only parts of that name are taken. The URL's path
variables and query parameters then apply as for JSON
(`RequestDecoder.fill_url`). Decisions:

* A text part (no `filename`) is parsed as its field's type with JSON's
  rules: integers and numbers in JSON's grammar (`10`, `-1`, `0.5`, `1e3`;
  not `10.0` for an integer, nor `1_0`, ` 1`, `NaN`), booleans `true` or
  `false`, enums by name (or number, as JSON allows), strings as they are,
  and `bytes` as base64 (the door's text form of bytes, as in JSON and the
  URL). Text is UTF-8 unless the part's Content-Type (or a `_charset_` part,
  RFC 7578 4.6) names another charset.
* A file part (with a `filename`, even empty) sets a `bytes` field to its
  contents, or a field whose message type carries
  `(gateway_http.api.v1.upload)` to its contents, filename and Content-Type.
  A file part for any other field, and a text part for an upload field, are
  `invalid_type` 400s naming the field.
* Repeated fields take repeated parts, or `name[]` parts (as HTML forms and
  OpenAI's SDKs send lists); `name[]` for a singular field is `invalid_type`
  ("an array"), and a singular field sent twice keeps the last part, as a JSON
  key sent twice does.
* A singular message field is set field by field, with bracketed names as
  OpenAI's SDKs send nested objects (`svg[model]`, `a[b][c]`), within the
  depth the core's parser takes (`MAX_MESSAGE_DEPTH`). Maps, repeated
  messages and well-known types other than wrappers cannot be set from a
  form: a 400 naming the field says to send the request as JSON; so does
  a text part for a message field.
* A name the message does not declare is `unknown_parameter`, unless the
  message has a `collects_unknown_fields` Struct: text parts are collected
  there as strings under the name as sent (`svg[model]` stays one key, which
  a form sent on by the core reproduces), `name[]` parts as a list of
  strings; a file part never is (a Struct holds no bytes), so it stays
  `unknown_parameter`.
* The body counts against the door's body limit as it is read (boundaries,
  headers and preamble included), and every part against the part limit:
  413s, without reading on. A Content-Transfer-Encoding (which RFC 7578
  forbids senders), a nested multipart part, a part without a name, a
  missing boundary or a body that ends early is a 400 (`INVALID_MULTIPART`).
* A part's contents are read once, as the chunks aiohttp returns, joined
  into one `bytes` (the chunks then dropped) that the field is set to
  (protobuf keeps its own copy, and the `bytes` is dropped): no other copy
  outlives the part, and no table of parts is built first.
* Given a `FileSink` (a route with an upload twin), file parts are not read
  into the message at all: the field gets the file's entry (its filename and
  content type, for an upload message) with empty contents, and the
  contents go to the sink as they are read, each piece named by the field's
  path and place (`UploadChunk`). The door then holds a piece at a time,
  whatever the size of the upload.

The JSON decoder's helpers used here (base64, field kinds, error wording, the
collector's checks) are imported from `gateway_http.marshal`, so that both
bodies follow one set of rules.
"""

from __future__ import annotations

import contextlib
import enum
import math
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, hdrs, http_exceptions, web
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway_http.api.v1 import annotations_pb2
from gateway_http.errors import HttpError, Reason, door_error
from gateway_http.marshal import (
    _SPECIAL_JSON,
    _WRAPPERS,
    MAX_MESSAGE_DEPTH,
    Marshaler,
    RequestDecoder,
    _decode_b64,
    _is_map,
    _MessagePlan,
    _short,
)

__all__ = ["FORM_DATA", "FileSink", "FormDecoder", "FormReader"]

FORM_DATA = "multipart/form-data"

# protoc's .pyi types an extension as a plain FieldDescriptor, which
# types-protobuf's `Extensions[...]` refuses: used untyped.
_UPLOAD: Any = annotations_pb2.upload

_FD = FieldDescriptor

# Bytes asked of aiohttp per read: large enough that a 50 MB file is few
# reads, small enough that a part over its limit stops early.
_CHUNK_BYTES = 64 * 1024
# Bytes per piece of a file sent to a sink: few messages per megabyte, and
# each small enough that the door never holds much of an upload.
_FILE_PIECE_BYTES = 256 * 1024
# JSON's grammar (RFC 8259): what a JSON body could carry as this value.
_JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_FLOAT32 = 3.4028234663852886e38
# Longer integer text cannot fit 64 bits (and Python refuses to parse 4,300+ digits).
_MAX_INTEGER_CHARS = 21
# Content-Transfer-Encodings that leave the bytes as they are.
_IDENTITY_TRANSFER = frozenset({"7bit", "8bit", "binary"})

# Why a body is not a form, for `Reason.INVALID_MULTIPART`.
_NO_BOUNDARY = "its Content-Type has no boundary, or one longer than 70 characters."
_TRUNCATED = "it ends before its closing boundary."
_MALFORMED = "a boundary or the headers of a part are malformed."
_NO_NAME = "a part has no name (its Content-Disposition header is missing or malformed)."
_NESTED = "a part is itself multipart, which a form field cannot be."
_TRANSFER_ENCODED = "a part has a Content-Transfer-Encoding, which form fields must not use."
_SEND_FIELDS = (
    "this field takes an object: send each of its fields as a part named '{name}[field]'."
)
_NOT_IN_FORMS = (
    "a form cannot carry this field (a map, a list of objects, or a well-known type): "
    "send the request as JSON."
)
_BAD_FILE_HEADERS = "the file's name or Content-Type is not valid UTF-8 text."

# What aiohttp raises for a body that is not a well-formed form: ValueError
# (boundaries, framing), RuntimeError (an over-long `_charset_` part, a
# connection closed under the read), and its HTTP parser's errors (part
# headers too long, too many, malformed).
_NOT_A_FORM = (ValueError, RuntimeError, http_exceptions.HttpProcessingError)
# aiohttp's warnings for a malformed Content-Disposition, raised when warnings
# are errors (as in the tests); otherwise it warns and the name is missing.
_BAD_DISPOSITION = (BadContentDispositionHeader, BadContentDispositionParam)


class FileSink(Protocol):
    """Where the contents of a form's file parts go as they are read (an upload twin's call)."""

    async def send(self, field: str, index: int, data: list[bytes], begins: bool) -> None:
        """Takes the next piece of the file for `field` (a dotted path) at `index`.

        The piece is `data` joined (as read). `begins` is set on the file's
        first piece, which is sent even when the file is empty.
        """
        ...


class _Kind(enum.Enum):
    """What parts a field takes."""

    TEXT = "text"  # scalars and wrapper types: text parts
    BYTES = "bytes"  # bytes: a file part's contents, or base64 text
    UPLOAD = "upload"  # a message with the upload option: file parts
    OBJECT = "object"  # other messages and maps: `name[field]` parts (singular messages)


class _Upload:
    """The fields of an upload message that take a file part's contents, filename, type."""

    __slots__ = ("content_type", "data", "filename")

    def __init__(self, descriptor: Descriptor, option: Any) -> None:
        """Reads the `upload` option of `descriptor`.

        Raises:
            ValueError: The option names fields the message lacks, or of the wrong kind.
        """
        self.data = _named_field(descriptor, option.data_field, _FD.TYPE_BYTES, "data_field")
        self.filename = _named_field(
            descriptor, option.filename_field, _FD.TYPE_STRING, "filename_field", optional=True
        )
        self.content_type = _named_field(
            descriptor,
            option.content_type_field,
            _FD.TYPE_STRING,
            "content_type_field",
            optional=True,
        )


def _named_field(
    descriptor: Descriptor, name: str, type_: int, option: str, *, optional: bool = False
) -> str:
    """`name`, checked to be a singular field of `type_` of `descriptor` ("" if optional)."""
    if not name and optional:
        return ""
    fd = descriptor.fields_by_name.get(name)
    if fd is None or fd.type != type_ or fd.is_repeated:
        kind = "bytes" if type_ == _FD.TYPE_BYTES else "string"
        raise ValueError(
            f"{descriptor.full_name}: (gateway_http.api.v1.upload).{option} {name!r} "
            f"is not a singular {kind} field"
        )
    return name


# ------------------------------------------------------------------ text -> value


def _to_integer(text: str) -> int:
    if not _JSON_INTEGER.fullmatch(text):
        raise ValueError(text)
    if len(text) > _MAX_INTEGER_CHARS:
        raise OverflowError(text)
    return int(text)


def _to_number(text: str) -> float:
    if not _JSON_NUMBER.fullmatch(text):
        raise ValueError(text)
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e400: JSON has no infinities
        raise OverflowError(text)
    return value


def _to_float32(text: str) -> float:
    value = _to_number(text)
    if abs(value) > _MAX_FLOAT32:  # protobuf would store an infinity
        raise OverflowError(text)
    return value


def _to_boolean(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(text)


def _to_string(text: str) -> str:
    return text


def _enum_converter(fd: FieldDescriptor) -> Callable[[str], int]:
    enum_type = fd.enum_type
    assert enum_type is not None  # an enum field has its type
    numbers = {value.name: value.number for value in enum_type.values}

    def to_enum(text: str) -> int:
        number = numbers.get(text)
        return _to_integer(text) if number is None else number

    return to_enum


def _scalar(fd: FieldDescriptor) -> tuple[Callable[[str], Any], str]:
    """How a text part becomes this scalar field's value, and the noun for its type."""
    cpp = fd.cpp_type
    if cpp in (_FD.CPPTYPE_INT32, _FD.CPPTYPE_INT64, _FD.CPPTYPE_UINT32, _FD.CPPTYPE_UINT64):
        return _to_integer, "an integer"
    if cpp == _FD.CPPTYPE_FLOAT:
        return _to_float32, "a number"
    if cpp == _FD.CPPTYPE_DOUBLE:
        return _to_number, "a number"
    if cpp == _FD.CPPTYPE_BOOL:
        return _to_boolean, "a boolean"
    if cpp == _FD.CPPTYPE_ENUM:
        return _enum_converter(fd), "an enum name"
    if fd.type == _FD.TYPE_BYTES:
        return _decode_b64, "base64 or a file"
    return _to_string, "a string"


# ----------------------------------------------------------------------- tables


class _FormField:
    """How the parts of one name are checked and stored (computed once)."""

    __slots__ = (
        "convert",
        "expected",
        "kind",
        "message_type",
        "name",
        "nested",
        "repeated",
        "upload",
        "wrapped",
    )

    def __init__(self, fd: FieldDescriptor, upload_of: Callable[[Descriptor], _Upload | None]):
        self.name = fd.name
        self.repeated = fd.is_repeated and not _is_map(fd)
        self.wrapped = False  # a wrapper type: the value goes in its `value` field
        self.upload: _Upload | None = None
        self.convert: Callable[[str], Any] = _to_string
        # A singular message whose fields `name[field]` parts set.
        self.nested = False
        self.message_type = fd.message_type
        target = fd
        message_type = fd.message_type
        if message_type is not None and message_type.full_name in _WRAPPERS:
            self.wrapped = True
            target = message_type.fields_by_name["value"]
            message_type = None
        if message_type is not None:
            self.upload = None if _is_map(fd) else upload_of(message_type)
            if self.upload is not None:
                self.kind, self.expected = _Kind.UPLOAD, "a file"
            else:
                self.kind, self.expected = _Kind.OBJECT, "an object"
                self.nested = not fd.is_repeated and message_type.full_name not in _SPECIAL_JSON
        else:
            self.convert, self.expected = _scalar(target)
            self.kind = _Kind.BYTES if target.type == _FD.TYPE_BYTES else _Kind.TEXT


class _FormPlan:
    """The form-side table of one message type: its fields by name, and its collector."""

    __slots__ = ("fields", "json")

    def __init__(
        self,
        descriptor: Descriptor,
        json: _MessagePlan,
        upload_of: Callable[[Descriptor], _Upload | None],
    ) -> None:
        self.json = json  # its collector, and how unknown names are checked into it
        self.fields = {
            fd.name: _FormField(fd, upload_of)
            for fd in descriptor.fields
            if fd.name != json.collector
        }


class FormReader:
    """Owns the per-message-type form tables and the limits (one per application)."""

    def __init__(self, marshaler: Marshaler, *, max_body_bytes: int, max_part_bytes: int) -> None:
        """Starts with empty tables.

        Args:
            marshaler: Owner of the JSON tables (collectors and their checks).
            max_body_bytes: Largest body, boundaries and part headers included.
            max_part_bytes: Largest contents of one part.
        """
        self._marshaler = marshaler
        self.max_body_bytes = max_body_bytes
        self.max_part_bytes = max_part_bytes
        self._plans: dict[str, _FormPlan] = {}
        self._uploads: dict[str, _Upload | None] = {}

    def plan(self, descriptor: Descriptor) -> _FormPlan:
        """The form-side table of a message type, and of every message a form can reach in it.

        Built whole on first use, when the routes are built: a malformed upload
        option fails the start, not a request.

        Raises:
            ValueError: An upload option of a field's type is malformed.
        """
        plan = self._plans.get(descriptor.full_name)
        if plan is None:
            json = self._marshaler.plan(descriptor)
            plan = self._plans[descriptor.full_name] = _FormPlan(descriptor, json, self.upload_of)
            for spec in plan.fields.values():  # registered first: recursive types end
                if spec.nested:
                    self.plan(cast(Descriptor, spec.message_type))
        return plan

    def upload_of(self, descriptor: Descriptor) -> _Upload | None:
        """The upload fields of a message type, or None without the option.

        Raises:
            ValueError: The option is malformed.
        """
        full = descriptor.full_name
        if full not in self._uploads:
            options = descriptor.GetOptions()
            has = options.HasExtension(_UPLOAD)
            self._uploads[full] = _Upload(descriptor, options.Extensions[_UPLOAD]) if has else None
        return self._uploads[full]

    def decoder(self, message_class: type[Message], body: str, url: RequestDecoder) -> FormDecoder:
        """A decoder for one route with a body (see `FormDecoder`)."""
        return FormDecoder(self, message_class, body, url)


class _Scope:
    """One message of a request being filled from a form, with its tables (per request)."""

    __slots__ = ("collected", "depth", "fields", "json", "message", "prefix")

    def __init__(
        self,
        message: Message,
        fields: Mapping[str, _FormField],
        json: _MessagePlan | None,
        prefix: str,
        depth: int,
    ) -> None:
        self.message = message
        self.fields = fields
        self.json = json  # None: names the fields lack are never collected
        self.prefix = prefix  # dotted path of the message in the request, for error params
        self.depth = depth  # levels below the request message
        self.collected: dict[str, str | list[str]] | None = None


# `name`, `name[]`, `name[field]`, `name[field][]`, ...: the brackets of
# HTML forms and of OpenAI's SDKs (`image[]`, `svg[model]`).
_NAME = re.compile(r"([^\[\]]+)((?:\[[^\[\]]+\])*)(\[\])?")
_SEGMENT = re.compile(r"\[([^\[\]]+)\]")


def _split(name: str) -> tuple[list[str], bool]:
    """A part name's field path, and whether it ends in `[]`; any other name is one segment."""
    match = _NAME.fullmatch(name)
    if match is None:
        return [name], False
    return [match[1], *_SEGMENT.findall(match[2])], match[3] is not None


class FormDecoder:
    """Builds the request message of one route from a multipart/form-data body and its URL."""

    __slots__ = (
        "_body_message",
        "_depth",
        "_fields",
        "_forms",
        "_json",
        "_message_class",
        "_root",
        "_url",
    )

    def __init__(
        self, forms: FormReader, message_class: type[Message], body: str, url: RequestDecoder
    ) -> None:
        """Prepares the tables for one route.

        Args:
            forms: Owner of the per-type tables and of the limits.
            message_class: The request message class.
            body: The HttpRule `body`: `"*"` or a top-level field name.
            url: The route's JSON decoder, which sets path variables and query.

        Raises:
            ValueError: `body` names no field, or an upload option is malformed.
        """
        descriptor = cast(Descriptor, message_class.DESCRIPTOR)
        self._forms = forms
        self._message_class = message_class
        self._url = url
        self._body_message: str | None = None  # the body field whose message the form fills
        self._root = ""  # the path of that message in the request, for a file sink
        self._depth = 0
        self._json: _MessagePlan | None
        plan = forms.plan(descriptor)
        if body == "*":
            self._fields, self._json = plan.fields, plan.json
        else:
            fd = descriptor.fields_by_name.get(body)
            if fd is None:
                raise ValueError(f"{descriptor.full_name} has no body field {body!r}")
            spec = _FormField(fd, forms.upload_of)
            if spec.nested:
                sub = forms.plan(cast(Descriptor, fd.message_type))
                self._body_message, self._depth = fd.name, 1
                self._root = fd.name + "."
                self._fields, self._json = sub.fields, sub.json
            else:  # the form carries that one field: no other names, none collected
                self._fields, self._json = {fd.name: spec}, None

    async def decode(
        self,
        headers: Mapping[str, str],
        content: StreamReader,
        path_vars: Mapping[str, str],
        query: Iterable[tuple[str, str]] | None,
        files: FileSink | None = None,
    ) -> Message:
        """Decodes one request, reading its body part by part.

        Args:
            headers: The request headers (its Content-Type has the boundary).
            content: The request body, not read yet.
            path_vars: Variables bound by the path template.
            query: Query parameters (pairs, repeated keys allowed), or None.
            files: Where file parts' contents go as they are read; None: into
                the message.

        Returns:
            The request message.

        Raises:
            HttpError: A 400 naming the problem, or a 413 past a limit.
        """
        stream = _Metered(content, self._forms.max_body_bytes)
        try:
            reader = MultipartReader(headers, cast(StreamReader, stream))
        except ValueError:
            raise _invalid(_NO_BOUNDARY) from None
        msg = self._message_class()
        target = msg
        if self._body_message is not None:
            target = getattr(msg, self._body_message)
            target.SetInParent()
        # The messages the form sets fields of, by their dotted path.
        scopes = {"": _Scope(target, self._fields, self._json, "", self._depth)}
        while (part := await _next_part(reader, stream)) is not None:
            await self._take(part, scopes, stream, files)
        for scope in scopes.values():
            if scope.collected and scope.json is not None:
                scope.json.collect(scope.message, scope.collected, scope.prefix, scope.depth)
        self._url.fill_url(msg, path_vars, query)
        return msg

    async def _take(
        self,
        part: BodyPartReader,
        scopes: dict[str, _Scope],
        stream: _Metered,
        files: FileSink | None,
    ) -> None:
        """Reads one part into the field its name gives."""
        name, filename = _disposition(part, stream)
        path, brackets = _split(name)
        scope, key = self._locate(scopes, path)
        param = scope.prefix + key
        spec = scope.fields.get(key)
        if spec is None:
            if scope.json is None or scope.json.collector is None or filename is not None:
                raise door_error(Reason.UNKNOWN_PARAMETER, param=param)
            text = await self._text(part, param, stream)
            collected = scope.collected
            if collected is None:
                collected = scope.collected = {}
            if brackets:
                values = collected.get(key)
                if not isinstance(values, list):
                    values = collected[key] = []
                values.append(text)
            else:
                collected[key] = text
            return
        if brackets and not spec.repeated:
            raise _invalid_type(param, spec.expected, "an array")
        if spec.kind is _Kind.OBJECT:
            why = _SEND_FIELDS.format(name=param) if spec.nested else _NOT_IN_FORMS
            raise door_error(Reason.INVALID_VALUE, param=param, why=why)
        if filename is None:
            if spec.kind is _Kind.UPLOAD:
                raise _invalid_type(param, spec.expected, "a text field")
            _store_text(scope.message, spec, await self._text(part, param, stream), param)
        elif spec.kind is _Kind.TEXT:
            raise _invalid_type(param, spec.expected, "a file")
        elif files is not None:
            # The file's entry here, its contents to the sink as they are read.
            content_type = part.headers.get(hdrs.CONTENT_TYPE)
            _store_file(scope.message, spec, b"", filename, content_type, param)
            index = len(getattr(scope.message, spec.name)) - 1 if spec.repeated else 0
            field = self._root + scope.prefix + spec.name
            limit = self._forms.max_part_bytes
            await _send(
                part,
                param,
                stream,
                limit,
                lambda data, begins: files.send(field, index, data, begins),
            )
        else:
            # Straight from the read into the field: the message keeps the only copy.
            data = await _read(part, param, stream, self._forms.max_part_bytes)
            content_type = part.headers.get(hdrs.CONTENT_TYPE)
            _store_file(scope.message, spec, data, filename, content_type, param)

    def _locate(self, scopes: dict[str, _Scope], path: list[str]) -> tuple[_Scope, str]:
        """The message a part's field path ends in, and the name left in it.

        Raises:
            HttpError: A segment names a field that is not a message the form can fill.
        """
        scope = scopes[""]
        for index, segment in enumerate(path[:-1]):
            spec = scope.fields.get(segment)
            if spec is None:  # undeclared: the rest of the name is one name here, as sent
                return scope, segment + "".join(f"[{s}]" for s in path[index + 1 :])
            param = scope.prefix + segment
            if not spec.nested:
                if spec.kind is _Kind.OBJECT:
                    raise door_error(Reason.INVALID_VALUE, param=param, why=_NOT_IN_FORMS)
                raise _invalid_type(param, spec.expected, "an object")
            prefix = param + "."
            inner = scopes.get(prefix)
            if inner is None:
                if scope.depth >= MAX_MESSAGE_DEPTH:  # as for JSON: what the core's parser takes
                    raise door_error(Reason.NESTED_TOO_DEEPLY, param=param)
                message = getattr(scope.message, spec.name)
                message.SetInParent()
                plan = self._forms.plan(cast(Descriptor, spec.message_type))
                inner = scopes[prefix] = _Scope(
                    message, plan.fields, plan.json, prefix, scope.depth + 1
                )
            scope = inner
        return scope, path[-1]

    async def _text(self, part: BodyPartReader, param: str, stream: _Metered) -> str:
        """A text part's contents, decoded with its charset (UTF-8 by default)."""
        data = await _read(part, param, stream, self._forms.max_part_bytes)
        charset = part.get_charset(default="utf-8")
        try:
            return data.decode(charset)
        except LookupError:  # not a charset, or not a text one (e.g. "rot13")
            raise door_error(
                Reason.INVALID_VALUE, param=param, why=f"its charset '{charset}' is unknown."
            ) from None
        except UnicodeDecodeError:
            raise door_error(
                Reason.INVALID_VALUE, param=param, why=f"it is not valid {charset} text."
            ) from None


def _invalid(why: str) -> HttpError:
    return door_error(Reason.INVALID_MULTIPART, why=why)


def _invalid_type(key: str, expected: str, got: str) -> HttpError:
    return door_error(Reason.INVALID_TYPE, param=key, expected=expected, got=got)


def _store_text(target: Message, spec: _FormField, text: str, key: str) -> None:
    """Sets (or appends to) a scalar field from a text part."""
    try:
        value = spec.convert(text)
    except OverflowError:
        raise door_error(Reason.INVALID_VALUE, param=key, why=_short(OverflowError())) from None
    except ValueError:
        raise door_error(
            Reason.INVALID_TYPE_IN_TEXT, param=key, expected=spec.expected, text=text[:100]
        ) from None
    _store(target, spec, value, key)


def _store(target: Message, spec: _FormField, value: Any, key: str) -> None:
    """Sets (or appends to) a scalar field, or a wrapper's value, with the protobuf checks."""
    try:
        if spec.repeated:
            values = getattr(target, spec.name)
            if spec.wrapped:
                values.add(value=value)
            else:
                values.append(value)
        elif spec.wrapped:
            getattr(target, spec.name).value = value
        else:
            setattr(target, spec.name, value)
    except UnicodeError:  # a lone surrogate, which some charsets (e.g. utf-7) can decode to
        raise door_error(Reason.INVALID_UTF8, param=key) from None
    except (TypeError, ValueError, OverflowError) as exc:  # out of range for the field
        raise door_error(Reason.INVALID_VALUE, param=key, why=_short(exc)) from None


def _store_file(
    target: Message,
    spec: _FormField,
    data: bytes,
    filename: str,
    content_type: str | None,
    key: str,
) -> None:
    """Sets (or appends to) a bytes or upload field from a file part."""
    upload = spec.upload
    if upload is None:  # a bytes field (or BytesValue): the contents only
        _store(target, spec, data, key)
        return
    if spec.repeated:
        file = getattr(target, spec.name).add()
    else:
        file = getattr(target, spec.name)
        file.Clear()  # a singular field sent twice keeps the last part, whole
    setattr(file, upload.data, data)
    try:
        if upload.filename:
            setattr(file, upload.filename, filename)
        if upload.content_type and content_type is not None:
            setattr(file, upload.content_type, content_type)
    except UnicodeError:  # header bytes that are not UTF-8 (aiohttp keeps them as surrogates)
        raise door_error(Reason.INVALID_VALUE, param=key, why=_BAD_FILE_HEADERS) from None


# ------------------------------------------------------------------ reading parts


class _Metered:
    """The request body as `MultipartReader` reads it, counted against the body limit.

    aiohttp's own limit (`client_max_size`) applies to `request.read()` and
    `request.post()`, not to a stream read directly, so the count is here: on
    every read, so that a preamble, part headers or a part without end stop at
    the limit too. Data the reader gives back (`unread_data`, where it looks
    ahead for a boundary) is kept here rather than pushed back into aiohttp's
    buffer: it was counted once, and aiohttp's `unread_data` is deprecated.
    """

    __slots__ = ("_left", "_limit", "_pushed", "_stream")

    def __init__(self, stream: StreamReader, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._left = limit
        self._pushed = b""

    def _counted(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise door_error(Reason.BODY_TOO_LARGE, limit=self._limit)
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all that is buffered when `n` < 0), as `StreamReader.read`."""
        pushed = self._pushed
        if pushed:
            if 0 <= n < len(pushed):
                self._pushed = pushed[n:]
                return pushed[:n]
            self._pushed = b""
            return pushed
        # Never the whole stream at once: at most what the limit still allows, plus one.
        return self._counted(await self._stream.read(n if n >= 0 else self._left + 1))

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        """One line, with its end, as `StreamReader.readline`."""
        pushed = self._pushed
        if pushed:
            end = pushed.find(b"\n") + 1
            if end:
                self._pushed = pushed[end:]
                return pushed[:end]
            self._pushed = b""
        line = self._counted(await self._stream.readline(max_line_length=max_line_length))
        return pushed + line if pushed else line

    def unread_data(self, data: bytes) -> None:
        """Gives data back, to be read again first."""
        self._pushed = data + self._pushed

    def at_eof(self) -> bool:
        """Whether everything was read: the body ended and nothing was given back."""
        return not self._pushed and self._stream.at_eof()


async def _next_part(reader: MultipartReader, stream: _Metered) -> BodyPartReader | None:
    """The next part (its headers read), or None after the closing boundary."""
    try:
        part = await reader.next()
    except web.RequestPayloadError:  # e.g. a malformed chunked body, under the form
        raise door_error(Reason.UNREADABLE_BODY) from None
    except _BAD_DISPOSITION:  # read for the first part (is it `_charset_`?)
        raise _invalid(_NO_NAME) from None
    except _NOT_A_FORM:
        raise _invalid(_TRUNCATED if stream.at_eof() else _MALFORMED) from None
    if isinstance(part, MultipartReader):
        raise _invalid(_NESTED)
    if part is not None:
        encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING)
        if encoding is not None and encoding.strip().lower() not in _IDENTITY_TRANSFER:
            # Its contents are not the field's bytes; RFC 7578 4.7 deprecates it.
            raise _invalid(_TRANSFER_ENCODED)
    return part


def _disposition(part: BodyPartReader, stream: _Metered) -> tuple[str, str | None]:
    """The part's name and filename (None: a text part)."""
    try:
        name, filename = part.name, part.filename
    except _BAD_DISPOSITION:
        name, filename = None, None
    if name is None:
        # A part without headers at the very end: the body stopped after a boundary.
        raise _invalid(_TRUNCATED if not part.headers and stream.at_eof() else _NO_NAME)
    return name, filename


async def _reads(
    part: BodyPartReader, key: str, stream: _Metered, limit: int, size: int
) -> AsyncGenerator[bytes, None]:
    """A part's contents as aiohttp reads them (at most `size` bytes each), within the part limit.

    A 413 as soon as the limit is passed; a body that is not a form is a 400.
    What the caller does with each read raises its own errors, not these.
    """
    total = 0
    while True:
        try:
            if part.at_eof():
                return
            read = await part.read_chunk(size)
        except web.RequestPayloadError:
            raise door_error(Reason.UNREADABLE_BODY) from None
        except _NOT_A_FORM:
            raise _invalid(_TRUNCATED if stream.at_eof() else _MALFORMED) from None
        total += len(read)
        if total > limit:
            raise door_error(Reason.PART_TOO_LARGE, param=key, limit=limit)
        yield read


async def _read(part: BodyPartReader, key: str, stream: _Metered, limit: int) -> bytes:
    """A part's contents, within the part limit (`_reads`)."""
    # One copy, reads -> bytes (none for a single read), then the reads are dropped.
    return b"".join([read async for read in _reads(part, key, stream, limit, _CHUNK_BYTES)])


async def _send(
    part: BodyPartReader,
    key: str,
    stream: _Metered,
    limit: int,
    send: Callable[[list[bytes], bool], Awaitable[None]],
) -> None:
    """A file part's contents, to `send` in pieces of about `_FILE_PIECE_BYTES`.

    What aiohttp returns per read (often 64 KiB) is gathered first: each
    piece sent is a message through gRPC and a turn of both loops. Within
    the part limit, as `_read`.
    """
    gathered: list[bytes] = []
    gathered_bytes = 0
    begins = True
    async with contextlib.aclosing(_reads(part, key, stream, limit, _FILE_PIECE_BYTES)) as reads:
        async for read in reads:
            gathered.append(read)
            gathered_bytes += len(read)
            if gathered_bytes >= _FILE_PIECE_BYTES:
                await send(gathered, begins)
                gathered, gathered_bytes, begins = [], 0, False
    if gathered_bytes or begins:  # an empty file still replaces what its field had
        await send(gathered, begins)
