from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import EX_CONFIG, Config, ConfigError, FilterConfig, load_config

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
        ("[[engines]]\nname = 'docker'\n", "engine name 'docker' is the [docker] section's"),
        ("[[engines]]\nname = 'a'\n[[engines]]\nname = 'a'\n", "engine names must be unique: a"),
        ("[[engines]]\nname = 'Web 1'\n", "engines.0.name: must be 1-32 of a-z, 0-9"),
        ("[[engines]]\nhost = 'unix:///x'\n", "engines.0.name: Field required"),
        (
            "[docker]\nenabled = false\n[kubernetes]\nenabled = false\n",
            "no source: [docker] is disabled, there are no [[engines]] and [kubernetes] is off",
        ),
        ("[[engines]]\nname = 'kubernetes'\n", "engine name 'kubernetes' is the [kubernetes]"),
        (
            "[[engines]]\nname = 'r'\nhost = 'tcp://192.0.2.1:2376'\nsource = 'files'\n",
            "engines.0: source = 'files' needs a local engine, not 'tcp://192.0.2.1:2376'",
        ),
        (
            "[[engines]]\nname = 'r'\nhost = 'tcp://192.0.2.1:2376'\ntls_ca_file = '/nonexistent'\n",
            "engines.0: tls_ca_file '/nonexistent' cannot be read",
        ),
        (
            "[[engines]]\nname = 'r'\nhost = 'tcp://192.0.2.1:2376'\ntls_cert_file = '/etc/hostname'\n",
            "tls_cert_file and tls_key_file go together",
        ),
        (
            "[[engines]]\nname = 'p'\nhost = 'unix:///run/p.sock'\ntls_ca_file = '/etc/hostname'\n",
            "TLS options are for a tcp:// engine",
        ),
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


@pytest.mark.parametrize(("raw", "lines"), [("100", 100), ("0", 0), ("all", None), ("none", 0)])
def test_backlog_from_the_environment(raw, lines):
    config = load_config(None, {"JOURNALD_BRIDGE_FORWARD__BACKLOG": raw})
    assert config.forward.backlog_lines == lines


def test_a_negative_backlog_is_one_line_error():
    with pytest.raises(ConfigError, match=r"forward\.backlog"):
        load_config(None, {"JOURNALD_BRIDGE_FORWARD__BACKLOG": "-5"})


# --- [metrics] ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("[::1]:9580", ("::1", 9580)),
        ("[::]:9580", ("::", 9580)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:9580", ("localhost", 9580)),
        ("metrics.example.org.:443", ("metrics.example.org.", 443)),
    ],
)
def test_metrics_listen_takes_ip_literals_and_names(listen, address):
    config = load_config(None, {"JOURNALD_BRIDGE_METRICS__LISTEN": listen})
    assert config.metrics.address == address


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("::1:9580", "an IPv6 address goes in brackets ([::1]:9580), not '::1:9580'"),
        ("[127.0.0.1]:9580", "brackets are for IPv6 addresses only"),
        ("[::1:9580", "an IPv6 address goes in brackets ([::1]:9580)"),
        ("300.1.1.1:9580", "'300.1.1.1' is not an IPv4 address"),
        ("no_such host:9580", "HOST must be an IP address or a host name"),
        ("[::1]:65536", "must be HOST:PORT"),
        (":9580", "must be HOST:PORT"),
    ],
)
def test_metrics_listen_refuses_what_cannot_be_bound(listen, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, {"JOURNALD_BRIDGE_METRICS__LISTEN": listen})
    assert str(info.value).startswith("metrics.listen: ") and message in str(info.value)


def test_metrics_tls_and_basic_auth_are_off_by_default():
    config = load_config(EXAMPLE, environ={}).metrics
    assert (config.tls_cert_file, config.tls_key_file) == ("", "")
    assert (config.basic_auth_user, config.basic_auth_password_file) == ("", "")
    assert config.url == "http://127.0.0.1:9580/metrics"


def test_metrics_basic_auth_password_comes_from_its_file(tmp_path):
    (tmp_path / "pw").write_text("s3cret \r\n")
    text = f"[metrics]\nbasic_auth_user = 'prom'\nbasic_auth_password_file = '{tmp_path / 'pw'}'\n"
    config = load_config(write(tmp_path, text), environ={})
    assert config.metrics.basic_auth_password() == "s3cret "


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"tls_cert_file": "c.pem"}, "metrics: tls_cert_file and tls_key_file go together"),
        ({"tls_key_file": "k.pem"}, "metrics: tls_cert_file and tls_key_file go together"),
        (
            {"tls_cert_file": "{dir}/none.pem", "tls_key_file": "{dir}/none.key"},
            "metrics: cannot use tls_cert_file '{dir}/none.pem' with tls_key_file",
        ),
        (
            {"tls_cert_file": "{dir}/empty", "tls_key_file": "{dir}/empty"},
            "metrics: cannot use tls_cert_file",
        ),
        ({"basic_auth_user": "prom"}, "metrics: basic_auth_user and basic_auth_password_file go"),
        ({"basic_auth_password_file": "{dir}/empty"}, "metrics: basic_auth_user and basic_"),
        (
            {"basic_auth_user": "a:b", "basic_auth_password_file": "{dir}/pw"},
            "metrics.basic_auth_user: a basic auth user name cannot contain ':'",
        ),
        (
            {"basic_auth_user": "prom", "basic_auth_password_file": "{dir}/none"},
            "metrics: cannot read basic_auth_password_file '{dir}/none': No such file",
        ),
        (
            {"basic_auth_user": "prom", "basic_auth_password_file": "{dir}/empty"},
            "metrics: basic_auth_password_file '{dir}/empty' is empty",
        ),
    ],
)
def test_metrics_tls_and_basic_auth_errors_are_one_line(tmp_path, keys, message):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "pw").write_text("pw")
    lines = "".join(f"{k} = '{v.format(dir=tmp_path)}'\n" for k, v in keys.items())
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[metrics]\n" + lines), environ={})
    assert message.format(dir=tmp_path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[transforms]\nlabel_overrides = ['parse', 'nope']\n",
            "transforms.label_overrides: unknown option 'nope' (known: multiline, ",
        ),
        (
            "[transforms]\nmultiline_max_lines = 1\n",
            "transforms.multiline_max_lines: Input should be greater than or equal to 2",
        ),
        (
            "[transforms]\nmultiline_max_lines = 100001\n",
            "transforms.multiline_max_lines: Input should be less than or equal to 100000",
        ),
        (
            "[transforms]\nrate_limit_lines_per_second = inf\n",
            "transforms.rate_limit_lines_per_second: Input should be a finite number",
        ),
        (
            "[transforms]\nrate_limit_lines_per_second = nan\n",
            "transforms.rate_limit_lines_per_second: Input should be a finite number",
        ),
        (
            "[transforms]\nmultiline_start = '" + "(?:" * 2000 + "a" + ")" * 2000 + "'\n",
            "transforms.multiline_start: invalid regular expression '(?:(?:",
        ),
        (
            "[transforms]\nmultiline_continue = 'a{99999999999999999999}'\n",
            "transforms.multiline_continue: invalid regular expression 'a{9999",
        ),
    ],
)
def test_transforms_errors_name_the_key_on_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_transforms_label_overrides_default_to_every_documented_option():
    config = load_config(None, environ={"JOURNALD_BRIDGE_TRANSFORMS__LABEL_OVERRIDES": "[]"})
    assert config.transforms.label_overrides == ()
    assert Config().transforms.label_overrides == (
        "multiline",
        "multiline_start",
        "multiline_continue",
        "parse",
        "detect_priority",
        "rate_limit",
        "rate_limit_burst",
    )
    assert Config().transforms.multiline_max_lines == 500


def test_transforms_rate_limit_from_the_environment_must_be_finite():
    """r16: `inf` was accepted, and every build_chain then raised OverflowError."""
    with pytest.raises(ConfigError, match="rate_limit_lines_per_second"):
        load_config(
            None, environ={"JOURNALD_BRIDGE_TRANSFORMS__RATE_LIMIT_LINES_PER_SECOND": "inf"}
        )


def test_engines_beside_the_docker_section():
    config = Config.model_validate(
        {"engines": [{"name": "podman", "host": "unix:///run/podman/podman.sock"}]}
    )
    assert [(e.name, e.local) for e in config.all_engines] == [("docker", True), ("podman", True)]
    alone = Config.model_validate({"docker": {"enabled": False}, "engines": [{"name": "docker"}]})
    assert [e.name for e in alone.all_engines] == ["docker"]


def test_an_engine_filter_replaces_the_global_one_for_that_engine_only():
    config = Config.model_validate(
        {
            "filter": {"exclude_names": ["tmp-*"]},
            "docker": {"filter": {"opt_in": True}},
            "engines": [
                {"name": "podman", "host": "unix:///run/podman/podman.sock"},
                {"name": "edge", "host": "tcp://edge:2376", "filter": {"include_names": ["web"]}},
            ],
        }
    )
    assert config.filter_for("docker") == FilterConfig(opt_in=True)
    assert config.filter_for("podman") == FilterConfig(exclude_names=("tmp-*",))
    assert config.filter_for("edge") == FilterConfig(include_names=("web",))  # not merged


def test_an_engine_filter_is_checked_like_the_global_one(tmp_path):
    path = tmp_path / "bridge.toml"
    path.write_text('[[engines]]\nname = "podman"\n[engines.filter]\nopt_in = "maybe"\n')
    with pytest.raises(ConfigError, match=r"engines\.0\.filter\.opt_in"):
        load_config(path)
