"""The blocking client's shared connection (client/_pipe.py): writes combined
while one is in flight, one reader handing each reply to its thread, the
reading handed over, time limits, a broken connection failing every call.
The broker's side is the other end of a socketpair, driven by the test."""

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from leash.client import ConnectionLost, RequestTimeout, _pipe
from leash.client._core import ClientCore
from leash.client._pipe import Pipe, Slot
from leash.protocol import limits
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.messages import Beat, Jobs, ProcessState, Release, encoder, request_decoder
from tests.unit.test_client_core import delivery, welcomed_core
from tests.waiting import wait_for

WAIT_S = 10.0
pytestmark = pytest.mark.timeout(30)


class Broker:
    """The far end: reads the requests the pipe writes, answers when told."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(limits.FRAME_CEILING_BYTES)

    def requests(self, count: int) -> list[Any]:
        found: list[Any] = []
        self.sock.settimeout(WAIT_S)
        while len(found) < count:
            while (body := self.decoder.next_frame()) is not None:
                found.append(request_decoder.decode(body))
            if len(found) < count:
                data = self.sock.recv(65536)
                assert data, "the pipe closed"
                self.decoder.feed(data)
        return found

    def answer(self, *rids: int, state: str = "ok") -> None:
        self.sock.sendall(
            b"".join(encode_frame(encoder.encode(ProcessState(r, state))) for r in rids)
        )


class RecordingSocket:
    """A socket whose sends are recorded, the first one held until released."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.sends: list[bytes] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        if len(self.sends) == 1:
            self.first_started.set()
            self.release_first.wait(WAIT_S)
        self.real.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    mine, theirs = socket.socketpair()
    yield mine, theirs
    mine.close()
    theirs.close()


def make_pipe(sock: Any, core: ClientCore[Slot] | None = None) -> Pipe:
    core = core or welcomed_core()  # type: ignore[assignment]
    assert core is not None
    return Pipe(sock, core, threading.Lock(), 5.0, tls=False)


def beat(pipe: Pipe) -> tuple[int, Slot]:
    call = pipe._core.beat()
    (slot,) = pipe.submit([call])
    return call.rid, slot


def in_thread(work: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work(*args))
        except BaseException as error:
            out.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_the_first_request_is_written_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    mine, theirs = pair
    recording = RecordingSocket(mine)
    recording.release_first.set()
    pipe = make_pipe(recording)
    rid, _slot = beat(pipe)
    assert len(recording.sends) == 1  # before any reply: written by submit itself
    (request,) = Broker(theirs).requests(1)
    assert isinstance(request, Beat) and request.rid == rid


def test_requests_made_while_a_write_is_in_flight_go_together_in_the_next_write(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    mine, theirs = pair
    recording = RecordingSocket(mine)
    pipe = make_pipe(recording)
    first, _ = in_thread(beat, pipe)
    assert recording.first_started.wait(WAIT_S)
    others = [pipe._core.beat() for _ in range(5)]
    for call in others:  # each from a thread of its own, while the first write is held
        thread, _ = in_thread(pipe.submit, [call])
        thread.join(WAIT_S)
    recording.release_first.set()
    first.join(WAIT_S)
    assert len(recording.sends) == 2, [len(s) for s in recording.sends]
    assert recording.sends[1] == b"".join(call.frame for call in others)
    assert len(Broker(theirs).requests(6)) == 6


def test_replies_in_any_order_reach_their_threads(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    mine, theirs = pair
    pipe = make_pipe(mine)
    calls = [pipe._core.beat() for _ in range(8)]
    slots = pipe.submit(calls)
    waiting = [
        in_thread(pipe.wait, slot, call.rid, WAIT_S)
        for call, slot in zip(calls, slots, strict=True)
    ]
    broker = Broker(theirs)
    broker.requests(8)
    for call in reversed(calls):  # one reply a write, the last request's first
        broker.answer(call.rid, state=f"s{call.rid}")
    for (thread, out), call in zip(waiting, calls, strict=True):
        thread.join(WAIT_S)
        assert out == [f"s{call.rid}"]


def test_a_long_wait_for_one_reply_holds_up_no_other_thread(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The reader waits for its own reply (a long-poll fetch); another
    thread's reply, arriving meanwhile, reaches that thread at once, and when
    the reader gives up its turn a waiting thread reads on."""
    mine, theirs = pair
    pipe = make_pipe(mine)
    broker = Broker(theirs)
    long_rid, long_slot = beat(pipe)
    reader, reader_out = in_thread(pipe.wait, long_slot, long_rid, WAIT_S)
    wait_for(lambda: pipe._reading, "the first waiter reading")
    short = [beat(pipe) for _ in range(3)]
    followers = [in_thread(pipe.wait, slot, rid, WAIT_S) for rid, slot in short]
    broker.requests(4)
    started = time.monotonic()
    broker.answer(short[0][0], short[1][0])
    for thread, _ in followers[:2]:
        thread.join(WAIT_S)
    assert time.monotonic() - started < WAIT_S / 2
    broker.answer(long_rid)  # the reader's own: it leaves, another thread reads on
    reader.join(WAIT_S)
    assert reader_out == ["ok"]
    broker.answer(short[2][0])
    followers[2][0].join(WAIT_S)
    assert [out for _, out in followers] == [["ok"], ["ok"], ["ok"]]


def test_a_reader_out_of_time_hands_the_reading_over(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    mine, theirs = pair
    pipe = make_pipe(mine)
    broker = Broker(theirs)
    quick_rid, quick_slot = beat(pipe)
    slow_rid, slow_slot = beat(pipe)
    broker.requests(2)
    quick, quick_out = in_thread(pipe.wait, quick_slot, quick_rid, 0.2)
    wait_for(lambda: pipe._reading or bool(quick_out), "the first waiter reading")
    patient, patient_out = in_thread(pipe.wait, slow_slot, slow_rid, WAIT_S)
    quick.join(WAIT_S)
    assert isinstance(quick_out[0], RequestTimeout)
    broker.answer(quick_rid, slow_rid)  # the first comes too late and is dropped
    patient.join(WAIT_S)
    assert patient_out == ["ok"]
    assert pipe._core.in_flight == 0


def test_a_broken_connection_fails_every_call_in_flight_and_closes_once_unused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    mine, theirs = pair
    pipe = make_pipe(mine)
    Broker(theirs)
    calls = [beat(pipe) for _ in range(4)]
    waiting = [in_thread(pipe.wait, slot, rid, WAIT_S) for rid, slot in calls]
    wait_for(lambda: pipe._reading and len(pipe._followers) == 3, "one reading, three asleep")
    theirs.close()  # the broker is gone
    for thread, out in waiting:
        thread.join(WAIT_S)
        assert isinstance(out[0], ConnectionLost), out
    assert pipe.broken is not None
    assert mine.fileno() == -1, "the socket was not closed once nobody used it"
    with pytest.raises(ConnectionLost):
        beat(pipe)


def test_many_threads_each_get_their_own_reply(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A broker that answers every request with a state naming its rid, in
    random batches: 16 threads of 50 calls each, each sees its own."""
    mine, theirs = pair
    pipe = make_pipe(mine)
    stop = threading.Event()

    def serve() -> None:
        broker = Broker(theirs)
        theirs.settimeout(0.05)
        while not stop.is_set():
            try:
                data = theirs.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            broker.decoder.feed(data)
            rids = []
            while (body := broker.decoder.next_frame()) is not None:
                rids.append(request_decoder.decode(body).rid)
            for rid in rids:
                theirs.sendall(encode_frame(encoder.encode(ProcessState(rid, f"s{rid}"))))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    wrong: list[str] = []

    def caller() -> None:
        for _ in range(50):
            rid, slot = beat(pipe)
            got = pipe.wait(slot, rid, WAIT_S)
            if got != f"s{rid}":
                wrong.append(f"{rid}: {got}")

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 2)
    stop.set()
    server.join(WAIT_S)
    assert wrong == []
    assert pipe._core.in_flight == 0


@pytest.mark.parametrize("ending", ["time out", "interrupted"])
def test_a_thread_whose_time_runs_out_as_its_bell_rings_passes_the_chain_on(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """One read brings the replies of three sleeping threads, woken one
    after another along a chain. The first one's ring comes as its time
    runs out (its wait reports no ring), or as it is interrupted (Ctrl-C):
    it still rings the next, so the other two get their replies at once,
    not at the end of their own time (5 s)."""
    mine, theirs = pair
    pipe = make_pipe(mine)
    broker = Broker(theirs)
    real_bell = _pipe.bell

    class LateBell:
        """A ring that comes is taken for the end of the time."""

        def __init__(self) -> None:
            self.real = real_bell()

        def ring(self) -> None:
            self.real.ring()

        def wait(self, limit_s: float) -> bool:
            self.real.wait(limit_s)
            if ending == "interrupted":
                raise KeyboardInterrupt
            return False

    def bell() -> Any:
        return LateBell() if threading.current_thread().name == "late" else real_bell()

    monkeypatch.setattr(_pipe, "bell", bell)
    reader_rid, reader_slot = beat(pipe)
    reader, reader_out = in_thread(pipe.wait, reader_slot, reader_rid, WAIT_S)
    wait_for(lambda: pipe._reading, "the first thread reading")
    calls = [beat(pipe) for _ in range(3)]
    followers: list[tuple[threading.Thread, list[Any]]] = []
    for index, (rid, slot) in enumerate(calls):
        out: list[Any] = []

        def follow(
            s: Slot = slot, r: int = rid, o: list[Any] = out, t: float = 5.0 if index else WAIT_S
        ) -> None:
            try:
                o.append(pipe.wait(s, r, t))
            except KeyboardInterrupt:
                o.append("interrupted")

        thread = threading.Thread(
            target=follow, name="late" if index == 0 else f"follower-{index}", daemon=True
        )
        thread.start()
        followers.append((thread, out))
        wait_for(lambda n=index + 1: len(pipe._followers) == n, "asleep")
    broker.requests(4)
    started = time.monotonic()
    broker.answer(*(rid for rid, _ in calls), reader_rid)
    for thread, _ in [*followers, (reader, reader_out)]:
        thread.join(WAIT_S)
    assert time.monotonic() - started < 2.5, "the chain stopped at the late thread"
    late = "ok" if ending == "time out" else "interrupted"
    assert [out for _, out in followers] == [[late], ["ok"], ["ok"]]
    assert reader_out == ["ok"]


def test_a_fetch_whose_reply_came_as_its_thread_was_interrupted_releases_its_jobs(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply is read (its job leased to this process), then the waiting
    thread is interrupted before it returns the job: the job goes back."""
    mine, theirs = pair
    pipe = make_pipe(mine)
    broker = Broker(theirs)
    fetch = pipe._core.fetch("default", 1, 0)
    (slot,) = pipe.submit([fetch])
    (sent,) = broker.requests(1)
    leased = delivery("j9", token=41)
    broker.sock.sendall(encode_frame(encoder.encode(Jobs(rid=sent.rid, jobs=[leased]))))
    read = pipe._read

    def read_then_interrupted(limit_s: float, mine: Slot) -> bool:
        read(limit_s, mine)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipe, "_read", read_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipe.wait(slot, fetch.rid, WAIT_S)
    assert slot.done, "the reply was not read first"
    (release,) = broker.requests(1)
    assert (type(release), release.id, release.token) == (Release, "j9", 41)


def test_a_reader_interrupted_gives_the_reading_up_and_the_client_stays_usable(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during a long poll: the next call is answered, not left
    waiting for a reader that is gone."""
    mine, theirs = pair
    pipe = make_pipe(mine)
    broker = Broker(theirs)
    interrupted_rid, interrupted = beat(pipe)
    receive = pipe._receive

    def interrupted_once(limit_s: float) -> Any:
        monkeypatch.setattr(pipe, "_receive", receive)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipe, "_receive", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        pipe.wait(interrupted, interrupted_rid, WAIT_S)
    assert not pipe._reading
    rid, slot = beat(pipe)
    assert [request.rid for request in broker.requests(2)] == [interrupted_rid, rid]
    broker.answer(interrupted_rid, rid)
    assert pipe.wait(slot, rid, 2.0) == "ok"
    assert pipe._core.in_flight == 0
