"""The operations settings: log format and level, the metrics token, the drain."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from tests.factories import make_settings


def test_defaults() -> None:
    settings = make_settings()
    assert (settings.log_format, settings.log_level) == ("text", "INFO")
    assert settings.metrics_token == ""
    assert settings.shutdown_drain == 5


def test_the_metrics_token_is_never_shown() -> None:
    settings = make_settings(metrics_token="k" * 40)
    assert "k" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"log_format": "xml"}, "LOG_FORMAT: must be text or json"),
        ({"log_level": "LOUD"}, "LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR"),
        ({"metrics_token": "short"}, "METRICS_TOKEN: shorter than 32 characters"),
        ({"metrics_token": "a b" * 20}, "METRICS_TOKEN: has spaces"),
        ({"shutdown_drain": "61"}, "SHUTDOWN_DRAIN: must be 0 to 60"),
        ({"shutdown_drain": "-1"}, "SHUTDOWN_DRAIN: must be 0 to 60"),
    ],
)
def test_bad_values_are_refused_at_start(overrides: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        make_settings(**overrides)


def test_a_bad_metrics_token_is_not_quoted() -> None:
    with pytest.raises(ConfigError) as refused:
        make_settings(metrics_token="tooShortSecretQ7Z")
    assert "tooShortSecretQ7Z" not in str(refused.value)


def test_levels_are_read_in_any_case() -> None:
    assert make_settings(log_level="debug", log_format="json").log_level == "debug"
