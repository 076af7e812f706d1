"""Config: safe defaults, and every invalid value refused with a message naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from smtpd_trio import BareLineEndings, Config, ConfigError, SMTPDTrioError


def test_defaults_are_valid_and_safe() -> None:
    config = Config()
    assert config.hostname
    assert config.max_message_size == 10_240_000
    assert config.max_recipients == 1000
    assert config.max_command_line >= 512
    assert config.max_line_length == 1000
    assert config.max_connections == 1000
    assert config.command_timeout == 300.0
    assert config.bare_line_endings is BareLineEndings.REJECT


def test_limits_may_be_disabled_and_values_converted() -> None:
    config = Config(
        max_message_size=None,
        max_connections=None,
        command_timeout=1,
        bare_line_endings="reject",
    )
    assert config.max_message_size is None
    assert config.max_connections is None
    assert config.bare_line_endings is BareLineEndings.REJECT
    assert Config(max_line_length=None).max_line_length is None


def test_size_and_line_limits_cannot_both_be_off() -> None:
    # Both off would let one DATA line without CRLF grow without bound.
    with pytest.raises(ConfigError, match="max_message_size and max_line_length"):
        Config(max_message_size=None, max_line_length=None)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.max_recipients = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hostname", ""),
        ("hostname", "a b"),
        ("hostname", "mx\r\n.example"),
        ("hostname", 5),
        ("banner", "ready\r\n250 injected"),
        ("banner", "two\nlines"),
        ("banner", None),
        ("max_message_size", 0),
        ("max_message_size", -1),
        ("max_message_size", True),
        ("max_message_size", "100"),
        ("max_message_size", 1.5),
        ("max_recipients", 0),
        ("max_recipients", None),
        ("max_command_line", 511),
        ("max_command_line", 0),
        ("max_command_line", "600"),
        ("max_line_length", 0),
        ("max_errors", 0),
        ("max_errors", None),
        ("max_connections", 0),
        ("max_connections", -3),
        ("command_timeout", 0),
        ("command_timeout", -1),
        ("command_timeout", float("nan")),
        ("command_timeout", True),
        ("command_timeout", "30"),
        ("command_timeout", None),
        ("shutdown_timeout", 0),
        ("shutdown_timeout", -0.5),
        ("bare_line_endings", "bogus"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**{field: value})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SMTPDTrioError)
    assert field in str(info.value)


def test_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Config("mx.example")  # type: ignore[call-arg]


def test_xclient_and_xforward_hosts_are_trusted_networks() -> None:
    config = Config(xclient_hosts=["10.0.0.0/8", "::ffff:192.0.2.7"], xforward_hosts=["unix"])
    assert "10.1.2.3" in config.xclient_hosts
    assert "192.0.2.7" in config.xclient_hosts  # IPv4-mapped entries are IPv4
    assert "192.0.2.8" not in config.xclient_hosts
    assert config.xforward_hosts.trust_unix
    assert not Config().xclient_hosts
    assert not Config().xforward_hosts
    with pytest.raises(ConfigError, match="host bits set"):
        Config(xclient_hosts=["10.0.0.1/8"])
    with pytest.raises(ConfigError, match="not an address"):
        Config(xforward_hosts=["mx.example"])
