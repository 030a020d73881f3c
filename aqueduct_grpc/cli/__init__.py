"""The `aqueduct-grpc` command: serving, and the tokens, teams and usage commands."""

from aqueduct_grpc.cli.commands import main

__all__ = ["main"]
