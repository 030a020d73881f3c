"""Fetches an edit's http(s) image URLs, only from hosts the operator allows.

The JSON form of an edit may name its images by URL. Fetching them makes the
gateway a client of whatever host a caller names, so it fetches only from
`gateway.fetch_image_hosts` (none by default) and otherwise applies the rules
it applies to upstream URLs: no redirect followed implicitly (each one is
checked against the list again), no credentials or cookies sent, bounded
time and bytes. The bytes fetched land in the image's `data`, so that
`edit_inputs.decode_inputs` checks them exactly as it checks an upload.
Every refusal is a 400 naming the field; a URL's path and query (which can
carry credentials) never appear in a message or a log line, only its host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
import yarl

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.errors import GatewayError, invalid_argument, quoted
from aqueduct_grpc.images.edit_inputs import MAX_INPUT_IMAGES

__all__ = ["MAX_REDIRECTS", "AllowedHost", "ImageFetcher", "parse_allowed_host"]

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK_BYTES = 64 * 1024
_HEADERS = {
    "User-Agent": "aqueduct-grpc",
    "Accept": "image/png, image/jpeg, image/webp",
    # Images are compressed already; a compressed body would be read as sent
    # (and then refused as not an image), never inflated past the byte limits.
    "Accept-Encoding": "identity",
}
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ENTRY_FORMS = "host, host:port, [IPv6]:port or *.domain"


@dataclass(frozen=True)
class AllowedHost:
    """One entry of `gateway.fetch_image_hosts`: a host (or its subdomains) and a port."""

    # Lowercase; an international name in its xn-- form; an IPv6 address without brackets.
    host: str
    # None: the URL's scheme's default port only (80 for http, 443 for https).
    port: int | None = None
    # `*.example.com`: any name under the host, not the host itself.
    subdomains: bool = False

    def allows(self, url: yarl.URL) -> bool:
        """Whether this entry covers the http(s) `url`'s host and port."""
        host = _normal_host(url.raw_host or "")
        if self.subdomains:
            covered = host.endswith("." + self.host)
        else:
            covered = host == self.host
        wanted_port = _DEFAULT_PORTS.get(url.scheme) if self.port is None else self.port
        return covered and url.port == wanted_port


def parse_allowed_host(entry: str) -> AllowedHost:
    """Reads one `fetch_image_hosts` entry; ValueError says what is wrong with it."""
    text = entry.strip().lower()
    if not text:
        raise ValueError(f"an entry is empty; write {_ENTRY_FORMS}")
    if "://" in text or any(c in text for c in "/?#@\\") or any(c.isspace() for c in text):
        raise ValueError(
            f"{quoted(entry)} is not a host: write {_ENTRY_FORMS}, without a scheme, path or user"
        )
    subdomains = text.startswith("*.")
    text = text.removeprefix("*.")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(
                f"{quoted(entry)}: write an IPv6 address as [address] or [address]:port"
            )
        port_text = rest[1:] if rest else None
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError(f"{quoted(entry)}: {quoted(host)} is not an IPv6 address") from None
    else:
        host, colon, port_text_or_empty = text.partition(":")
        if ":" in port_text_or_empty:
            raise ValueError(f"{quoted(entry)}: write an IPv6 address in brackets, [address]:port")
        port_text = port_text_or_empty if colon else None
        host = _name(host, entry)
    if subdomains and _is_address(host):
        raise ValueError(f"{quoted(entry)}: *. takes a domain name, not an address")
    return AllowedHost(host=host, port=_port(port_text, entry), subdomains=subdomains)


def _name(host: str, entry: str) -> str:
    """A host name or IPv4 address as URLs carry it (lowercase, IDN as xn--, no final dot)."""
    if not host.isascii():
        try:  # encoded as yarl encodes a URL's host, so the two compare
            host = yarl.URL.build(scheme="http", host=host).raw_host or ""
        except ValueError:
            raise ValueError(f"{quoted(entry)} is not a valid host name") from None
    host = host.removesuffix(".")
    if not _NAME.fullmatch(host):
        raise ValueError(f"{quoted(entry)} is not a valid host name; write {_ENTRY_FORMS}")
    return host


def _port(text: str | None, entry: str) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 < int(text) < 65536:
        raise ValueError(f"{quoted(entry)}: the port must be a number from 1 to 65535")
    return int(text)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _normal_host(host: str) -> str:
    """A URL's host as entries hold theirs: lowercase, no final dot, IPv6 compressed."""
    host = host.lower().removesuffix(".")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return host
    return host


def _shown(url: yarl.URL) -> str:
    """The URL's host, with its port unless the default: all a message or log shows of it."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port in (None, _DEFAULT_PORTS.get(url.scheme)):
        return host
    return f"{host}:{url.port}"


class _ByteBudget:
    """What one request's fetches may read together; shared by its concurrent fetches."""

    def __init__(self, limit: int) -> None:
        self.remaining = limit

    def take(self, size: int) -> bool:
        """Counts `size` more bytes; False once the request's total is past the limit."""
        self.remaining -= size
        return self.remaining >= 0


class ImageFetcher:
    """Replaces an edit's http(s) image URLs by the images' bytes, from allowed hosts only."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        allowed_hosts: Iterable[AllowedHost],
        timeout_seconds: float,
        max_image_bytes: int,
        max_total_bytes: int,
        max_concurrent_requests: int = 4,
    ) -> None:
        """Creates the ImageFetcher.

        Args:
            session: the shared client session (no cookie jar, no total timeout).
            allowed_hosts: `gateway.fetch_image_hosts`; empty: nothing is fetched.
            timeout_seconds: the most one image's fetch (redirects and body) may take.
            max_image_bytes: a larger image is refused (what an upload may be).
            max_total_bytes: what one request may come to with its fetched
                images (what one upload request could carry).
            max_concurrent_requests: requests fetching at once; others wait
                (fetched bytes are held until their request ends).
        """
        self._session = session
        self._allowed_hosts = tuple(allowed_hosts)
        self._timeout_seconds = timeout_seconds
        self._max_image_bytes = max_image_bytes
        self._max_total_bytes = max_total_bytes
        self._fetching = asyncio.Semaphore(max_concurrent_requests)

    def wants(self, request: images_pb2.EditImagesRequest) -> bool:
        """Whether the request names an http(s) image for `fetch_inputs` to fetch."""
        return any(_fetchable(image) for image, _ in _inputs(request))

    async def fetch_inputs(
        self, request: images_pb2.EditImagesRequest, uploaded_bytes: int = 0
    ) -> None:
        """Fetches every http(s) `image_url` of the request concurrently, into its `data`.

        `uploaded_bytes` are the request's files sent apart from it
        (`UploadEditImages`), which count as its own bytes do.

        Other references (data: URLs, file ids, an image with both bytes and
        a URL) are left to `decode_inputs`, and so is a request with more
        images than it accepts: nothing is fetched for that one. The first
        refusal stops the other fetches.
        """
        if len(request.image) + len(request.images) > MAX_INPUT_IMAGES:
            return
        wanted = [(image, param) for image, param in _inputs(request) if _fetchable(image)]
        if not wanted:
            return
        # The message's own bytes (uploads, data: URLs) count: together they
        # stay within what one upload could carry.
        budget = _ByteBudget(self._max_total_bytes - request.ByteSize() - uploaded_bytes)
        try:
            async with self._fetching, asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._fetch(image.image_url, f"{param}.image_url", budget))
                    for image, param in wanted
                ]
        except ExceptionGroup as failures:
            refusals = [e for e in failures.exceptions if isinstance(e, GatewayError)]
            if len(refusals) < len(failures.exceptions):
                raise  # not a refusal: a bug, for the error exit to log
            raise refusals[0] from None
        for (image, _), task in zip(wanted, tasks, strict=True):
            image.data = task.result()
            image.ClearField("image_url")

    async def _fetch(self, text: str, field: str, budget: _ByteBudget) -> bytes:
        """The bytes behind one URL, following at most MAX_REDIRECTS checked redirects."""
        url = _url(text, field)
        try:
            async with asyncio.timeout(self._timeout_seconds):
                for hop in range(MAX_REDIRECTS + 1):
                    self._check_allowed(url, field, redirected=hop > 0)
                    async with self._session.get(
                        url, headers=_HEADERS, allow_redirects=False, auto_decompress=False
                    ) as response:
                        if response.status in _REDIRECTS and "Location" in response.headers:
                            url = _redirect(url, response.headers["Location"], field)
                            continue
                        if response.status != 200:
                            raise _refused(
                                url, field, f"its server answered HTTP {response.status}"
                            )
                        return await self._body(response, url, field, budget)
                raise _refused(url, field, f"it redirects more than {MAX_REDIRECTS} times")
        except TimeoutError:
            raise _refused(
                url, field, f"it took longer than {self._timeout_seconds:g} seconds"
            ) from None
        except aiohttp.ClientError as error:
            raise _refused(url, field, f"the connection failed ({type(error).__name__})") from None

    def _check_allowed(self, url: yarl.URL, field: str, *, redirected: bool) -> None:
        """Refuses, before anything is sent, a URL whose host and port no entry allows."""
        if any(entry.allows(url) for entry in self._allowed_hosts):
            return
        shown = quoted(_shown(url))
        which = f"it redirects to {shown}, which" if redirected else shown
        allowed = "" if self._allowed_hosts else ", which allows none"
        _log_refusal(url, field, "host not allowed")
        raise invalid_argument(
            f"Invalid '{field}': this gateway fetches images only from hosts its operator allows"
            f" (gateway.fetch_image_hosts{allowed}), and {which} is not one of them;"
            " send a data: URL (data:image/png;base64,...) or upload the file.",
            field,
            reason="INVALID_IMAGE_URL",
        )

    async def _body(
        self, response: aiohttp.ClientResponse, url: yarl.URL, field: str, budget: _ByteBudget
    ) -> bytes:
        """The response's body, read until a limit is crossed and no further."""
        length = response.content_length
        if length is not None and length > self._max_image_bytes:
            raise self._too_large(url, field)
        if length is not None and length > budget.remaining:
            raise self._too_much(url, field)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            size += len(chunk)
            if size > self._max_image_bytes:
                raise self._too_large(url, field)
            if not budget.take(len(chunk)):
                raise self._too_much(url, field)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, url: yarl.URL, field: str) -> GatewayError:
        _log_refusal(url, field, "image too large")
        return invalid_argument(
            f"Invalid '{field}': the image is larger than {self._max_image_bytes} bytes,"
            " the most accepted.",
            field,
            reason="FILE_TOO_LARGE",
        )

    def _too_much(self, url: yarl.URL, field: str) -> GatewayError:
        _log_refusal(url, field, "request's images too large together")
        return invalid_argument(
            f"Invalid '{field}': the request's images come to more than"
            f" {self._max_total_bytes} bytes together, the most one request may carry.",
            field,
            reason="FILE_TOO_LARGE",
        )


def _inputs(request: images_pb2.EditImagesRequest) -> list[tuple[images_pb2.InputImage, str]]:
    """Every input image of the request with the name errors give it."""
    inputs = [(image, f"image[{i}]") for i, image in enumerate(request.image)]
    inputs += [(image, f"images[{i}]") for i, image in enumerate(request.images)]
    return inputs + [(getattr(request, n), n) for n in ("mask", "markup") if request.HasField(n)]


def _fetchable(image: images_pb2.InputImage) -> bool:
    """An http(s) URL and nothing else that `decode_inputs` would refuse first."""
    if not image.HasField("image_url") or image.HasField("file_id") or image.data:
        return False
    scheme, colon, _ = image.image_url.partition(":")
    return bool(colon) and scheme.lower() in _DEFAULT_PORTS


def _url(text: str, field: str) -> yarl.URL:
    """The caller's URL parsed, or a 400: it needs a host, and may not carry credentials."""
    try:
        url = yarl.URL(text)
    except ValueError:
        url = None
    if url is None or not url.raw_host or url.scheme not in _DEFAULT_PORTS:
        raise invalid_argument(
            f"Invalid '{field}': not a valid http(s) URL.", field, reason="INVALID_IMAGE_URL"
        )
    if _has_credentials(url):
        raise invalid_argument(
            f"Invalid '{field}': the URL carries a user name or password, which this gateway"
            " never sends; use a URL without them.",
            field,
            reason="INVALID_IMAGE_URL",
        )
    return url


def _redirect(url: yarl.URL, location: str, field: str) -> yarl.URL:
    """Where a redirect points, resolved against the URL that answered it."""
    try:
        target = url.join(yarl.URL(location))
    except ValueError:
        target = None
    if target is None or not target.raw_host or target.scheme not in _DEFAULT_PORTS:
        raise _refused(url, field, "it redirects to something that is not an http(s) URL")
    if _has_credentials(target):
        raise _refused(url, field, "it redirects to a URL with a user name or password")
    return target


def _has_credentials(url: yarl.URL) -> bool:
    return url.raw_user is not None or url.raw_password is not None


def _refused(url: yarl.URL, field: str, cause: str) -> GatewayError:
    """A URL that could not be fetched, as the caller sees it (and the log, host only)."""
    _log_refusal(url, field, cause)
    return invalid_argument(
        f"Invalid '{field}': the image could not be fetched from {quoted(_shown(url))}: {cause}.",
        field,
        reason="INVALID_IMAGE_URL",
    )


def _log_refusal(url: yarl.URL, field: str, cause: str) -> None:
    log.info("edit input %s not fetched from host %s: %s", field, quoted(_shown(url)), cause)
