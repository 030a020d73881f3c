"""Which database a command uses, said out loud, and never made by mistake.

Run from another folder, the default `./data` is another database: tokens
made there are unknown to the server. So the store commands name the
database they use (and where that choice came from) on stderr, and one that
finds no database yet says so: a command that creates something (`tokens
create`, `teams create`, `db upgrade`) creates the database with a warning;
one that only reads or changes what exists works on an empty database in
memory, leaving no file behind.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aqueduct_grpc.storage.database import sqlite_url

__all__ = ["DATABASE_FILE", "DatabaseLocation", "locate_database"]

# The embedded database's file in the data dir (as `storage.database.sqlite_url` names it).
DATABASE_FILE = "aqueduct.db"

# An empty database that is never written anywhere: what a reading command
# sees when the data dir has none, instead of a new file.
_EMPTY_IN_MEMORY = "sqlite+aiosqlite://"


@dataclass(frozen=True)
class DatabaseLocation:
    """The database a command was pointed at, and how.

    Attributes:
        data_dir: the data dir (the journal and image files of `serve` live there).
        database_url: the `--database-url` (or `$AQUEDUCT_DATABASE_URL`), if any.
        origin: where the choice came from, as the output says it.
    """

    data_dir: pathlib.Path
    database_url: str | None
    origin: str

    @property
    def embedded_file(self) -> pathlib.Path | None:
        """The SQLite file in the data dir, when that is the database."""
        return None if self.database_url else self.data_dir.resolve() / DATABASE_FILE

    @property
    def shown(self) -> str:
        """The database as the output names it (a URL's password hidden)."""
        if self.embedded_file is not None:
            return str(self.embedded_file)
        try:
            return make_url(self.database_url or "").render_as_string(hide_password=True)
        except ArgumentError:
            return "the --database-url given"

    def exists(self) -> bool:
        """Whether there is a database there already (assumed so for a server's URL)."""
        if self.embedded_file is not None:
            return self.embedded_file.exists()
        try:
            url = make_url(self.database_url or "")
        except ArgumentError:
            return True  # opening it will say what is wrong
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return pathlib.Path(url.database).exists()
        return True

    def url(self) -> str:
        """The URL to open (creating the data dir for the embedded database)."""
        return self.database_url or sqlite_url(self.data_dir)

    def url_for(self, command: str, *, creates: bool) -> str:
        """The URL `command` should open, having said on stderr which database it is.

        Args:
            command: the command, as the warning names it ("tokens create").
            creates: whether the command makes something (it may then create
                the database); otherwise a missing database is read as empty.
        """
        _say(f"database: {self.shown} ({self.origin})")
        if self.exists():
            return self.url()
        if creates:
            _say(
                f"warning: no database in {self.shown} yet: creating one. A server using "
                "another data dir or --database-url will not know what this command makes."
            )
            return self.url()
        _say(
            f"warning: no database in {self.shown} yet: {command} sees none (nothing was "
            "created). Is this the server's data dir? Set --data-dir, $AQUEDUCT_DATA_DIR "
            "or --database-url."
        )
        return _EMPTY_IN_MEMORY


def locate_database(
    *, data_dir: str | None, database_url: str | None, environ: Mapping[str, str]
) -> DatabaseLocation:
    """The database that flags, then environment variables, then defaults choose.

    Args:
        data_dir: the `--data-dir` given, or None.
        database_url: the `--database-url` given, or None.
        environ: the environment (`AQUEDUCT_DATA_DIR`, `AQUEDUCT_DATABASE_URL`).
    """
    if data_dir is not None:
        folder, folder_origin = data_dir, f"--data-dir {data_dir}"
    elif environ.get("AQUEDUCT_DATA_DIR"):
        folder = environ["AQUEDUCT_DATA_DIR"]
        folder_origin = f"$AQUEDUCT_DATA_DIR={folder}"
    else:
        folder, folder_origin = "data", "the default data dir ./data"
    if database_url is not None:
        return DatabaseLocation(pathlib.Path(folder), database_url, "--database-url")
    if environ.get("AQUEDUCT_DATABASE_URL"):
        url = environ["AQUEDUCT_DATABASE_URL"]
        return DatabaseLocation(pathlib.Path(folder), url, "$AQUEDUCT_DATABASE_URL")
    return DatabaseLocation(pathlib.Path(folder), None, folder_origin)


def _say(line: str) -> None:
    # On stderr: stdout holds what scripts read (a table, JSON, CSV, a secret).
    print(f"aqueduct-grpc: {line}", file=sys.stderr)
