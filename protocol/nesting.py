"""The shape of msgpack bytes, read without building the values: how deeply
arrays and maps nest, where a value ends, and the ``op`` and ``rid`` of a
body that did not decode (pure: bytes in, numbers out).

Why not msgspec alone: it has no depth option, and its decoder recurses, so
how deep it can go depends on how deep the caller's stack already is. The
walk here goes over the bytes in a loop with a list for a stack: any depth
costs the same little memory and no recursion, and it stops at the limit.
msgspec only cuts values into their items, where that is cheaper.

Theory of operation. A msgpack value is a header byte, maybe a length or a
count, then its payload. ``_SIZE`` gives, for each header byte, the whole
size of a value whose size it fixes (ints, floats, nil, booleans, fixstr,
fixext); ``_LENGTH`` the width of the length of a str, bin or ext (and the
type byte an ext carries); the bytes 0x80-0x9f and 0xdc-0xdf start a map
or an array, whose count of values the walk pushes on its stack. 0xc1 is
never used: a value that starts with it is malformed.

Checking a job's args for depth (``nested_deeper``) costs one C-speed pass
in the common case: a value can only nest N levels deep if at least N of its
bytes are container headers (a count ``bytes.translate`` makes), and most
args have fewer such bytes than the limit allows. A value with more is cut
into its items by msgspec when they are large enough to be worth it (a list
of records), and each item's headers are counted in C against one level
less: only items with too many go on, up to ``SPLIT_LEVELS`` down; what is
left is walked. Every byte is looked at a bounded number of times, and the
walk, in Python (about 0.1 µs a value), goes over what no count settled,
once: about 130 ms for a MiB of nothing but empty arrays, the worst case
(``bench/args_depth.py``).
"""

import itertools

import msgspec

from leash.protocol import limits as L

# Container headers: fixmap 0x80-0x8f, fixarray 0x90-0x9f, array 16/32, map 16/32.
_CONTAINER_BYTES = bytes(range(0x80, 0xA0)) + bytes((0xDC, 0xDD, 0xDE, 0xDF))
_UNLIMITED = 1 << 62
SPLIT_LEVELS = 2  # levels cut into items by msgspec before the rest is walked
SPLIT_ITEM_MIN_BYTES = 4  # on average: items smaller than this are walked (cheaper)
_items = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
_MARKS = bytes(1 if byte in _CONTAINER_BYTES else 0 for byte in range(256))


def _sizes() -> list[int]:
    size = [0] * 256
    for byte in (*range(0x00, 0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3):
        size[byte] = 1  # fixints, nil, false, true
    for byte in range(0xA0, 0xC0):
        size[byte] = 1 + (byte & 0x1F)  # fixstr
    for byte, whole in {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}.items():
        size[byte] = whole  # float 32/64, uint 8..64
    for byte, whole in {0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}.items():
        size[byte] = whole  # int 8..64
    for byte, whole in {0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}.items():
        size[byte] = whole  # fixext 1..16: type byte and data
    return size


_SIZE = _sizes()
# str 8/16/32, bin 8/16/32: the width of the length; ext 8/16/32 also a type byte.
_LENGTH = {0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0), 0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0)}
_LENGTH |= {0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}


class Malformed(ValueError):
    """The bytes are not msgpack (or end in the middle of a value)."""


def nested_deeper(data: bytes | memoryview, limit: int = L.ARGS_DEPTH_MAX) -> bool:
    """Whether arrays and maps in the msgpack value ``data`` nest more than
    ``limit`` levels deep (``[]`` is one level, ``[[1]]`` two; map keys
    count as the values they are). ``data`` must be one whole value, as
    ``msgspec.Raw`` holds it."""
    value = bytes(data)
    if len(value) - len(value.translate(None, _CONTAINER_BYTES)) <= limit:
        return False  # the common case, settled at once
    try:
        return _any_deeper([(value, limit, SPLIT_LEVELS)])
    except RecursionError:  # msgspec, cutting items apart, met a value nested past
        return True  # the interpreter's stack: far past any limit


def _any_deeper(pending: list[tuple[bytes, int, int]]) -> bool:
    """Whether any of the values pending (each with the levels it may use
    and how many more times it may be cut apart), known to hold more
    container headers than it has levels, nests deeper than that."""
    while pending:
        value, room, splits = pending.pop()
        cut = _split(value) if splits else None
        if cut is None:
            if _walk(value, 0, room)[1]:
                return True
            continue
        if not room:
            return True  # a container where no level is left
        items, bounds = cut  # each item's headers are counted in C
        marks = items.translate(_MARKS)  # 1 where a container header may be
        ends = itertools.islice(bounds, 1, None)
        if max(map(marks.count, itertools.repeat(b"\x01"), bounds, ends), default=0) < room:
            continue  # the usual case: no item has headers enough to go deeper
        for start, end in itertools.pairwise(bounds):
            if marks.count(b"\x01", start, end) >= room:
                pending.append((items[start:end], room - 1, splits - 1))
    return False


def _split(value: bytes) -> tuple[bytes, list[int]] | None:
    """The items of an array, or the keys and values of a map, cut apart by
    msgspec: the bytes that hold them one after the other, and where each
    begins and the last ends. None for a scalar, or for items too small to
    be worth it (walking them is cheaper)."""
    header = _container(value, 0)
    if header is None or len(value) < SPLIT_ITEM_MIN_BYTES * header[0]:
        return None
    count, start, is_map = header
    if is_map:  # as the array of its keys and values
        value, start = b"\xdd" + count.to_bytes(4, "big") + value[start:], 5
    return value, list(itertools.accumulate(map(len, _items(value)), initial=start))


def _container(data: bytes, position: int) -> tuple[int, int, bool] | None:
    """The container that starts at ``position``: how many values it holds
    (two an entry, for a map), its header's length, whether it is a map;
    None if none starts there. (The walk's loop has its own copy: speed.)"""
    byte = data[position]
    if 0x80 <= byte <= 0x9F:
        return (byte & 0x0F) * (2 if byte < 0x90 else 1), 1, byte < 0x90
    if 0xDC <= byte <= 0xDF:
        width = 2 if byte in (0xDC, 0xDE) else 4
        count = int.from_bytes(data[position + 1 : position + 1 + width], "big")
        return count * (2 if byte >= 0xDE else 1), 1 + width, byte >= 0xDE
    return None


def value_end(data: bytes, offset: int) -> int:
    """The offset just past the msgpack value that starts at ``offset``."""
    return _walk(data, offset, _UNLIMITED)[0]


def _walk(data: bytes, offset: int, limit: int) -> tuple[int, bool]:
    """(the end of the value at ``offset``, whether it nests deeper than
    ``limit``); the walk stops at the first container past the limit."""
    size, lengths, end = _SIZE, _LENGTH, len(data)
    stack: list[int] = []  # values left to read in each enclosing container
    left = 1  # values left to read at this level
    position = offset
    while True:
        if not left:
            if not stack:
                if position > end:
                    raise Malformed("the value runs past the end of the data")
                return position, False
            left = stack.pop()
            continue
        if position >= end:
            raise Malformed("the value runs past the end of the data")
        left -= 1
        byte = data[position]
        whole = size[byte]
        if whole:
            position += whole
            continue
        if byte <= 0x9F:  # fixmap (two values an entry), fixarray
            count = (byte & 0x0F) * (2 if byte < 0x90 else 1)
            position += 1
        elif byte >= 0xDC:  # array 16/32, map 16/32
            width = 2 if byte in (0xDC, 0xDE) else 4
            count = int.from_bytes(data[position + 1 : position + 1 + width], "big")
            count *= 2 if byte >= 0xDE else 1
            position += 1 + width
        else:
            width, extra = lengths.get(byte, (0, 0))
            if not width:
                raise Malformed(f"byte 0x{byte:02x} at {position} starts no msgpack value")
            length = int.from_bytes(data[position + 1 : position + 1 + width], "big")
            position += 1 + width + extra + length
            continue
        if len(stack) >= limit:
            return position, True  # a container one level past the limit
        if count:
            stack.append(left)
            left = count


def envelope(body: bytes) -> tuple[object, object]:
    """The ``op`` and ``rid`` of a request body that did not decode, read
    from its top-level map without decoding anything else (so that an error
    can name the request however deep or bad the rest is): each is None
    when it is absent or cannot be read. The last of repeated keys wins,
    as when a body decodes."""
    op: object = None
    rid: object = None
    try:
        header = _container(body, 0)
        if header is None or not header[2]:
            return None, None  # not a map
        count, position, _ = header
        for _ in range(count // 2):
            key, position = _short_str(body, position)
            if key == "op":
                op, position = _scalar(body, position)
            elif key == "rid":
                rid, position = _scalar(body, position)
            else:
                position = value_end(body, position)
    except (Malformed, IndexError):
        pass  # what was read before the bad part stands
    return op, rid


def _short_str(data: bytes, position: int) -> tuple[object, int]:
    """A key: its text if it is a string (None if not), and where it ends."""
    if _str_header(data[position]):
        return _scalar(data, position)
    return None, value_end(data, position)


def _str_header(byte: int) -> int:
    """The bytes before a string's text, if ``byte`` starts a string; else 0."""
    if 0xA0 <= byte <= 0xBF:
        return 1
    return {0xD9: 2, 0xDA: 3, 0xDB: 5}.get(byte, 0)


def _scalar(data: bytes, position: int) -> tuple[object, int]:
    """A string or an integer at ``position`` (anything else: None), and
    where the value ends."""
    end = value_end(data, position)
    byte = data[position]
    if byte <= 0x7F:
        return byte, end
    if byte >= 0xE0:
        return byte - 0x100, end
    if 0xCC <= byte <= 0xD3:
        return int.from_bytes(data[position + 1 : end], "big", signed=byte >= 0xD0), end
    header = _str_header(byte)
    if header:
        try:
            return data[position + header : end].decode(), end
        except UnicodeDecodeError:
            return None, end
    return None, end
