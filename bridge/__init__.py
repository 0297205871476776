"""journald-bridge: every Docker container's output in the host journal, exactly once."""

from __future__ import annotations

__version__ = "0.1.0"
