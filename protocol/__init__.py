"""Leash wire protocol: pure, no I/O.

Shared by the broker and the clients. Frames are a 4-byte big-endian length
followed by a msgpack body; bodies are msgspec Structs in tagged unions
(requests tagged by ``op``, replies by ``t``). docs/protocol.md is the
normative specification of everything defined here.
"""

from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame

PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "ErrorCode", "FrameDecoder", "ProtocolError", "encode_frame"]
