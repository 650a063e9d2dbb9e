"""Process-level fault tests: real worker processes, real redis-server, real signals."""
