"""The one version: bridge.__version__ is what the CLI, the build_info metric, the wheel and the
changelog say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import bridge
from bridge import cli

ROOT = Path(__file__).parents[2]


def test_the_cli_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"journald-bridge {bridge.__version__}"


def test_build_info_carries_the_version() -> None:
    from bridge.telemetry import Telemetry

    registry = CollectorRegistry()
    Telemetry(registry=registry)
    text = generate_latest(registry).decode()
    assert f'journald_bridge_build_info{{version="{bridge.__version__}"}} 1.0' in text


def test_the_changelog_names_the_version_first() -> None:
    sections = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert sections and sections[0] == bridge.__version__


def test_setuptools_reads_the_same_version() -> None:
    """pyproject's version is dynamic: the wheel's metadata comes from bridge.__version__."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools.config.pyprojecttoml as p; "
            "print(p.read_configuration('pyproject.toml', expand=True)['project']['version'])",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == bridge.__version__


def test_the_examples_name_the_version() -> None:
    """The compose file and the README's install commands pin the image and package they show:
    a version bump updates them with bridge/__init__.py."""
    version = re.escape(bridge.__version__)
    compose = (ROOT / "deploy/container/compose.yaml").read_text()
    assert re.findall(r"image: journald-bridge:(\S+)", compose) == [bridge.__version__]
    readme = (ROOT / "README.md").read_text()
    tags = set(re.findall(r"journald-bridge:(\d[\w.+-]*\w)", readme))
    assert tags == {bridge.__version__}, tags
    assert re.search(rf"dist/journald-bridge_{version}_amd64\.deb", readme)
