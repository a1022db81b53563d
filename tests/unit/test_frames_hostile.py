"""The frame decoder against hostile lengths: refused before anything is allocated."""

import tracemalloc

import pytest

from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import FRAME_MAX_BYTES, HANDSHAKE_FRAME_MAX_BYTES


def test_a_length_of_2_to_the_32_minus_1_allocates_nothing() -> None:
    decoder = FrameDecoder(HANDSHAKE_FRAME_MAX_BYTES)
    tracemalloc.start()
    try:
        decoder.feed(b"\xff\xff\xff\xff")
        with pytest.raises(ProtocolError) as refused:
            decoder.next_frame()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == ErrorCode.TOO_LARGE
    assert decoder.buffered_bytes == 4
    assert peak < 4096, f"{peak} bytes allocated"


@pytest.mark.parametrize("limit", [HANDSHAKE_FRAME_MAX_BYTES, FRAME_MAX_BYTES])
def test_a_large_chunk_behind_a_bad_length_is_not_kept(limit: int) -> None:
    decoder = FrameDecoder(limit)
    decoder.feed((limit + 1).to_bytes(4, "big") + b"j" * (2 * limit))
    assert decoder.buffered_bytes == 4
    with pytest.raises(ProtocolError, match=f"{limit + 1} bytes"):
        decoder.next_frame()


def test_a_large_chunk_behind_a_zero_length_is_not_kept() -> None:
    decoder = FrameDecoder(16)
    decoder.feed(b"\x00\x00\x00\x00" + b"j" * 100)
    assert decoder.buffered_bytes == 4
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert refused.value.code == ErrorCode.BAD_REQUEST


def test_a_large_chunk_of_good_frames_is_kept_whole() -> None:
    bodies = [bytes([n]) * 10 for n in range(20)]
    decoder = FrameDecoder(16)  # the chunk is far over the limit, each frame is not
    decoder.feed(b"".join(encode_frame(body) for body in bodies))
    got = []
    while (body := decoder.next_frame()) is not None:
        got.append(body)
    assert got == bodies


@pytest.mark.parametrize("limit", [HANDSHAKE_FRAME_MAX_BYTES, FRAME_MAX_BYTES])
def test_a_frame_exactly_at_the_limit_is_accepted_and_one_byte_more_refused(limit: int) -> None:
    decoder = FrameDecoder(limit)
    decoder.feed(encode_frame(b"x" * limit))
    assert decoder.next_frame() == b"x" * limit
    decoder.feed((limit + 1).to_bytes(4, "big"))  # the header alone is enough to refuse
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert refused.value.code == ErrorCode.TOO_LARGE


@pytest.mark.parametrize("split", [1, 2, 3])
def test_a_large_chunk_behind_a_bad_length_split_across_reads_is_not_kept(split: int) -> None:
    limit = HANDSHAKE_FRAME_MAX_BYTES
    header = (limit + 1).to_bytes(4, "big")
    decoder = FrameDecoder(limit)
    decoder.feed(header[:split])
    assert decoder.next_frame() is None
    decoder.feed(header[split:] + b"j" * (2 * limit))
    assert decoder.buffered_bytes == 4
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert refused.value.code == ErrorCode.TOO_LARGE
