"""Bearer tokens: creation, listing, revocation and authentication.

A token's secret is 256 random bits shown once at creation; only its sha256 is
stored. With that much entropy a fast hash is enough (no password KDF needed).

Names are unique, so a name addresses one token as an id does: a second
token of a name is refused, revoked ones included, so an old name in a log or
the usage report never means two tokens. Databases from before names were
unique may hold duplicates: those are listed as they are and addressed by id
(a name several tokens share is refused, saying which ids hold it).

Authentication results are cached for `cache_seconds`, so a revocation made
by another process takes effect within that time (at once in this process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aqueduct_grpc.errors import GatewayError, invalid_argument, quoted
from aqueduct_grpc.storage.changes import bump
from aqueduct_grpc.storage.database import stored_name, tokens_table

__all__ = ["SECRET_PREFIX", "Token", "TokenExists", "TokenNotFound", "TokenStore"]

SECRET_PREFIX = "aqk-"
_CACHE_LIMIT = 10_000
# Longer lifetimes are typos, and would overflow dates and int64 fields.
_MAX_LIFETIME_SECONDS = 100 * 366 * 86_400


@dataclass(frozen=True)
class Token:
    """A token's public record (never its secret)."""

    id: str
    name: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    allowed_models: tuple[str, ...] | None

    def state(self, now: float) -> str:
        """The state at `now`: "active", "expired" or "revoked"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class TokenNotFound(GatewayError):
    """No token has that id or name (or several share the name)."""

    def __init__(self, message: str) -> None:
        """Creates the TokenNotFound.

        Args:
            message: which id or name was not found.
        """
        super().__init__(grpc.StatusCode.NOT_FOUND, message, reason="NOT_FOUND", param="token")


class TokenExists(GatewayError):
    """A token with that name exists already (names are unique)."""

    def __init__(self, message: str) -> None:
        """Creates the TokenExists.

        Args:
            message: which name is taken.
        """
        super().__init__(
            grpc.StatusCode.ALREADY_EXISTS, message, reason="TOKEN_EXISTS", param="name"
        )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _unauthenticated(message: str, reason: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.UNAUTHENTICATED, message, reason=reason)


class TokenStore:
    """Tokens in the database, with a short authentication cache."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Creates the TokenStore.

        Args:
            engine: the database.
            cache_seconds: how long an authentication result is reused.
            clock: returns the current Unix time (tests pass their own).
        """
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Token | None]] = {}
        self._inflight: dict[str, asyncio.Future[Token | None]] = {}
        # Bumped by every change seen: a lookup that overlapped one is not cached.
        self._generation = 0

    async def create(
        self,
        name: str,
        *,
        expires_in: float | None = None,
        models: Sequence[str] | None = None,
    ) -> tuple[Token, str]:
        """Creates a token; returns it and its secret (the only time it is seen).

        Raises TokenExists when a token (revoked ones too) has the name.
        """
        name = stored_name(name, "token")
        if expires_in is not None and not 0 < expires_in <= _MAX_LIFETIME_SECONDS:
            raise invalid_argument(
                "expires_in must be positive and at most 100 years", "expires_in_seconds"
            )
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        token = Token(
            id="tok_" + secrets.token_hex(8),
            name=name,
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
            revoked_at=None,
            allowed_models=tuple(models) if models else None,
        )
        async with self._engine.begin() as connection:
            # The change counter's lock first: a concurrent create of the same
            # name waits here, and then sees this one's row (on PostgreSQL as
            # on SQLite), so two tokens can never take one name together.
            await bump(connection)
            taken = await connection.scalar(
                sa.select(tokens_table.c.id).where(tokens_table.c.name == token.name).limit(1)
            )
            if taken is not None:
                raise TokenExists(
                    f"a token named {quoted(token.name)} exists already ({taken}); "
                    "token names are unique: choose another"
                )
            await connection.execute(
                tokens_table.insert().values(
                    id=token.id,
                    name=token.name,
                    secret_hash=_hash(secret),
                    created_at=token.created_at,
                    expires_at=token.expires_at,
                    revoked_at=None,
                    allowed_models=list(token.allowed_models) if token.allowed_models else None,
                )
            )
        return token, secret

    async def list(self) -> list[Token]:
        """Every token, oldest first."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                tokens_table.select().order_by(tokens_table.c.created_at)
            )
            return [_token(row) for row in rows]

    async def count(self) -> int:
        """How many tokens exist (revoked and expired included)."""
        async with self._engine.connect() as connection:
            return int(
                await connection.scalar(sa.select(sa.func.count()).select_from(tokens_table)) or 0
            )

    async def find(self, id_or_name: str) -> Token:
        """The token with that id, or the one token with that name; raises TokenNotFound.

        A name several tokens share (made before names were unique) is refused,
        naming their ids.
        """
        async with self._engine.connect() as connection:
            return _token(await _find_row(connection, id_or_name))

    async def revoke(self, id_or_name: str) -> Token:
        """Revokes the token with that id, or the one token with that name."""
        async with self._engine.begin() as connection:
            row = await _find_row(connection, id_or_name)
            revoked_at = row.revoked_at if row.revoked_at is not None else self._clock()
            await connection.execute(
                tokens_table.update()
                .where(tokens_table.c.id == row.id)
                .values(revoked_at=revoked_at)
            )
            await bump(connection)  # other processes drop their caches too
        self.forget_cached()
        return dataclasses.replace(_token(row), revoked_at=revoked_at)

    def forget_cached(self) -> None:
        """Drops every cached authentication (another process changed tokens).

        Lookups already under way may have read the old row: their results are
        neither cached nor shared with later calls.
        """
        self._generation += 1
        self._cache.clear()
        self._inflight.clear()

    async def authenticate(self, authorization: str | None) -> Token:
        """The active token named by an `authorization: Bearer …` value.

        Raises GatewayError(UNAUTHENTICATED) when it is missing, malformed,
        unknown, expired or revoked.
        """
        if not authorization:
            raise _unauthenticated(
                "You didn't provide an API key. Send 'Authorization: Bearer <token>'.",
                "MISSING_API_KEY",
            )
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise _unauthenticated(
                "Malformed authorization: expected 'Bearer <token>'.", "INVALID_API_KEY"
            )
        digest = _hash(secret)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            token = cached[1]
        else:
            token = await self._lookup(digest, now)
        if token is None:
            raise _unauthenticated("Incorrect API key provided.", "INVALID_API_KEY")
        state = token.state(now)
        if state == "expired":
            raise _unauthenticated("This API key has expired.", "EXPIRED_API_KEY")
        if state == "revoked":
            raise _unauthenticated("This API key has been revoked.", "REVOKED_API_KEY")
        return token

    async def _lookup(self, digest: str, now: float) -> Token | None:
        # One database query per secret at a time: when a burst of calls
        # arrives with a token that is not cached yet, they all wait for the
        # same query instead of queueing for database connections.
        generation = self._generation
        pending = self._inflight.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._find(digest))
            self._inflight[digest] = pending
            pending.add_done_callback(
                lambda done: (
                    self._inflight.pop(digest, None) if self._inflight.get(digest) is done else None
                )
            )
        token = await asyncio.shield(pending)
        if generation != self._generation:
            return token  # a change was seen meanwhile: fine for this call, not for later ones
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (now + self._cache_seconds, token)
        return token

    async def _find(self, digest: str) -> Token | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    tokens_table.select().where(tokens_table.c.secret_hash == digest)
                )
            ).first()
        # The index lookup found the row; compare in constant time anyway so
        # no code path compares secrets byte by byte.
        if row is None or not hmac.compare_digest(row.secret_hash, digest):
            return None
        return _token(row)


async def _find_row(connection: AsyncConnection, id_or_name: str) -> sa.Row:  # type: ignore[type-arg]
    """The row of the token with that id, or of the one token with that name."""
    if "\x00" in id_or_name:
        # No stored id or name has one, and PostgreSQL refuses it in a query.
        raise TokenNotFound(f"no token has id or name {quoted(id_or_name)}")
    rows = (
        await connection.execute(
            tokens_table.select()
            .where(sa.or_(tokens_table.c.id == id_or_name, tokens_table.c.name == id_or_name))
            .order_by(tokens_table.c.created_at)
        )
    ).all()
    by_id = [row for row in rows if row.id == id_or_name]
    if by_id:
        return by_id[0]
    if not rows:
        raise TokenNotFound(f"no token has id or name {quoted(id_or_name)}")
    if len(rows) > 1:
        raise TokenNotFound(
            f"several tokens are named {quoted(id_or_name)} ({', '.join(r.id for r in rows)}, "
            "made before names were unique): name one by its id"
        )
    return rows[0]


def _token(row: sa.Row) -> Token:  # type: ignore[type-arg]
    models = row.allowed_models
    return Token(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        allowed_models=tuple(models) if models else None,
    )
