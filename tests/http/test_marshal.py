"""Unit tests of gateway_http.marshal: OpenAI-shaped JSON out, strict JSON in."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message,
    message_factory,
    struct_pb2,
)

from aqueduct.images.v1 import images_pb2 as img
from gateway_http import marshal
from gateway_http.dialect import OPENAI, ErrorFields
from gateway_http.errors import HttpError
from gateway_http.marshal import Marshaler
from tests.http import test_testproto as tp

# A test message with every field unset: what its presence-less fields encode to.
EMPTY_ECHO = {
    "name": "",
    "big": 0,
    "tags": [],
    "blob": "",
    "color": "COLOR_UNSPECIFIED",
    "ratio": 0.0,
    "counts": {},
    "scale": 0.0,
    "ubig": 0,
}


@pytest.fixture
def m() -> Marshaler:
    return Marshaler()


def encode(m: Marshaler, msg: Any, response_body: str = "") -> Any:
    return json.loads(m.response_encoder(type(msg), response_body).encode(msg))


# ------------------------------------------------------------------ responses


def test_images_response_matches_openai_shape(m: Marshaler) -> None:
    resp = img.GenerateImagesResponse(
        created=1_700_000_000,
        data=[img.Image(b64_json=b"\x89PNG\x00\xff", revised_prompt="a cat")],
        size="1024x1024",
        usage=img.ImageUsage(
            input_tokens=10,
            output_tokens=0,
            total_tokens=10,
            input_tokens_details=img.TokensDetails(text_tokens=10),
        ),
    )
    png = base64.b64encode(b"\x89PNG\x00\xff").decode()
    assert encode(m, resp) == {
        "created": 1_700_000_000,
        "data": [{"b64_json": png, "revised_prompt": "a cat"}],
        "size": "1024x1024",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 0,  # plain proto3 scalars are always sent, as OpenAI does
            "total_tokens": 10,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
        },  # the unset output_tokens_details message is omitted
    }


def test_int64_are_numbers_even_beyond_2_53(m: Marshaler) -> None:
    big = 2**62 + 1
    raw = m.response_encoder(img.Model).encode(img.Model(id="m", created=big))
    assert raw == b'{"id":"m","object":"","created":4611686018427387905,"owned_by":""}'
    ubig = tp.EchoRequest(ubig=2**64 - 1)
    assert encode(m, ubig) == {**EMPTY_ECHO, "ubig": 2**64 - 1}


def test_unset_fields_are_omitted_and_set_optional_zero_is_emitted(m: Marshaler) -> None:
    # Fields without presence are always sent; `optional` ones and messages only when set.
    assert encode(m, img.GenerateImagesResponse()) == {"created": 0, "data": []}
    assert encode(m, img.Image()) == {}
    assert encode(m, tp.EchoRequest()) == EMPTY_ECHO
    # `optional` fields have presence: set to the zero value, they are sent.
    assert encode(m, img.Image(url="", b64_json=b"")) == {"b64_json": "", "url": ""}
    assert encode(m, tp.EchoRequest(count=0, flag=False)) == {
        **EMPTY_ECHO,
        "count": 0,
        "flag": False,
    }


def test_empty_submessage_that_is_set_is_emitted(m: Marshaler) -> None:
    resp = img.GenerateImagesResponse()
    resp.usage.SetInParent()
    assert encode(m, resp) == {
        "created": 0,
        "data": [],
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
    }


def test_enums_maps_floats_repeated(m: Marshaler) -> None:
    msg = tp.EchoRequest(
        color=2, counts={"a": 2**60}, ratio=0.5, scale=0.1, tags=["x", "y"], inner=tp.Inner()
    )
    assert encode(m, msg) == {
        **EMPTY_ECHO,
        "tags": ["x", "y"],
        "inner": {"label": "", "size": 0},
        "color": "COLOR_BLUE",
        "ratio": 0.5,
        "counts": {"a": 2**60},
        "scale": 0.1,  # float32 printed as its shortest decimal
    }


@pytest.mark.parametrize(
    ("value", "text"), [(math.inf, "Infinity"), (-math.inf, "-Infinity"), (math.nan, "NaN")]
)
def test_non_finite_doubles_are_strings(m: Marshaler, value: float, text: str) -> None:
    raw = m.response_encoder(tp.EchoRequest).encode(tp.EchoRequest(ratio=value))
    assert json.loads(raw) == {**EMPTY_ECHO, "ratio": text}  # valid JSON, not a bare NaN


def test_unknown_enum_number_is_emitted_as_number(m: Marshaler) -> None:
    assert encode(m, tp.EchoRequest(color=7)) == {**EMPTY_ECHO, "color": 7}


def test_large_images_are_standard_base64(m: Marshaler) -> None:
    images = [bytes(range(256)) * 6000, b"\xfb\xff" * 40_000, b"small"]
    resp = img.GenerateImagesResponse(
        created=1, data=[img.Image(b64_json=b, revised_prompt="p\u00e9") for b in images]
    )
    assert len(images[0]) >= marshal._SPLICE_MIN_BYTES
    body = m.response_encoder(img.GenerateImagesResponse).encode(resp)
    decoded = json.loads(body)
    assert [base64.b64decode(d["b64_json"], validate=True) for d in decoded["data"]] == images
    assert "+" in decoded["data"][1]["b64_json"]  # standard, not URL-safe, alphabet
    assert decoded["data"][0]["revised_prompt"] == "p\u00e9"
    reference = json_format.MessageToDict(
        resp, preserving_proto_field_name=True, unquote_int64_if_possible=True
    )
    assert decoded == reference


def test_a_string_equal_to_the_splice_placeholder_is_kept(m: Marshaler) -> None:
    resp = img.GenerateImagesResponse(
        data=[img.Image(b64_json=b"\x01" * 40_000, revised_prompt=marshal._PLACEHOLDER)]
    )
    decoded = json.loads(m.response_encoder(img.GenerateImagesResponse).encode(resp))
    assert decoded["data"][0]["revised_prompt"] == marshal._PLACEHOLDER
    assert base64.b64decode(decoded["data"][0]["b64_json"]) == b"\x01" * 40_000


def test_response_body_field(m: Marshaler) -> None:
    resp = tp.EchoResponse(items=[tp.Inner(label="a", size=3), tp.Inner()])
    assert encode(m, resp, "items") == [{"label": "a", "size": 3}, {"label": "", "size": 0}]


def test_matches_json_format_for_well_known_types(m: Marshaler) -> None:
    req = img.GenerateImagesRequest(prompt="p")
    req.extra_parameters.update({"a": [1, "x", None], "b": {"c": True}})
    expected = {"a": [1, "x", None], "b": {"c": True}}
    assert encode(m, req) == {"prompt": "p", "extra_parameters": expected}


# ------------------------------------------------------------------- requests


def decode(m: Marshaler, cls: Any, body: bytes | None, body_rule: str = "*", **kw: Any) -> Any:
    path_vars = kw.pop("path_vars", {})
    decoder = m.request_decoder(cls, body_rule, tuple(path_vars))
    return decoder.decode(body, path_vars, kw.pop("query", None))


def bad(m: Marshaler, cls: Any, body: bytes | None, **kw: Any) -> ErrorFields:
    """The refusal of a request, as the OpenAI dialect words it."""
    with pytest.raises(HttpError) as info:
        decode(m, cls, body, **kw)
    assert info.value.http_status == 400
    return OPENAI.describe(info.value)


def test_decode_generate_request(m: Marshaler) -> None:
    body = json.dumps(
        {"prompt": "a cat", "model": "gpt-image-1", "n": 2, "size": None, "stream": False}
    ).encode()
    req = decode(m, img.GenerateImagesRequest, body)
    assert req.prompt == "a cat"
    assert req.n == 2
    assert not req.HasField("size")  # null = unset
    assert req.HasField("stream") and req.stream is False


def test_unknown_fields_go_to_the_collector(m: Marshaler) -> None:
    body = b'{"prompt": "p", "input_fidelity": "high", "future": {"x": [1, 2]}}'
    req = decode(m, img.GenerateImagesRequest, body)
    assert json_format.MessageToDict(req.extra_parameters) == {
        "input_fidelity": "high",
        "future": {"x": [1, 2]},
    }
    # The collector cannot be addressed by its own name: it is just another key.
    req = decode(m, img.GenerateImagesRequest, b'{"extra_parameters": {"a": 1}}')
    assert json_format.MessageToDict(req.extra_parameters) == {"extra_parameters": {"a": 1}}


def test_unknown_field_without_collector_is_rejected(m: Marshaler) -> None:
    error = bad(m, tp.EchoRequest, b'{"name": "x", "foo": 1}')
    assert (error.param, error.code) == ("foo", "unknown_parameter")
    assert error.message == "Unknown parameter: 'foo'."


def test_unknown_nested_field_names_the_path(m: Marshaler) -> None:
    error = bad(m, tp.EchoRequest, b'{"inner": {"label": "x", "nope": 1}}')
    assert (error.param, error.code) == ("inner.nope", "unknown_parameter")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"prompt": 5}', "prompt"),
        (b'{"prompt": "p", "n": "abc"}', "n"),
        (b'{"prompt": "p", "n": "10"}', "n"),  # strict, like the OpenAI API
        (b'{"prompt": "p", "n": 1.5}', "n"),
        (b'{"prompt": "p", "n": true}', "n"),
        (b'{"prompt": "p", "stream": "yes"}', "stream"),
        (b'{"prompt": ["p"]}', "prompt"),
        (b'{"prompt": {"a": 1}}', "prompt"),
    ],
)
def test_wrong_type_names_the_param(m: Marshaler, body: bytes, param: str) -> None:
    error = bad(m, img.GenerateImagesRequest, body)
    assert (error.param, error.code) == (param, "invalid_type")
    assert f"'{param}'" in error.message


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b'{"tags": "x"}', "tags", "invalid_type"),
        (b'{"tags": [1]}', "tags", "invalid_value"),
        (b'{"inner": [1]}', "inner", "invalid_type"),
        (b'{"inner": {"size": "big"}}', "inner.size", "invalid_type"),
        (b'{"color": "COLOR_GREEN"}', "color", "invalid_value"),
        (b'{"blob": "***"}', "blob", "invalid_value"),
        (b'{"counts": {"a": "x"}}', "counts", "invalid_value"),
        (b'{"big": 99999999999999999999999}', "big", "invalid_value"),
    ],
)
def test_wrong_values_in_other_field_kinds(
    m: Marshaler, body: bytes, param: str, code: str
) -> None:
    error = bad(m, tp.EchoRequest, body)
    assert (error.param, error.code) == (param, code)
    assert "Traceback" not in error.message


@pytest.mark.parametrize(
    ("message", "body", "param"),
    [
        (img.GenerateImagesRequest, b'{"prompt": "p", "n": 2147483648}', "n"),
        (tp.EchoRequest, b'{"big": 99999999999999999999999}', "big"),
        # An unknown parameter whose number Python cannot hold as a float.
        (img.GenerateImagesRequest, b'{"prompt": "p", "extra": 1' + b"0" * 400 + b"}", "extra"),
    ],
)
def test_numbers_out_of_range_are_worded_for_people(
    m: Marshaler, message: Any, body: bytes, param: str
) -> None:
    error = bad(m, message, body)
    assert (error.param, error.code) == (param, "invalid_value")
    why = "the number is out of range for this field."
    assert error.message == f"Invalid value for '{param}': {why}"


def test_other_field_kinds_decode(m: Marshaler) -> None:
    body = json.dumps(
        {
            "tags": ["a"],
            "inner": {"label": "l", "size": 2**40},
            "color": "COLOR_RED",
            "blob": base64.b64encode(b"\x00\x01").decode(),
            "counts": {"k": 3},
            "ratio": 1,
            "big": 2**62,
        }
    ).encode()
    req = decode(m, tp.EchoRequest, body)
    assert list(req.tags) == ["a"]
    assert (req.inner.label, req.inner.size) == ("l", 2**40)
    assert (req.color, req.blob, dict(req.counts), req.ratio, req.big) == (
        1,
        b"\x00\x01",
        {"k": 3},
        1.0,
        2**62,
    )
    empty_inner = decode(m, tp.EchoRequest, b'{"inner": {}}')
    assert empty_inner.HasField("inner")


@pytest.mark.parametrize("body", [b"{not json", b'{"a": 1', b"\xff\xfe", b"nan"])
def test_invalid_json(m: Marshaler, body: bytes) -> None:
    error = bad(m, img.GenerateImagesRequest, body)
    assert error.message.startswith("We could not parse the JSON body of your request")
    assert (error.param, error.code) == (None, None)


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null", b"true"])
def test_body_must_be_an_object(m: Marshaler, body: bytes) -> None:
    error = bad(m, img.GenerateImagesRequest, body)
    assert "must be a JSON object" in error.message


def test_empty_body_is_an_empty_message(m: Marshaler) -> None:
    assert decode(m, img.GenerateImagesRequest, b"") == img.GenerateImagesRequest()
    assert decode(m, img.GenerateImagesRequest, None) == img.GenerateImagesRequest()


def test_body_field_rule(m: Marshaler) -> None:
    req = decode(m, tp.EchoRequest, b'{"label": "l"}', "inner", path_vars={"name": "n"})
    assert (req.name, req.inner.label) == ("n", "l")
    error = bad(m, tp.EchoRequest, b'{"name": "x"}', body_rule="inner")
    assert (error.param, error.code) == ("name", "unknown_parameter")


def test_path_variables_win_over_the_body(m: Marshaler) -> None:
    req = decode(m, tp.EchoRequest, b'{"name": "body", "big": 1}', path_vars={"name": "path"})
    assert (req.name, req.big) == ("path", 1)


def test_dotted_path_variable(m: Marshaler) -> None:
    req = decode(m, tp.EchoRequest, None, "", path_vars={"inner.label": "a/b"})
    assert req.inner.label == "a/b"


def test_path_variable_to_missing_field_fails_at_start_up(m: Marshaler) -> None:
    with pytest.raises(ValueError, match="no scalar field"):
        m.request_decoder(tp.EchoRequest, "*", ("inner.nope",))
    with pytest.raises(ValueError, match="no body field"):
        m.request_decoder(tp.EchoRequest, "nope")


def test_query_parameters(m: Marshaler) -> None:
    query = [
        ("tags", "a"),
        ("tags", "b"),
        ("big", "12"),
        ("flag", "true"),
        ("color", "COLOR_RED"),
        ("inner.size", "5"),
        ("ratio", "0.25"),
    ]
    req = decode(m, tp.EchoRequest, None, "", query=query)
    assert list(req.tags) == ["a", "b"]
    assert (req.big, req.flag, req.color, req.inner.size, req.ratio) == (12, True, 1, 5, 0.25)


@pytest.mark.parametrize(
    ("query", "param", "code"),
    [
        ([("nope", "1")], "nope", "unknown_parameter"),
        ([("inner", "1")], "inner", "unknown_parameter"),
        ([("big", "x")], "big", "invalid_type"),
        ([("flag", "yes")], "flag", "invalid_type"),
        ([("count", "99999999999")], "count", "invalid_value"),
    ],
)
def test_bad_query_parameters(
    m: Marshaler, query: list[tuple[str, str]], param: str, code: str
) -> None:
    error = bad(m, tp.EchoRequest, None, body_rule="", query=query)
    assert (error.param, error.code) == (param, code)


def test_query_is_ignored_when_body_is_star(m: Marshaler) -> None:
    req = decode(m, tp.EchoRequest, b'{"big": 1}', "*", query=[("nope", "1"), ("big", "2")])
    assert req.big == 1


def test_unknown_query_parameters_go_to_the_collector(m: Marshaler) -> None:
    req = decode(m, img.GenerateImagesRequest, None, "", query=[("x_new", "1"), ("n", "2")])
    assert req.n == 2
    assert json_format.MessageToDict(req.extra_parameters) == {"x_new": "1"}


# ------------------------------------------- what the core's protobuf parser accepts


def _node_class() -> Any:
    """A recursive type of its own, with well-known-type fields.

    `message Node {Node child = 1; string name = 2; google.protobuf.Value value = 3;
    google.protobuf.Struct struct = 4;}`
    """
    fdp = descriptor_pb2.FileDescriptorProto(
        name="gatewayhttp/test/v1/node.proto",
        package="gatewayhttp.test.v1",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    node = fdp.message_type.add(name="Node")
    f = descriptor_pb2.FieldDescriptorProto
    node.field.add(
        name="child", number=1, type=f.TYPE_MESSAGE, type_name=".gatewayhttp.test.v1.Node"
    )
    node.field.add(name="name", number=2, type=f.TYPE_STRING)
    node.field.add(name="value", number=3, type=f.TYPE_MESSAGE, type_name=".google.protobuf.Value")
    node.field.add(
        name="struct", number=4, type=f.TYPE_MESSAGE, type_name=".google.protobuf.Struct"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(struct_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("gatewayhttp.test.v1.Node"))


Node = _node_class()


def nest(levels: int, leaf: Any, kind: str) -> Any:
    """`leaf` inside `levels` arrays, objects, or Node children."""
    for _ in range(levels):
        leaf = [leaf] if kind == "array" else {"child" if kind == "node" else "a": leaf}
    return leaf


def parses_in_the_core(msg: Any) -> bool:
    """Whether protobuf's own parser (as the core runs it) takes the message back."""
    try:
        type(msg).FromString(msg.SerializeToString())
    except message.DecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("cls", "make"),
    [
        # An unknown key, collected in the request's Struct (objects cost 3
        # levels each: Struct, map entry, Value; arrays 2: ListValue, Value).
        (img.GenerateImagesRequest, lambda n: {"prompt": "p", "deep": nest(n, 1, "object")}),
        (img.GenerateImagesRequest, lambda n: {"prompt": "p", "deep": nest(n, 1, "array")}),
        # A well-known type in a typed field, parsed by json_format.
        (Node, lambda n: {"value": nest(n, 1, "array")}),
        (Node, lambda n: {"struct": nest(n, {}, "object")}),
        # A recursive message type filled by the door's own plans.
        (Node, lambda n: nest(n, {"name": "leaf"}, "node")),
    ],
)
def test_the_door_accepts_exactly_the_depth_the_core_parses(
    m: Marshaler, cls: Any, make: Callable[[int], Any]
) -> None:
    outcomes = []
    for levels in range(0, 120):
        body = json.dumps(make(levels)).encode()
        try:
            msg = decode(m, cls, body)
        except HttpError as refused:
            error = OPENAI.describe(refused)
            assert refused.http_status == 400 and "nested too deeply" in error.message
            assert error.param in ("deep", "value", "struct") or (error.param or "").startswith(
                "child.child"
            )
            outcomes.append(False)
        else:
            outcomes.append(True)
            assert parses_in_the_core(msg), levels
    # Accepted up to a depth, refused beyond it, and the first refusal is a
    # message the core would refuse to parse (built here without the door).
    first_refused = outcomes.index(False)
    assert not any(outcomes[first_refused:])
    assert not parses_in_the_core(built_without_the_door(cls, make(first_refused)))


def built_without_the_door(cls: Any, value: dict[str, Any]) -> Any:
    if cls is img.GenerateImagesRequest:
        msg = cls(prompt=value.pop("prompt"))
        msg.extra_parameters.update(value)
        return msg
    return json_format.ParseDict(value, cls(), max_recursion_depth=10_000)


def test_a_too_deep_value_is_what_the_core_would_refuse_to_parse() -> None:
    # The door's limit is protobuf's: one level less parses, the door's first
    # refusal does not.
    within = img.GenerateImagesRequest()
    within.extra_parameters.update({"deep": nest(32, 1, "object")})  # Value at 3 + 3*32 = 99
    beyond = img.GenerateImagesRequest()
    beyond.extra_parameters.update({"deep": nest(33, 1, "object")})  # 102 > 100
    assert parses_in_the_core(within) and not parses_in_the_core(beyond)
    m = Marshaler()
    decode(m, img.GenerateImagesRequest, json.dumps({"deep": nest(32, 1, "object")}).encode())
    error = bad(m, img.GenerateImagesRequest, json.dumps({"deep": nest(33, 1, "object")}).encode())
    assert error.param == "deep"
    assert marshal.MAX_MESSAGE_DEPTH == 100


LONE = "\ud800"


@pytest.mark.parametrize(
    ("cls", "value", "param"),
    [
        (img.GenerateImagesRequest, {"prompt": LONE}, "prompt"),  # a typed string
        (img.GenerateImagesRequest, {"prompt": "p", "future": LONE}, "future"),  # unknown key
        (img.GenerateImagesRequest, {"prompt": "p", "future": {"a": [LONE]}}, "future"),
        (img.GenerateImagesRequest, {"prompt": "p", LONE: 1}, "?"),  # the key itself
        (tp.EchoRequest, {"tags": ["ok", LONE]}, "tags"),  # json_format's path
        (tp.EchoRequest, {"inner": {"label": LONE}}, "inner.label"),
        (Node, {"struct": {LONE: 1}}, "struct"),
        (Node, {"value": ["a", LONE]}, "value"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(
    m: Marshaler, cls: Any, value: Any, param: str
) -> None:
    # json.dumps writes "\ud800" as an escape: exactly what a hostile client sends.
    error = bad(m, cls, json.dumps(value).encode())
    assert (error.code, error.type) == ("invalid_value", "invalid_request_error")
    assert "surrogate" in error.message and "codec" not in error.message
    body = json.loads(OPENAI.error_body(refusal(m, cls, json.dumps(value).encode())))
    assert body["error"]["param"] == param


def test_a_lone_surrogate_in_the_query_is_a_400(m: Marshaler) -> None:
    error = bad(m, img.GenerateImagesRequest, None, body_rule="", query=[("x_new", LONE)])
    assert (error.param, error.code) == ("x_new", "invalid_value")
    error = bad(m, tp.EchoRequest, None, body_rule="", query=[("name", LONE)])
    assert (error.param, error.code) == ("name", "invalid_value")


@pytest.mark.parametrize(
    ("cls", "body", "param"),
    [
        (img.GenerateImagesRequest, b'{"future": 1' + b"0" * 400 + b"}", "future"),
        (tp.EchoRequest, b'{"ratio": 1' + b"0" * 400 + b"}", "ratio"),
    ],
)
def test_a_number_too_large_for_a_double_is_a_400(
    m: Marshaler, cls: Any, body: bytes, param: str
) -> None:
    error = bad(m, cls, body)
    assert (error.param, error.code) == (param, "invalid_value")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_has_no_nan_or_infinity(m: Marshaler, constant: bytes) -> None:
    error = bad(m, img.GenerateImagesRequest, b'{"prompt": "p", "future": ' + constant + b"}")
    assert error.message.startswith("We could not parse the JSON body")


def test_a_long_unknown_key_is_quoted_clipped(m: Marshaler) -> None:
    key = "k" * 100_000
    error = bad(m, tp.EchoRequest, json.dumps({key: 1}).encode())
    assert error.param is not None and len(error.param) <= 200 and len(error.message) < 300


def refusal(m: Marshaler, cls: Any, body: bytes) -> HttpError:
    with pytest.raises(HttpError) as info:
        decode(m, cls, body)
    return info.value


def test_a_list_of_messages_wants_objects_and_says_so(m: Marshaler) -> None:
    # protobuf would read the string's letters as field names of the message.
    error = bad(m, tp.FormRequest, b'{"files": [{"data": "AA=="}, "data:image/png;base64,AA"]}')
    assert (error.param, error.code) == ("files[1]", "invalid_type")
    assert "tp." not in error.message and "Message type" not in error.message


def test_an_unknown_key_inside_a_list_of_messages_names_only_the_field(m: Marshaler) -> None:
    error = bad(m, tp.FormRequest, b'{"files": [{"detail": 1}]}')
    assert error.param == "files"
    assert error.message.endswith("it has no field 'detail'.")
    assert "gatewayhttp.test" not in error.message
