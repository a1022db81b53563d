"""Slow and failing handshakes from one address, for the admission tests,
run as their own process.

    python -m tests.integration.apps.siege PORT SOURCE SLOWLORIS GUESSERS KEY_ID SECONDS

For SECONDS, from the loopback address SOURCE (127.0.0.2: Linux routes all
of 127/8 to the loopback interface) to 127.0.0.1:PORT:

- SLOWLORIS connections that never finish a hello: each sends its first
  byte and waits until the broker closes it, then connects again (after
  0.1 s if it was refused at once: it could not hold a place anyway);
- GUESSERS connections that try a wrong secret for KEY_ID, again and
  again: a hello, and the wrong proof if the broker answers with a
  challenge; each tries again as soon as it is answered.

Prints "started" once every slowloris connection has been opened once and,
at the end, one JSON line of counts: slowloris connections opened and how
many of them were refused at once (``too_many_connections``), guesses made,
how many were checked (got a challenge) and how many were refused before
any check (``auth_failed`` to the hello). Every connection ends by itself.
"""

import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter

from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder, encode_frame

REFUSED_PAUSE_S = 0.1
STEP_CAP_S = 10.0


def frame(message: M.Request) -> bytes:
    return encode_frame(M.encoder.encode(message))


async def first_reply(reader: asyncio.StreamReader) -> M.Reply | None:
    """The next reply, or None if the broker closes first."""
    decoder = FrameDecoder()
    while (body := decoder.next_frame()) is None:
        data = await reader.read(65536)
        if not data:
            return None
        decoder.feed(data)
    reply: M.Reply = M.reply_decoder.decode(body)
    return reply


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def slowloris(port: int, source: str, until_s: float, counts: Counter[str]) -> None:
    hello = frame(M.Hello(rid=1, version=1, worker_id="slow"))
    while time.monotonic() < until_s:
        try:
            reader, writer = await connect(port, source)
        except OSError:
            counts["slowloris_connect_errors"] += 1
            await asyncio.sleep(REFUSED_PAUSE_S)
            continue
        counts["slowloris"] += 1
        try:
            writer.write(hello[:1])
            reply = await asyncio.wait_for(first_reply(reader), STEP_CAP_S)
        except (OSError, TimeoutError):
            reply = None
        finally:
            writer.close()
        if isinstance(reply, M.Error) and reply.code == ErrorCode.TOO_MANY_CONNECTIONS:
            counts["slowloris_refused"] += 1
            await asyncio.sleep(REFUSED_PAUSE_S)


async def guess_once(port: int, source: str, key_id: str, counts: Counter[str]) -> None:
    reader, writer = await connect(port, source)
    try:
        writer.write(frame(M.Hello(1, 1, "guesser", key_id=key_id, nonce=os.urandom(32))))
        reply = await asyncio.wait_for(first_reply(reader), STEP_CAP_S)
        if isinstance(reply, M.Challenge):
            counts["checked"] += 1
            writer.write(frame(M.Auth(rid=2, proof=bytes(32))))
            await asyncio.wait_for(first_reply(reader), STEP_CAP_S)
        elif isinstance(reply, M.Error) and reply.code == ErrorCode.AUTH_FAILED:
            counts["refused_early"] += 1
        elif isinstance(reply, M.Error) and reply.code == ErrorCode.TOO_MANY_CONNECTIONS:
            counts["guess_no_place"] += 1
    finally:
        writer.close()


async def guesser(
    port: int, source: str, key_id: str, until_s: float, counts: Counter[str]
) -> None:
    while time.monotonic() < until_s:
        counts["guesses"] += 1
        try:
            await guess_once(port, source, key_id, counts)
        except (OSError, TimeoutError):
            counts["guess_errors"] += 1
            await asyncio.sleep(REFUSED_PAUSE_S)


async def siege(
    port: int, source: str, slow: int, guessers: int, key_id: str, seconds: float
) -> Counter[str]:
    counts: Counter[str] = Counter()
    until_s = time.monotonic() + seconds
    tasks = [asyncio.create_task(slowloris(port, source, until_s, counts)) for _ in range(slow)]
    while counts["slowloris"] + counts["slowloris_connect_errors"] < slow:
        await asyncio.sleep(0.01)
    print("started", flush=True)
    tasks += [
        asyncio.create_task(guesser(port, source, key_id, until_s, counts)) for _ in range(guessers)
    ]
    await asyncio.gather(*tasks)
    return counts


def main(argv: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port, source, slow, guessers, key_id, seconds = argv
    counts = asyncio.run(siege(int(port), source, int(slow), int(guessers), key_id, float(seconds)))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
