"""The OpenAI-compatible upstream kind: its wire format, status mapping and HTTP backend."""
