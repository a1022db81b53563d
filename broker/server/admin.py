"""The admin socket: a Unix-domain socket beside the data, for operators.

Who may connect: each connection's peer credentials (SO_PEERCRED) must
name the broker's own uid, root, or a uid the operator allowed with
``--admin-uid``; anyone else gets one ``permission_denied`` error and is
closed. The file system keeps everyone else from even reaching the socket:

- with no other uid allowed, the socket file is mode 0600 from the moment
  it exists (the umask is set before bind), in a directory of mode 0700
  owned by the broker's uid (the data directory is);
- with ``--admin-uid``, those users must be able to reach it: the socket
  is mode 0666 (the credentials check is then what keeps others out), and
  its directory must be owned by the broker's uid, writable by no one else
  (so no one can replace the socket), and, like every directory above it,
  enterable by each allowed uid (by its mode bits: owner, group or others).
  The data directory (0700) is not: such a broker refuses to start with the
  socket there, and says to put it elsewhere with ``--admin-socket`` (for
  example /run/leash/admin.sock, with /run/leash mode 0711).

A stale socket file left by a crash is replaced, but only by the broker that
holds the data-directory lock (start-up takes the lock first).

What it speaks: the framing of the TCP protocol, with the admin requests of
protocol.admin and no handshake. Each request is decided by the core like
any other (operations are records, journalled before their reply) or, for
stats, assembled here from the core's counts and the shell's own figures.
"""

import asyncio
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Collection
from typing import TYPE_CHECKING, cast

from leash.broker.errors import BrokerError
from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode, ProtocolError
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import FRAME_MAX_BYTES

if TYPE_CHECKING:
    from leash.broker.server.broker import Broker

log = logging.getLogger("leash.admin")
SOCKET_FILE = "admin.sock"
SUN_PATH_MAX_BYTES = 107  # sockaddr_un.sun_path is 108 bytes with its NUL
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class AdminSocketError(BrokerError):
    """The admin socket cannot be created as configured."""


def bind_admin_socket(path: str, other_uids: Collection[int] = ()) -> socket.socket:
    """A listening socket at ``path``: mode 0600 from its creation, or 0666
    when ``other_uids`` (besides the broker's own and root) may use it, in
    a directory they can reach. The caller holds the data-directory lock,
    so an existing socket there is stale and is replaced; anything else
    there is refused."""
    encoded = os.fsencode(path)
    if len(encoded) > SUN_PATH_MAX_BYTES:
        raise AdminSocketError(
            f"admin socket path {path} is {len(encoded)} bytes; a Unix socket path may have "
            f"at most {SUN_PATH_MAX_BYTES}: choose a shorter one with --admin-socket"
        )
    directory = os.path.dirname(os.path.abspath(path))
    others = sorted(set(other_uids) - {os.getuid(), 0})
    if others:
        _check_shared_directory(directory, others)
    else:
        _check_directory(directory)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise AdminSocketError(f"{path} exists and is not a socket; not replacing it")
        os.unlink(path)
        log.info("replaced the stale admin socket %s", path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o111 if others else 0o177)  # created 0666 or 0600, never wider
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _check_directory(directory: str) -> None:
    info = os.stat(directory)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise AdminSocketError(
            f"the admin socket's directory {directory} must be owned by uid {os.getuid()} "
            f"and have mode 0700 (it is uid {info.st_uid}, mode {info.st_mode & 0o777:04o})"
        )


def _check_shared_directory(directory: str, uids: list[int]) -> None:
    """The socket's directory, for other users too: only the broker may
    change it, and each of them may enter it and every directory above."""
    info = os.stat(directory)
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise AdminSocketError(
            f"the admin socket's directory {directory} must be owned by uid {os.getuid()} "
            f"and writable by no one else (it is uid {info.st_uid}, "
            f"mode {info.st_mode & 0o777:04o})"
        )
    for uid in uids:
        blocked = next((d for d in _with_parents(directory) if not _may_enter(uid, d)), None)
        if blocked is not None:
            raise AdminSocketError(
                f"--admin-uid {uid}: that user cannot reach the admin socket in {directory}: "
                f"it may not enter {blocked} (mode {os.stat(blocked).st_mode & 0o777:04o}); "
                "put the socket in a directory it may enter with --admin-socket, for example "
                "/run/leash/admin.sock with /run/leash mode 0711 (the data directory stays 0700)"
            )


def _with_parents(directory: str) -> list[str]:
    found = [directory]
    while (parent := os.path.dirname(found[-1])) != found[-1]:
        found.append(parent)
    return found


def _may_enter(uid: int, directory: str) -> bool:
    """Whether ``uid`` may search ``directory``, by its mode bits (as the
    kernel decides without ACLs)."""
    info = os.stat(directory)
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in _groups_of(uid):
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _groups_of(uid: int) -> set[int]:
    try:
        user = pwd.getpwuid(uid)
    except KeyError:  # no such user here: only the bits for others apply to it
        return set()
    return {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}


def peer_uid(transport: asyncio.BaseTransport) -> int | None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    return int(_PEERCRED.unpack(raw)[1])


class AdminConnection(asyncio.Protocol):
    """One operator connection: frames in, admin requests to the broker."""

    def __init__(self, broker: "Broker", allowed_uids: Collection[int]) -> None:
        self.broker = broker
        self.allowed_uids = allowed_uids
        self.decoder = FrameDecoder(FRAME_MAX_BYTES)
        self.transport: asyncio.Transport | None = None
        self.peer = "admin"
        self.closed = False
        self.admitted = False  # the peer's uid is allowed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        uid = peer_uid(transport)
        self.peer = f"admin uid {uid}"
        if uid is None or uid not in self.allowed_uids:
            log.warning("refused an admin connection from uid %s", uid)
            message = f"uid {uid} may not use this admin socket"
            self.close_with(M.Error(0, ErrorCode.PERMISSION_DENIED, message))
            return
        self.admitted = True
        self.broker.admin_connections += 1

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        while not self.closed:
            try:
                body = self.decoder.next_frame()
            except ProtocolError as error:
                self.close_with(M.Error(0, error.code, error.message))
                return
            if body is None:
                return
            self._handle(body)

    def _handle(self, body: bytes) -> None:
        try:
            request = M.decode_with(A.admin_request_decoder, A.ADMIN_OPS, body)
        except M.BadRequest as bad:
            self.send(bad.reply())
            return
        self.broker.handle_admin(self, request)

    def send(self, reply: A.AdminReply | M.Reply) -> None:
        if not self.closed:
            assert self.transport is not None
            self.transport.write(encode_frame(M.encoder.encode(reply)))

    def close_with(self, reply: A.AdminReply | M.Reply) -> None:
        self.send(reply)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.admitted:
            self.admitted = False
            self.broker.admin_connections -= 1
