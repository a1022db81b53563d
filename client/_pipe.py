"""One blocking connection shared by threads: writes combined, one reader at a time.

Theory of operation. A thread that calls ``submit`` registers its calls
with the core (a ``Slot`` each, the waiter the reply is handed to) and
queues their frames. If no other thread is writing, it becomes the writer:
it sends what is queued in one ``sendall``, then whatever other threads
queued meanwhile, again in one write, until nothing is left. So the first
request goes out at once, and the requests that arrive while a write is
in flight go together in the next one.

Replies are read by one thread at a time, the *reader*: the first waiting
thread that finds no reader becomes it, reads whatever has arrived and
hands every matched reply to its slot, until its own reply has come, its
time is up or the connection ends; then it wakes one of the threads still
waiting, which takes over. The threads whose replies a read brought are
woken once the reader has let go of the mutex, each through a bell of its
own (``leash.client._bell``: a pipe, whose write lets go of the GIL while
the kernel wakes the thread), and a thread woken with its reply returns
without taking the mutex again: a wake-up costs the woken thread no wait
for a lock or the GIL its waker holds. They are woken one after another,
not all at once: their bells go on a chain, the reader rings the first,
and each thread rings the next as soon as it wakes (or as its time runs
out, so a ring that came just then is passed on all the same). Woken all
at once, a read's threads fought over the GIL: 16 threads pushing one job
at a time each pushed 9 to 23 % more a second with the chain under fsync
every 50 ms, and as many under fsync before every reply
(bench/PROFILE.md). A thread alone on the client
costs one ``sendall`` and one ``recv`` a call, as a client without
threads; no thread of the client's own runs in between.

Over a plain socket the writer and the reader run at once (a long-poll
fetch waiting for its reply never holds up another thread's push). An SSL
connection must not be read and written by two threads at once, so over
TLS the reader waits for bytes outside a lock and reads, without
blocking, inside it, and the writer writes inside it.

One client-wide mutex guards the core, the queue and the roles; no I/O is
done while holding it. When the connection breaks (a failed write or read,
the broker's close, a reply that does not decode), every call in flight is
failed with ``ConnectionLost`` and the socket is shut down, which wakes a
reader blocked in ``recv``; it is closed once no thread is reading or
writing it, so its number cannot be taken by a new socket while a thread
still uses it.
"""

import collections
import contextlib
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

from ._bell import Bell, bell
from ._calls import Call
from ._core import ClientCore
from ._exceptions import ConnectionLost, LeashError, RequestTimeout

RECV_BYTES = 256 * 1024
# A read's time limit (SO_RCVTIMEO) is set again only when it is longer than
# the time left or this much shorter: a read that ends early is just read again.
RECV_LIMIT_SLACK_S = 0.05
_TIMEVAL = struct.Struct("@ll")  # SO_RCVTIMEO / SO_SNDTIMEO: seconds, microseconds


class Slot:
    """One call's reply as it arrives: done, and its value or error."""

    __slots__ = ("done", "error", "value", "wake")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: LeashError | None = None
        self.wake: Bell | None = None  # its thread's, while it sleeps as a follower


class Pipe:
    """One connected socket; see the module docstring."""

    def __init__(
        self,
        sock: socket.socket,
        core: ClientCore[Slot],
        mutex: threading.Lock,
        timeout_s: float,
        *,
        tls: bool,
    ) -> None:
        self.sock = sock
        self._core = core
        self._mutex = mutex
        self._timeout_s = timeout_s
        self._tls = tls
        self._io = threading.Lock() if tls else None  # TLS: one thread on the socket at a time
        self._out: list[bytes] = []
        self._writing = False
        self._reading = False
        self._reader = 0  # the thread that took the reading last (its ident)
        self._followers: dict[Slot, None] = {}  # waiting for a reply, asleep
        self._chain: collections.deque[Bell] = collections.deque()  # to ring, one by one
        self.broken: LeashError | None = None
        self._closed = False
        self.last_io_s = time.monotonic()
        self._recv_limit_s = 0.0  # SO_RCVTIMEO as last set
        self._poll: select.poll | None = None
        self._buffer = bytearray(RECV_BYTES)
        if not tls:
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(timeout_s))

    # --- sending -----------------------------------------------------------

    def submit(self, calls: Sequence[Call[Any]]) -> list[Slot]:
        """Register ``calls`` and send their frames (together, in order)."""
        slots = [Slot() for _ in calls]
        data = b"".join(call.frame for call in calls)
        with self._mutex:
            if self.broken is not None:
                raise ConnectionLost(str(self.broken))
            for call, slot in zip(calls, slots, strict=True):
                self._core.start(call, slot)
            if self._writing:
                self._out.append(data)  # the writer sends it with its next write
                return slots
            self._writing = True
        self._write_out(data)
        return slots

    def call(self, call: Call[Any], limit_s: float) -> Any:
        """Send one call and wait for its result (``submit`` + ``wait``)."""
        slot = Slot()
        with self._mutex:
            if self.broken is not None:
                raise ConnectionLost(str(self.broken))
            self._core.start(call, slot)
            if self._writing:
                self._out.append(call.frame)
                writer = False
            else:
                self._writing = writer = True
        if writer:
            self._write_out(call.frame)
        return self.wait(slot, call.rid, limit_s)

    def post(self, data: bytes) -> None:
        """Send frames whose replies nobody waits for (``ClientCore.abandon``,
        ``take_releases``): with the writer's next write, else at once."""
        with self._mutex:
            if self.broken is not None:
                return
            if self._writing:
                self._out.append(data)
                return
            self._writing = True
        self._write_out(data)

    def _write_out(self, data: bytes) -> None:
        """The writer: send ``data``, then what others queued meanwhile, one
        write at a time, until nothing is queued. Interrupted (Ctrl-C), it
        ends the connection: part of a frame may have gone, and the next
        call opens a new one."""
        try:
            self._write_all(data)
        except BaseException:
            with self._mutex:
                self._writing = False
                if self.broken is None:
                    self._shut(ConnectionLost("a send was interrupted: the stream may be cut"))
                self._close_if_idle()
            raise

    def _write_all(self, data: bytes) -> None:
        while True:
            try:
                if self._io is None:
                    self.sock.sendall(data)
                else:
                    with self._io:
                        self.sock.settimeout(self._timeout_s)
                        self.sock.sendall(data)
            except OSError as exc:
                # Part of a frame may have gone: the stream is unusable.
                if isinstance(exc, TimeoutError | BlockingIOError):  # the kernel's limit: EAGAIN
                    self.shut(RequestTimeout(f"sending took over {self._timeout_s} s"))
                else:
                    self.shut(ConnectionLost(f"the connection broke: {exc}"))
            with self._mutex:
                out = self._out
                if not out or self.broken is not None:
                    out.clear()
                    self._writing = False
                    self._close_if_idle()
                    return
                self._out = []
            data = out[0] if len(out) == 1 else b"".join(out)

    # --- waiting -----------------------------------------------------------

    def wait(self, slot: Slot, rid: int, limit_s: float) -> Any:
        """The call's result (raising its error) once its reply has come;
        ``RequestTimeout`` after ``limit_s``, the call then forgotten."""
        started_s = time.monotonic()
        deadline_s, remaining_s = started_s + limit_s, limit_s
        try:
            while True:
                with self._mutex:
                    if slot.done:
                        self._pass_on()
                        break
                    reader = not self._reading
                    if reader:
                        self._reading, self._reader = True, threading.get_ident()
                    else:
                        if slot.wake is None:
                            slot.wake = bell()
                        self._followers[slot] = None
                if reader and remaining_s > 0:
                    if self._read(remaining_s, slot):
                        break  # its reply came, and the reading is passed on
                elif not reader and remaining_s > 0 and self._sleep(slot, remaining_s):
                    if slot.done:  # woken with its reply: the reader passes the reading on itself
                        break
                else:
                    with self._mutex:  # out of time
                        if reader:
                            self._reading = False
                        self._followers.pop(slot, None)
                        self._pass_on()
                        if not slot.done:
                            raise RequestTimeout(f"no reply within {limit_s:g} s")
                    break
                remaining_s = deadline_s - time.monotonic()
        except BaseException:  # its time is up, or the thread was interrupted
            self._give_up(slot, rid)
            raise
        finally:
            self.last_io_s = started_s
        if slot.error is not None:
            raise slot.error
        return slot.value

    def _give_up(self, slot: Slot, rid: int) -> None:
        """The caller stops waiting: a late reply is dropped, a long poll is
        ended at the broker, and the jobs a fetch's reply brought all the
        same (it came as the caller gave up) go back."""
        with self._mutex:
            self._followers.pop(slot, None)  # an interrupted follower
            self._pass_on()
            if slot.done:
                self._core.unclaimed(slot.value)
                data = self._core.take_releases()
            else:
                cancel = self._core.abandon(rid)
                data = cancel.frame if cancel is not None else b""
        if self._chain:  # its own ring may have come as it was interrupted: pass it on
            self._ring_next()
        if data:
            self.post(data)

    def _sleep(self, slot: Slot, limit_s: float) -> bool:
        """A follower's sleep: True if its bell rang within ``limit_s``.
        Either way the next bell of the chain is rung then: every thread
        whose bell was rung passes the chain on, even one whose time ran out
        as its ring came."""
        assert slot.wake is not None
        rang = slot.wake.wait(limit_s)
        if self._chain:
            self._ring_next()
        return rang

    def _ring_next(self) -> None:
        try:
            wake = self._chain.popleft()
        except IndexError:  # another thread took the last one
            return
        wake.ring()

    def _pass_on(self) -> None:
        """Under the mutex, as a thread stops waiting: if nobody reads, wake
        a follower to (its reply may have come, or it takes the reading over)."""
        if not self._reading and self._followers:
            self._wake(next(iter(self._followers)))
        self._close_if_idle()

    def _read(self, limit_s: float, mine: Slot) -> bool:
        """The reader's turn: one read (at most ``limit_s``), every reply in
        it handed to its slot; then the role is given up. True when ``mine``
        is done (and the reading passed on to a waiting thread). An
        exception (a KeyboardInterrupt in the main thread) gives the role up
        too, so the client stays usable."""
        woken: list[Bell] = []
        releases = b""
        try:
            data = self._receive(limit_s)  # None: no bytes in time, or the connection broke
            with self._mutex:
                if data is not None and self.broken is None:
                    if data:
                        self._dispatch(data, woken)
                        releases = self._core.take_releases()
                    else:
                        self._shut(ConnectionLost("the broker closed the connection"))
                self._reading = False
                if mine.done:
                    self._pass_on()
                    return True
                self._close_if_idle()
                return False
        except BaseException:
            with self._mutex:
                if self._reading and self._reader == threading.get_ident():  # not given up yet
                    self._reading = False
                    self._pass_on()
            raise
        finally:
            if woken:  # outside the mutex: a woken thread need not wait for it
                self._chain.extend(woken)
                self._ring_next()
            if releases:  # jobs leased to fetches nobody waits for: back at once
                self.post(releases)

    def _receive(self, limit_s: float) -> bytes | memoryview | None:
        """Bytes from the socket (b"": closed), None if none came in ``limit_s``."""
        try:
            if self._io is not None:
                return self._receive_tls(limit_s)
            set_s = self._recv_limit_s
            if not limit_s - RECV_LIMIT_SLACK_S <= set_s <= limit_s:  # a setsockopt is a syscall
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(limit_s))
                self._recv_limit_s = limit_s
            return memoryview(self._buffer)[: self.sock.recv_into(self._buffer)]
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO passed
            return None
        except OSError as exc:
            with self._mutex:
                if self.broken is None:
                    self._shut(ConnectionLost(f"the connection broke: {exc}"))
            return None

    def _receive_tls(self, limit_s: float) -> bytes | None:
        assert self._io is not None
        deadline_s = time.monotonic() + limit_s
        while True:
            with self._io:
                self.sock.settimeout(0.0)
                try:
                    return self.sock.recv(RECV_BYTES)
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return None
            select.select([self.sock], [], [], remaining_s)

    def _dispatch(self, data: bytes | memoryview, woken: list[Bell]) -> None:
        """Under the mutex: every reply in ``data`` to its slot; the bells
        of the sleeping threads whose reply came go on ``woken``, for the
        caller to ring once it has let go of the mutex."""
        core, followers = self._core, self._followers
        core.receive_data(data)
        try:
            while (completion := core.next_completion()) is not None:
                slot = completion.waiter
                slot.value, slot.error, slot.done = completion.value, completion.error, True
                if slot in followers:
                    del followers[slot]
                    assert slot.wake is not None
                    woken.append(slot.wake)
        except LeashError as exc:  # the connection cannot be used any more
            self._shut(exc)

    def _wake(self, slot: Slot) -> None:
        del self._followers[slot]
        assert slot.wake is not None
        slot.wake.ring()

    # --- the end -------------------------------------------------------------

    def shut(self, error: LeashError) -> None:
        """End the connection: every call in flight gets ``error`` (as
        ConnectionLost unless it is a timeout of the write)."""
        with self._mutex:
            if self.broken is None:
                self._shut(error)

    def _shut(self, error: LeashError) -> None:
        self.broken = error
        self._out.clear()
        for slot in self._core.fail_pending():
            if isinstance(error, ConnectionLost | RequestTimeout):
                slot.error = error
            else:
                lost = ConnectionLost(str(error))
                lost.__cause__ = error
                slot.error = lost
            slot.done = True
        for slot in list(self._followers):
            self._wake(slot)
        with contextlib.suppress(OSError):  # wakes a reader blocked in recv
            self.sock.shutdown(socket.SHUT_RDWR)
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        """Close the broken socket once no thread reads or writes it."""
        if self.broken is not None and not (self._reading or self._writing or self._closed):
            self._closed = True
            self.sock.close()

    def forget(self) -> None:
        """In a forked child: close this process's copy of the socket
        without shutting the connection down (it is the parent's)."""
        self.broken = ConnectionLost("the connection belongs to the parent process")
        self._closed = True
        self.sock.close()

    # --- idle ----------------------------------------------------------------

    def went_idle(self, idle_limit_s: float) -> bool:
        """With nothing in flight: whether to open a new connection first (the
        broker closed this one while it sat idle, or is about to). Reads (and
        drops) what is waiting."""
        if self._reading or self._writing or self._core.in_flight:
            return False  # busy: no need to take the mutex (the usual case of a shared client)
        with self._mutex:
            if self._reading or self._writing or self._core.in_flight:
                return False
            if idle_limit_s and time.monotonic() - self.last_io_s >= idle_limit_s:
                return True
            try:
                while data := self._read_now():
                    self._core.receive_data(data)
                    while self._core.next_completion() is not None:
                        pass  # late replies to calls that timed out
                return True  # end of stream: the broker closed it
            except (BlockingIOError, ssl.SSLWantReadError):
                releases = self._core.take_releases()  # else sent after a read on the next one
            except (OSError, LeashError):  # reset, or the broker's last word before closing
                return True
        if releases:
            self.post(releases)
        return False  # open, nothing more to read

    def _read_now(self) -> bytes | memoryview:
        """What has arrived, without waiting (BlockingIOError: nothing)."""
        sock = self.sock
        if self._tls:
            sock.settimeout(0.0)
            return sock.recv(RECV_BYTES)
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
        if not self._poll.poll(0):  # the usual case, and cheaper than an EAGAIN exception
            raise BlockingIOError
        return memoryview(self._buffer)[: sock.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)]


def timeval(seconds: float) -> bytes:
    """A socket time limit; at least 1 µs (0 would mean none)."""
    micros = max(1, int(seconds * 1_000_000))
    return _TIMEVAL.pack(micros // 1_000_000, micros % 1_000_000)
