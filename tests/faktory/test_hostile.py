"""Hostile input on the Faktory port, the battery of the Leash port
(tests/integration/test_limits_frames.py): random bytes, long lines, bad
JSON, huge work units, slow clients; every limit of docs/faktory.md is met
with a clear error, the broker stays up and keeps its memory, and a
well-behaved client goes on working. Time limits are given short values by
flag; the bounds are honest: never before the deadline, within a generous
margin after it."""

import json
import os
import random
import socket
import time

import pytest

from leash.protocol.limits import HANDSHAKE_FRAME_MAX_BYTES
from tests.faktory.conftest import Launch
from tests.faktory.lines import Lines
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import rss_bytes, send_until_aborted

pytestmark = pytest.mark.timeout(90)
SWEEP_SLACK_S = 1.5  # a deadline is acted on within one sweep (<= 0.5 s); the rest is load
SEED = int(os.environ.get("LEASH_FUZZ_SEED", random.randrange(2**32)))


def works(broker: BrokerProcess) -> None:
    """A well-behaved producer and consumer still get through."""
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="good-wid-01")
        lines.ok("PUSH", {"jid": "good-job-01", "jobtype": "t", "args": [], "queue": "good"})
        assert lines.command("FETCH", "good").json["jid"] == "good-job-01"
        lines.ok("ACK", {"jid": "good-job-01"})


def test_random_bytes_get_errors_or_a_close_and_the_broker_goes_on(broker: BrokerProcess) -> None:
    print(f"seed {SEED} (LEASH_FUZZ_SEED={SEED} repeats it)")
    chance = random.Random(SEED)
    for round_number in range(40):
        with Lines(broker.faktory_port, timeout_s=5) as lines:
            greeted = round_number % 2 == 1
            if greeted:
                lines.hello()
            else:
                lines.reply()  # HI
            junk = bytes(chance.randrange(256) for _ in range(chance.randrange(1, 3000)))
            lines.send(junk + b"\r\n" if chance.random() < 0.7 else junk, end=b"")
            lines.closed(0.05)  # whatever it answers (errors, or a close): read it
    assert broker.alive()
    works(broker)


def test_junk_lines_after_hello_are_each_answered_with_an_error(broker: BrokerProcess) -> None:
    chance = random.Random(SEED + 1)
    verbs = ["PUSH", "PUSHB", "ACK", "FAIL", "BEAT", "MUTATE", "FETCH", "INFO", "", "ZZZ"]
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="junk-wid-01")
        for _ in range(200):
            junk = "".join(
                chance.choice('{}[]":,0a-_ \\tnull') for _ in range(chance.randrange(40))
            )
            lines.send(f"{chance.choice(verbs)} {junk}".strip())
            reply = lines.reply()  # one reply a line: an error, OK, or a bulk string
            assert reply.kind in "+-$", reply
        lines.ok("PUSH", {"jid": "after-junk-1", "jobtype": "t", "args": []})


def test_a_line_over_the_limit_is_refused_before_it_is_read_and_the_connection_closed(
    broker: BrokerProcess,
) -> None:
    before = rss_bytes(broker.pid)
    with Lines(broker.faktory_port) as lines:  # before HELLO: 4 KiB
        lines.reply()
        lines.send(b"HELLO " + b"x" * (HANDSHAKE_FRAME_MAX_BYTES - 6), end=b"")
        assert not lines.closed(0.3), "exactly the limit, unfinished: still read"
        lines.send(b"yy", end=b"")  # two bytes over
        assert lines.error() == f"TOO_LARGE a line over {HANDSHAKE_FRAME_MAX_BYTES} bytes"
        assert lines.closed()
    with Lines(broker.faktory_port) as lines:  # after HELLO: the frame limit (1 MiB)
        lines.hello()
        chunk = b"z" * (1 << 20)
        sent = 0
        try:
            for _ in range(64):  # 64 MiB with no line end
                lines.sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert lines.closed() or "TOO_LARGE" in lines.buffer.decode(errors="replace")
    growth = rss_bytes(broker.pid) - before
    print(f"{sent >> 20} MiB sent in one line; broker RSS growth {growth >> 10} KiB")
    assert growth < 16 * 1024 * 1024
    works(broker)


def test_a_huge_work_unit_is_refused_and_the_connection_kept(launch: Launch) -> None:
    broker = launch("--max-args-bytes", "1000", "--max-frame-bytes", "65536")
    with Lines(broker.faktory_port) as lines:
        lines.hello()
        lines.ok("PUSH", {"jid": "fits-00001", "jobtype": "t", "args": ["x" * 900]})
        lines.send(
            "PUSH " + json.dumps({"jid": "huge-00001", "jobtype": "t", "args": ["x" * 2000]})
        )
        assert "over the limit of 1000" in lines.error()
        kept = {"jid": "huge-00002", "jobtype": "t", "args": [], "custom": {"k": "x" * 2000}}
        lines.send("PUSH " + json.dumps(kept))
        assert "kept fields of a unit are over the limit" in lines.error()
        units = [{"jid": f"bulk-{n:05}", "jobtype": "t", "args": ["x" * 800]} for n in range(100)]
        lines.send("PUSHB " + json.dumps(units))  # ~90 KB: over the 64 KiB line
        assert lines.error().startswith("TOO_LARGE")
        assert lines.closed()
    with broker.admin() as admin:
        assert [q.ready for q in admin.queues()] == [1]


def test_a_line_that_does_not_end_in_time_is_closed(launch: Launch) -> None:
    broker = launch("--frame-timeout-ms", "600")
    with Lines(broker.faktory_port) as lines:
        lines.hello()
        started_s = time.monotonic()
        lines.send('PUSH {"jid":', end=b"")  # begun, never finished
        error = lines.error()
        elapsed_s = time.monotonic() - started_s
        assert error.startswith("FRAME_TIMEOUT") and lines.closed()
    print(f"an unfinished line closed after {elapsed_s:.2f} s (timeout 0.6 s)")
    assert 0.6 <= elapsed_s < 0.6 + SWEEP_SLACK_S


def test_a_connection_that_never_says_hello_is_closed_at_the_handshake_timeout(
    launch: Launch,
) -> None:
    broker = launch("--handshake-timeout-ms", "500")
    started_s = time.monotonic()  # before the connection is made
    with Lines(broker.faktory_port) as lines:
        lines.reply()  # HI
        error = lines.error()
        elapsed_s = time.monotonic() - started_s
        assert error.startswith("HANDSHAKE_TIMEOUT") and lines.closed()
    assert 0.5 <= elapsed_s < 0.5 + SWEEP_SLACK_S


def test_a_connection_is_never_closed_for_being_idle(launch: Launch) -> None:
    broker = launch("--idle-timeout-ms", "300")
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="idle-wid-01")
        assert not lines.closed(1.5), "Faktory clients keep idle connections and do not reconnect"
        lines.ok("PUSH", {"jid": "idle-job-01", "jobtype": "t", "args": []})


def test_a_client_that_never_reads_its_replies_is_aborted_with_memory_bounded(
    launch: Launch,
) -> None:
    broker = launch("--write-stall-ms", "1000")
    with Lines(broker.faktory_port) as lines:
        lines.hello()
        lines.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        before = rss_bytes(broker.pid)
        infos = b"INFO\r\n" * 200  # each answered, never read
        aborted_s, peak = send_until_aborted(lines.sock, infos, broker.pid, 20)
    growth = peak - before
    print(f"never-reading client aborted after {aborted_s:.2f} s; RSS growth {growth >> 20} MiB")
    assert aborted_s > 0, "the connection was never closed"
    assert growth < 96 * 2**20
    assert broker.wait_for_log("slow_reader")
    works(broker)


def test_connections_beyond_the_limit_get_too_many_connections(launch: Launch) -> None:
    broker = launch("--max-connections", "2", "--max-unauthenticated", "2")
    first, second = Lines(broker.faktory_port), Lines(broker.faktory_port)
    try:
        first.hello()
        second.hello()
        with Lines(broker.faktory_port) as third:
            assert third.error().startswith("TOO_MANY_CONNECTIONS")
            assert third.closed()
    finally:
        first.close()
        second.close()
    works(broker)
