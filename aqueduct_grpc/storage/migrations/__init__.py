"""The database's Alembic migrations, run by `aqueduct_grpc.storage.schema.upgrade`.

Every change to the tables in `aqueduct_grpc/storage/database.py` needs a new
revision here, or `tests/core/test_migrations.py` fails (it compares the
migrated schema with `metadata`). To add one:

1. Change `metadata` in `database.py`.
2. Add `versions/0002_what_it_does.py` (copy the header of `0001_initial.py`):
   `revision = "0002"`, `down_revision = "0001"`, and `upgrade()` /
   `downgrade()` written with `alembic.op` (`op.add_column`, `op.create_table`,
   `op.create_index`). Spell the columns out: never import `metadata`, which
   describes the newest schema, not this revision's.
3. On SQLite, changes other than adding a table, an index or a nullable column
   go through `with op.batch_alter_table("name") as batch:` (SQLite's ALTER
   TABLE cannot change or drop columns; batch mode copies the table).

Alembic can write the file from `script.py.mako`, given the config in code::

    from alembic import command
    from aqueduct_grpc.storage.schema import alembic_config
    command.revision(alembic_config(), "what it does", rev_id="0002")

Revisions run in one transaction, under the lock `schema.upgrade` takes, so a
revision never has to care about replicas starting at once.
"""
