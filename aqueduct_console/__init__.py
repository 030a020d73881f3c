"""The web console: a playground and an admin dashboard, as static files for the HTTP door.

The files call only the gateway's public HTTP API, with the token the person
enters; nothing here runs on the server. Serve them with
`gateway_http.create_app(static_folders={"/console/": str(STATIC_DIR)})`.
"""

from __future__ import annotations

import pathlib

__all__ = ["STATIC_DIR"]

# The folder holding index.html and the scripts and styles it loads.
STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
