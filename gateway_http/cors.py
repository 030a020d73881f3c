"""Cross-origin requests (CORS), allowed per gRPC service: which web pages may call which routes.

A browser page on another origin may call a route only if the answer says
so. Which origins may is a door option by service (`origins_by_service`):
an API that callers reach with bearer tokens can allow any origin (`*`), as
OpenAI's does, while an admin service allows none. Credentials (cookies) are
never allowed: the door's callers authenticate with headers.

A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here
for every route, generically: 204, with the methods the path takes, the
headers asked for (a caller's SDK sends its own, e.g. `x-stainless-*`) and
the usual ones. Other answers to an allowed origin carry
`Access-Control-Allow-Origin` and expose the request id and `Retry-After`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from gateway_http.routes import Route, RouteTable

__all__ = ["ALLOWED_ORIGINS", "CorsPolicy"]

ALLOWED_ORIGINS = web.RequestKey("allowed_origins", tuple)
"""The origins the matched route's service allows (empty: none)."""

_STANDARD_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
_EXPOSED = "X-Request-ID, Retry-After"
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_MAX_AGE_SECONDS = "600"


class CorsPolicy:
    """Which origins each service's routes allow, and the answers that say so."""

    def __init__(self, origins_by_service: Mapping[str, Sequence[str]]) -> None:
        """Creates the policy.

        Args:
            origins_by_service: full service name -> origins allowed (`*`: any);
                a service not named allows none.

        Raises:
            ValueError: An origin is neither `*` nor `scheme://host[:port]`.
        """
        for origins in origins_by_service.values():
            for origin in origins:
                if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                    raise ValueError(f"not an origin (scheme://host[:port], or *): {origin!r}")
        self._by_service = {name: tuple(origins) for name, origins in origins_by_service.items()}

    def origins_for(self, route: Route) -> tuple[str, ...]:
        """The origins allowed to call `route`."""
        service = route.grpc_path.lstrip("/").partition("/")[0]
        return self._by_service.get(service, ())

    def preflight(self, request: web.Request, routes: RouteTable[Any]) -> web.Response:
        """The answer to a preflight: 204, with CORS headers if the origin may call the path."""
        asked = request.headers.get("Access-Control-Request-Method", "").upper()
        methods = routes.methods_at(request.rel_url.raw_path)
        if not methods:
            return web.Response(status=404)
        route = _route_of(methods.get(asked))
        response = web.Response(status=204)
        origin = request.headers.get("Origin")
        if route is None or origin is None:
            return response
        allowed = _allowed(origin, self.origins_for(route))
        if allowed is None:
            return response
        requested = request.headers.get("Access-Control-Request-Headers", "")
        extra = [h.strip() for h in requested.split(",") if _HEADER_NAME.fullmatch(h.strip())]
        response.headers.update(
            {
                "Access-Control-Allow-Origin": allowed,
                "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
                "Access-Control-Allow-Headers": ", ".join(
                    dict.fromkeys([*_STANDARD_HEADERS, *extra])
                ),
                "Access-Control-Max-Age": _MAX_AGE_SECONDS,
            }
        )
        if allowed != "*":
            response.headers["Vary"] = "Origin"
        return response


async def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: an allowed origin's answer says it may read it."""
    origin = request.headers.get("Origin")
    if origin is None or "Access-Control-Allow-Origin" in response.headers:
        return
    allowed = _allowed(origin, request.get(ALLOWED_ORIGINS, ()))
    if allowed is not None:
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED
        if allowed != "*":
            response.headers.add("Vary", "Origin")


def _allowed(origin: str, origins: Iterable[str]) -> str | None:
    """The `Access-Control-Allow-Origin` value for `origin`, or None when it is not allowed."""
    listed = tuple(origins)
    if "*" in listed:
        return "*"
    return origin if origin in listed else None


def _route_of(value: Any) -> Route | None:
    """The route of a route table's value (an endpoint, or the route itself)."""
    if value is None:
        return None
    return value if isinstance(value, Route) else value.route
