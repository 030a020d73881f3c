"""Authentication: the token store and the interceptor that admits callers."""
