"""Sealed recordings: round trips, every kind of tampering, keys, and no plaintext on disk."""

from __future__ import annotations

import gc
import hashlib
import os
import secrets
import stat
from pathlib import Path

import pytest

from gateway.errors import (
    RecordingCorrupt,
    RecordingError,
    RecordingKeyUnknown,
    RecordingTruncated,
    RecordingVersionUnsupported,
)
from gateway.media.sealed import (
    DEFAULT_CHUNK_SIZE,
    FORMAT_VERSION,
    MAGIC,
    TAG_SIZE,
    RecordingKeyring,
    SealedWriter,
    export_plaintext,
    open_sealed,
    sealed_hash,
    verify_sealed,
)
from tests.media.conftest import new_key

CHUNK = 64  # the smallest chunk the format allows: many chunks from little data
SEALED_CHUNK = CHUNK + TAG_SIZE


def seal(
    path: Path,
    data: bytes,
    keyring: RecordingKeyring,
    recording_id: str,
    *,
    chunk_size: int = CHUNK,
) -> SealedWriter:
    """Seal ``data`` into ``path``, written in uneven slices."""
    with SealedWriter(
        path, keyring=keyring, recording_id=recording_id, chunk_size=chunk_size
    ) as writer:
        position, step = 0, 1
        while position < len(data):
            writer.write(data[position : position + step])
            position += step
            step = step * 3 % 97 + 1
    return writer


def read_all(path: Path, keyring: RecordingKeyring) -> bytes:
    with open_sealed(path, keyring=keyring) as reader:
        return b"".join(reader)


def header_size(recording_id: str) -> int:
    return 82 + len(recording_id)


def chunk_offset(recording_id: str, index: int) -> int:
    return header_size(recording_id) + index * SEALED_CHUNK


@pytest.fixture
def sealed_five(tmp_path: Path, keyring: RecordingKeyring, recording_id: str) -> Path:
    """A recording of five full chunks and a partial final one."""
    path = tmp_path / "five.sealed"
    seal(path, secrets.token_bytes(5 * CHUNK + 10), keyring, recording_id)
    return path


def rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * CHUNK + 7, 17 * CHUNK]
)
def test_round_trip(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, size: int
) -> None:
    data = secrets.token_bytes(size)
    path = tmp_path / "r.sealed"
    writer = seal(path, data, keyring, recording_id)

    chunks = max(1, -(-size // CHUNK))
    assert path.stat().st_size == header_size(recording_id) + size + chunks * TAG_SIZE
    with open_sealed(path, keyring=keyring) as reader:
        assert reader.recording_id == recording_id
        assert reader.key_id == keyring.sealing_key.key_id
        pieces = list(reader)
        report = reader.report()
    assert b"".join(pieces) == data
    assert all(len(piece) <= CHUNK for piece in pieces)
    assert report.chunks == chunks
    assert report.plaintext_size == size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.sealed_hash == writer.sealed_hash == sealed_hash(path) == digest
    assert os.listdir(tmp_path) == ["r.sealed"]


def test_round_trip_with_the_default_chunk_size(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    data = secrets.token_bytes(3 * DEFAULT_CHUNK_SIZE + 12345)
    path = tmp_path / "r.sealed"
    with SealedWriter(path, keyring=keyring, recording_id=recording_id) as writer:
        writer.write(data[:100])
        writer.write(memoryview(data)[100:])
    assert read_all(path, keyring) == data
    assert verify_sealed(path, keyring=keyring).chunks == 4


def test_header_names_format_key_and_recording_but_no_secret(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    seal(path, b"", keyring, recording_id)
    raw = path.read_bytes()
    key = keyring.sealing_key
    assert raw.startswith(MAGIC)
    assert raw[8] == FORMAT_VERSION
    assert int.from_bytes(raw[9:13], "big") == CHUNK
    assert raw[13:21].hex() == key.key_id == hashlib.sha256(key.secret).digest()[:8].hex()
    assert raw[22 : 22 + len(recording_id)] == recording_id.encode()
    assert key.secret not in raw
    assert key.secret.hex() not in repr(key)


def test_the_writer_buffers_at_most_one_chunk(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    with SealedWriter(path, keyring=keyring, recording_id=recording_id, chunk_size=CHUNK) as w:
        partial = next(tmp_path.iterdir())
        written = 0
        for size in (1, CHUNK - 1, 1, 10 * CHUNK, 3, CHUNK):
            w.write(secrets.token_bytes(size))
            written += size
            w.flush()
            sealed_chunks = (written - 1) // CHUNK
            assert written - sealed_chunks * CHUNK <= CHUNK
            expected = header_size(recording_id) + sealed_chunks * SEALED_CHUNK
            assert partial.stat().st_size == expected


# --- tampering --------------------------------------------------------------------------------


def test_every_header_byte_is_protected(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, sealed_five: Path
) -> None:
    original = sealed_five.read_bytes()
    for offset in range(header_size(recording_id)):
        altered = bytearray(original)
        altered[offset] ^= 0x01
        rewrite(sealed_five, bytes(altered))
        expected: type[RecordingError]
        if offset == 8:
            expected = RecordingVersionUnsupported
        elif 13 <= offset < 21:
            expected = RecordingKeyUnknown
        else:
            expected = RecordingCorrupt
        with pytest.raises(expected):
            read_all(sealed_five, keyring)


def test_altered_magic_says_not_a_sealed_recording(
    keyring: RecordingKeyring, sealed_five: Path
) -> None:
    rewrite(sealed_five, b"\x1a\x45\xdf\xa3" + sealed_five.read_bytes()[4:])
    with pytest.raises(RecordingCorrupt, match="not a sealed recording") as info:
        read_all(sealed_five, keyring)
    assert info.value.offset == 0


def test_a_future_version_is_refused_as_such(keyring: RecordingKeyring, sealed_five: Path) -> None:
    altered = bytearray(sealed_five.read_bytes())
    altered[8] = 2
    rewrite(sealed_five, bytes(altered))
    with pytest.raises(RecordingVersionUnsupported) as info:
        read_all(sealed_five, keyring)
    assert info.value.version == 2


@pytest.mark.parametrize("where", ["wrap nonce", "wrapped key", "wrap tag"])
def test_altered_wrapped_key_fails_header_authentication(
    keyring: RecordingKeyring, recording_id: str, sealed_five: Path, where: str
) -> None:
    start = 22 + len(recording_id)
    offset = {"wrap nonce": start + 3, "wrapped key": start + 12 + 5, "wrap tag": start + 59}
    altered = bytearray(sealed_five.read_bytes())
    altered[offset[where]] ^= 0x80
    rewrite(sealed_five, bytes(altered))
    with pytest.raises(RecordingCorrupt, match="header fails authentication") as info:
        open_sealed(sealed_five, keyring=keyring)
    assert info.value.offset == 0


@pytest.mark.parametrize("index", [0, 2, 5])
@pytest.mark.parametrize("within", [0, CHUNK // 2, "tag"])
def test_altered_chunk_byte_or_tag_is_detected_at_that_chunk(
    keyring: RecordingKeyring,
    recording_id: str,
    sealed_five: Path,
    index: int,
    within: int | str,
) -> None:
    original = sealed_five.read_bytes()
    start = chunk_offset(recording_id, index)
    end = min(start + SEALED_CHUNK, len(original))
    offset = end - 1 if within == "tag" else min(start + int(within), end - 1 - TAG_SIZE)
    altered = bytearray(original)
    altered[offset] ^= 0x04
    rewrite(sealed_five, bytes(altered))
    with open_sealed(sealed_five, keyring=keyring) as reader:
        chunks = iter(reader)
        for _ in range(index):
            next(chunks)
        with pytest.raises(RecordingCorrupt, match=f"chunk {index} fails") as info:
            next(chunks)
    assert info.value.offset == start
    assert type(info.value) is RecordingCorrupt


def cut_chunks(path: Path, recording_id: str) -> tuple[bytes, list[bytes]]:
    raw = path.read_bytes()
    head = header_size(recording_id)
    body = raw[head:]
    return raw[:head], [body[i : i + SEALED_CHUNK] for i in range(0, len(body), SEALED_CHUNK)]


def test_swapped_chunks_are_detected(
    keyring: RecordingKeyring, recording_id: str, sealed_five: Path
) -> None:
    head, chunks = cut_chunks(sealed_five, recording_id)
    chunks[1], chunks[3] = chunks[3], chunks[1]
    rewrite(sealed_five, head + b"".join(chunks))
    with pytest.raises(RecordingCorrupt) as info:
        read_all(sealed_five, keyring)
    assert info.value.offset == chunk_offset(recording_id, 1)


def test_a_duplicated_chunk_is_detected(
    keyring: RecordingKeyring, recording_id: str, sealed_five: Path
) -> None:
    head, chunks = cut_chunks(sealed_five, recording_id)
    chunks.insert(3, chunks[2])
    rewrite(sealed_five, head + b"".join(chunks))
    with pytest.raises(RecordingCorrupt) as info:
        read_all(sealed_five, keyring)
    assert info.value.offset == chunk_offset(recording_id, 3)


def test_a_dropped_middle_chunk_is_detected(
    keyring: RecordingKeyring, recording_id: str, sealed_five: Path
) -> None:
    head, chunks = cut_chunks(sealed_five, recording_id)
    del chunks[2]
    rewrite(sealed_five, head + b"".join(chunks))
    with pytest.raises(RecordingCorrupt) as info:
        read_all(sealed_five, keyring)
    assert info.value.offset == chunk_offset(recording_id, 2)


@pytest.mark.parametrize("kept", [0, 1, 3, 5])
def test_a_file_cut_at_a_chunk_boundary_is_truncated(
    keyring: RecordingKeyring, recording_id: str, sealed_five: Path, kept: int
) -> None:
    head, chunks = cut_chunks(sealed_five, recording_id)
    rewrite(sealed_five, head + b"".join(chunks[:kept]))
    with pytest.raises(RecordingTruncated) as info:
        read_all(sealed_five, keyring)
    assert info.value.offset == chunk_offset(recording_id, kept)


def test_a_file_cut_mid_chunk_is_corrupt(
    keyring: RecordingKeyring, recording_id: str, sealed_five: Path
) -> None:
    raw = sealed_five.read_bytes()
    rewrite(sealed_five, raw[: chunk_offset(recording_id, 2) + 30])
    with pytest.raises(RecordingCorrupt) as info:
        read_all(sealed_five, keyring)
    assert info.value.offset == chunk_offset(recording_id, 2)


def test_every_strict_prefix_of_a_recording_fails(
    keyring: RecordingKeyring, sealed_five: Path
) -> None:
    raw = sealed_five.read_bytes()
    for cut in range(len(raw)):
        rewrite(sealed_five, raw[:cut])
        with pytest.raises(RecordingCorrupt):
            read_all(sealed_five, keyring)


@pytest.mark.parametrize("plaintext_size", [5 * CHUNK + 10, 5 * CHUNK, 0])
@pytest.mark.parametrize("extra", ["one byte", "a tag", "a chunk", "the final chunk again"])
def test_bytes_after_the_final_chunk_are_detected(
    tmp_path: Path,
    keyring: RecordingKeyring,
    recording_id: str,
    plaintext_size: int,
    extra: str,
) -> None:
    path = tmp_path / "r.sealed"
    seal(path, secrets.token_bytes(plaintext_size), keyring, recording_id)
    raw = path.read_bytes()
    last_chunk = raw[chunk_offset(recording_id, max(0, -(-plaintext_size // CHUNK) - 1)) :]
    garbage = {
        "one byte": b"\x00",
        "a tag": secrets.token_bytes(TAG_SIZE),
        "a chunk": secrets.token_bytes(SEALED_CHUNK),
        "the final chunk again": last_chunk,
    }[extra]
    rewrite(path, raw + garbage)
    with pytest.raises(RecordingCorrupt):
        read_all(path, keyring)


def test_garbage_after_a_full_final_chunk_is_named(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    seal(path, secrets.token_bytes(3 * CHUNK), keyring, recording_id)
    raw = path.read_bytes()
    rewrite(path, raw + b"\x00" * 5)
    with pytest.raises(RecordingCorrupt, match="data after the final chunk") as info:
        read_all(path, keyring)
    assert info.value.offset == len(raw)


def test_not_a_sealed_file_at_all(tmp_path: Path, keyring: RecordingKeyring) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + secrets.token_bytes(200))
    with pytest.raises(RecordingCorrupt, match="not a sealed recording"):
        read_all(path, keyring)
    path.write_bytes(b"")
    with pytest.raises(RecordingTruncated):
        read_all(path, keyring)


def test_a_recording_is_read_once_and_reported_only_when_complete(
    keyring: RecordingKeyring, sealed_five: Path
) -> None:
    with open_sealed(sealed_five, keyring=keyring) as reader:
        chunks = iter(reader)
        next(chunks)
        with pytest.raises(ValueError, match="not been read to its end"):
            reader.report()
        with pytest.raises(ValueError, match="read once"):
            iter(reader)


# --- keys -------------------------------------------------------------------------------------


def test_an_unknown_master_key_is_named(keyring: RecordingKeyring, sealed_five: Path) -> None:
    other = RecordingKeyring([new_key()])
    with pytest.raises(RecordingKeyUnknown) as info:
        open_sealed(sealed_five, keyring=other)
    assert info.value.key_id == keyring.sealing_key.key_id


def test_rotation_new_key_seals_old_key_still_opens(tmp_path: Path, recording_id: str) -> None:
    old, new = new_key(), new_key()
    before = tmp_path / "before.sealed"
    seal(before, b"sealed under the old key", RecordingKeyring([old]), recording_id)

    rotated = RecordingKeyring([new, old])
    assert read_all(before, rotated) == b"sealed under the old key"
    after = tmp_path / "after.sealed"
    writer = seal(after, b"sealed under the new key", rotated, recording_id)
    assert writer.key_id == new.key_id
    with open_sealed(after, keyring=rotated) as reader:
        assert reader.key_id == new.key_id
    with pytest.raises(RecordingKeyUnknown):
        open_sealed(after, keyring=RecordingKeyring([old]))
    assert read_all(after, RecordingKeyring([new])) == b"sealed under the new key"


def test_same_key_same_data_different_ciphertext(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    data = secrets.token_bytes(3 * CHUNK)
    one, two = tmp_path / "1", tmp_path / "2"
    seal(one, data, keyring, recording_id)
    seal(two, data, keyring, recording_id)
    head = header_size(recording_id)
    assert one.read_bytes()[head:] != two.read_bytes()[head:]


# --- never plaintext on disk; what is left after a failure -------------------------------------

MARKER = b"<<QUIETROOM PLAINTEXT MARKER 0123456789>>"


def scan_for_plaintext(directory: Path) -> list[Path]:
    """Every file in ``directory`` (hidden ones too); none may hold any 16 marker bytes."""
    files = sorted(directory.iterdir())
    windows = {MARKER[i : i + 16] for i in range(len(MARKER) - 15)}
    for path in files:
        content = path.read_bytes()
        leaked = [w for w in windows if w in content]
        assert not leaked, f"plaintext in {path.name}"
    return files


@pytest.mark.parametrize("chunk_size", [CHUNK, 1000, DEFAULT_CHUNK_SIZE])
def test_no_plaintext_on_disk_at_any_moment(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, chunk_size: int
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    path = recordings / "r.sealed"
    data = MARKER * (3 * chunk_size // len(MARKER) + 5)
    writer = SealedWriter(path, keyring=keyring, recording_id=recording_id, chunk_size=chunk_size)
    assert len(scan_for_plaintext(recordings)) == 1
    position, step = 0, 7
    while position < len(data):
        writer.write(data[position : position + step])
        position += step
        step = step * 5 % 1531 + 1
        writer.flush()
        files = scan_for_plaintext(recordings)
        assert [f.name.startswith(".r.sealed.") for f in files] == [True]
    writer.close()
    assert scan_for_plaintext(recordings) == [path]

    exported = tmp_path / "plain.webm"
    export_plaintext(path, exported, keyring=keyring)
    assert MARKER in exported.read_bytes()  # the scan above would have seen it


def test_the_partial_file_is_private_and_so_is_the_recording(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    with SealedWriter(path, keyring=keyring, recording_id=recording_id) as writer:
        (partial,) = tmp_path.iterdir()
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600
        assert not path.exists()
        writer.write(b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_abort_removes_the_partial_file(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    writer = SealedWriter(path, keyring=keyring, recording_id=recording_id, chunk_size=CHUNK)
    writer.write(secrets.token_bytes(10 * CHUNK))
    writer.abort()
    writer.abort()
    writer.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")
    with pytest.raises(ValueError, match="not sealed"):
        _ = writer.sealed_hash


def test_an_exception_in_the_with_block_leaves_nothing(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"

    def record() -> None:
        with SealedWriter(
            path, keyring=keyring, recording_id=recording_id, chunk_size=CHUNK
        ) as writer:
            writer.write(secrets.token_bytes(5 * CHUNK))
            raise RuntimeError("media plane failed")

    with pytest.raises(RuntimeError, match="media plane failed"):
        record()
    assert list(tmp_path.iterdir()) == []


def test_a_forgotten_writer_is_not_published_and_leaves_nothing(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    writer = SealedWriter(path, keyring=keyring, recording_id=recording_id, chunk_size=CHUNK)
    writer.write(secrets.token_bytes(5 * CHUNK))
    del writer
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_close_twice_and_abort_after_close_keep_the_recording(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    writer = seal(path, b"kept", keyring, recording_id)
    writer.close()
    writer.abort()
    assert read_all(path, keyring) == b"kept"


def test_an_existing_recording_is_never_replaced(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str
) -> None:
    path = tmp_path / "r.sealed"
    path.write_bytes(b"already here")
    with pytest.raises(FileExistsError):
        SealedWriter(path, keyring=keyring, recording_id=recording_id)
    path.unlink()

    writer = SealedWriter(path, keyring=keyring, recording_id=recording_id)
    writer.write(b"late")
    path.write_bytes(b"appeared meanwhile")
    with pytest.raises(FileExistsError):
        writer.close()
    assert path.read_bytes() == b"appeared meanwhile"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("bad_id", ["", "not an id", "rec_" + "a" * 21, "../../etc/passwd"])
def test_recording_ids_are_opaque_ids(
    tmp_path: Path, keyring: RecordingKeyring, bad_id: str
) -> None:
    with pytest.raises(ValueError, match="opaque"):
        SealedWriter(tmp_path / "r", keyring=keyring, recording_id=bad_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("chunk_size", [0, 63, 16 * 1024 * 1024 + 1])
def test_chunk_size_is_bounded(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, chunk_size: int
) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        SealedWriter(
            tmp_path / "r", keyring=keyring, recording_id=recording_id, chunk_size=chunk_size
        )


# --- export -----------------------------------------------------------------------------------


def test_export_refuses_to_overwrite_and_leaves_nothing_on_failure(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, sealed_five: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "plain.bin"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        export_plaintext(sealed_five, out, keyring=keyring)
    assert out.read_bytes() == b"keep me"
    out.unlink()

    raw = bytearray(sealed_five.read_bytes())
    raw[chunk_offset(recording_id, 4) + 1] ^= 1
    rewrite(sealed_five, bytes(raw))
    with pytest.raises(RecordingCorrupt):
        export_plaintext(sealed_five, out, keyring=keyring)
    assert list(out_dir.iterdir()) == []
