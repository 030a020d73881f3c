"""HTTP/JSON transcoding front for gRPC services, driven by `google.api.http` options.

A generic runtime: routes come from the descriptors at start-up, JSON is
mapped to and from protobuf, headers are forwarded as gRPC metadata, and gRPC
statuses become HTTP errors worded by a dialect (OpenAI's by default). The
options it reads beyond `google.api.http` are its own (`gateway_http.api.v1`,
from `gateway_http/protos/`). Nothing here is specific to a service.
"""

from gateway_http.app import TRANSCODER, Transcoder, create_app
from gateway_http.dialect import OPENAI, Dialect, ErrorFields
from gateway_http.errors import HTTP_STATUS, HttpError, Reason, from_grpc_status
from gateway_http.routes import Route, build_routes, discover_services
from gateway_http.server import DoorRunner, serve

__all__ = [
    "HTTP_STATUS",
    "OPENAI",
    "TRANSCODER",
    "Dialect",
    "DoorRunner",
    "ErrorFields",
    "HttpError",
    "Reason",
    "Route",
    "Transcoder",
    "build_routes",
    "create_app",
    "discover_services",
    "from_grpc_status",
    "serve",
]
