"""Log source: the engine's own log files, read on the host."""
