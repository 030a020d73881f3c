"""An UploadEditImages call received: its files spooled as their pieces arrive, then its request.

The HTTP door streams a form's file parts (and a gRPC caller may stream its
files) as `UploadChunk` messages, then sends the request last. Each file is
written to a `SpooledTemporaryFile` as it comes: small ones stay in memory,
larger ones go to a temporary file, so the core holds a piece of each upload
at a time, however large or many they are. The files are deleted when the
call ends, however it ends (`UploadedFiles.close`).

A file is checked against the per-image limit as it grows, the number of
files against the most an edit takes, and everything received (files sent
again included) against what one request may carry, in bytes and in
messages: an oversized or endless upload is refused while it arrives.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterable
from typing import IO

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.errors import GatewayError, invalid_argument
from aqueduct_grpc.images.edit_inputs import MAX_INPUT_IMAGE_BYTES, MAX_INPUT_IMAGES, too_large

__all__ = ["MAX_UPLOAD_MESSAGES", "SPOOL_MEMORY_BYTES", "UploadedFiles", "receive_upload"]

SPOOL_MEMORY_BYTES = 256 * 1024
"""A file up to this size stays in memory; a larger one is written to a temporary file."""

# The request fields a file may be sent for, and whether they are repeated.
_FILE_FIELDS = {"image": True, "images": True, "mask": False, "markup": False}
# Every image, the mask and the markup.
_MAX_FILES = MAX_INPUT_IMAGES + 2
# The most messages one upload may send (the door sends 256 KiB pieces).
MAX_UPLOAD_MESSAGES = 65536


class UploadedFiles:
    """The files of one upload call, by field and index, each spooled as it arrives."""

    def __init__(
        self, *, max_total_bytes: int, spool_memory_bytes: int = SPOOL_MEMORY_BYTES
    ) -> None:
        """Starts with no file.

        Args:
            max_total_bytes: The most bytes the call may send in all (the
                core's message limit: what a unary request may carry).
            spool_memory_bytes: The size past which a file is written to disk.
        """
        self._max_total_bytes = max_total_bytes
        self._spool_memory_bytes = spool_memory_bytes
        self._files: dict[tuple[str, int], tuple[IO[bytes], int]] = {}
        self._received_bytes = 0
        self._received_messages = 0

    @property
    def files(self) -> dict[tuple[str, int], tuple[IO[bytes], int]]:
        """Each file and its size, by field and index (`edit_inputs.Uploads`)."""
        return self._files

    def add(self, chunk: images_pb2.UploadEditImagesRequest) -> None:
        """Appends one chunk to its file (a new one when it begins).

        Raises:
            GatewayError: INVALID_ARGUMENT for a field that takes no file, too
                many files, a file over the per-image limit, or more bytes or
                messages than one request may carry.
        """
        piece = chunk.chunk
        data = piece.data
        self._received_messages += 1
        self._received_bytes += len(data)
        if (
            self._received_bytes > self._max_total_bytes
            or self._received_messages > MAX_UPLOAD_MESSAGES
        ):
            raise _invalid(
                f"Invalid upload: more than {self._max_total_bytes} bytes or "
                f"{MAX_UPLOAD_MESSAGES} messages in all, the most one request may carry.",
                "image",
                "request_too_large",
            )
        key = (piece.field, piece.index)
        repeated = _FILE_FIELDS.get(piece.field)
        if repeated is None or (piece.index and not repeated):
            raise _invalid(
                f"Invalid chunk: '{piece.field}' at index {piece.index} takes no file; files "
                "are sent for image, images, mask or markup (at index 0).",
                piece.field or "chunk.field",
            )
        file, size = self._files.get(key) or (None, 0)
        if file is None or piece.begins:
            if file is not None:
                file.close()  # sent again: the last one counts
            elif len(self._files) >= _MAX_FILES:
                raise _invalid(
                    f"Invalid 'image': at most {MAX_INPUT_IMAGES} images, a mask and a markup.",
                    "image",
                    "array_above_max_length",
                )
            file, size = tempfile.SpooledTemporaryFile(self._spool_memory_bytes), 0
        size += len(data)
        self._files[key] = (file, size)
        if size > MAX_INPUT_IMAGE_BYTES:
            name = piece.field if not repeated else f"{piece.field}[{piece.index}]"
            raise too_large(name, size, at_least=True)
        file.write(data)

    def close(self) -> None:
        """Deletes every file (a spooled one is gone once closed)."""
        files, self._files = self._files, {}
        for file, _ in files.values():
            file.close()

    def __enter__(self) -> UploadedFiles:
        """The files, deleted when the block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Deletes the files."""
        self.close()


async def receive_upload(
    messages: AsyncIterable[images_pb2.UploadEditImagesRequest], files: UploadedFiles
) -> images_pb2.EditImagesRequest:
    """Reads the call's messages: chunks into `files`, then the request, which must come last.

    Raises:
        GatewayError: INVALID_ARGUMENT for a stream without its request, with a
            message after it or with neither part, or a chunk `files` refuses.
    """
    request: images_pb2.EditImagesRequest | None = None
    try:
        async for message in messages:
            if request is not None:
                raise _invalid("Invalid upload: the request must be the last message.", "request")
            part = message.WhichOneof("part")
            if part == "chunk":
                files.add(message)
            elif part == "request":
                request = message.request
            else:
                raise _invalid(
                    "Invalid upload: a message has neither a chunk nor the request.", "part"
                )
    except GatewayError:
        files.close()  # at once: the error exit may read (and drop) what is still sent
        raise
    if request is None:
        raise _invalid("Invalid upload: the stream ended without its request.", "request")
    return request


def _invalid(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return invalid_argument(message, param, reason=code.upper())
