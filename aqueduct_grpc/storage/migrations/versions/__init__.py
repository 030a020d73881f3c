"""The revisions, one file each, in order from 0001 (Alembic ignores this file)."""
