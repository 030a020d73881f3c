"""Units: signed image URLs, the file store and its sweep, the store URL, the signing key, SSE."""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import yarl

from aqueduct_grpc.config import ConfigError, GatewayConfig, parse_config
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.image_formats import sniff_image_type
from aqueduct_grpc.images.links import ImageLinks, files_path, load_signing_key
from aqueduct_grpc.storage.database import open_engine
from aqueduct_grpc.storage.image_files import (
    FileImageStore,
    ImageStoreError,
    ImageSweeper,
    open_image_store,
)
from aqueduct_grpc.testing.fake_upstream import png_image
from aqueduct_grpc.upstreams.openai.event_stream import ServerSentEvent, read_events

PNG = png_image(300, 0)


@pytest.fixture
def store(tmp_path: pathlib.Path) -> FileImageStore:
    return FileImageStore(tmp_path / "images")


def links_for(store: FileImageStore, base: str | None = None, key: bytes = b"k" * 32) -> ImageLinks:
    return ImageLinks(store, key=key, ttl_seconds=3600, public_base_url=base)


async def test_publish_then_open_round_trips(store) -> None:
    links = links_for(store, "https://img.example.test")
    url = yarl.URL(await links.publish(PNG, "https://img.example.test"))
    assert str(url).startswith("https://img.example.test/v1/images/files/")
    data, content_type = await links.open(url.name, url.query["signature"])
    assert (data, content_type) == (PNG, "image/png")
    expires, _, rest = url.name.partition("-")
    assert abs(int(expires) - (time.time() + 3600)) < 5
    assert len(rest.removesuffix(".png")) >= 22  # 128 random bits, URL-safe base64


async def test_another_key_does_not_accept_the_url(store) -> None:
    url = yarl.URL(await links_for(store).publish(PNG, "http://h"))
    with pytest.raises(GatewayError) as caught:
        await links_for(store, key=b"other" * 8).open(url.name, url.query["signature"])
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_expiry_is_checked_against_the_clock(store) -> None:
    links = links_for(store)
    url = yarl.URL(await links.publish(PNG, "http://h"))
    later = time.time() + 3601
    with pytest.raises(GatewayError):
        await links.open(url.name, url.query["signature"], now=later)


def test_files_path_comes_from_the_http_rule() -> None:
    assert files_path() == "/v1/images/files"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("host", "gw:8080")], "http://gw:8080"),
        ([("host", "gw"), ("x-forwarded-host", "pub.example.test")], "http://pub.example.test"),
        (
            [("x-forwarded-host", "a.example.test, b.internal"), ("x-forwarded-proto", "https")],
            "https://a.example.test",
        ),
    ],
)
def test_base_url_from_the_callers_headers(store, metadata, expected) -> None:
    assert links_for(store).base_url(metadata) == expected


def test_configured_base_url_wins(store) -> None:
    links = links_for(store, "https://cdn.example.test")
    assert links.base_url([("host", "evil.example.test")]) == "https://cdn.example.test"


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("host", "evil.test/path")],
        [("host", "a@b")],
        [("host", "gw"), ("x-forwarded-proto", "javascript")],
    ],
)
def test_unusable_addresses_are_a_clear_error(store, metadata) -> None:
    with pytest.raises(GatewayError) as caught:
        links_for(store).base_url(metadata)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_image_types_are_sniffed() -> None:
    assert sniff_image_type(PNG) == "png"
    assert sniff_image_type(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    with pytest.raises(ValueError):
        sniff_image_type(b"<html>")


async def test_store_refuses_names_that_are_not_its_own(store) -> None:
    with pytest.raises(ValueError):
        await store.put("../escape.png", PNG, expires_at=time.time() + 60, content_type="image/png")
    assert await store.get("../escape.png") is None
    assert await store.get(".hidden") is None


async def test_sweeper_deletes_expired_files_and_stops_cleanly(store, tmp_path) -> None:
    now = time.time()
    await store.put("old.png", PNG, expires_at=now - 1, content_type="image/png")
    await store.put("new.png", PNG, expires_at=now + 600, content_type="image/png")
    sweeper = ImageSweeper(store, interval=3600)
    await sweeper.start()
    assert await sweeper.sweep() == 1
    assert await store.get("old.png") is None and await store.get("new.png") == PNG
    await sweeper.close()
    await sweeper.close()  # idempotent
    assert sorted(os.listdir(tmp_path / "images")) == ["new.png"]


async def test_sweeper_runs_in_the_background(store) -> None:
    await store.put("old.png", PNG, expires_at=time.time() - 1, content_type="image/png")
    sweeper = ImageSweeper(store, interval=0.01)
    await sweeper.start()
    try:
        for _ in range(500):
            if await store.get("old.png") is None:
                break
            await asyncio.sleep(0.01)
        assert await store.get("old.png") is None
    finally:
        await sweeper.close()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[object]:
    opened = await open_engine(database_url)
    yield opened
    await opened.dispose()


async def test_generated_key_is_kept_in_the_database(engine) -> None:
    first = await load_signing_key(engine, None)  # type: ignore[arg-type]
    assert len(first) == 32
    assert await load_signing_key(engine, None) == first  # type: ignore[arg-type]
    assert await load_signing_key(engine, "configured") == b"configured"  # type: ignore[arg-type]


def test_url_settings_are_parsed_and_checked() -> None:
    raw = {
        "model_list": [
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/gpt-image-1", "api_key": "k"},
                "model_info": {"supports_streaming": True},
            }
        ],
        "gateway": {
            "public_base_url": "https://img.example.test/",
            "image_url_ttl_seconds": 600,
            "image_url_secret": "os.environ/URL_SECRET",
        },
    }
    config = parse_config(raw, source="t", environ={"URL_SECRET": "s3cret-0123456789"})
    assert config.public_base_url == "https://img.example.test"
    assert (config.image_url_ttl_seconds, config.image_url_secret) == (600, "s3cret-0123456789")
    assert config.models[0].supports_streaming
    assert "s3cret" not in repr(config)
    raw["gateway"] = {"image_url_secret": "short"}
    with pytest.raises(ConfigError, match="at least 16"):
        parse_config(raw, source="t")
    raw["gateway"] = {"public_base_url": "img.example.test"}
    with pytest.raises(ConfigError, match="public_base_url"):
        parse_config(raw, source="t")
    raw["gateway"] = {}
    raw["model_list"][0]["model_info"] = {"supports_streaming": "yes"}
    with pytest.raises(ConfigError, match="supports_streaming"):
        parse_config(raw, source="t")


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
async def test_sse_reader_joins_events_across_any_chunking(size) -> None:
    wire = (
        b": keep-alive\r\n\r\n"
        b'event: image_generation.partial_image\r\ndata: {"a":1}\r\n\r\n'
        b"data: line one\ndata: line two\n\n"
        b"event: error\ndata: {}"
    )
    events = [e async for e in read_events(chunks_of(wire, size), max_event_bytes=1000)]
    assert events == [
        ServerSentEvent("image_generation.partial_image", '{"a":1}'),
        ServerSentEvent("message", "line one\nline two"),
        ServerSentEvent("error", "{}"),
    ]


async def test_sse_reader_refuses_an_endless_event() -> None:
    with pytest.raises(ValueError):
        async for _ in read_events(chunks_of(b"data: " + b"x" * 5000, 100), max_event_bytes=1000):
            pass


async def test_the_sweep_leaves_files_being_written(store, tmp_path) -> None:
    folder = tmp_path / "images"
    writing = folder / ".fresh.png.partial"
    writing.write_bytes(PNG)  # mtime: now, as while a put is under way
    abandoned = folder / ".crashed.png.partial"
    abandoned.write_bytes(PNG)
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))
    # Sweeping "a minute from now" would delete any file whose mtime is its expiry.
    assert await store.delete_expired(time.time() + 60) == 1
    assert writing.exists() and not abandoned.exists()


def store_config(gateway: dict[str, str]) -> GatewayConfig:
    raw = {"model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}]}
    return parse_config({**raw, "gateway": gateway}, source="t")


def test_image_store_url_is_checked_and_image_store_dir_is_its_older_spelling(tmp_path) -> None:
    assert store_config({}).image_store_url is None
    assert (
        store_config({"image_store_url": "s3://my.bucket/p"}).image_store_url == "s3://my.bucket/p"
    )
    assert store_config({"image_store_url": "file:///srv/im"}).image_store_url == "file:///srv/im"
    legacy = store_config({"image_store_dir": str(tmp_path / "my images")})
    assert legacy.image_store_url == (tmp_path / "my images").as_uri()
    wrong_urls = (
        "/srv/images",
        "file://host/x",
        "s3:///nobucket",
        "s3://key:secret@bucket/p",
        "http://x/y",
        "s3://bucket/p?x=1",
    )
    for wrong in wrong_urls:
        with pytest.raises(ConfigError, match="image_store_url"):
            store_config({"image_store_url": wrong})
    with pytest.raises(ConfigError, match="not both"):
        store_config({"image_store_url": "s3://bucket/p", "image_store_dir": "/x"})


async def test_a_file_url_opens_a_file_store(tmp_path) -> None:
    store = open_image_store((tmp_path / "my images").as_uri())
    assert isinstance(store, FileImageStore)
    await store.put("1-a.png", PNG, expires_at=1, content_type="image/png")
    assert (tmp_path / "my images" / "1-a.png").read_bytes() == PNG
    assert await store.claim_sweep(1) and await store.claim_sweep(1)  # every replica sweeps


def test_s3_without_its_client_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "aqueduct_grpc.storage.s3_images", None)
    with pytest.raises(ConfigError) as caught:
        open_image_store("s3://bucket/prefix")
    assert "install 'aqueduct-grpc[s3]'" in str(caught.value) and "\n" not in str(caught.value)


class FailingStore:
    def __init__(self, *, refused: bool) -> None:
        self.refused = refused

    async def put(self, name: str, data: bytes, *, expires_at: float, content_type: str) -> None:
        raise ImageStoreError("image store s3://b: put failed (HTTP 403)", refused=self.refused)

    async def get(self, name: str) -> bytes | None:
        raise ImageStoreError("image store s3://b: get failed (GenericError)", refused=self.refused)

    async def presigned_url(self, name: str, expires_at: float) -> str | None:
        raise ImageStoreError("image store s3://b: presign failed (GenericError)", refused=True)

    async def delete_expired(self, now: float) -> int:
        return 0

    async def claim_sweep(self, turn: int) -> bool:
        return True


@pytest.mark.parametrize(
    ("refused", "code", "reason", "http_status"),
    [
        (False, grpc.StatusCode.UNAVAILABLE, "IMAGE_STORE_UNAVAILABLE", None),
        (True, grpc.StatusCode.INTERNAL, "IMAGE_STORE_REFUSED", 502),
    ],
)
async def test_store_failures_are_clear_errors_without_details(
    refused, code, reason, http_status
) -> None:
    links = ImageLinks(
        FailingStore(refused=refused), key=b"k" * 32, ttl_seconds=60, public_base_url=None
    )
    with pytest.raises(GatewayError) as published:
        await links.publish(PNG, "http://h")
    name = f"{int(time.time()) + 60}-abc.png"
    with pytest.raises(GatewayError) as opened:
        await links.open(name, links.sign(name))
    for caught in (published, opened):
        error = caught.value
        assert (error.code, error.reason, error.http_status) == (code, reason, http_status)
        assert "s3://" not in error.message and "403" not in error.message
