"""The media plane: sealed recordings and the muxer that fills them (the relay comes later)."""

from gateway.media.muxer import AudioTrack, RecordingMuxer, VideoTrack
from gateway.media.sealed import (
    RecordingKey,
    RecordingKeyring,
    SealedReader,
    SealedReport,
    SealedWriter,
    export_plaintext,
    open_sealed,
    sealed_hash,
    verify_sealed,
)

__all__ = [
    "AudioTrack",
    "RecordingKey",
    "RecordingKeyring",
    "RecordingMuxer",
    "SealedReader",
    "SealedReport",
    "SealedWriter",
    "VideoTrack",
    "export_plaintext",
    "open_sealed",
    "sealed_hash",
    "verify_sealed",
]
