"""Fetching edits' http(s) image URLs: against a real image host on loopback, no mocks."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import grpc
import pytest
import yarl
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images.edit_inputs import MAX_INPUT_IMAGES, decode_inputs
from aqueduct_grpc.images.image_fetcher import AllowedHost, ImageFetcher, parse_allowed_host
from tests.conftest import closed_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IMAGE_LIMIT = 10_000  # bytes per image in these tests (the gateway's is 50 MB)


def png(size: tuple[int, int] = (32, 32), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 30, 30, 0) if mode == "RGBA" else (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png()
MASK = png(mode="RGBA")


def answer(make: Callable[[], web.StreamResponse]) -> Handler:
    """A handler that answers every request with what `make` builds."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return make()

    return handler


def redirect(location: str, *, cookie: str | None = None) -> web.Response:
    headers = {"Location": location}
    if cookie is not None:
        headers["Set-Cookie"] = cookie
    return web.Response(status=302, headers=headers)


@dataclass
class ImageHost:
    """A real aiohttp server on loopback serving images, errors, redirects and slow answers."""

    other_port: int = 0  # where /away redirects to
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    arrived: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    together: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.seen.append((request.path_qs, dict(request.headers)))
            return await handler(request)

        app = web.Application(middlewares=[record])
        routes = {
            "/a.png": answer(lambda: web.Response(body=PNG, content_type="image/png")),
            "/mask.png": answer(lambda: web.Response(body=MASK)),
            "/missing": answer(lambda: web.Response(status=404)),
            "/redirect": answer(lambda: redirect("a.png")),  # relative to this URL
            "/away": answer(lambda: redirect(f"http://127.0.0.1:{self.other_port}/a.png")),
            "/loop": answer(lambda: redirect("/loop")),
            "/ftp": answer(lambda: redirect("ftp://127.0.0.1/a.png")),
            "/cookie": answer(lambda: redirect("/a.png", cookie="session=abc")),
            "/half": answer(lambda: web.Response(body=PNG + b"\0" * (IMAGE_LIMIT // 2))),
        }
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        app.router.add_get("/announced", self._announced)
        app.router.add_get("/big-chunked", self._big_chunked)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/slow-body", self._slow_body)
        app.router.add_get("/together", self._together)
        return app

    async def _announced(self, request: web.Request) -> web.StreamResponse:
        # Its Content-Length is `?bytes=`; its body never comes, so only a
        # fetcher that refuses on the header alone answers before its timeout.
        response = web.StreamResponse(headers={"Content-Length": request.query["bytes"]})
        await response.prepare(request)
        await self.release.wait()
        return response

    async def _big_chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: chunked
        await response.prepare(request)
        try:
            for _ in range(64):
                await response.write(b"\0" * 4096)
        except ConnectionResetError:
            pass  # the client stopped reading: what it should do
        return response

    async def _slow(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(body=PNG)

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(PNG))})
        await response.prepare(request)
        await response.write(PNG[:10])
        await self.release.wait()
        return response

    async def _together(self, request: web.Request) -> web.Response:
        # Answers only once two requests have arrived: fetched one after the
        # other, the first would wait for ever (here: until the fetch times out).
        self.arrived += 1
        if self.arrived >= 2:
            self.together.set()
        await self.together.wait()
        return web.Response(body=PNG)


async def started(host: ImageHost) -> web.AppRunner:
    runner = web.AppRunner(host.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host.port = site.port
    return runner


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[ImageHost, ImageHost]]:
    """The image host, and another one (another port) that it redirects to."""
    image_host, other = ImageHost(), ImageHost()
    runners = [await started(other), await started(image_host)]
    image_host.other_port = other.port
    yield image_host, other
    for host in (image_host, other):
        host.release.set()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def image_host(hosts: tuple[ImageHost, ImageHost]) -> ImageHost:
    return hosts[0]


@pytest.fixture
def other_host(hosts: tuple[ImageHost, ImageHost]) -> ImageHost:
    return hosts[1]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session like the core's (server.py): no cookie jar, no total timeout."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar()
    ) as opened:
        yield opened


def fetcher_for(
    session: aiohttp.ClientSession,
    *entries: str,
    timeout: float = 10.0,
    max_total_bytes: int = 1000 * IMAGE_LIMIT,
) -> ImageFetcher:
    return ImageFetcher(
        session,
        allowed_hosts=[parse_allowed_host(entry) for entry in entries],
        timeout_seconds=timeout,
        max_image_bytes=IMAGE_LIMIT,
        max_total_bytes=max_total_bytes,
    )


def edit(*urls: str, mask: str | None = None) -> images_pb2.EditImagesRequest:
    request = images_pb2.EditImagesRequest(
        prompt="x", images=[images_pb2.InputImage(image_url=url) for url in urls]
    )
    if mask is not None:
        request.mask.image_url = mask
    return request


async def refusal(fetcher: ImageFetcher, request: images_pb2.EditImagesRequest) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await fetcher.fetch_inputs(request)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def allowing(host: ImageHost) -> str:
    return f"127.0.0.1:{host.port}"


# -- what is fetched ---------------------------------------------------------------------------


async def test_an_allowed_hosts_images_become_bytes_checked_as_uploads(session, image_host):
    request = edit(f"{image_host.base_url}/a.png", mask=f"{image_host.base_url}/mask.png")
    await fetcher_for(session, allowing(image_host)).fetch_inputs(request)
    assert request.images[0].data == PNG and not request.images[0].HasField("image_url")
    assert request.mask.data == MASK and not request.mask.HasField("image_url")
    checked = decode_inputs(request)
    assert checked.size == (32, 32)
    assert [i.content_type for i in checked.images] == ["image/png"]
    assert checked.mask is not None and checked.mask.read() == MASK
    for _, headers in image_host.seen:
        assert headers["User-Agent"] == "aqueduct-grpc"
        assert "Authorization" not in headers and "Cookie" not in headers


async def test_images_are_fetched_at_once_not_one_after_the_other(session, image_host):
    request = edit(f"{image_host.base_url}/together", f"{image_host.base_url}/together")
    await fetcher_for(session, allowing(image_host), timeout=30).fetch_inputs(request)
    assert [i.data for i in request.images] == [PNG, PNG]


async def test_other_references_are_left_to_decode_inputs(session, image_host):
    both = images_pb2.InputImage(data=PNG, image_url=f"{image_host.base_url}/a.png")
    request = edit("data:image/png;base64,AAAA", "ftp://127.0.0.1/a.png")
    request.images.append(both)
    request.images.append(images_pb2.InputImage(file_id="file-1", image_url=both.image_url))
    before = request.SerializeToString()
    await fetcher_for(session, allowing(image_host)).fetch_inputs(request)
    assert request.SerializeToString() == before and image_host.seen == []


async def test_more_images_than_accepted_fetches_nothing(session, image_host):
    request = edit(*[f"{image_host.base_url}/a.png"] * (MAX_INPUT_IMAGES + 1))
    await fetcher_for(session, allowing(image_host)).fetch_inputs(request)
    assert image_host.seen == [] and request.images[0].HasField("image_url")
    with pytest.raises(GatewayError) as caught:
        decode_inputs(request)
    assert caught.value.reason == "ARRAY_ABOVE_MAX_LENGTH"


# -- which hosts -------------------------------------------------------------------------------


async def test_with_fetching_off_nothing_is_fetched(session, image_host):
    error = await refusal(fetcher_for(session), edit(f"{image_host.base_url}/a.png"))
    assert (error.param, error.reason) == ("images[0].image_url", "INVALID_IMAGE_URL")
    assert "gateway.fetch_image_hosts" in error.message and "data: URL" in error.message
    assert image_host.seen == []


async def test_a_host_not_allowed_is_not_fetched(session, image_host, other_host):
    fetcher = fetcher_for(session, allowing(other_host), f"localhost:{image_host.port}")
    error = await refusal(fetcher, edit(f"{image_host.base_url}/a.png"))
    assert f"'127.0.0.1:{image_host.port}' is not one of them" in error.message
    assert image_host.seen == []


async def test_a_host_without_a_port_allows_only_the_default_port(session, image_host):
    error = await refusal(fetcher_for(session, "127.0.0.1"), edit(f"{image_host.base_url}/a.png"))
    assert error.reason == "INVALID_IMAGE_URL" and image_host.seen == []


async def test_credentials_in_a_url_are_refused_unsent(session, image_host):
    url = f"http://user:secret@127.0.0.1:{image_host.port}/a.png"
    error = await refusal(fetcher_for(session, allowing(image_host)), edit(url))
    assert "secret" not in error.message and image_host.seen == []


async def test_the_mask_is_named_as_its_own_field(session, image_host):
    request = edit(f"{image_host.base_url}/a.png", mask=f"{image_host.base_url}/missing")
    error = await refusal(fetcher_for(session, allowing(image_host)), request)
    assert error.param == "mask.image_url" and "HTTP 404" in error.message


# -- redirects ---------------------------------------------------------------------------------


async def test_a_redirect_to_an_allowed_url_is_followed(session, image_host):
    request = edit(f"{image_host.base_url}/redirect")
    await fetcher_for(session, allowing(image_host)).fetch_inputs(request)
    assert request.images[0].data == PNG and image_host.paths == ["/redirect", "/a.png"]


async def test_a_redirect_to_a_host_not_allowed_is_not_followed(session, image_host, other_host):
    error = await refusal(
        fetcher_for(session, allowing(image_host)), edit(f"{image_host.base_url}/away")
    )
    assert f"redirects to '127.0.0.1:{other_host.port}'" in error.message
    assert other_host.seen == []


async def test_at_most_three_redirects_are_followed(session, image_host):
    error = await refusal(
        fetcher_for(session, allowing(image_host)), edit(f"{image_host.base_url}/loop")
    )
    assert "more than 3 times" in error.message
    assert image_host.paths == ["/loop"] * 4  # the first request and three redirects


async def test_a_redirect_to_another_scheme_is_refused(session, image_host):
    error = await refusal(
        fetcher_for(session, allowing(image_host)), edit(f"{image_host.base_url}/ftp")
    )
    assert "not an http(s) URL" in error.message and error.reason == "INVALID_IMAGE_URL"


async def test_cookies_a_host_sets_are_never_sent_back(session, image_host):
    request = edit(f"{image_host.base_url}/cookie")
    await fetcher_for(session, allowing(image_host)).fetch_inputs(request)
    assert image_host.paths == ["/cookie", "/a.png"]
    assert "Cookie" not in image_host.seen[1][1]


# -- failures ----------------------------------------------------------------------------------


async def test_an_unreachable_host_is_a_400_naming_the_error_type(session):
    port = closed_port()
    error = await refusal(
        fetcher_for(session, f"127.0.0.1:{port}"), edit(f"http://127.0.0.1:{port}/a.png")
    )
    assert error.reason == "INVALID_IMAGE_URL"
    assert "could not be fetched" in error.message and "ClientConnectorError" in error.message


@pytest.mark.parametrize("path", ["/slow", "/slow-body"])
async def test_a_host_slower_than_the_timeout_is_a_400(session, image_host, path):
    fetcher = fetcher_for(session, allowing(image_host), timeout=0.2)
    error = await refusal(fetcher, edit(image_host.base_url + path))
    assert error.reason == "INVALID_IMAGE_URL" and "took longer than 0.2 seconds" in error.message


@pytest.mark.parametrize("path", [f"/announced?bytes={IMAGE_LIMIT + 1}", "/big-chunked"])
async def test_an_image_over_the_limit_is_refused(session, image_host, path):
    fetcher = fetcher_for(session, allowing(image_host), timeout=30)
    error = await refusal(fetcher, edit(image_host.base_url + path))
    assert (error.param, error.reason) == ("images[0].image_url", "FILE_TOO_LARGE")
    assert f"larger than {IMAGE_LIMIT} bytes, the most accepted" in error.message


async def test_a_requests_images_together_are_bounded_too(session, image_host):
    # Each is under the per-image limit; three of them are over the request's.
    fetcher = fetcher_for(session, allowing(image_host), max_total_bytes=IMAGE_LIMIT)
    error = await refusal(fetcher, edit(*[f"{image_host.base_url}/half"] * 3))
    assert error.reason == "FILE_TOO_LARGE" and "together" in error.message
    one = edit(f"{image_host.base_url}/half")
    await fetcher.fetch_inputs(one)  # alone, under both limits
    assert one.images[0].data.startswith(PNG)
    announced = edit(f"{image_host.base_url}/announced?bytes={IMAGE_LIMIT}")
    error = await refusal(fetcher_for(session, allowing(image_host), max_total_bytes=10), announced)
    assert error.reason == "FILE_TOO_LARGE" and "together" in error.message


async def test_a_url_s_path_and_query_stay_out_of_messages_and_logs(session, image_host, caplog):
    url = f"{image_host.base_url}/missing?signature=hunter2"
    with caplog.at_level(logging.INFO, logger="aqueduct_grpc.images.image_fetcher"):
        error = await refusal(fetcher_for(session, allowing(image_host)), edit(url))
    assert "hunter2" not in error.message and "/missing" not in error.message
    assert "hunter2" not in caplog.text and "/missing" not in caplog.text
    assert f"127.0.0.1:{image_host.port}" in caplog.text and "HTTP 404" in caplog.text


# -- host entries ------------------------------------------------------------------------------

labels = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ports = st.integers(1, 65535)


@given(name=names, port=ports)
def test_a_host_entry_allows_its_host_on_default_ports_only(name: str, port: int) -> None:
    entry = parse_allowed_host(name.upper() + ".")  # case and a final dot do not matter
    assert entry == AllowedHost(host=name)
    assert entry.allows(yarl.URL(f"http://{name}/x")) and entry.allows(yarl.URL(f"https://{name}"))
    assert entry.allows(yarl.URL(f"http://{name.upper()}.:80/"))
    assert entry.allows(yarl.URL(f"http://{name}:{port}/")) == (port == 80)
    assert entry.allows(yarl.URL(f"https://{name}:{port}/")) == (port == 443)
    assert not entry.allows(yarl.URL(f"http://sub.{name}/"))
    assert not entry.allows(yarl.URL(f"http://evil{name}/"))
    assert not entry.allows(yarl.URL(f"http://{name}.evil.example/"))


@given(name=names, sub=names, port=ports)
def test_a_wildcard_allows_subdomains_not_the_domain(name: str, sub: str, port: int) -> None:
    entry = parse_allowed_host(f"*.{name}")
    assert entry.allows(yarl.URL(f"https://{sub}.{name}/"))
    assert not entry.allows(yarl.URL(f"https://{name}/"))
    assert not entry.allows(yarl.URL(f"https://{sub}{name}/"))
    with_port = parse_allowed_host(f"*.{name}:{port}")
    assert with_port.allows(yarl.URL(f"http://{sub}.{name}:{port}/"))
    assert not with_port.allows(yarl.URL(f"http://{name}:{port}/"))


@given(name=names, port=ports, other=ports)
def test_a_port_entry_allows_that_port_whatever_the_scheme(
    name: str, port: int, other: int
) -> None:
    entry = parse_allowed_host(f"{name}:{port}")
    assert entry.allows(yarl.URL(f"http://{name}:{port}/"))
    assert entry.allows(yarl.URL(f"https://{name}:{port}/"))
    assert entry.allows(yarl.URL(f"http://{name}:{other}/")) == (other == port)
    assert entry.allows(yarl.URL(f"http://{name}/")) == (port == 80)


def test_ip_addresses_compare_as_addresses() -> None:
    assert parse_allowed_host("[0:0::1]:9000") == AllowedHost(host="::1", port=9000)
    assert parse_allowed_host("[::1]:9000").allows(yarl.URL("http://[0:0:0:0:0:0:0:1]:9000/"))
    assert parse_allowed_host("127.0.0.1:9000").allows(yarl.URL("https://127.0.0.1:9000/"))
    assert not parse_allowed_host("127.0.0.1:9000").allows(yarl.URL("http://localhost:9000/"))
    assert parse_allowed_host("bücher.example").allows(yarl.URL("https://BÜCHER.example/"))
