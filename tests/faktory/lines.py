"""A Faktory-protocol connection below any client library, for the tests.

``Lines`` is one blocking socket to 127.0.0.1: send any bytes or command
line, read RESP replies one at a time (``+text``, ``-error``, ``$`` bulk or
``None`` for ``$-1``), see when the broker closes. Bounded in time.
"""

import json
import socket
import ssl
from typing import Any, NamedTuple

from leash.protocol import faktory as F
from tests.integration.net_helpers import closed_within

WAIT_S = 10.0


class Reply(NamedTuple):
    kind: str  # "+", "-" or "$"
    text: str  # a simple string or error's text; a bulk string's data decoded
    data: bytes | None  # a bulk string's bytes (None for $-1)

    @property
    def json(self) -> Any:
        assert self.kind == "$" and self.data is not None, self
        return json.loads(self.data)


class Lines:
    def __init__(
        self, port: int, timeout_s: float = WAIT_S, tls: ssl.SSLContext | None = None
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.buffer = b""
        self.timeout_s = timeout_s

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, line: bytes | str, end: bytes = b"\r\n") -> None:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + end)

    def command(self, verb: str, argument: Any = None) -> Reply:
        """Send one command (a JSON argument is encoded) and read its reply."""
        if argument is None:
            self.send(verb)
        elif isinstance(argument, str):
            self.send(f"{verb} {argument}")
        else:
            self.send(f"{verb} {json.dumps(argument)}")
        return self.reply()

    def ok(self, verb: str, argument: Any = None) -> None:
        reply = self.command(verb, argument)
        assert reply == Reply("+", "OK", None), reply

    def reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1].decode(), line[1:]
        if kind != "$":
            return Reply(kind, rest.decode(), None)
        size = int(rest)
        if size < 0:
            return Reply("$", "", None)
        while len(self.buffer) < size + 2:
            self._read()
        data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
        return Reply("$", data.decode(), data)

    def error(self) -> str:
        reply = self.reply()
        assert reply.kind == "-", reply
        return reply.text

    def hello(self, wid: str = "", password: str | None = None, **fields: Any) -> None:
        """Read HI, send HELLO (with the password hash if a password is asked for)."""
        greeting = self.reply()
        assert greeting.kind == "+" and greeting.text.startswith("HI "), greeting
        asked = json.loads(greeting.text[3:])
        hello: dict[str, Any] = {"v": 2, "hostname": "test", "pid": 1, **fields}
        if wid:
            hello["wid"] = wid
            hello.setdefault("labels", ["test"])
        if "s" in asked:
            assert password is not None, "the broker asks for a password"
            hello["pwdhash"] = F.password_hash(password, asked["s"], asked["i"])
        self.ok("HELLO", hello)

    def closed(self, timeout_s: float | None = None) -> bool:
        """Whether the broker closes the connection within ``timeout_s`` (reading all)."""
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        return closed_within(self.sock, wait_s, self._take)

    def _take(self, data: bytes) -> None:
        self.buffer += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._read()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _read(self) -> None:
        self.sock.settimeout(self.timeout_s)
        data = self.sock.recv(65536)
        assert data, f"the broker closed the connection (unread: {self.buffer!r})"
        self.buffer += data
