"""Leash: a job broker that never leaves a job in progress with a dead owner.

    from leash import Client, AsyncClient, Worker, handler

The package has three parts, each a folder of the source tree mapped into
this one:

- ``leash.protocol``: the wire protocol, pure (frames, messages, error codes,
  limits); shared by the broker and the clients.
- ``leash.broker``: the daemon (``core`` the pure state machine, ``journal``
  the log on disk, ``server`` the asyncio shell).
- ``leash.client``: the blocking and async clients, the ``Worker`` runner and
  the ``leash`` command.

Every public name of ``leash.client`` can be imported from here. They are
loaded on first use, so a process that imports only ``leash.broker`` or
``leash.protocol`` never loads the client.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leash.client import *  # noqa: F403

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    import leash.client

    if name in leash.client.__all__:
        return getattr(leash.client, name)
    raise AttributeError(f"module 'leash' has no attribute {name!r}")


def __dir__() -> list[str]:
    import leash.client

    return sorted([*globals(), *leash.client.__all__])
