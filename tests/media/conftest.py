"""Shared fixtures for sealed recordings: master keys and recording ids."""

from __future__ import annotations

import secrets

import pytest

from gateway.domain.ids import new_id
from gateway.media.sealed import RecordingKey, RecordingKeyring


def new_key() -> RecordingKey:
    return RecordingKey(secrets.token_bytes(32))


@pytest.fixture
def keyring() -> RecordingKeyring:
    return RecordingKeyring([new_key()])


@pytest.fixture
def recording_id() -> str:
    return new_id("rec")
