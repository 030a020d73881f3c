"""Test and benchmark aids that run as real servers (the fake upstream)."""
