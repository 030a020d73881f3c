"""Alembic's environment: runs the revisions on the connection `schema.upgrade` passes in."""

from __future__ import annotations

from alembic import context

from aqueduct_grpc.storage.database import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    # Offline (`--sql`) runs and alembic.ini set-ups are not supported: the
    # caller holds the lock and the transaction, so it must hand the connection in.
    raise RuntimeError("run migrations with aqueduct_grpc.storage.schema.upgrade")

# The caller has begun the transaction, so Alembic neither begins nor commits one.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
