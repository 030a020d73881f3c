"""`python -m aqueduct_grpc` runs the `aqueduct-grpc` command."""

from aqueduct_grpc.cli import main

main()
