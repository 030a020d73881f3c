"""Upstream kinds behind one typed boundary, and the dispatcher that picks one."""
