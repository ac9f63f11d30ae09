"""The retention settings: defaults, bounds, where they come from, and the README rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings, new_data_key, new_secret_key
from tests.factories import make_settings

README = Path(__file__).resolve().parents[2] / "README.md"
NAMES = (
    "audit_retention_days",
    "recording_retention_days",
    "appointment_retention_days",
    "appointment_max_days",
    "retention_interval",
)


def test_defaults() -> None:
    settings = make_settings()
    # Six years for the audit log (HIPAA's documentation retention), a month for the rest.
    assert settings.audit_retention_days == 2190
    assert settings.recording_retention_days == 30
    assert settings.appointment_retention_days == 30
    # An appointment nobody ended is ended a quarter of a year after it was made.
    assert settings.appointment_max_days == 90
    assert settings.retention_interval == 3600


def test_read_from_the_environment() -> None:
    settings = Settings.load(
        {
            "QUIETROOM_SECRET_KEYS": new_secret_key(),
            "QUIETROOM_DATA_KEYS": new_data_key(),
            "QUIETROOM_AUDIT_RETENTION_DAYS": "0",
            "QUIETROOM_RECORDING_RETENTION_DAYS": "7",
            "QUIETROOM_APPOINTMENT_RETENTION_DAYS": "90",
            "QUIETROOM_APPOINTMENT_MAX_DAYS": "0",
            "QUIETROOM_RETENTION_INTERVAL": "600",
        }
    )
    assert (
        settings.audit_retention_days,
        settings.recording_retention_days,
        settings.appointment_retention_days,
        settings.appointment_max_days,
        settings.retention_interval,
    ) == (0, 7, 90, 0, 600)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"audit_retention_days": "-1"}, "AUDIT_RETENTION_DAYS: must be 0 to 36500"),
        ({"recording_retention_days": "36501"}, "RECORDING_RETENTION_DAYS: must be 0 to 36500"),
        ({"appointment_retention_days": "-5"}, "APPOINTMENT_RETENTION_DAYS: must be 0 to 36500"),
        ({"appointment_max_days": "36501"}, "APPOINTMENT_MAX_DAYS: must be 0 to 36500"),
        ({"retention_interval": "59"}, "RETENTION_INTERVAL: must be 60 to 86400"),
        ({"retention_interval": "86401"}, "RETENTION_INTERVAL: must be 60 to 86400"),
        ({"audit_retention_days": "six years"}, "AUDIT_RETENTION_DAYS: expected a whole number"),
    ],
)
def test_bad_values_are_refused_at_start(overrides: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        make_settings(**overrides)


def test_the_readme_documents_every_retention_setting() -> None:
    readme = README.read_text("utf-8")
    for name in NAMES:
        assert f"| `QUIETROOM_{name.upper()}` |" in readme, name
