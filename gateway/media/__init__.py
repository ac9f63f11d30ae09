"""The media plane: the packet-forwarding relay, sealed recordings and their muxer."""

from gateway.media.codecs import VideoCodec
from gateway.media.forwarder import ForwarderStats, RoomForwarder
from gateway.media.ice_policy import CandidatePolicy, MediaNetwork
from gateway.media.muxer import AudioTrack, RecordingMuxer, VideoTrack
from gateway.media.peer import GatewayPeer
from gateway.media.reasons import MediaCloseReason
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
    "CandidatePolicy",
    "ForwarderStats",
    "GatewayPeer",
    "MediaCloseReason",
    "MediaNetwork",
    "RecordingKey",
    "RecordingKeyring",
    "RecordingMuxer",
    "RoomForwarder",
    "SealedReader",
    "SealedReport",
    "SealedWriter",
    "VideoCodec",
    "VideoTrack",
    "export_plaintext",
    "open_sealed",
    "sealed_hash",
    "verify_sealed",
]
