"""Each model's `created` time: configured, or the first time any replica served it."""

from __future__ import annotations

import dataclasses
import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.config import ModelConfig
from aqueduct_grpc.storage.database import models_seen_table

__all__ = ["with_created_times"]


async def with_created_times(
    engine: AsyncEngine, models: tuple[ModelConfig, ...]
) -> tuple[ModelConfig, ...]:
    """The models, each with its `created` set: from config, else from its first sighting.

    A name seen for the first time is recorded now; a replica racing another
    keeps whichever time was written first.
    """
    unset = [m.name for m in models if m.created is None]
    if not unset:
        return models
    table = models_seen_table
    now = int(time.time())
    query = sa.select(table.c.name, table.c.first_seen).where(table.c.name.in_(unset))
    async with engine.begin() as connection:
        known = {name: first for name, first in await connection.execute(query)}
        for name in unset:
            if name in known:
                continue
            try:
                async with connection.begin_nested():
                    await connection.execute(table.insert().values(name=name, first_seen=now))
                known[name] = now
            except sa.exc.IntegrityError:
                pass  # another replica recorded it meanwhile: read back below
    if len(known) < len(unset):
        async with engine.connect() as connection:
            known = {name: first for name, first in await connection.execute(query)}
    return tuple(
        m if m.created is not None else dataclasses.replace(m, created=int(known[m.name]))
        for m in models
    )
