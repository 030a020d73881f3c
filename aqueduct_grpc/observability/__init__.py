"""What the core tells its operators: request ids, the access log, metrics."""
