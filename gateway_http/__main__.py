"""`python -m gateway_http`: the `gateway-http` command."""

from gateway_http.cli import main

main()
