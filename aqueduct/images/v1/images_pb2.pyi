from gateway_http.api.v1 import annotations_pb2 as _annotations_pb2
from google.api import annotations_pb2 as _annotations_pb2_1
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateImagesRequest(_message.Message):
    __slots__ = ("prompt", "model", "n", "size", "quality", "style", "response_format", "user", "background", "moderation", "output_compression", "output_format", "safety_identifier", "stream", "partial_images", "complexity", "frame_count", "frame_duration_ms", "svg", "extra_parameters")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    MODERATION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAFETY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_IMAGES_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRAME_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SVG_FIELD_NUMBER: _ClassVar[int]
    EXTRA_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: str
    n: int
    size: str
    quality: str
    style: str
    response_format: str
    user: str
    background: str
    moderation: str
    output_compression: int
    output_format: str
    safety_identifier: str
    stream: bool
    partial_images: int
    complexity: str
    frame_count: int
    frame_duration_ms: int
    svg: SvgOptions
    extra_parameters: _struct_pb2.Struct
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[str] = ..., n: _Optional[int] = ..., size: _Optional[str] = ..., quality: _Optional[str] = ..., style: _Optional[str] = ..., response_format: _Optional[str] = ..., user: _Optional[str] = ..., background: _Optional[str] = ..., moderation: _Optional[str] = ..., output_compression: _Optional[int] = ..., output_format: _Optional[str] = ..., safety_identifier: _Optional[str] = ..., stream: _Optional[bool] = ..., partial_images: _Optional[int] = ..., complexity: _Optional[str] = ..., frame_count: _Optional[int] = ..., frame_duration_ms: _Optional[int] = ..., svg: _Optional[_Union[SvgOptions, _Mapping]] = ..., extra_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GenerateImagesResponse(_message.Message):
    __slots__ = ("created", "data", "background", "output_format", "quality", "size", "usage", "safety_identifier", "svg_usage")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    SVG_USAGE_FIELD_NUMBER: _ClassVar[int]
    created: int
    data: _containers.RepeatedCompositeFieldContainer[Image]
    background: str
    output_format: str
    quality: str
    size: str
    usage: ImageUsage
    safety_identifier: str
    svg_usage: SvgUsage
    def __init__(self, created: _Optional[int] = ..., data: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., background: _Optional[str] = ..., output_format: _Optional[str] = ..., quality: _Optional[str] = ..., size: _Optional[str] = ..., usage: _Optional[_Union[ImageUsage, _Mapping]] = ..., safety_identifier: _Optional[str] = ..., svg_usage: _Optional[_Union[SvgUsage, _Mapping]] = ...) -> None: ...

class SvgOptions(_message.Message):
    __slots__ = ("model", "reasoning")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    model: str
    reasoning: SvgReasoning
    def __init__(self, model: _Optional[str] = ..., reasoning: _Optional[_Union[SvgReasoning, _Mapping]] = ...) -> None: ...

class SvgReasoning(_message.Message):
    __slots__ = ("effort",)
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    effort: str
    def __init__(self, effort: _Optional[str] = ...) -> None: ...

class SvgUsage(_message.Message):
    __slots__ = ("input_tokens", "model", "output_tokens", "reasoning_tokens", "total_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    model: str
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., model: _Optional[str] = ..., output_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("b64_json", "url", "revised_prompt")
    B64_JSON_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    REVISED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    b64_json: bytes
    url: str
    revised_prompt: str
    def __init__(self, b64_json: _Optional[bytes] = ..., url: _Optional[str] = ..., revised_prompt: _Optional[str] = ...) -> None: ...

class ImageUsage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "total_tokens", "input_tokens_details", "output_tokens_details")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_DETAILS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_DETAILS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: TokensDetails
    output_tokens_details: TokensDetails
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., input_tokens_details: _Optional[_Union[TokensDetails, _Mapping]] = ..., output_tokens_details: _Optional[_Union[TokensDetails, _Mapping]] = ...) -> None: ...

class TokensDetails(_message.Message):
    __slots__ = ("image_tokens", "text_tokens")
    IMAGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    image_tokens: int
    text_tokens: int
    def __init__(self, image_tokens: _Optional[int] = ..., text_tokens: _Optional[int] = ...) -> None: ...

class StreamGenerateImagesRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: GenerateImagesRequest
    def __init__(self, request: _Optional[_Union[GenerateImagesRequest, _Mapping]] = ...) -> None: ...

class StreamGenerateImagesResponse(_message.Message):
    __slots__ = ("type", "b64_json", "created_at", "size", "quality", "background", "output_format", "partial_image_index", "usage", "safety_identifier")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    B64_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    type: str
    b64_json: bytes
    created_at: int
    size: str
    quality: str
    background: str
    output_format: str
    partial_image_index: int
    usage: ImageUsage
    safety_identifier: str
    def __init__(self, type: _Optional[str] = ..., b64_json: _Optional[bytes] = ..., created_at: _Optional[int] = ..., size: _Optional[str] = ..., quality: _Optional[str] = ..., background: _Optional[str] = ..., output_format: _Optional[str] = ..., partial_image_index: _Optional[int] = ..., usage: _Optional[_Union[ImageUsage, _Mapping]] = ..., safety_identifier: _Optional[str] = ...) -> None: ...

class InputImage(_message.Message):
    __slots__ = ("data", "filename", "content_type", "image_url", "file_id")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    filename: str
    content_type: str
    image_url: str
    file_id: str
    def __init__(self, data: _Optional[bytes] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., image_url: _Optional[str] = ..., file_id: _Optional[str] = ...) -> None: ...

class EditImagesRequest(_message.Message):
    __slots__ = ("image", "images", "mask", "markup", "prompt", "model", "n", "size", "quality", "background", "input_fidelity", "output_format", "output_compression", "response_format", "moderation", "user", "safety_identifier", "stream", "partial_images", "complexity", "frame_count", "frame_duration_ms", "svg", "extra_parameters")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    MARKUP_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIDELITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODERATION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SAFETY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_IMAGES_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRAME_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SVG_FIELD_NUMBER: _ClassVar[int]
    EXTRA_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    image: _containers.RepeatedCompositeFieldContainer[InputImage]
    images: _containers.RepeatedCompositeFieldContainer[InputImage]
    mask: InputImage
    markup: InputImage
    prompt: str
    model: str
    n: int
    size: str
    quality: str
    background: str
    input_fidelity: str
    output_format: str
    output_compression: int
    response_format: str
    moderation: str
    user: str
    safety_identifier: str
    stream: bool
    partial_images: int
    complexity: str
    frame_count: int
    frame_duration_ms: int
    svg: SvgOptions
    extra_parameters: _struct_pb2.Struct
    def __init__(self, image: _Optional[_Iterable[_Union[InputImage, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[InputImage, _Mapping]]] = ..., mask: _Optional[_Union[InputImage, _Mapping]] = ..., markup: _Optional[_Union[InputImage, _Mapping]] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ..., n: _Optional[int] = ..., size: _Optional[str] = ..., quality: _Optional[str] = ..., background: _Optional[str] = ..., input_fidelity: _Optional[str] = ..., output_format: _Optional[str] = ..., output_compression: _Optional[int] = ..., response_format: _Optional[str] = ..., moderation: _Optional[str] = ..., user: _Optional[str] = ..., safety_identifier: _Optional[str] = ..., stream: _Optional[bool] = ..., partial_images: _Optional[int] = ..., complexity: _Optional[str] = ..., frame_count: _Optional[int] = ..., frame_duration_ms: _Optional[int] = ..., svg: _Optional[_Union[SvgOptions, _Mapping]] = ..., extra_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EditImagesResponse(_message.Message):
    __slots__ = ("created", "data", "background", "output_format", "quality", "size", "usage", "safety_identifier", "svg_usage")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    SVG_USAGE_FIELD_NUMBER: _ClassVar[int]
    created: int
    data: _containers.RepeatedCompositeFieldContainer[Image]
    background: str
    output_format: str
    quality: str
    size: str
    usage: ImageUsage
    safety_identifier: str
    svg_usage: SvgUsage
    def __init__(self, created: _Optional[int] = ..., data: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., background: _Optional[str] = ..., output_format: _Optional[str] = ..., quality: _Optional[str] = ..., size: _Optional[str] = ..., usage: _Optional[_Union[ImageUsage, _Mapping]] = ..., safety_identifier: _Optional[str] = ..., svg_usage: _Optional[_Union[SvgUsage, _Mapping]] = ...) -> None: ...

class UploadEditImagesRequest(_message.Message):
    __slots__ = ("chunk", "request")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    chunk: _annotations_pb2.UploadChunk
    request: EditImagesRequest
    def __init__(self, chunk: _Optional[_Union[_annotations_pb2.UploadChunk, _Mapping]] = ..., request: _Optional[_Union[EditImagesRequest, _Mapping]] = ...) -> None: ...

class UploadEditImagesResponse(_message.Message):
    __slots__ = ("response", "event")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    response: EditImagesResponse
    event: StreamEditImagesResponse
    def __init__(self, response: _Optional[_Union[EditImagesResponse, _Mapping]] = ..., event: _Optional[_Union[StreamEditImagesResponse, _Mapping]] = ...) -> None: ...

class StreamEditImagesRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: EditImagesRequest
    def __init__(self, request: _Optional[_Union[EditImagesRequest, _Mapping]] = ...) -> None: ...

class StreamEditImagesResponse(_message.Message):
    __slots__ = ("type", "b64_json", "created_at", "size", "quality", "background", "output_format", "partial_image_index", "usage", "safety_identifier")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    B64_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    type: str
    b64_json: bytes
    created_at: int
    size: str
    quality: str
    background: str
    output_format: str
    partial_image_index: int
    usage: ImageUsage
    safety_identifier: str
    def __init__(self, type: _Optional[str] = ..., b64_json: _Optional[bytes] = ..., created_at: _Optional[int] = ..., size: _Optional[str] = ..., quality: _Optional[str] = ..., background: _Optional[str] = ..., output_format: _Optional[str] = ..., partial_image_index: _Optional[int] = ..., usage: _Optional[_Union[ImageUsage, _Mapping]] = ..., safety_identifier: _Optional[str] = ...) -> None: ...

class GetImageFileRequest(_message.Message):
    __slots__ = ("name", "signature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    signature: str
    def __init__(self, name: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class GetImageFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: _httpbody_pb2.HttpBody
    def __init__(self, file: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("object", "data")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    object: str
    data: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, object: _Optional[str] = ..., data: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "object", "created", "owned_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    object: str
    created: int
    owned_by: str
    def __init__(self, id: _Optional[str] = ..., object: _Optional[str] = ..., created: _Optional[int] = ..., owned_by: _Optional[str] = ...) -> None: ...
