"""Static folders beside the API: index, redirects, files, security headers, and nothing else."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from aiohttp import web

from gateway_http import create_app
from gateway_http.static_files import SECURITY_HEADERS
from tests.http import test_testproto as tp


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    site = tmp_path / "site"
    (site / "js").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>console</title>")
    (site / "js" / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not served")
    return site


async def client_for(aiohttp_client: Any, folder: pathlib.Path) -> Any:
    app: web.Application = create_app(
        grpc_target="127.0.0.1:1",
        services=[tp.SERVICE],
        static_folders={"/console/": str(folder)},
        root_redirect="/console/",
    )
    return await aiohttp_client(app)


async def test_the_index_files_and_redirects(aiohttp_client: Any, folder: pathlib.Path) -> None:
    client = await client_for(aiohttp_client, folder)
    index = await client.get("/console/")
    assert index.status == 200 and "<title>console</title>" in await index.text()
    for name, value in SECURITY_HEADERS.items():
        assert index.headers[name] == value
    script = await client.get("/console/js/app.js")
    assert script.status == 200 and await script.text() == "console.log(1)"
    assert script.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert "javascript" in script.headers["Content-Type"]
    assert script.headers["Cache-Control"] == "no-cache"
    bare = await client.get("/console", allow_redirects=False)
    assert (bare.status, bare.headers["Location"]) == (308, "/console/")
    root = await client.get("/", allow_redirects=False)
    assert (root.status, root.headers["Location"]) == (302, "/console/")


async def test_nothing_outside_the_folder_and_no_listings(
    aiohttp_client: Any, folder: pathlib.Path
) -> None:
    client = await client_for(aiohttp_client, folder)
    for path in ("/console/../secret.txt", "/console/%2e%2e/secret.txt", "/console/js/"):
        answer = await client.get(path)
        assert answer.status in (403, 404), path
        assert "not served" not in await answer.text()
    assert (await client.get("/console/missing.js")).status == 404


def test_a_folder_without_an_index_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"index\.html"):
        create_app(
            grpc_target="127.0.0.1:1", services=[tp.SERVICE], static_folders={"/c/": str(tmp_path)}
        )
