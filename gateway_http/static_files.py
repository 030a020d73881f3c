"""Folders of static files served beside the API (a web console, say): a door option.

Each folder is served under its URL prefix, `index.html` for the prefix
itself, and the prefix without its slash redirects to it. Nothing outside
the folder is reachable (aiohttp's static route refuses `..` and symlinks
out), folders are never listed, and every file goes with headers a page of
the door's own should have: a content security policy allowing only the
door's own origin (no inline script, nothing from the internet), no framing,
no sniffing.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from aiohttp import web

__all__ = ["SECURITY_HEADERS", "add_static_folders"]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def add_static_folders(
    app: web.Application, folders: Mapping[str, str | pathlib.Path], root_redirect: str | None
) -> None:
    """Adds a route per folder (prefix -> folder), and `/` redirecting to `root_redirect`.

    Raises:
        ValueError: A prefix does not start and end with `/`, or a folder has no index.html.
    """
    for prefix, folder in folders.items():
        path = pathlib.Path(folder).resolve()
        if not (prefix.startswith("/") and prefix.endswith("/") and len(prefix) > 1):
            raise ValueError(f"a static prefix is a path like /console/, not {prefix!r}")
        index = path / "index.html"
        if not index.is_file():
            raise ValueError(f"{path} has no index.html to serve at {prefix}")

        async def index_page(
            request: web.Request, index: pathlib.Path = index
        ) -> web.StreamResponse:
            return web.FileResponse(
                index, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
            )

        async def to_index(request: web.Request, prefix: str = prefix) -> web.StreamResponse:
            raise web.HTTPPermanentRedirect(prefix)

        app.router.add_get(prefix, index_page)
        app.router.add_get(prefix.rstrip("/"), to_index)
        app.router.add_static(prefix, path, show_index=False, follow_symlinks=False)
    if root_redirect is not None:

        async def to_root(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(root_redirect)

        app.router.add_get("/", to_root)
    app.on_response_prepare.append(_secure_static)


async def _secure_static(request: web.Request, response: web.StreamResponse) -> None:
    """Static files (found by aiohttp's static route) get the same headers as the index.

    `no-cache`: browsers revalidate (ETag, Last-Modified), so an upgraded
    console never runs with the old version's scripts.
    """
    resource = request.match_info.route.resource
    if isinstance(resource, web.StaticResource):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-cache")
