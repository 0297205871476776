from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import EX_CONFIG, Config, ConfigError, load_config

EXAMPLE = Path(__file__).parents[2] / "config" / "bridge.toml"


def test_the_documented_example_is_exactly_the_defaults():
    assert load_config(EXAMPLE, environ={}) == Config()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[forward]\nmax_line_bytes = 10\n",
            "forward.max_line_bytes: Input should be greater than or equal to 16384",
        ),
        ("[forward]\nnope = 1\n", "forward.nope: unknown key"),
        (
            "[forward]\nbacklog = 'some'\n",
            "forward.backlog: must be 'none', 'all' or a number of lines, not 'some'",
        ),
        ("[forward]\ntag = '{{.Bad}}'\n", "forward.tag: unknown key 'Bad' in tag template"),
        ("[forward]\nlabels_regex = '('\n", "forward.labels_regex: invalid regular expression '('"),
        ("[metrics]\nlisten = 'nowhere'\n", "metrics.listen: must be HOST:PORT, not 'nowhere'"),
        ("[forward\n", "invalid TOML"),
    ],
)
def test_errors_name_the_key_and_the_reason_on_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_environment_overrides(tmp_path):
    env = {
        "JOURNALD_BRIDGE_METRICS__LISTEN": "127.0.0.1:9999",
        "JOURNALD_BRIDGE_FORWARD__LABELS": '["a", "b"]',
        "JOURNALD_BRIDGE_FILTER__OPT_IN": "true",
        "OTHER": "x",
    }
    config = load_config(write(tmp_path, "[metrics]\nlisten = '127.0.0.1:1'\n"), environ=env)
    assert config.metrics.listen == "127.0.0.1:9999"
    assert config.forward.labels == ("a", "b")
    assert config.filter.opt_in is True


def test_bad_environment_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"forward\.max_line_bytes"):
        load_config(None, environ={"JOURNALD_BRIDGE_FORWARD__MAX_LINE_BYTES": "lots"})


def test_check_config_exits_78_with_one_line(tmp_path, capsys):
    assert (
        main(["check-config", str(write(tmp_path, "[journal]\nmax_pending_bytes = -1\n"))])
        == EX_CONFIG
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "journal.max_pending_bytes" in err
    assert main(["check-config", str(EXAMPLE)]) == 0


def test_run_with_a_bad_config_exits_78_before_touching_anything(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == EX_CONFIG
    assert "cannot read" in capsys.readouterr().err
