"""The spellings of an upstream key that an upstream could echo, and a check that none leaked."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}")


def key_forms(key: str) -> list[str]:
    """The key as an upstream might echo it: cased, URL-encoded, base64-encoded."""
    raw = key.encode()
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    return [
        key,
        key.upper(),
        key.swapcase(),
        "".join(f"%{byte:02X}" for byte in raw),
        "".join(f"%{byte:02x}" for byte in raw),
        urllib.parse.quote(key, safe=""),
        standard,
        standard.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
        base64.b64encode(b"user:" + raw).decode(),  # inside a Basic credential
        base64.urlsafe_b64encode(b"\xfb\xff" + raw + b"\xfe").decode(),
    ]


def assert_no_key(text: str, key: str) -> None:
    """Fails when `text` holds the key in any spelling, or any base64 text that decodes to it.

    Independent of how the gateway scrubs: every run of base64 characters is
    decoded at each of its four alignments, in both alphabets, and searched
    for the key's bytes (all but two at each end, which may mix with
    neighbours).
    """
    lowered = key.lower()
    assert lowered not in text.lower(), "the key in plain text"
    assert lowered not in urllib.parse.unquote_plus(text).lower(), "the key URL-encoded"
    middle = key.encode()[2:-2]
    for run in _BASE64_RUN.findall(text):
        for offset in range(4):
            part = run[offset:]
            part = part[: len(part) - len(part) % 4]
            for alphabet in (b"+/", b"-_"):
                try:
                    decoded = base64.b64decode(part.encode(), altchars=alphabet)
                except (binascii.Error, ValueError):
                    continue
                assert middle not in decoded, f"the key base64-encoded in {run[:40]!r}…"
