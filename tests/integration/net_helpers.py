"""Helpers for tests that speak to a real broker below the client library.

``Raw`` is one blocking socket with a frame decoder: send any bytes or
message, read replies, see when the broker closes. ``key_file`` writes a key
file as ``leash keygen`` would. ``rss_bytes`` reads a process's resident
memory from /proc. Everything talks to 127.0.0.1 only and is bounded in time.
"""

import os
import resource
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from leash.protocol import PROTOCOL_VERSION
from leash.protocol import auth as A
from leash.protocol import messages as M
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.limits import AUTH_NONCE_BYTES, FRAME_CEILING_BYTES

WAIT_S = 10.0


def raise_fd_limit() -> int:
    """Raise this process's soft open-file limit to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65_536)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def key_file(path: Path, *keys: A.Key) -> str:
    path.write_text("\n".join(A.key_file_text(key) for key in keys))
    path.chmod(0o600)
    return str(path)


def new_key(key_id: str) -> A.Key:
    return A.Key(key_id, secrets.token_bytes(32))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def frame(message: M.Request) -> bytes:
    return encode_frame(M.encoder.encode(message))


class Raw:
    """One connection to the broker, frame by frame."""

    def __init__(self, port: int, timeout_s: float = WAIT_S) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.decoder = FrameDecoder(FRAME_CEILING_BYTES)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes | M.Request) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else frame(data))

    def reply(self) -> M.Reply:
        """The next reply; AssertionError if the connection ends first."""
        deadline_s = time.monotonic() + self.timeout_s
        while (body := self.decoder.next_frame()) is None:
            self.sock.settimeout(max(0.01, deadline_s - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "the broker closed the connection"
            self.decoder.feed(data)
        reply: M.Reply = M.reply_decoder.decode(body)
        return reply

    def error(self) -> M.Error:
        reply = self.reply()
        assert isinstance(reply, M.Error), reply
        return reply

    def closed(self, timeout_s: float | None = None) -> bool:
        """Whether the broker closes the connection within ``timeout_s`` (reading all)."""
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        return closed_within(self.sock, wait_s, self.decoder.feed)

    def hello(self, worker_id: str = "raw-worker", key: A.Key | None = None) -> M.Welcome:
        """The whole handshake (authenticated when ``key`` is given)."""
        nonce = secrets.token_bytes(AUTH_NONCE_BYTES) if key is not None else b""
        hello = M.Hello(
            rid=1,
            version=PROTOCOL_VERSION,
            worker_id=worker_id,
            key_id=key.id if key is not None else "",
            nonce=nonce,
        )
        self.send(hello)
        reply = self.reply()
        if key is not None:
            assert isinstance(reply, M.Challenge), reply
            transcript = A.transcript(PROTOCOL_VERSION, key.id, worker_id, nonce, reply.nonce)
            assert A.proof_matches(A.server_proof(key.secret, transcript), reply.proof)
            self.send(M.Auth(rid=2, proof=A.client_proof(key.secret, transcript)))
            reply = self.reply()
        assert isinstance(reply, M.Welcome), reply
        return reply


def closed_within(sock: socket.socket, timeout_s: float, take: Callable[[bytes], None]) -> bool:
    """Whether the peer closes ``sock`` within ``timeout_s``; what it sends
    meanwhile goes to ``take``."""
    deadline_s = time.monotonic() + timeout_s
    while (remaining_s := deadline_s - time.monotonic()) > 0:
        sock.settimeout(remaining_s)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
        take(data)
    return False


def send_until_aborted(
    sock: socket.socket, data: bytes, pid: int, limit_s: float
) -> tuple[float, int]:
    """Send ``data`` again and again without reading a reply, until the
    broker aborts the connection: after how long (0.0: not within
    ``limit_s``) and the broker's peak RSS meanwhile."""
    started_s, peak = time.monotonic(), rss_bytes(pid)
    sock.settimeout(0.1)
    while time.monotonic() - started_s < limit_s:
        try:
            sock.sendall(data)
        except TimeoutError:
            pass  # the broker stopped reading us
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started_s, peak
        peak = max(peak, rss_bytes(pid))
    return 0.0, peak


def scratch_dir(base: "os.PathLike[str]", name: str) -> Path:
    path = Path(base) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
