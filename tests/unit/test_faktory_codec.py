"""The Faktory protocol codec (protocol/faktory.py) and its work units
(protocol/faktory_units.py): lines in, commands out, replies to bytes."""

import hashlib
from typing import Any

import msgspec
import pytest

from leash.protocol import faktory as F
from leash.protocol import faktory_units as U
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode, ProtocolError

ARGS_MAX = 1024


def commands(*chunks: bytes, limit: int = 256) -> list[F.Command]:
    decoder = F.CommandDecoder(limit, ARGS_MAX)
    found = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (command := decoder.next_frame()) is not None:
            found.append(command)
    return found


def one(line: bytes) -> F.Command:
    (command,) = commands(line + b"\r\n")
    return command


def refusal(line: bytes) -> F.Refused:
    command = one(line)
    assert isinstance(command, F.Refused), command
    return command


def unit(**fields: Any) -> U.Unit:
    return U.parse_unit(msgspec.json.encode({"jid": "job-00001", "jobtype": "t", **fields}), 200)


# --- lines ----------------------------------------------------------------------


def test_lines_end_in_crlf_or_lf_and_may_arrive_in_any_pieces() -> None:
    stream = b'INFO\r\nEND\nFETCH a b\r\nACK {"jid":"j"}\r\n'
    whole = commands(stream)
    assert whole == [F.Info(), F.End(), F.Fetch(["a", "b"]), F.Ack("j")]
    assert commands(*(stream[i : i + 1] for i in range(len(stream)))) == whole
    assert commands(stream[:7], stream[7:20], stream[20:]) == whole


def test_a_line_over_the_limit_is_fatal_and_never_buffered_whole() -> None:
    decoder = F.CommandDecoder(16, ARGS_MAX)
    decoder.feed(b"INFO\r\n" + b"P" * 10)
    assert decoder.next_frame() == F.Info()
    assert decoder.next_frame() is None and decoder.in_frame
    for _ in range(100):
        decoder.feed(b"x" * 1000)
    assert decoder.buffered_bytes <= 16 + 3
    with pytest.raises(ProtocolError) as raised:
        decoder.next_frame()
    assert raised.value.code == ErrorCode.TOO_LARGE


def test_a_whole_line_over_the_limit_in_one_read_is_fatal_too() -> None:
    decoder = F.CommandDecoder(16, ARGS_MAX)
    decoder.feed(b"FETCH " + b"q" * 40 + b"\r\nINFO\r\n")
    with pytest.raises(ProtocolError, match="over 16 bytes"):
        decoder.next_frame()


def test_a_line_of_exactly_the_limit_is_taken() -> None:
    assert commands(b"FETCH " + b"q" * 10 + b"\r\n", limit=16) == [F.Fetch(["q" * 10])]


# --- verbs ----------------------------------------------------------------------


def test_every_verb_parses_to_its_command() -> None:
    assert one(b"FETCH") == F.Fetch(["default"])
    assert one(b"FLUSH") == F.Flush()
    assert one(b'BEAT {"wid":"w1","current_state":"quiet","rss_kb":100}') == F.Beat("w1", "quiet")
    assert one(b'BEAT {"wid":"w1"}') == F.Beat("w1", "")
    hello = one(b'HELLO {"v":2,"wid":"w1","hostname":"h","pid":7,"labels":["x"],"pwdhash":"ab"}')
    assert hello == F.Hello(2, "h", "w1", 7, ["x"], "ab")
    assert one(b'HELLO {"hostname":"h","labels":null,"wid":""}') == F.Hello(
        None, "h", "", 0, [], None
    )
    fail = one(b'FAIL {"jid":"j","errtype":" E ","message":"m","backtrace":["a","b"]}')
    assert fail == F.Fail("j", M.ErrorInfo("E", "m", "a\nb"))
    assert one(b'MUTATE {"cmd":"kill","target":"dead","filter":{"jids":["a"],"regexp":"*x*"}}') == (
        F.Mutate("kill", "dead", ["a"], "*x*", None)
    )
    assert one(b'MUTATE {"cmd":"clear","target":"retries"}') == F.Mutate(
        "clear", "retries", None, None, None
    )
    push = one(b'PUSH {"jid":"job-00001","jobtype":"t","args":[1]}')
    assert isinstance(push, F.Push) and push.unit.jid == "job-00001"


def test_a_fail_backtrace_is_kept_to_fifty_lines() -> None:
    lines = [f"line {n}" for n in range(80)]
    line = b"FAIL " + msgspec.json.encode({"jid": "j", "backtrace": lines})
    (fail,) = commands(line + b"\r\n", limit=4096)
    assert isinstance(fail, F.Fail) and fail.error.backtrace.split("\n") == lines[:50]


@pytest.mark.parametrize(
    ("line", "code", "says"),
    [
        (b"NOPE", ErrorCode.UNKNOWN_OP, "unknown command NOPE"),
        (b"fetch", ErrorCode.UNKNOWN_OP, "unknown command fetch"),
        (b"\xff\xfe", ErrorCode.UNKNOWN_OP, "not ASCII"),
        (b"", ErrorCode.UNKNOWN_OP, "unknown command"),
        (b"BATCH NEW {}", ErrorCode.UNKNOWN_OP, "Faktory Enterprise"),
        (b"TRACK GET x", ErrorCode.UNKNOWN_OP, "not served"),
        (b"QUEUE PAUSE a", ErrorCode.UNKNOWN_OP, "leash pause"),
        (b"INFO now", ErrorCode.BAD_REQUEST, "takes no argument"),
        (b"PUSH", ErrorCode.BAD_REQUEST, "needs a work unit"),
        (b"PUSH {", ErrorCode.BAD_REQUEST, "JSON object"),
        (b"FETCH a  b", ErrorCode.BAD_REQUEST, "one space"),
        (b"FETCH a/b", ErrorCode.BAD_REQUEST, "not a queue name"),
        (b"FETCH " + b" ".join(b"q%d" % n for n in range(65)), ErrorCode.BAD_REQUEST, "64"),
        (b'ACK {"id":"j"}', ErrorCode.BAD_REQUEST, "jid"),
        (b'ACK ["j"]', ErrorCode.BAD_REQUEST, "ACK"),
        (b'BEAT {"wid":7}', ErrorCode.BAD_REQUEST, "wid"),
        (b'HELLO {"v":3}', ErrorCode.BAD_REQUEST, "version 3"),
        (b'HELLO {"pid":-1}', ErrorCode.BAD_REQUEST, "pid"),
        (b'MUTATE {"cmd":"explode","target":"dead"}', ErrorCode.BAD_REQUEST, "cmd"),
        (b'MUTATE {"cmd":"kill","target":"busy"}', ErrorCode.BAD_REQUEST, "target"),
        (b'MUTATE {"cmd":"kill","target":"dead","filter":{"x":1}}', ErrorCode.BAD_REQUEST, "x"),
        (b"PUSHB {}", ErrorCode.BAD_REQUEST, "array"),
        (b"PUSH " + b"[" * 5000 + b"]" * 5000, ErrorCode.BAD_REQUEST, "JSON object"),
    ],
)
def test_a_bad_line_is_refused_with_what_is_wrong(line: bytes, code: ErrorCode, says: str) -> None:
    decoder = F.CommandDecoder(1 << 20, ARGS_MAX)
    decoder.feed(line + b"\r\nINFO\r\n")
    refused = decoder.next_frame()
    assert isinstance(refused, F.Refused) and refused.code == code
    assert says in refused.message
    assert decoder.next_frame() == F.Info(), "the next line is read as usual"


# --- work units -----------------------------------------------------------------


def test_a_unit_maps_onto_a_job_spec() -> None:
    parsed = unit(queue="q", priority=9, reserve_for=90, retry=2, args=[1, "x"])
    assert parsed.spec == M.JobSpec(
        type="t",
        queue="q",
        args=parsed.spec.args,
        id="job-00001",
        priority=9,
        max_attempts=3,
        lease_ttl_ms=90_000,
    )
    assert msgspec.msgpack.decode(parsed.spec.args) == [1, "x"]
    assert (parsed.extra, parsed.discard_dead) == (None, False)
    defaults = unit(args=[], queue="", priority=None, reserve_for=0, retry=None)
    assert (defaults.spec.queue, defaults.spec.priority) == ("default", 5)
    assert (defaults.spec.lease_ttl_ms, defaults.spec.max_attempts) == (1_800_000, 26)
    assert unit(args=[], retry=0).discard_dead


def test_kept_fields_are_stored_byte_for_byte_and_server_fields_dropped() -> None:
    data = (
        b'{"jid":"job-00001","jobtype":"t","args":[],"custom":{"a": 1.50},"at":"",'
        b'"backtrace":3,"created_at":"2024-01-01T00:00:00Z","unknown":[true],'
        b'"enqueued_at":"x","failure":{"retry_count":9},"retry":1}'
    )
    parsed = U.parse_unit(data, 200)
    assert parsed.extra == (
        b'{"custom":{"a": 1.50},"at":"","backtrace":3,'
        b'"created_at":"2024-01-01T00:00:00Z","unknown":[true]}'
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"jid": "short"}, "8 to 128"),
        ({"jid": "a/b/c/d/e"}, "letters, digits"),
        ({"jid": "_1.2345678"}, "broker's own ids"),
        ({"jid": 12345678}, "jid must be a string"),
        ({"jobtype": ""}, "jobtype must have 1"),
        ({"jobtype": None}, "jobtype must be a string"),
        ({"args": {"a": 1}}, "args must be a JSON array"),
        ({"args": [2**64]}, "beyond 64 bits"),
        ({"args": ["x" * 300]}, "over the limit of 200"),
        ({"custom": {"k": "x" * 300}}, "kept fields"),
        ({"queue": "a b"}, "queue must have"),
        ({"priority": 0}, "priority must be between 1 and 9"),
        ({"priority": 10}, "priority"),
        ({"priority": True}, "priority must be an integer"),
        ({"reserve_for": 86401}, "reserve_for must be between 0 and 86400"),
        ({"reserve_for": -5}, "reserve_for"),
        ({"retry": -2}, "retry must be between -1 and 999"),
        ({"retry": 1000}, "retry"),
        ({"at": "tomorrow"}, "RFC 3339"),
        ({"at": "2030-01-01T00:00:00"}, "with a zone"),
        ({"backtrace": -1}, "backtrace"),
        ({"created_at": 5}, "created_at must be a string"),
        ({"custom": [1]}, "custom must be an object"),
    ],
)
def test_a_unit_that_does_not_fit_names_the_field(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(U.UnitError, match=says.replace("(", r"\(")):
        unit(**{"args": [], **fields})


def test_a_unit_needs_jid_jobtype_and_args() -> None:
    for missing in ("jid", "jobtype", "args"):
        data = {"jid": "job-00001", "jobtype": "t", "args": []}
        del data[missing]
        with pytest.raises(U.UnitError, match=f"needs {missing}"):
            U.parse_unit(msgspec.json.encode(data), 200)


def test_times_and_args_render_for_a_consumer() -> None:
    assert U.iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert U.retry_of(26, False) == 25 and U.retry_of(1, False) == -1 and U.retry_of(1, True) == 0
    as_msgpack = msgspec.Raw(msgspec.msgpack.encode({"a": 1}))
    assert bytes(U.args_json(as_msgpack)) == b'[{"a":1}]'
    assert bytes(U.args_json(msgspec.Raw(msgspec.msgpack.encode([1, 2])))) == b"[1,2]"


# --- replies and passwords --------------------------------------------------------


def test_replies_are_resp() -> None:
    assert F.encode_reply(M.Ok(0)) == b"+OK\r\n"
    assert F.encode_reply(F.Bulk(None)) == b"$-1\r\n"
    assert F.encode_reply(F.Bulk(b'{"a":1}')) == b'$7\r\n{"a":1}\r\n'
    error = M.Error(0, ErrorCode.STALE_LEASE, "job 'j'\r\nis not yours")
    assert F.encode_reply(error) == b"-STALE_LEASE job 'j' is not yours\r\n"
    assert F.encode_reply(M.Error(0, ErrorCode.BAD_REQUEST, "bad")) == b"-ERR bad\r\n"


def test_the_greeting_asks_for_a_password_only_when_one_is_wanted() -> None:
    assert F.greeting(None, 1) == b'+HI {"v":2}\r\n'
    assert F.greeting("5f3a", 1000) == b'+HI {"v":2,"i":1000,"s":"5f3a"}\r\n'


def test_the_password_hash_is_sha256_applied_i_times() -> None:
    once = hashlib.sha256(b"secret" + b"salt").digest()
    assert F.password_hash("secret", "salt", 1) == once.hex()
    thrice = hashlib.sha256(hashlib.sha256(once).digest()).digest()
    assert F.password_hash("secret", "salt", 3) == thrice.hex()
