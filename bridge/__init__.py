"""journald-bridge: every Docker container's output in the host journal, exactly once.

`__version__` is the project's one version: setuptools reads it for the wheel (pyproject's
dynamic version), `make deb` and `make image` for the package version and the image tag, and
CHANGELOG.md's newest section must name it (tests/unit/test_version.py).
"""

from __future__ import annotations

__version__ = "0.1.0"
