"""Where images returned by URL are kept until they expire.

`ImageStore` is the interface; `FileImageStore` keeps images as files in one
directory, `S3ImageStore` (module `s3_images`, the `[s3]` extra) in a bucket
every replica shares. `open_image_store` picks one from
`gateway.image_store_url`. File work runs in a worker thread: images are
megabytes and the event loop must not wait on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import re
import time
import urllib.parse
from typing import Protocol

from aqueduct_grpc.config import ConfigError

__all__ = [
    "FileImageStore",
    "ImageStore",
    "ImageStoreError",
    "ImageSweeper",
    "open_image_store",
]

log = logging.getLogger(__name__)

# Names are made by the gateway; anything else (a path, "..") is never a file.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


# A half-written file older than this was left by a crashed writer.
_ABANDONED_SECONDS = 3600.0


class ImageStoreError(Exception):
    """The store could not be reached, or refused a request.

    The message is safe to show and log: it names what failed, never a
    credential or the store's own error text.
    """

    def __init__(self, message: str, *, refused: bool) -> None:
        """Creates the ImageStoreError.

        Args:
            message: what failed, without secrets.
            refused: True when the store answered no (credentials, permissions,
                a missing bucket); False when it could not be reached or failed.
        """
        super().__init__(message)
        self.refused = refused


class ImageStore(Protocol):
    """Keeps image bytes under a name until an expiry time.

    Names are made by `ImageLinks` and begin with their expiry in seconds
    (`{expires}-…`); a store may rely on that. Failures of the store itself
    raise `ImageStoreError`.
    """

    async def put(self, name: str, data: bytes, *, expires_at: float, content_type: str) -> None:
        """Stores `data` under `name`; it may be deleted after `expires_at`."""

    async def get(self, name: str) -> bytes | None:
        """The bytes stored under `name`, or None when there are none (any more)."""

    async def presigned_url(self, name: str, expires_at: float) -> str | None:
        """A URL of the store itself that serves `name` until `expires_at`; None if it has none."""

    async def delete_expired(self, now: float) -> int:
        """Deletes what expired before `now`; returns how many images went."""

    async def claim_sweep(self, turn: int) -> bool:
        """Whether this replica sweeps in `turn` (exactly one does where the store can tell)."""


class FileImageStore:
    """One file per image in a directory.

    A file's modification time is set to its expiry, so the sweep needs no
    index and still works after a restart.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Creates the FileImageStore.

        Args:
            directory: where the files go (created if missing).
        """
        self._directory = pathlib.Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)

    async def put(self, name: str, data: bytes, *, expires_at: float, content_type: str) -> None:
        """Writes the file atomically (a temporary file, then a rename).

        The content type is not kept: the name's extension says it.
        """
        await asyncio.to_thread(self._put, self._path(name), data, expires_at)

    async def get(self, name: str) -> bytes | None:
        """The file's bytes; None for a missing file or a name that is not ours."""
        if not _SAFE_NAME.fullmatch(name):
            return None
        return await asyncio.to_thread(self._get, self._directory / name)

    async def presigned_url(self, name: str, expires_at: float) -> str | None:
        """None: only the gateway serves files (the config refuses redirects for them)."""
        return None

    async def delete_expired(self, now: float) -> int:
        """Deletes expired files and half-written ones left by a crash."""
        return await asyncio.to_thread(self._delete_expired, now)

    async def claim_sweep(self, turn: int) -> bool:
        """Always True: a directory is swept by each replica that uses it.

        On a filesystem that replicas share, sweeps may overlap; each file goes
        once and the others find it gone.
        """
        return True

    def _path(self, name: str) -> pathlib.Path:
        if not _SAFE_NAME.fullmatch(name):
            raise ValueError(f"not a valid image name: {name!r}")
        return self._directory / name

    @staticmethod
    def _put(path: pathlib.Path, data: bytes, expires_at: float) -> None:
        # Written aside then renamed: a reader never sees half a file.
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.utime(partial, (time.time(), expires_at))
        partial.replace(path)

    @staticmethod
    def _get(path: pathlib.Path) -> bytes | None:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _delete_expired(self, now: float) -> int:
        deleted = 0
        with os.scandir(self._directory) as entries:
            for entry in entries:
                try:
                    # A ".partial" file is being written (its mtime is not its
                    # expiry yet): leave it unless it was abandoned long ago.
                    cutoff = now - _ABANDONED_SECONDS if entry.name.startswith(".") else now
                    if entry.is_file() and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        deleted += 1
                except FileNotFoundError:
                    pass  # deleted meanwhile (another replica's sweep)
        return deleted


class ImageSweeper:
    """A background task that deletes expired images every `interval` seconds."""

    def __init__(self, store: ImageStore, *, interval: float) -> None:
        """Creates the ImageSweeper.

        Args:
            store: the store to sweep.
            interval: seconds between sweeps.
        """
        self._store = store
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts the task."""
        self._task = asyncio.create_task(self._run(), name="image-sweeper")

    async def close(self) -> None:
        """Stops the task (a sweep in progress is cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> int:
        """Deletes expired images now, whoever's turn it is; returns how many."""
        deleted = await self._store.delete_expired(time.time())
        if deleted:
            log.info("deleted %d expired images", deleted)
        return deleted

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            # Turns are slices of wall-clock time, the same on every replica,
            # so that one of those sharing a store sweeps per interval.
            turn = int(time.time() // self._interval)
            try:
                if await self._store.claim_sweep(turn):
                    await self.sweep()
            except ImageStoreError:
                pass  # the store has logged what failed; the next turn tries again
            except Exception:
                # A failing disk must not stop the sweeps to come.
                log.exception("image sweep failed")


def open_image_store(url: str) -> ImageStore:
    """The store `url` names: `file:///path` or `s3://bucket/prefix`.

    Raises:
        ConfigError: for another kind of URL, or `s3://` without the S3 client.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return FileImageStore(urllib.parse.unquote(parts.path))
    if parts.scheme == "s3":
        try:
            from aqueduct_grpc.storage.s3_images import S3ImageStore
        except ImportError:
            raise ConfigError(
                f"gateway.image_store_url is {url}, which needs the S3 client: "
                "pip install 'aqueduct-grpc[s3]'"
            ) from None
        return S3ImageStore(parts.netloc, parts.path.strip("/"))
    raise ConfigError(f"gateway.image_store_url must be file:///path or s3://bucket/prefix: {url}")
