"""HTTP/JSON transcoding front for gRPC services, driven by `google.api.http` options.

A generic runtime: routes come from the descriptors at start-up, JSON is
mapped to and from protobuf, headers are forwarded as gRPC metadata, and gRPC
statuses become OpenAI error envelopes. Nothing here is specific to a service.
"""

from gateway_http.app import GATEWAY, Gateway, create_app
from gateway_http.errors import STATUS_TABLE, ApiError, error_body, from_grpc_status
from gateway_http.routes import Route, build_routes, discover_services

__all__ = [
    "GATEWAY",
    "STATUS_TABLE",
    "ApiError",
    "Gateway",
    "Route",
    "build_routes",
    "create_app",
    "discover_services",
    "error_body",
    "from_grpc_status",
]
