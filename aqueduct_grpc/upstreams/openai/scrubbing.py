"""Keeps a deployment's API key out of everything an upstream says back.

An upstream (or whoever answers in its place) may echo the key it was sent:
plainly, in another case, URL-encoded (any of its characters as `%XX`), or
base64-encoded, alone or inside a longer text (e.g. `Basic …`). Every text
that comes from an upstream passes through its deployment's `KeyScrubber`,
which replaces each of those forms by `***`. One scrubber (one compiled
pattern) is built per key and cached.
"""

from __future__ import annotations

import base64
import functools
import re

from aqueduct_grpc.config import Deployment

__all__ = ["REDACTED", "KeyScrubber", "scrubber_for"]

REDACTED = "***"

# A base64 piece shorter than this could match innocent text by chance.
_MIN_PIECE_CHARS = 8
# Texts are scanned up to this length (an upstream's error body can be huge);
# callers keep far less than this.
_SCAN_CHARS = 64 * 1024
# The characters of both base64 alphabets.
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-")


class KeyScrubber:
    """Replaces every form of one key in a text by `***`."""

    def __init__(self, key: str | None) -> None:
        """Creates the KeyScrubber.

        Args:
            key: the secret to scrub; None or empty scrubs nothing.
        """
        self._pattern: re.Pattern[str] | None = None
        self._longest = 0  # characters of the longest text one form can match
        if not key:
            return
        pieces = _base64_pieces(key.encode())
        alternatives = [_url_encoded(key)]
        if pieces:
            # A piece, then what mixes its last bits with the next byte's, and padding.
            either = "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True))
            alternatives.append(f"(?P<b64>{either})[A-Za-z0-9+/_-]{{0,3}}={{0,2}}")
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        self._longest = max([3 * len(key.encode()), *(len(p) + 8 for p in pieces)])

    def __call__(self, text: str) -> str:
        """The text with every form of the key replaced by `***`."""
        if self._pattern is None:
            return text
        kept: list[str] = []
        done = 0
        for found in self._pattern.finditer(text):
            start = found.start()
            if found.groupdict().get("b64") is not None:
                # Also the characters before the piece that mix its first bits
                # with the byte before (a leading class in the pattern would be
                # tried at every position of every text, at three times the cost).
                floor = max(done, start - 3)
                while start > floor and text[start - 1] in _B64_CHARS:
                    start -= 1
            kept += (text[done:start], REDACTED)
            done = found.end()
        if not kept:
            return text
        kept.append(text[done:])
        return "".join(kept)

    def bounded(self, text: str, limit: int) -> str:
        """The scrubbed text, cut to at most `limit` characters (`…` marks a cut)."""
        clean = self(text[:_SCAN_CHARS])
        if len(text) > _SCAN_CHARS:
            # The scan may have cut a form of the key in two at its end.
            clean = clean[: max(0, len(clean) - self._longest)] + "…"
        if len(clean) > limit:
            clean = clean[: limit - 1] + "…"
        return clean


def scrubber_for(deployment: Deployment) -> KeyScrubber:
    """The deployment's scrubber, built once per key."""
    return _scrubber(deployment.api_key)


@functools.lru_cache(maxsize=256)
def _scrubber(key: str | None) -> KeyScrubber:
    return KeyScrubber(key)


def _url_encoded(key: str) -> str:
    """A pattern for the key with any of its characters percent-encoded (`+` for a space)."""
    parts = []
    for char in key:
        escaped = "".join(f"%{byte:02x}" for byte in char.encode())
        spellings = [re.escape(char), escaped] + (["\\+"] if char == " " else [])
        parts.append(f"(?:{'|'.join(spellings)})")
    return "".join(parts)


def _base64_pieces(raw: bytes) -> set[str]:
    """The base64 characters that encode only the key's own bytes, in both alphabets.

    One piece for each of the three positions the key can start at inside an
    encoded text: the piece appears there whatever surrounds the key.
    """
    pieces: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        start = -(-8 * shift // 6)  # the first character free of the prefix's bits
        end = 8 * (shift + len(raw)) // 6  # past the last one holding only the key's
        piece = encoded[start:end]
        if len(piece) >= _MIN_PIECE_CHARS:
            pieces |= {piece, piece.translate(str.maketrans("+/", "-_"))}
    return pieces
