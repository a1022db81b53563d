"""Generate the wire examples of docs/protocol.md from the real encoder.

Every example frame in the specification is produced here with
``leash.protocol.frames.encode_frame(protocol.messages.encoder.encode(message))``,
so the bytes shown are the bytes a broker and a client exchange today.
tests/unit/test_docs_examples.py checks that the document still matches.

Usage (from the repository root):

    .venv/bin/python docs/gen_examples.py           # print the generated section
    .venv/bin/python docs/gen_examples.py --write   # rewrite it in docs/protocol.md
    .venv/bin/python docs/gen_examples.py --check   # exit 1 if the document is stale
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(ROOT))
if str(ROOT / "docs") not in sys.path:  # gen_common, beside this file
    sys.path.insert(0, str(ROOT / "docs"))

import datetime  # noqa: E402
import uuid  # noqa: E402
from decimal import Decimal  # noqa: E402

import gen_common  # noqa: E402  (docs/gen_common.py, beside this file)
import msgspec  # noqa: E402

from leash.protocol import argtypes, auth  # noqa: E402
from leash.protocol.errors import ErrorCode  # noqa: E402
from leash.protocol.frames import encode_frame  # noqa: E402
from leash.protocol.messages import (  # noqa: E402
    Ack,
    Auth,
    BatchCallbacks,
    BatchCreated,
    Challenge,
    CreateBatch,
    Delivery,
    Error,
    Fetch,
    Hello,
    Jobs,
    JobSpec,
    LeaseRef,
    Ok,
    Push,
    Pushed,
    PushResult,
    Welcome,
    encoder,
)

DOC_PATH = ROOT / "docs" / "protocol.md"
BEGIN_MARKER = "<!-- BEGIN GENERATED EXAMPLES: docs/gen_examples.py --write -->"
END_MARKER = "<!-- END GENERATED EXAMPLES -->"

HEX_BYTES_PER_LINE = 16
ANNOTATION_BYTES_PER_LINE = 8

# Fixed inputs, so the output is the same on every run.
CREATED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LEASED_MS = CREATED_MS + 2_500
LEASE_TTL_MS = 1_800_000
JOB_ID = "invoice-1001"
ARGS = msgspec.Raw(msgspec.msgpack.encode(["ada@example.com", 1001]))
# One of each type of section 3.5, as the Python client encodes them.
TYPED_ARGS = msgspec.Raw(
    argtypes.pack(
        [
            datetime.datetime(
                2026, 1, 1, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            datetime.datetime(2026, 1, 1, 9, 30),
            datetime.datetime(2026, 1, 1, 9, 30, 0, 250_000),
            datetime.date(2026, 1, 1),
            Decimal("12.50"),
            uuid.UUID("6f1c2d7e-0b9a-4c35-8e21-5d4f3a2b1c0d"),
            b"\x00\xff",
        ]
    )
)

# The authenticated handshake, with a key no one uses: a test vector for other clients.
EXAMPLE_KEY = auth.Key("k-example", bytes(range(32)))
WORKER_ID = "w-5f0c2a9e41d7"
CLIENT_NONCE = bytes([0x11]) * 32
SERVER_NONCE = bytes([0x22]) * 32
TRANSCRIPT = auth.transcript(1, EXAMPLE_KEY.id, WORKER_ID, CLIENT_NONCE, SERVER_NONCE)
SERVER_PROOF = auth.server_proof(EXAMPLE_KEY.secret, TRANSCRIPT)
CLIENT_PROOF = auth.client_proof(EXAMPLE_KEY.secret, TRANSCRIPT)


@dataclass(frozen=True)
class Example:
    name: str  # the heading; also how the tests find the example
    direction: str
    note: str
    message: msgspec.Struct
    annotate: bool = False


EXAMPLES: list[Example] = [
    Example(
        "hello",
        "client to server",
        "The first frame of every connection.",
        Hello(
            rid=1,
            version=1,
            worker_id="w-5f0c2a9e41d7",
            client="leash-py/0.1",
            hostname="build-7",
            pid=4242,
        ),
        annotate=True,
    ),
    Example(
        "welcome",
        "server to client",
        "The handshake succeeded; later frames may be up to 1 MiB.",
        Welcome(rid=1, version=1, server="leash/0.1.0", epoch=3, max_frame_bytes=1024 * 1024),
    ),
    Example(
        "hello with a key",
        "client to server",
        f"The first frame of an authenticated connection: key id `{EXAMPLE_KEY.id}` and "
        "the client's 32-byte nonce (here 32 bytes of `11`; a client MUST use fresh random "
        "bytes). The JSON notation shows `bin` values in base64.",
        Hello(
            rid=1,
            version=1,
            worker_id=WORKER_ID,
            client="leash-py/0.1",
            key_id=EXAMPLE_KEY.id,
            nonce=CLIENT_NONCE,
        ),
    ),
    Example(
        "challenge",
        "server to client",
        "The broker's nonce (here 32 bytes of `22`) and its proof. With the example key "
        "(secret: the 32 bytes `00 01 02 ... 1f`), the hello above and this nonce, the "
        f"transcript T (section 4.5) is the {len(TRANSCRIPT)} bytes `{TRANSCRIPT.hex()}`, "
        f"and the proof HMAC-SHA256(secret, `leash-server` || T) is `{SERVER_PROOF.hex()}`.",
        Challenge(rid=1, nonce=SERVER_NONCE, proof=SERVER_PROOF),
    ),
    Example(
        "auth",
        "client to server",
        "The client's proof for the same transcript: HMAC-SHA256(secret, `leash-client` || T) "
        f"= `{CLIENT_PROOF.hex()}`. The broker answers `welcome` (rid 2).",
        Auth(rid=2, proof=CLIENT_PROOF),
    ),
    Example(
        "push",
        "client to server",
        "A job with a client-chosen id; fields left at their defaults are not sent. "
        '`args` is the msgpack array `["ada@example.com", 1001]`.',
        Push(
            rid=2, job=JobSpec(type="send_invoice", queue="mail", args=ARGS, id=JOB_ID, priority=7)
        ),
        annotate=True,
    ),
    Example(
        "push with typed args",
        "client to server",
        "`args` holds one value of each type of section 3.5: a moment (09:30 at UTC+2, "
        "sent as 07:30 UTC), a wall-clock time without a zone, one with 250 ms (the "
        "8-byte layout), a date, a decimal, a UUID, and two bytes. The JSON notation "
        "shows them as the admin views do (bytes in base64).",
        Push(rid=9, job=JobSpec(type="invoice", id="invoice-1002", args=TYPED_ARGS)),
        annotate=True,
    ),
    Example(
        "pushed",
        "server to client",
        "The job was created and is ready.",
        Pushed(rid=2, id=JOB_ID, created=True, state="ready"),
    ),
    Example(
        "push with a uniqueness key",
        "client to server",
        "At most one `daily_report` for the 2nd of March waits or runs, and none is "
        "pushed again within an hour of its success (section 8.2).",
        Push(
            rid=10,
            job=JobSpec(
                type="daily_report",
                args=msgspec.Raw(msgspec.msgpack.encode(["2026-03-02"])),
                unique_key="report:2026-03-02",
                unique_for_ms=3_600_000,
            ),
        ),
    ),
    Example(
        "pushed, a duplicate",
        "server to client",
        "The key is held by job `_3.1f`, which is running: nothing was added.",
        Pushed(rid=10, id="_3.1f", created=False, state="leased", duplicate=True),
    ),
    Example(
        "fetch",
        "client to server",
        "Up to 10 jobs from `mail`, then `default`; wait up to 5 s if none is ready.",
        Fetch(rid=3, queues=["mail", "default"], count=10, wait_ms=5_000),
    ),
    Example(
        "jobs",
        "server to client",
        "One job leased with token 17 until `deadline_ms`.",
        Jobs(
            rid=3,
            jobs=[
                Delivery(
                    id=JOB_ID,
                    queue="mail",
                    type="send_invoice",
                    args=ARGS,
                    token=17,
                    deadline_ms=LEASED_MS + LEASE_TTL_MS,
                    attempt=1,
                    max_attempts=25,
                    lease_ttl_ms=LEASE_TTL_MS,
                    priority=7,
                    created_ms=CREATED_MS,
                )
            ],
        ),
        annotate=True,
    ),
    Example(
        "ack",
        "client to server",
        "The job is done.",
        Ack(rid=4, id=JOB_ID, token=17),
    ),
    Example(
        "ok",
        "server to client",
        "The job was acknowledged and is forgotten.",
        Ok(rid=4),
    ),
    Example(
        "error",
        "server to client",
        "The reply to an `ack` (rid 5) whose token is no longer the job's lease.",
        Error(
            rid=5,
            code=ErrorCode.STALE_LEASE,
            message="token 17 is not the current lease of 'invoice-1001'",
        ),
    ),
    Example(
        "error with a path",
        "server to client",
        "The reply to a `push` (rid 6) whose `job.priority` was 12.",
        Error(
            rid=6,
            code=ErrorCode.BAD_REQUEST,
            message="Expected `int` <= 9 - at `$.job.priority`",
            path="$.job.priority",
        ),
    ),
    Example(
        "create_batch",
        "client to server",
        "A batch with two jobs and a success callback, committed at once.",
        CreateBatch(
            rid=7,
            id="import-7",
            callbacks=BatchCallbacks(success=JobSpec(type="import_done", queue="cb")),
            jobs=[JobSpec(type="row", id="row-1"), JobSpec(type="row", id="row-2")],
            commit=True,
        ),
    ),
    Example(
        "batch_created",
        "server to client",
        "The batch and its two member jobs were created in one record.",
        BatchCreated(
            rid=7,
            id="import-7",
            created=True,
            state="committed",
            results=[PushResult("row-1", True, "ready"), PushResult("row-2", True, "ready")],
        ),
    ),
    Example(
        "push into a committed batch",
        "client to server",
        "A running member (`row-1`, leased with token 18) adds a job to its batch.",
        Push(
            rid=8,
            job=JobSpec(type="row", id="row-1b", batch="import-7"),
            lease=LeaseRef("row-1", 18),
        ),
    ),
]


def frame_of(message: msgspec.Struct) -> bytes:
    """The exact bytes of ``message`` on the wire: length prefix and body."""
    return encode_frame(encoder.encode(message))


# --- hex dump ----------------------------------------------------------------


def hex_dump(data: bytes) -> list[str]:
    """Offset, 16 bytes in hex, and the printable ASCII between bars."""
    lines = []
    for start in range(0, len(data), HEX_BYTES_PER_LINE):
        chunk = data[start : start + HEX_BYTES_PER_LINE]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk)
        text = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{start:04x}  {hex_part:<{HEX_BYTES_PER_LINE * 3 - 1}}  |{text}|")
    return lines


# --- annotated breakdown -----------------------------------------------------


@dataclass
class _Token:
    offset: int
    size: int
    depth: int
    meaning: str


_EXT_NAMES = {
    argtypes.TIMESTAMP_EXT: "timestamp",
    argtypes.NAIVE_DATETIME_EXT: "datetime without a zone",
    argtypes.DATE_EXT: "date",
    argtypes.DECIMAL_EXT: "decimal",
    argtypes.UUID_EXT: "UUID",
}


def _payload(code: int, payload: bytes) -> str:
    """What the payload of an ext of section 3.5 holds, field by field."""
    if code in (argtypes.TIMESTAMP_EXT, argtypes.NAIVE_DATETIME_EXT):
        if len(payload) == 4:
            return f"seconds {int.from_bytes(payload, 'big')}"
        if len(payload) == 8:
            packed = int.from_bytes(payload, "big")
            return f"nanoseconds {packed >> 34}, seconds {packed & (1 << 34) - 1}"
        nanos = int.from_bytes(payload[:4], "big")
        return f"nanoseconds {nanos}, seconds {int.from_bytes(payload[4:], 'big', signed=True)}"
    if code == argtypes.DATE_EXT:
        return f"days {int.from_bytes(payload, 'big', signed=True)}"
    if code == argtypes.DECIMAL_EXT:
        return f'text "{payload.decode()}"'
    return f"{len(payload)} bytes"


class _Annotator:
    """Walks msgpack bytes and names every token. Covers the types the examples use."""

    def __init__(self, body: bytes, base_offset: int) -> None:
        self.body = body
        self.base = base_offset
        self.pos = 0
        self.tokens: list[_Token] = []

    def value(self, depth: int, role: str = "") -> None:
        start, lead = self.pos, self.body[self.pos]
        prefix = f"{role}: " if role else ""
        if lead <= 0x7F:
            self._emit(start, 1, depth, f"{prefix}positive fixint {lead}")
        elif lead >= 0xE0:
            self._emit(start, 1, depth, f"{prefix}negative fixint {lead - 0x100}")
        elif 0x80 <= lead <= 0x8F:
            self._container(start, 1, lead & 0x0F, depth, f"{prefix}fixmap", is_map=True)
        elif 0x90 <= lead <= 0x9F:
            self._container(start, 1, lead & 0x0F, depth, f"{prefix}fixarray", is_map=False)
        elif lead in (0xDC, 0xDE):  # a struct of more than 15 fields has a 16-bit header
            count = int.from_bytes(self.body[start + 1 : start + 3], "big")
            kind = f"{prefix}{'map16' if lead == 0xDE else 'array16'}"
            self._container(start, 3, count, depth, kind, is_map=lead == 0xDE)
        elif 0xA0 <= lead <= 0xBF:
            self._string(start, 1, lead & 0x1F, depth, f"{prefix}fixstr")
        elif lead == 0xD9:
            self._string(start, 2, self.body[start + 1], depth, f"{prefix}str8")
        elif lead in (0xC0, 0xC2, 0xC3):
            name = {0xC0: "nil", 0xC2: "false", 0xC3: "true"}[lead]
            self._emit(start, 1, depth, f"{prefix}{name}")
        elif 0xCC <= lead <= 0xCF:
            width = 1 << (lead - 0xCC)
            number = int.from_bytes(self.body[start + 1 : start + 1 + width], "big")
            self._emit(start, 1 + width, depth, f"{prefix}uint{width * 8} {number}")
        elif lead == 0xC4:
            length = self.body[start + 1]
            data = self.body[start + 2 : start + 2 + length].hex(" ")
            self._emit(start, 2 + length, depth, f"{prefix}bin8 of {length} bytes: {data}")
        elif 0xD4 <= lead <= 0xD8 or lead == 0xC7:
            self._ext(start, depth, prefix)
        else:
            raise NotImplementedError(f"msgpack lead byte {lead:#04x} at {start}")

    def _ext(self, start: int, depth: int, prefix: str) -> None:
        """A fixext or an ext 8: its code, its payload, and the value it carries."""
        lead = self.body[start]
        if lead == 0xC7:
            header, length, kind = 3, self.body[start + 1], "ext8"
        else:
            header, length = 2, 1 << (lead - 0xD4)
            kind = f"fixext{length}"
        code = int.from_bytes(self.body[start + header - 1 : start + header], "big", signed=True)
        value = msgspec.msgpack.decode(
            self.body[start : start + header + length], ext_hook=argtypes.ext_value
        )
        shown = msgspec.json.encode(argtypes.readable(value)).decode()
        payload = self.body[start + header : start + header + length]
        meaning = f"{kind}, code {code} ({_EXT_NAMES[code]}, {_payload(code, payload)}): {shown}"
        self._emit(start, header + length, depth, prefix + meaning)

    def _emit(self, start: int, size: int, depth: int, meaning: str) -> None:
        self.tokens.append(_Token(self.base + start, size, depth, meaning))
        self.pos = start + size

    def _string(self, start: int, header: int, length: int, depth: int, kind: str) -> None:
        text = self.body[start + header : start + header + length].decode()
        unit = "byte" if length == 1 else "bytes"
        self._emit(start, header + length, depth, f'{kind} "{text}" ({length} {unit})')

    def _container(
        self, start: int, header: int, count: int, depth: int, kind: str, *, is_map: bool
    ) -> None:
        unit = ("pair" if is_map else "item") + ("" if count == 1 else "s")
        self._emit(start, header, depth, f"{kind} of {count} {unit}")
        for _ in range(count):
            if is_map:
                self.value(depth + 1, "key")
                self.value(depth + 1, "value")
            else:
                self.value(depth + 1)


def annotate(frame: bytes) -> list[str]:
    """One line per msgpack token: offset, its bytes, what it means."""
    header = frame[:4]
    length = int.from_bytes(header, "big")
    tokens = [_Token(0, 4, 0, f"length prefix: the body is {length} bytes")]
    walker = _Annotator(frame[4:], base_offset=4)
    walker.value(depth=0, role="body")
    assert walker.pos == length, "the annotation must cover the whole body"
    tokens += walker.tokens
    width = ANNOTATION_BYTES_PER_LINE * 3 - 1
    lines = []
    for token in tokens:
        raw = frame[token.offset : token.offset + token.size]
        for index in range(0, len(raw), ANNOTATION_BYTES_PER_LINE):
            chunk = " ".join(f"{b:02x}" for b in raw[index : index + ANNOTATION_BYTES_PER_LINE])
            meaning = "  " * token.depth + token.meaning if index == 0 else ""
            lines.append(f"{token.offset + index:04x}  {chunk:<{width}}  {meaning}".rstrip())
    return lines


# --- the document section ----------------------------------------------------


def notation(message: msgspec.Struct) -> str:
    """The body as JSON, for reading only: the wire carries msgpack."""
    plain = argtypes.readable(argtypes.unpack(encoder.encode(message)))
    return msgspec.json.encode(plain).decode()


def render() -> str:
    """The generated section of docs/protocol.md, markers included."""
    out = [BEGIN_MARKER, ""]
    for example in EXAMPLES:
        frame = frame_of(example.message)
        out += [
            f"#### Example: {example.name}",
            "",
            f"{example.direction.capitalize()}. {example.note} "
            f"Frame: {len(frame)} bytes (4 of length, {len(frame) - 4} of body).",
            "",
            "```json",
            notation(example.message),
            "```",
            "",
            "```hexdump",
            *hex_dump(frame),
            "```",
            "",
        ]
        if example.annotate:
            out += ["Byte by byte:", "", "```text", *annotate(frame), "```", ""]
    out.append(END_MARKER)
    return "\n".join(out)


def split_document(text: str) -> tuple[str, str, str]:
    """The document before, inside and after the generated section (markers inside)."""
    return gen_common.split_document(text, BEGIN_MARKER, END_MARKER)


def main(argv: list[str] | None = None) -> int:
    return gen_common.main(
        argv,
        description=__doc__.splitlines()[0],
        render=render,
        doc=DOC_PATH,
        markers=(BEGIN_MARKER, END_MARKER),
        script="docs/gen_examples.py",
    )


if __name__ == "__main__":
    sys.exit(main())
