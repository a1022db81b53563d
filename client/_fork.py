"""Clients in a forked child: the connection belongs to the parent.

A ``Client`` or ``AsyncClient`` made before ``os.fork()`` (a client made at
import time, then gunicorn, a prefork pool or multiprocessing forks) would
share one socket between two processes: replies would reach the wrong one.
So in the child, right after the fork, every client forgets the parent's
connection without touching it (it closes only the child's own copy of
the socket, never shuts it down) and opens one of its own on its next
call, as a process of its own: a new worker id, unless the client was
given one. Each client also checks the pid before a call, in case a fork
bypassed ``os.register_at_fork``.
"""

import os
import weakref
from typing import Any, Protocol


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_clients: "weakref.WeakSet[Any]" = weakref.WeakSet()
_inherited: list[object] = []  # the parent's connection objects, kept so nothing closes them


def track(client: ForkAware) -> None:
    """Call ``client._after_fork()`` in every child forked from now on."""
    _clients.add(client)


def keep(*objects: object) -> None:
    """Hold objects of the parent's connection for the life of this process:
    collected, they would close a descriptor that may by then be another's."""
    _inherited.extend(objects)


def drop_descriptor(fd: int) -> None:
    """This process's copy of an inherited socket, pointed at /dev/null: the
    socket stays open in the parent, and the number stays taken here, so a
    late close by an object of the parent's connection closes nothing else."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _in_child() -> None:
    for client in list(_clients):
        client._after_fork()


os.register_at_fork(after_in_child=_in_child)
