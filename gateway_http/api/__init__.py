"""Generated from gateway_http/protos/ by scripts/generate_protos.py. DO NOT EDIT."""
