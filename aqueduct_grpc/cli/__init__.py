"""The `aqueduct-grpc` command: serving, and the tokens, teams, usage and config commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script (see `commands.main`).

    The commands are imported here, not when the package is: a Ctrl-C while
    they import (a second or so) is then a quiet exit rather than a
    traceback, and `python -m aqueduct_grpc.cli.child_process` stays light.
    """
    try:
        from aqueduct_grpc.cli.commands import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    run(argv)
