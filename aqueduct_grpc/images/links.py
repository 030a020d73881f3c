"""Signed, expiring URLs for images the gateway serves itself (`response_format: "url"`).

A URL is `{base}{files path}/{expires}-{random}.{ext}?signature={hmac}`:

* the name holds 128 random bits, so it cannot be guessed, and its expiry;
* the signature is an HMAC-SHA256 over the name (so over id and expiry)
  with a key only the gateway knows, so neither can be altered;
* the files path comes from GetImageFile's `google.api.http` rule, so the
  URL is what the HTTP door serves, without a second copy of the route;
* `base` is the configured public base URL or, failing that, the scheme and
  host the caller reached us by (`X-Forwarded-Proto`/`-Host`, then `Host`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

import grpc
import sqlalchemy as sa
from google.api import annotations_pb2 as google_annotations
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.image_formats import sniff_image_type
from aqueduct_grpc.storage.database import gateway_secrets_table
from aqueduct_grpc.storage.image_files import ImageStore, ImageStoreError

__all__ = ["ImageLinks", "files_path", "load_signing_key"]

SIGNING_KEY_NAME = "image_url_signing_key"

_CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}

_BYTES = "application/octet-stream"

_NOT_FOUND = GatewayError(
    grpc.StatusCode.NOT_FOUND,
    "The image does not exist or its URL has expired.",
    reason="IMAGE_NOT_FOUND",
)


def _store_failed(error: ImageStoreError) -> GatewayError:
    """What the caller is told when the image store fails: its kind, not its details."""
    if error.refused:
        # A misconfigured store (credentials, bucket): the gateway's fault, not the caller's.
        return GatewayError(
            grpc.StatusCode.INTERNAL,
            "The image store refused the gateway's request.",
            reason="IMAGE_STORE_REFUSED",
            http_status=502,
        )
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "The image store is unavailable; try again later.",
        reason="IMAGE_STORE_UNAVAILABLE",
    )


def files_path() -> str:
    """The path GetImageFile is bound to, without its `/{name}` segment."""
    method = images_pb2.DESCRIPTOR.services_by_name["ImageService"].methods_by_name["GetImageFile"]
    rule = method.GetOptions().Extensions[google_annotations.http]
    path = rule.get
    if not path.endswith("/{name}"):
        raise ValueError(f"GetImageFile's path must end with /{{name}}, not {path!r}")
    return path.removesuffix("/{name}")


async def load_signing_key(engine: AsyncEngine, configured: str | None) -> bytes:
    """The key that signs URLs: the configured secret, else one kept in the database.

    The generated key lives in the database rather than a file so that
    replicas sharing the database (and the image store) accept each other's
    URLs, and it survives restarts, so URLs stay valid across them.
    """
    if configured is not None:
        return configured.encode()
    table = gateway_secrets_table
    query = sa.select(table.c.value).where(table.c.name == SIGNING_KEY_NAME)
    async with engine.begin() as connection:
        value = (await connection.execute(query)).scalar_one_or_none()
        if value is None:
            value = secrets.token_hex(32)
            try:
                await connection.execute(table.insert().values(name=SIGNING_KEY_NAME, value=value))
            except sa.exc.IntegrityError:
                value = None  # another replica won the race: use its key
    if value is None:
        async with engine.connect() as connection:
            value = (await connection.execute(query)).scalar_one()
    return bytes.fromhex(value)


class ImageLinks:
    """Stores images and hands out signed URLs for them; resolves those URLs back."""

    def __init__(
        self,
        store: ImageStore,
        *,
        key: bytes,
        ttl_seconds: float,
        public_base_url: str | None,
        redirect: bool = False,
    ) -> None:
        """Creates the ImageLinks.

        Args:
            store: where the images go.
            key: the HMAC key.
            ttl_seconds: how long a URL stays valid.
            public_base_url: e.g. "https://images.example.com"; None to use the
                caller's Host / X-Forwarded-* headers.
            redirect: answer a URL with a redirect to the store's own presigned
                URL (`gateway.image_redirect: presigned`) instead of the bytes.
        """
        self._store = store
        self._key = key
        self._ttl = ttl_seconds
        self._public_base_url = public_base_url
        self._redirect = redirect
        self._path = files_path()

    @property
    def store(self) -> ImageStore:
        """Where the images are kept."""
        return self._store

    def base_url(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """Where the caller reaches the HTTP door, from config or the request's headers.

        Raises FAILED_PRECONDITION when neither says (a gRPC caller that sent
        no host metadata, with no public base URL configured).
        """
        if self._public_base_url is not None:
            return self._public_base_url
        headers: dict[str, str] = {}
        for key, value in metadata or ():
            if key in ("host", "x-forwarded-host", "x-forwarded-proto") and key not in headers:
                headers[key] = value if isinstance(value, str) else value.decode()
        # A proxy may list several hops: the first is what the client used.
        host = headers.get("x-forwarded-host", headers.get("host", "")).split(",")[0].strip()
        proto = headers.get("x-forwarded-proto", "http").split(",")[0].strip().lower()
        if not host or any(c in host for c in "/\\@?# ") or proto not in ("http", "https"):
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "The gateway cannot tell its public address for image URLs: configure "
                "gateway.public_base_url, or send a 'host' (or 'x-forwarded-host') header.",
                reason="PUBLIC_BASE_URL_UNKNOWN",
                param="response_format",
            )
        return f"{proto}://{host}"

    async def publish(self, data: bytes, base_url: str, now: float | None = None) -> str:
        """Stores `data` and returns its signed URL below `base_url`.

        Raises UNAVAILABLE (503) when the store cannot be reached, INTERNAL
        with HTTP 502 when it refuses; never the store's own words.
        """
        expires = int((time.time() if now is None else now) + self._ttl)
        ext = sniff_image_type(data)
        name = f"{expires}-{secrets.token_urlsafe(16)}.{ext}"
        try:
            await self._store.put(
                name, data, expires_at=expires, content_type=_CONTENT_TYPES.get(ext, _BYTES)
            )
        except ImageStoreError as error:
            raise _store_failed(error) from None
        return f"{base_url}{self._path}/{name}?signature={self.sign(name)}"

    def sign(self, name: str) -> str:
        """The URL-safe HMAC-SHA256 of `name`."""
        digest = hmac.digest(self._key, name.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    async def redirect(self, name: str, signature: str, now: float | None = None) -> str | None:
        """The store's presigned URL for a published image when redirects are on, else None.

        Raises NOT_FOUND as `open` does for a URL that is not one of ours;
        the presigned URL expires when the image does.
        """
        if not self._redirect:
            return None
        expires = self._verified(name, signature, now)
        try:
            location = await self._store.presigned_url(name, expires)
        except ImageStoreError as error:
            raise _store_failed(error) from None
        if location is None:
            raise _NOT_FOUND
        return location

    async def open(self, name: str, signature: str, now: float | None = None) -> tuple[bytes, str]:
        """The bytes and content type of a published image.

        Raises NOT_FOUND alike for a wrong signature, an expired URL and a
        missing file, so a caller learns nothing by probing; a failing store
        is an error as in `publish`.
        """
        self._verified(name, signature, now)
        ext = name.rpartition(".")[2]
        try:
            data = await self._store.get(name)
        except ImageStoreError as error:
            raise _store_failed(error) from None
        if data is None:
            raise _NOT_FOUND
        return data, _CONTENT_TYPES[ext]

    def _verified(self, name: str, signature: str, now: float | None) -> int:
        """The expiry of a name signed by us and not yet expired; else raises NOT_FOUND."""
        expires_text, _, rest = name.partition("-")
        ext = rest.rpartition(".")[2]
        if (
            not expires_text.isdecimal()
            or ext not in _CONTENT_TYPES
            # Bytes: compare_digest refuses non-ASCII str, and the signature is the caller's.
            or not hmac.compare_digest(self.sign(name).encode(), signature.encode())
            or int(expires_text) <= (time.time() if now is None else now)
        ):
            raise _NOT_FOUND
        return int(expires_text)

    @staticmethod
    def max_age(name: str, now: float | None = None) -> int:
        """Seconds until the image named `name` expires (0 if unknown)."""
        expires_text = name.partition("-")[0]
        if not expires_text.isdecimal():
            return 0
        return max(0, int(expires_text) - int(time.time() if now is None else now))
