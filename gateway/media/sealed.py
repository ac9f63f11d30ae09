"""Sealed recordings: media encrypted in chunks as it is written, never plaintext on disk.

Format, version 1 (all integers big-endian)
-------------------------------------------

A sealed file is a header followed by one or more chunks::

    offset  size  field
    0       8     magic            b"\\x89QRREC\\r\\n"
    8       1     version          1
    9       4     chunk_size       plaintext bytes per chunk (64 .. 16 MiB; default 64 KiB)
    13      8     master_key_id    first 8 bytes of SHA-256(master key)
    21      1     id_length        n, 1 .. 64
    22      n     recording_id     the recording's opaque id (ASCII)
    22+n    12    wrap_nonce       random
    34+n    48    wrapped_key      AES-256-GCM(master key, wrap_nonce, data key,
                                                 aad = header bytes 0 .. 34+n)
    82+n          end of header

Every recording gets its own random 256-bit data key. Wrapping it with AES-256-GCM under
the master key, with everything before it as associated data, authenticates the whole
header before any chunk is read: a changed chunk size, key id or recording id is caught
there. (A master key wraps one data key per recording, so random 96-bit nonces are far
inside GCM's limits.)

Chunks follow the header back to back. Chunk ``i`` is::

    AES-256-GCM(data key, nonce = 4 zero bytes || u64 i,
                plaintext, aad = SHA-256(header) || u64 i || u8 final)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes (``chunk_size + 16``
on disk); the last holds 0 to ``chunk_size`` and is sealed with ``final = 1``. An empty
recording is one empty final chunk. As in the STREAM construction (also used by age and
Tink), the counter nonce never repeats under one data key, the index in the nonce and
associated data catches reordered, duplicated and dropped chunks, and the final flag
catches a file cut after a complete chunk: that chunk was sealed as not final, so it
fails when read as the last one. Bytes after the final chunk fail too.

A reader yields each chunk's plaintext only after its tag checks, but a later chunk can
still fail: treat what was read as incomplete until the iteration ends without an error.

Master keys come from ``QUIETROOM_RECORDING_KEYS``, newest first: the first seals new
recordings, any of them opens old ones (rotation without re-encryption).

Writing goes to a hidden temporary name in the destination directory, created ``0600``;
the final name appears only after the final chunk is written and the file fsynced, and
the directory is fsynced after. A writer that is aborted, fails, or is collected without
being closed removes its temporary file. The writer holds at most one chunk of plaintext
in memory; :meth:`SealedWriter.flush` cannot push a partial chunk out (chunks are fixed
size), so a crash loses at most the last ``chunk_size`` bytes plus the temporary file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import struct
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.domain.ids import is_valid_id
from gateway.errors import (
    ConfigError,
    RecordingCorrupt,
    RecordingKeyUnknown,
    RecordingTruncated,
    RecordingVersionUnsupported,
)
from gateway.settings import RECORDING_KEY_BYTES, Settings, decode_recording_key

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "RecordingKey",
    "RecordingKeyring",
    "SealedReader",
    "SealedReport",
    "SealedWriter",
    "export_plaintext",
    "open_sealed",
    "recording_key_id",
    "sealed_hash",
    "verify_sealed",
]

MAGIC: Final = b"\x89QRREC\r\n"
FORMAT_VERSION: Final = 1
DEFAULT_CHUNK_SIZE: Final = 64 * 1024
MIN_CHUNK_SIZE: Final = 64
MAX_CHUNK_SIZE: Final = 16 * 1024 * 1024
TAG_SIZE: Final = 16
MAX_RECORDING_ID_LENGTH: Final = 64
#: Far below 2**64 nonces; 2**32 chunks of 64 KiB is 256 TiB, more than any session.
MAX_CHUNKS: Final = 2**32

_FIXED = struct.Struct(">8sBI8sB")  # magic, version, chunk_size, master_key_id, id_length
_WRAP_NONCE_SIZE = 12
_WRAPPED_KEY_SIZE = RECORDING_KEY_BYTES + TAG_SIZE
_CHUNK_NONCE = struct.Struct(">4xQ")
_CHUNK_AAD = struct.Struct(">QB")
_KEY_ID_SIZE = 8
_OFFSET_CHUNK_SIZE = 9
_OFFSET_ID_LENGTH = 21


def recording_key_id(secret: bytes) -> str:
    """The public name of a master key: the first 8 bytes of its SHA-256, in hex."""
    return hashlib.sha256(secret).digest()[:_KEY_ID_SIZE].hex()


@dataclass(frozen=True, slots=True)
class RecordingKey:
    """One master key. Its id is derived from it, so it cannot be mislabelled."""

    secret: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != RECORDING_KEY_BYTES:
            raise ValueError(f"a recording key is {RECORDING_KEY_BYTES} bytes")
        object.__setattr__(self, "key_id", recording_key_id(self.secret))

    @classmethod
    def from_text(cls, text: str) -> RecordingKey:
        """A key as written in settings (standard base64 of 32 bytes)."""
        return cls(decode_recording_key(text))


class RecordingKeyring:
    """Master keys, newest first: the first seals new recordings, any opens old ones."""

    def __init__(self, keys: Sequence[RecordingKey]) -> None:
        if not keys:
            raise ConfigError(
                "QUIETROOM_RECORDING_KEYS is required to seal or open recordings "
                "(make one with: quietroom keys new --kind recording)"
            )
        self._keys = tuple(keys)
        self._by_id = {key.key_id: key for key in reversed(self._keys)}

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordingKeyring:
        return cls.from_text(settings.recording_keys)

    @classmethod
    def from_text(cls, texts: Sequence[str]) -> RecordingKeyring:
        keys: list[RecordingKey] = []
        for index, text in enumerate(texts, start=1):
            try:
                keys.append(RecordingKey.from_text(text))
            except ValueError as exc:
                raise ConfigError(f"QUIETROOM_RECORDING_KEYS: key #{index} is {exc}") from None
        return cls(keys)

    @property
    def sealing_key(self) -> RecordingKey:
        return self._keys[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key.key_id for key in self._keys)

    def find(self, key_id: str) -> RecordingKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise RecordingKeyUnknown(key_id=key_id) from None


@dataclass(frozen=True, slots=True)
class SealedReport:
    """What a complete, verified read of a sealed recording found."""

    recording_id: str
    key_id: str
    chunk_size: int
    chunks: int
    plaintext_size: int
    #: SHA-256 (hex) of the sealed file's bytes, exactly as verified.
    sealed_hash: str


# --- writing ---------------------------------------------------------------------------------


class SealedWriter:
    """A binary, write-only, non-seekable file that seals what it is given.

    Use as a context manager: a clean exit closes (publishes) the recording, an exception
    aborts it. ``close()`` and ``abort()`` are safe to call again, in any order; after
    ``close()`` the recording exists under ``path``, after ``abort()`` nothing does.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keyring: RecordingKeyring,
        recording_id: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not is_valid_id(recording_id) or len(recording_id) > MAX_RECORDING_ID_LENGTH:
            raise ValueError("a recording id is an opaque gateway id")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}")
        self._path = Path(path)
        if os.path.lexists(self._path):
            raise FileExistsError(errno.EEXIST, "a recording already exists", str(self._path))
        self._recording_id = recording_id
        self._chunk_size = chunk_size
        master = keyring.sealing_key
        self._key_id = master.key_id
        data_key = AESGCM.generate_key(bit_length=RECORDING_KEY_BYTES * 8)
        header = _seal_header(master, recording_id, chunk_size, data_key)
        self._aead = AESGCM(data_key)
        self._header_hash = hashlib.sha256(header).digest()
        self._file_hash = hashlib.sha256()
        self._buffer = bytearray()
        self._index = 0
        self._size = 0
        self._closed = False
        self._sealed_hash: str | None = None
        self._partial = self._path.with_name(f".{self._path.name}.{secrets.token_hex(8)}.partial")
        fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb")
        # Runs on abort(), or if the writer is collected unclosed: never publish by accident.
        self._discard = weakref.finalize(self, _discard, self._file, self._partial)
        try:
            self._emit(header)
        except BaseException:
            self.abort()
            raise

    # -- what a file object offers --

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take ``data``; every full chunk is sealed and written out. Aborts on failure."""
        self._check_open()
        view = memoryview(data).cast("B")
        size = len(view)
        try:
            position = 0
            while position < size:
                if len(self._buffer) == self._chunk_size:
                    # More is coming, so the buffered chunk is not the last one.
                    self._seal_chunk(final=False)
                take = min(self._chunk_size - len(self._buffer), size - position)
                self._buffer += view[position : position + take]
                position += take
        except BaseException:
            self.abort()
            raise
        self._size += size
        return size

    def flush(self) -> None:
        """Push sealed chunks to the OS. Buffered plaintext (< one chunk) stays in memory."""
        self._check_open()
        self._file.flush()

    def close(self) -> None:
        """Seal the final chunk, fsync, publish under ``path``, fsync the directory."""
        if self._closed:
            return
        try:
            self._seal_chunk(final=True)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            _publish(self._partial, self._path)
        except BaseException:
            self.abort()
            raise
        self._discard.detach()
        self._closed = True
        self._sealed_hash = self._file_hash.hexdigest()
        _fsync_directory(self._path.parent)

    def abort(self) -> None:
        """Drop the recording: the temporary file is removed, nothing is published."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- about the recording --

    @property
    def path(self) -> Path:
        return self._path

    @property
    def recording_id(self) -> str:
        return self._recording_id

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def plaintext_size(self) -> int:
        return self._size

    @property
    def sealed_hash(self) -> str:
        """SHA-256 (hex) of the sealed file; known once it is closed."""
        if self._sealed_hash is None:
            raise ValueError("the recording is not sealed yet (or was aborted)")
        return self._sealed_hash

    # -- internals --

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on a closed sealed recording")

    def _seal_chunk(self, *, final: bool) -> None:
        if self._index >= MAX_CHUNKS:
            raise ValueError("the recording is too long for one data key")
        sealed = self._aead.encrypt(
            _CHUNK_NONCE.pack(self._index),
            self._buffer,
            self._header_hash + _CHUNK_AAD.pack(self._index, final),
        )
        self._buffer.clear()
        self._emit(sealed)
        self._index += 1

    def _emit(self, sealed: bytes) -> None:
        self._file_hash.update(sealed)
        self._file.write(sealed)


def _seal_header(
    master: RecordingKey, recording_id: str, chunk_size: int, data_key: bytes
) -> bytes:
    rid = recording_id.encode("ascii")
    wrap_nonce = secrets.token_bytes(_WRAP_NONCE_SIZE)
    prefix = (
        _FIXED.pack(MAGIC, FORMAT_VERSION, chunk_size, bytes.fromhex(master.key_id), len(rid))
        + rid
        + wrap_nonce
    )
    return prefix + AESGCM(master.secret).encrypt(wrap_nonce, data_key, prefix)


def _discard(file: IO[bytes], partial: Path) -> None:
    try:
        file.close()
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: Path, final: Path) -> None:
    """Give ``partial`` its final name, never replacing a file already there."""
    try:
        os.link(partial, final)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}:
            raise
        # No hard links on this filesystem: a rename, checked first (racy, but local).
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "a file already exists", str(final)) from None
        os.rename(partial, final)
        return
    os.unlink(partial)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    recording_id: str
    key_id: str
    chunk_size: int
    size: int
    data_key: bytes = field(repr=False)
    digest: bytes


class SealedReader:
    """Opens a sealed recording and yields its plaintext chunks, each checked, in order.

    Iterate once. Any tampering raises :class:`~gateway.errors.RecordingCorrupt` (or its
    :class:`~gateway.errors.RecordingTruncated`); an unknown master key raises
    :class:`~gateway.errors.RecordingKeyUnknown` already when opening.
    """

    def __init__(self, path: str | os.PathLike[str], *, keyring: RecordingKeyring) -> None:
        self._path = Path(path)
        self._file_hash = hashlib.sha256()
        self._file = self._path.open("rb")
        try:
            self._header = _open_header(self._read, keyring)
        except BaseException:
            self._file.close()
            raise
        self._aead = AESGCM(self._header.data_key)
        self._started = False
        self._report: SealedReport | None = None

    @property
    def recording_id(self) -> str:
        return self._header.recording_id

    @property
    def key_id(self) -> str:
        return self._header.key_id

    @property
    def chunk_size(self) -> int:
        return self._header.chunk_size

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def chunks(self) -> Iterator[bytes]:
        """Plaintext chunk by chunk; the last one is yielded after the end is checked."""
        if self._started:
            raise ValueError("a sealed recording is read once per reader")
        self._started = True
        return self._chunks()

    def report(self) -> SealedReport:
        """What the completed read verified; only after every chunk was read."""
        if self._report is None:
            raise ValueError("the recording has not been read to its end")
        return self._report

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self, size: int) -> bytes:
        data = self._file.read(size)
        self._file_hash.update(data)
        return data

    def _chunks(self) -> Iterator[bytes]:
        header = self._header
        sealed_size = header.chunk_size + TAG_SIZE
        offset = header.size
        index = 0
        plaintext_size = 0
        lookahead = b""
        while True:
            block = lookahead + self._read(sealed_size - len(lookahead))
            # One byte past a full block tells whether this chunk must be the final one.
            lookahead = self._read(1) if len(block) == sealed_size else b""
            final = not lookahead
            plaintext = self._open_chunk(block, index=index, offset=offset, final=final)
            plaintext_size += len(plaintext)
            if final:
                self._report = SealedReport(
                    recording_id=header.recording_id,
                    key_id=header.key_id,
                    chunk_size=header.chunk_size,
                    chunks=index + 1,
                    plaintext_size=plaintext_size,
                    sealed_hash=self._file_hash.hexdigest(),
                )
                yield plaintext
                return
            yield plaintext
            offset += sealed_size
            index += 1

    def _open_chunk(self, block: bytes, *, index: int, offset: int, final: bool) -> bytes:
        if index >= MAX_CHUNKS:
            raise RecordingCorrupt(offset=offset, reason="more chunks than the format allows")
        if final and len(block) < TAG_SIZE:
            raise RecordingTruncated(offset=offset + len(block))
        plaintext = self._decrypt(block, index, final=final)
        if plaintext is not None:
            return plaintext
        # Only on failure: tell a clean cut or trailing bytes from altered data.
        if self._decrypt(block, index, final=not final) is not None:
            if final:
                raise RecordingTruncated(offset=offset + len(block))
            raise RecordingCorrupt(offset=offset + len(block), reason="data after the final chunk")
        raise RecordingCorrupt(offset=offset, reason=f"chunk {index} fails authentication")

    def _decrypt(self, block: bytes, index: int, *, final: bool) -> bytes | None:
        try:
            return self._aead.decrypt(
                _CHUNK_NONCE.pack(index),
                block,
                self._header.digest + _CHUNK_AAD.pack(index, final),
            )
        except InvalidTag:
            return None


def _open_header(read: Callable[[int], bytes], keyring: RecordingKeyring) -> _Header:
    fixed = read(_FIXED.size)
    if fixed[: len(MAGIC)] != MAGIC[: len(fixed)]:
        raise RecordingCorrupt(offset=0, reason="not a sealed recording")
    if len(fixed) < _FIXED.size:
        raise RecordingTruncated(offset=len(fixed))
    _, version, chunk_size, key_id, id_length = _FIXED.unpack(fixed)
    if version != FORMAT_VERSION:
        raise RecordingVersionUnsupported(version=version)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise RecordingCorrupt(offset=_OFFSET_CHUNK_SIZE, reason="chunk size out of range")
    if not 1 <= id_length <= MAX_RECORDING_ID_LENGTH:
        raise RecordingCorrupt(offset=_OFFSET_ID_LENGTH, reason="recording id length out of range")
    rest = read(id_length + _WRAP_NONCE_SIZE + _WRAPPED_KEY_SIZE)
    if len(rest) < id_length + _WRAP_NONCE_SIZE + _WRAPPED_KEY_SIZE:
        raise RecordingTruncated(offset=_FIXED.size + len(rest))
    recording_id = rest[:id_length].decode("ascii", errors="replace")
    if not is_valid_id(recording_id):
        raise RecordingCorrupt(offset=_FIXED.size, reason="malformed recording id")
    master = keyring.find(key_id.hex())
    wrapped_at = id_length + _WRAP_NONCE_SIZE
    prefix = fixed + rest[:wrapped_at]
    try:
        data_key = AESGCM(master.secret).decrypt(
            rest[id_length:wrapped_at], rest[wrapped_at:], prefix
        )
    except InvalidTag:
        raise RecordingCorrupt(offset=0, reason="the header fails authentication") from None
    header = fixed + rest
    return _Header(
        recording_id=recording_id,
        key_id=master.key_id,
        chunk_size=chunk_size,
        size=len(header),
        data_key=data_key,
        digest=hashlib.sha256(header).digest(),
    )


def open_sealed(path: str | os.PathLike[str], *, keyring: RecordingKeyring) -> SealedReader:
    """Open a sealed recording for reading (see :class:`SealedReader`)."""
    return SealedReader(path, keyring=keyring)


def verify_sealed(path: str | os.PathLike[str], *, keyring: RecordingKeyring) -> SealedReport:
    """Check every chunk of a sealed recording, keeping no plaintext."""
    with open_sealed(path, keyring=keyring) as reader:
        for _ in reader:
            pass
        return reader.report()


def export_plaintext(
    sealed: str | os.PathLike[str], out: str | os.PathLike[str], *, keyring: RecordingKeyring
) -> SealedReport:
    """Decrypt ``sealed`` into ``out``: refuses to overwrite, appears only when complete.

    The plaintext goes to a hidden ``0600`` temporary file beside ``out`` that is removed
    if any chunk fails; ``out`` is linked into place only after the whole file verified.
    """
    target = Path(out)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "refusing to overwrite", str(target))
    with open_sealed(sealed, keyring=keyring) as reader:
        partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                for chunk in reader:
                    file.write(chunk)
                file.flush()
                os.fsync(file.fileno())
            _publish(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        report = reader.report()
    _fsync_directory(target.parent)
    return report


def sealed_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a sealed file's bytes: what a consent record carries."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
