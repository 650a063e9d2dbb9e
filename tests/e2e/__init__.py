"""End-to-end tests: real processes talking to real servers."""
