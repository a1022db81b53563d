"""The admin socket's own rules, in process: its mode from the moment it
exists, and the peer-credentials check."""

import asyncio
import os
import socket
import stat
import threading
from typing import Any

import msgspec

from leash.broker.server.admin import AdminConnection, bind_admin_socket
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder


def test_the_socket_file_is_never_wider_than_0600_even_under_a_permissive_umask(
    tmp_path: "os.PathLike[str]",
) -> None:
    directory = os.path.join(tmp_path, "d")
    os.mkdir(directory, 0o700)
    path = os.path.join(directory, "admin.sock")
    modes: set[int] = set()  # every mode the watcher saw
    final_modes: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # sees the file as soon as bind creates it
        while not stop.is_set():
            try:
                modes.add(stat.S_IMODE(os.lstat(path).st_mode))
            except FileNotFoundError:
                continue

    watcher = threading.Thread(target=watch)
    old_umask = os.umask(0)
    watcher.start()
    try:
        for _ in range(20):
            sock = bind_admin_socket(path)  # replaces the one before: it is stale
            final_modes.add(stat.S_IMODE(os.lstat(path).st_mode))
            sock.close()
            while not modes:
                threading.Event().wait(0.001)  # let the watcher look at least once
    finally:
        stop.set()
        watcher.join(5)
        os.umask(old_umask)
    assert modes == final_modes == {0o600}
    assert os.umask(old_umask) == old_umask  # bind put the umask back


class _Broker:
    admin_connections = 0

    def handle_admin(self, connection: Any, request: Any) -> None:
        connection.send(M.Ok(request.rid))


def _serve_once(allowed_uids: set[int], request: bytes) -> tuple[list[Any], int]:
    """Connect over a socket pair; the replies until the broker side closes."""

    async def run() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        broker = _Broker()
        transport, _ = await loop.connect_accepted_socket(
            lambda: AdminConnection(broker, allowed_uids),  # type: ignore[arg-type]
            theirs,
        )
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        if allowed_uids:  # a refused peer is closed at once: there is no one to write to
            writer.write(request)
        decoder, replies = FrameDecoder(), []
        try:
            while data := await asyncio.wait_for(reader.read(65536), 5):
                decoder.feed(data)
                while (body := decoder.next_frame()) is not None:
                    replies.append(M.reply_decoder.decode(body))
                if replies and allowed_uids:
                    break
        finally:
            writer.close()
            transport.close()
        return replies, broker.admin_connections

    return asyncio.run(run())


GET_JOB = M.GetJob(rid=7, id="j")


def frame(message: msgspec.Struct) -> bytes:
    body = M.encoder.encode(message)
    return len(body).to_bytes(4, "big") + body


def test_a_peer_whose_uid_is_not_allowed_gets_permission_denied_and_is_closed() -> None:
    replies, admitted = _serve_once(set(), frame(GET_JOB))
    assert len(replies) == 1  # the request was never read
    [error] = replies
    assert isinstance(error, M.Error)
    assert (error.code, error.rid) == (ErrorCode.PERMISSION_DENIED, 0)
    assert f"uid {os.getuid()}" in error.message
    assert admitted == 0


def test_a_peer_whose_uid_is_allowed_is_served() -> None:
    replies, admitted = _serve_once({os.getuid()}, frame(GET_JOB))
    assert replies == [M.Ok(7)]
    assert admitted == 1
