"""The frame codec: 4-byte big-endian body length, then the body (docs/protocol.md §2)."""

import pytest

from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import (
    FRAME_CEILING_BYTES,
    FRAME_HEADER_BYTES,
    FRAME_MAX_BYTES,
    HANDSHAKE_FRAME_MAX_BYTES,
)

BODIES = [b"\x80", b"a" * 3, bytes(range(256)), b"\x00\x00\x00\x00", b"z" * 70_000]


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (body := decoder.next_frame()) is not None:
        frames.append(body)
    return frames


def header(length: int) -> bytes:
    return length.to_bytes(FRAME_HEADER_BYTES, "big")


def test_encode_frame_prefixes_the_body_length_big_endian() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"x" * 0x0102) == b"\x00\x00\x01\x02" + b"x" * 0x0102


@pytest.mark.parametrize("body", BODIES, ids=lambda body: f"{len(body)}-bytes")
def test_a_frame_round_trips_through_encode_and_decode(body: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(body))
    assert decoder.next_frame() == body
    assert decoder.next_frame() is None
    assert decoder.buffered_bytes == 0


def test_many_frames_in_one_feed_come_out_in_order() -> None:
    bodies = [f"body {index}".encode() * (index + 1) for index in range(200)]
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_frame(body) for body in bodies))
    assert drain(decoder) == bodies
    assert not decoder.in_frame


def test_a_stream_split_at_every_byte_boundary_gives_the_same_frames() -> None:
    bodies = [b"first", b"\x81\xa2op\xa4push", b"x" * 40, b"last"]
    stream = b"".join(encode_frame(body) for body in bodies)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        decoder.feed(stream[:cut])
        frames = drain(decoder)
        decoder.feed(stream[cut:])
        frames += drain(decoder)
        assert frames == bodies, f"split at byte {cut}"
        assert decoder.buffered_bytes == 0


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_frames() -> None:
    bodies = [b"one", b"two" * 30, b"three"]
    stream = b"".join(encode_frame(body) for body in bodies)
    decoder = FrameDecoder()
    frames = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        frames += drain(decoder)
    assert frames == bodies


def test_a_partial_frame_waits_for_more_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"hello")[:3])
    assert decoder.next_frame() is None
    assert decoder.in_frame
    decoder.feed(encode_frame(b"hello")[3:7])
    assert decoder.next_frame() is None
    decoder.feed(encode_frame(b"hello")[7:])
    assert decoder.next_frame() == b"hello"
    assert not decoder.in_frame


@pytest.mark.parametrize("limit", [1, 64, HANDSHAKE_FRAME_MAX_BYTES, FRAME_MAX_BYTES])
def test_a_frame_exactly_at_the_limit_is_accepted(limit: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=limit)
    decoder.feed(encode_frame(b"\xa5" * limit))
    assert decoder.next_frame() == b"\xa5" * limit


@pytest.mark.parametrize("limit", [1, 64, HANDSHAKE_FRAME_MAX_BYTES, FRAME_MAX_BYTES])
def test_a_length_one_over_the_limit_is_fatal_before_the_body_is_buffered(limit: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=limit)
    decoder.feed(header(limit + 1))  # the header alone: no body has arrived
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code is ErrorCode.TOO_LARGE
    assert decoder.buffered_bytes == FRAME_HEADER_BYTES


def test_the_default_limit_is_one_mebibyte() -> None:
    assert FrameDecoder().max_frame_bytes == FRAME_MAX_BYTES == 1024 * 1024


def test_a_length_of_zero_is_fatal() -> None:
    decoder = FrameDecoder()
    decoder.feed(header(0))
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_a_zero_length_after_good_frames_still_yields_the_good_frames_first() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"good") + header(0))
    assert decoder.next_frame() == b"good"
    with pytest.raises(ProtocolError):
        decoder.next_frame()


@pytest.mark.parametrize("limit", [FRAME_MAX_BYTES, FRAME_CEILING_BYTES])
def test_the_largest_length_is_refused_without_allocating(limit: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=limit)
    decoder.feed(header(2**32 - 1))
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code is ErrorCode.TOO_LARGE
    assert decoder.buffered_bytes == FRAME_HEADER_BYTES


def test_bytes_after_a_refused_header_are_never_returned_as_a_frame() -> None:
    decoder = FrameDecoder(max_frame_bytes=8)
    decoder.feed(header(9) + b"123456789" + encode_frame(b"ok"))
    for _ in range(3):  # asking again does not skip the bad length
        with pytest.raises(ProtocolError):
            decoder.next_frame()


def test_the_limit_can_be_raised_between_frames_after_the_handshake() -> None:
    hello, big = b"h" * 100, b"b" * (HANDSHAKE_FRAME_MAX_BYTES + 1)
    decoder = FrameDecoder(max_frame_bytes=HANDSHAKE_FRAME_MAX_BYTES)
    decoder.feed(encode_frame(hello) + encode_frame(big))  # pipelined in one read
    assert decoder.next_frame() == hello
    decoder.max_frame_bytes = FRAME_MAX_BYTES
    assert decoder.next_frame() == big


def test_the_handshake_limit_refuses_a_large_first_frame() -> None:
    decoder = FrameDecoder(max_frame_bytes=HANDSHAKE_FRAME_MAX_BYTES)
    decoder.feed(header(HANDSHAKE_FRAME_MAX_BYTES + 1))
    with pytest.raises(ProtocolError) as caught:
        decoder.next_frame()
    assert caught.value.code is ErrorCode.TOO_LARGE


def test_a_frame_split_across_reads_completes_after_the_frames_before_it() -> None:
    decoder = FrameDecoder()
    for index in range(1_000):
        decoder.feed(encode_frame(b"x" * 100) + encode_frame(b"y")[:2])
        assert drain(decoder) == [b"x" * 100]
        decoder.feed(encode_frame(b"y")[2:])
        assert drain(decoder) == [b"y"], index
    assert decoder.buffered_bytes == 0


def test_a_buffer_the_caller_reuses_after_feeding_does_not_change_the_frames() -> None:
    bodies = [b"first", b"second" * 10, b"third"]
    stream = b"".join(encode_frame(body) for body in bodies)
    reused = bytearray(len(stream))
    decoder = FrameDecoder()
    frames: list[bytes] = []
    position = 0
    for cut in (3, 20, len(stream)):  # the second frame spans reads
        piece = stream[position:cut]
        reused[: len(piece)] = piece
        decoder.feed(memoryview(reused)[: len(piece)])
        reused[:] = b"\xee" * len(reused)  # the caller writes its next read over it
        frames += drain(decoder)
        position = cut
    assert frames == bodies


def test_frames_left_unread_when_more_bytes_arrive_come_out_in_order() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"one") + encode_frame(b"two") + encode_frame(b"three")[:5])
    assert decoder.next_frame() == b"one"  # the reader stops here (a paused connection)
    decoder.feed(encode_frame(b"three")[5:] + encode_frame(b"four"))
    assert drain(decoder) == [b"two", b"three", b"four"]
    assert decoder.buffered_bytes == 0
