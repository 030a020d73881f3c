"""Images in an S3-compatible bucket, so that every replica serves every URL.

The client is `obstore` (Rust's `object_store`): natively async, one wheel
without dependencies, and it speaks to any S3-compatible endpoint. It is
configured the standard AWS way, from `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION` / `AWS_REGION` and the rest.

Expiry is in the key: an image's name begins with its expiry (`{expires}-…`,
see `ImageStore`), so a sweep is a LIST of the prefix (1,000 keys a request)
and a multi-object DELETE, with no HEAD per object to read metadata. The name
is signed, so the expiry in it is the one the URL stops working at anyway.
"""

from __future__ import annotations

import datetime
import logging
import re
import time

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from aqueduct_grpc.storage.image_files import ImageStoreError

__all__ = ["S3ImageStore"]

log = logging.getLogger(__name__)

# The gateway's names, expiry first; other keys under the prefix are not ours.
_IMAGE_NAME = re.compile(r"([0-9]{1,12})-[A-Za-z0-9_-][A-Za-z0-9_.-]{0,114}")
# Claims of sweep turns live beside the images; no image name starts with ".".
_TURNS = ".sweep-turns/"
# A claim older than this is of a turn long past: swept with the images.
_TURN_KEPT = datetime.timedelta(hours=1)
# obstore raises its own classes, and some builtin ones (FileNotFoundError for
# a missing object): each tuple lists both. Anything else is a bug of ours.
_FAILED = (BaseError, OSError)
_MISSING = (NotFoundError, FileNotFoundError)
_EXISTS = (AlreadyExistsError, FileExistsError)
_REFUSED = (PermissionDeniedError, UnauthenticatedError, PermissionError, *_MISSING)
# The status an S3 error carries, the one part of its text worth logging (the
# rest may quote the server's answer, which can name the access key).
_HTTP_STATUS = re.compile(r"status code: ([0-9]{3})")


class S3ImageStore:
    """One object per image, at `{prefix}/{name}` in a bucket."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        """Creates the S3ImageStore; nothing is sent until the first call.

        Args:
            bucket: the bucket, which must exist.
            prefix: the folder in it ("" for the top).
        """
        self._where = f"s3://{bucket}/{prefix}".rstrip("/")
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            # An http:// AWS_ENDPOINT_URL (MinIO, Ceph, a test server) works
            # as it is; AWS's own endpoints are https whatever this says.
            client_options={
                "allow_http": True,
                "connect_timeout": datetime.timedelta(seconds=2),
                "timeout": datetime.timedelta(seconds=30),
            },
            # obstore retries for 3 minutes by default: too long for a caller
            # waiting on its image. A store that is down is a 503 in seconds.
            retry_config={"max_retries": 3, "retry_timeout": datetime.timedelta(seconds=10)},
        )

    def __repr__(self) -> str:
        """Where the images are; never the client's settings, which hold the credentials."""
        return f"S3ImageStore({self._where!r})"

    async def put(self, name: str, data: bytes, *, expires_at: float, content_type: str) -> None:
        """Uploads the image (S3 makes it visible whole or not at all), with its content type.

        The content type is what the store sends when it serves a presigned URL.
        """
        match = _IMAGE_NAME.fullmatch(name)
        if match is None or int(match[1]) != int(expires_at):
            # The sweep reads the expiry from the key: it must be the real one.
            raise ValueError(f"not an image name expiring at {int(expires_at)}: {name!r}")
        try:
            await obstore.put_async(
                self._store, name, data, attributes={"Content-Type": content_type}
            )
        except _FAILED as error:
            raise self._failure("put", error) from None

    async def get(self, name: str) -> bytes | None:
        """The image's bytes; None when there is no such object, or the name is not ours."""
        if not _IMAGE_NAME.fullmatch(name):
            return None
        try:
            result = await obstore.get_async(self._store, name)
            return bytes(await result.bytes_async())
        except _MISSING:
            return None
        except _FAILED as error:
            raise self._failure("get", error) from None

    async def presigned_url(self, name: str, expires_at: float) -> str | None:
        """A presigned GET of the object, valid until `expires_at` (signed here: no request).

        None for a name that is not ours or already expired.
        """
        remaining = int(expires_at - time.time())
        if not _IMAGE_NAME.fullmatch(name) or remaining <= 0:
            return None
        try:
            return await obstore.sign_async(
                self._store, "GET", name, datetime.timedelta(seconds=remaining)
            )
        except _FAILED as error:
            raise self._failure("presign", error) from None

    async def delete_expired(self, now: float) -> int:
        """Deletes the images whose key says they expired, and old sweep claims."""
        deleted = 0
        turns_before = datetime.datetime.fromtimestamp(now, datetime.UTC) - _TURN_KEPT
        try:
            async for chunk in obstore.list(self._store, chunk_size=1000):
                expired: list[str] = []
                for meta in chunk:
                    path = meta["path"]
                    if path.startswith(_TURNS):
                        if meta["last_modified"] < turns_before:
                            expired.append(path)
                        continue
                    match = _IMAGE_NAME.fullmatch(path)
                    if match is not None and int(match[1]) < now:
                        expired.append(path)
                        deleted += 1
                if expired:
                    # A multi-object DELETE; a key already gone is no error.
                    await obstore.delete_async(self._store, expired)
        except _FAILED as error:
            raise self._failure("sweep", error) from None
        return deleted

    async def claim_sweep(self, turn: int) -> bool:
        """Creates the turn's claim object if absent: only the replica that did sweeps.

        The create is a conditional PUT (`If-None-Match: *`). A store that
        ignores the condition lets every replica sweep, which is redundant
        but still correct: deletions are idempotent.
        """
        try:
            await obstore.put_async(self._store, f"{_TURNS}{turn}", b"", mode="create")
        except _EXISTS:
            return False
        except _FAILED as error:
            raise self._failure("claim a sweep turn", error) from None
        return True

    def _failure(self, action: str, error: Exception) -> ImageStoreError:
        """The error to raise for `error`, logged once without the store's own text."""
        status = _HTTP_STATUS.search(str(error))
        cause = f"HTTP {status[1]}" if status else type(error).__name__
        # Not found while writing or listing: the bucket itself is missing.
        refused = isinstance(error, _REFUSED)
        message = f"image store {self._where}: {action} failed ({cause})"
        log.warning("%s", message)
        return ImageStoreError(message, refused=refused)
