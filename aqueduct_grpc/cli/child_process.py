"""Runs a command that exits when its parent does: `serve`'s HTTP door processes.

Usage: python -m aqueduct_grpc.cli.child_process PARENT_PID COMMAND [ARG ...]

Linux's PR_SET_PDEATHSIG makes the kernel send SIGTERM when the parent dies,
even by SIGKILL, so no orphaned door keeps the port. It is set here, in a
process of its own, and kept across exec: setting it from `preexec_fn` would
make `serve` fork (not vfork) while gRPC's threads run, and gRPC's fork
handlers then crashed the child now and then.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> None:
    """Sets the parent-death signal, then replaces this process with the command."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.exit(__doc__)
    parent, command = int(args[0]), args[1:]
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(0)  # the parent died before the signal was armed
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
