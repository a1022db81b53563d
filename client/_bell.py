"""How a thread waiting for its reply is woken: a bell of its own.

``ring`` wakes the thread that ``wait``s on the bell. Where the platform
has ``poll`` (POSIX), a thread's bell is a pipe of its own, made on its
first wait and kept for its life: ``ring`` writes a byte, and a write lets
go of the GIL while the kernel wakes the thread, so the woken thread can
run at once. A lock's release keeps the GIL: the woken thread, if it took
a core, could only wait for the GIL its waker held, which cost futex calls
and context switches on both sides at every reply. Elsewhere a bell is a
lock, one a wait.

A ring that comes after its wait gave up (the reply came as the time ran
out) is found by the thread's next wait, which returns early: a waiter
checks what it waited for after every wake-up.
"""

import os
import select
import threading
from typing import Protocol

_local = threading.local()


class Bell(Protocol):
    def ring(self) -> None: ...

    def wait(self, limit_s: float) -> bool:
        """Whether it rang within ``limit_s``."""
        ...


class _PipeBell:
    """A thread's pipe: a byte a ring."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._read, self._write = os.pipe()
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)

    def ring(self) -> None:
        os.write(self._write, b"\0")

    def wait(self, limit_s: float) -> bool:
        if not self._poll.poll(max(1, int(limit_s * 1000))):
            return False
        os.read(self._read, 1)
        return True

    def __del__(self) -> None:  # the thread has ended (or a forked child made its own)
        os.close(self._read)
        os.close(self._write)


class _LockBell:
    """A lock held until the ring releases it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def ring(self) -> None:
        self._lock.release()

    def wait(self, limit_s: float) -> bool:
        return self._lock.acquire(timeout=limit_s)


def bell() -> Bell:
    """The calling thread's bell (a new one where bells are locks)."""
    if not hasattr(select, "poll"):
        return _LockBell()
    own: _PipeBell | None = getattr(_local, "bell", None)
    if own is None or own.pid != os.getpid():  # in a forked child: a pipe of its own
        own = _local.bell = _PipeBell()
    return own
