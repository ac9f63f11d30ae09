"""Recording master keys in settings, and ``quietroom keys new --kind recording`` /
``quietroom recordings export|verify``."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.media.sealed import RecordingKey, RecordingKeyring, SealedWriter, sealed_hash
from gateway.settings import Settings, new_data_key, new_recording_key, new_secret_key

GOOD = {"QUIETROOM_SECRET_KEYS": new_secret_key(), "QUIETROOM_DATA_KEYS": new_data_key()}


# --- settings ---------------------------------------------------------------------------------


def test_recording_keys_are_read_newest_first_and_kept_out_of_repr() -> None:
    new, old = new_recording_key(), new_recording_key()
    settings = Settings.load({**GOOD, "QUIETROOM_RECORDING_KEYS": f"{new}, {old}"})
    assert settings.recording_keys == (new, old)
    assert new not in repr(settings)
    keyring = RecordingKeyring.from_settings(settings)
    raw_new = base64.b64decode(new)
    assert keyring.sealing_key.key_id == hashlib.sha256(raw_new).digest()[:8].hex()
    assert keyring.key_ids[1] == RecordingKey.from_text(old).key_id


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("not base64!", "is not base64"),
        (base64.b64encode(b"x" * 16).decode(), "is not 32 bytes"),
        (base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "is not base64"),
    ],
)
def test_malformed_recording_keys_refuse_to_start(bad: str, problem: str) -> None:
    env = {**GOOD, "QUIETROOM_RECORDING_KEYS": f"{new_recording_key()},{bad}"}
    with pytest.raises(ConfigError, match=f"RECORDING_KEYS: key #2 {problem}") as info:
        Settings.load(env)
    assert bad not in str(info.value)


def test_dev_mode_makes_an_ephemeral_recording_key() -> None:
    settings = Settings.load({}, dev_mode=True)
    assert len(settings.recording_keys) == 1
    assert settings.ephemeral_secrets
    RecordingKeyring.from_settings(settings)


def test_without_recording_keys_the_gateway_starts_but_cannot_record() -> None:
    settings = Settings.load(GOOD)
    assert settings.recording_keys == ()
    with pytest.raises(ConfigError, match="QUIETROOM_RECORDING_KEYS is required"):
        RecordingKeyring.from_settings(settings)


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def recording_key(monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QUIETROOM_CONFIG", raising=False)
    monkeypatch.delenv("QUIETROOM_DEV_MODE", raising=False)
    key = new_recording_key()
    monkeypatch.setenv("QUIETROOM_RECORDING_KEYS", key)
    return key


@pytest.fixture
def sealed(tmp_path: Path, recording_key: str, recording_id: str) -> tuple[Path, bytes]:
    data = secrets.token_bytes(200_000)
    path = tmp_path / "r.sealed"
    keyring = RecordingKeyring.from_text([recording_key])
    with SealedWriter(path, keyring=keyring, recording_id=recording_id) as writer:
        writer.write(data)
    return path, data


def test_keys_new_recording_prints_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "--kind", "recording"]) == 0
    printed = capsys.readouterr().out.strip()
    assert len(base64.b64decode(printed, validate=True)) == 32


def test_verify_prints_the_sealed_hash(
    sealed: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = sealed
    assert main(["recordings", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"sealed sha256: {sealed_hash(path)}" in out
    assert f"{len(data)} bytes" in out
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.sealed"]


def test_verify_fails_on_a_tampered_recording(
    sealed: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = sealed
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 1
    path.write_bytes(bytes(raw))
    assert main(["recordings", "verify", str(path)]) == 1
    assert "does NOT verify" in capsys.readouterr().err


def test_export_writes_the_plaintext_once(
    tmp_path: Path, sealed: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = sealed
    out = tmp_path / "exported.webm"
    assert main(["recordings", "export", str(path), str(out)]) == 0
    assert out.read_bytes() == data
    assert f"sealed sha256: {sealed_hash(path)}" in capsys.readouterr().out

    out.write_bytes(b"edited by the operator")
    assert main(["recordings", "export", str(path), str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"edited by the operator"


def test_export_of_a_tampered_recording_leaves_no_plaintext(
    tmp_path: Path, sealed: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = sealed
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 50])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["recordings", "export", str(path), str(out_dir / "x.webm")]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []


def test_a_recording_under_another_key_is_named_not_opened(
    sealed: tuple[Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
    recording_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = sealed
    monkeypatch.setenv("QUIETROOM_RECORDING_KEYS", new_recording_key())
    assert main(["recordings", "verify", str(path)]) == 1
    assert RecordingKey.from_text(recording_key).key_id in capsys.readouterr().err


def test_without_recording_keys_the_command_says_how_to_make_one(
    sealed: tuple[Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = sealed
    monkeypatch.delenv("QUIETROOM_RECORDING_KEYS")
    assert main(["recordings", "verify", str(path)]) == 2
    assert "quietroom keys new --kind recording" in capsys.readouterr().err
