"""Hostile connections for the load tests, run as their own process.

    python -m tests.integration.apps.flood garbage PORT WAVES [CONNECTIONS] [BYTES]
        WAVES waves, one a second, of CONNECTIONS (200) connections at once,
        each sending BYTES (64 KiB) of random bytes and waiting for the
        broker to close it
    python -m tests.integration.apps.flood trickle PORT CONNECTIONS [HELLO]
        CONNECTIONS connections that each send one byte per second (of a hello,
        after a real handshake unless HELLO is "pre-auth") until closed

Prints "started" when it begins and, at the end, one JSON line: how many
connections it made, how long each took to be closed (seconds from its first
byte) and, for garbage, when each wave began (``time.monotonic``, which
every process on the machine shares). Only 127.0.0.1; every connection ends by itself (the broker
closes it, or a 30 s cap).
"""

import asyncio
import json
import os
import resource
import sys
import time

from leash.protocol import messages as M
from leash.protocol.frames import encode_frame

CAP_S = 30.0
WAVE_EVERY_S = 1.0


def frame(message: M.Request) -> bytes:
    return encode_frame(M.encoder.encode(message))


async def until_closed(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass


async def garbage_one(port: int, size: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started_s = time.monotonic()
    try:
        writer.write(os.urandom(size))
        await asyncio.wait_for(until_closed(reader), CAP_S)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    return time.monotonic() - started_s


async def garbage(port: int, waves: int, connections: int, size: int) -> dict[str, list[float]]:
    closed_s: list[float] = []
    waves_s: list[float] = []
    started_s = time.monotonic()
    print("started", flush=True)
    for wave in range(waves):
        await asyncio.sleep(max(0.0, started_s + wave * WAVE_EVERY_S - time.monotonic()))
        waves_s.append(time.monotonic())
        closed_s += await asyncio.gather(*(garbage_one(port, size) for _ in range(connections)))
    return {"closed_s": closed_s, "waves_s": waves_s}


async def trickle_one(port: int, pre_auth: bool, index: int) -> float:
    connecting_s = time.monotonic()  # before the broker's handshake clock starts
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = frame(M.Hello(rid=1, version=1, worker_id=f"trickle-{index}"))
    if not pre_auth:  # a real handshake first; then a frame begun and fed byte by byte
        writer.write(body)
        length = int.from_bytes(await reader.readexactly(4), "big")
        welcome = M.reply_decoder.decode(await reader.readexactly(length))
        assert isinstance(welcome, M.Welcome), welcome
        body = frame(M.Push(rid=2, job=M.JobSpec(type="t")))

    async def feed() -> None:
        for byte in body:
            writer.write(bytes([byte]))
            await asyncio.sleep(1.0)

    started_s = connecting_s if pre_auth else time.monotonic()  # the frame clock: first byte
    feeder = asyncio.create_task(feed())
    try:
        await asyncio.wait_for(until_closed(reader), CAP_S)
    finally:
        feeder.cancel()
        writer.close()
    return time.monotonic() - started_s


async def trickle(port: int, connections: int, pre_auth: bool) -> dict[str, list[float]]:
    print("started", flush=True)
    closed_s = await asyncio.gather(*(trickle_one(port, pre_auth, i) for i in range(connections)))
    return {"closed_s": list(closed_s)}


def main(argv: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode, port = argv[0], int(argv[1])
    if mode == "garbage":
        connections = int(argv[3]) if len(argv) > 3 else 200
        size = int(argv[4]) if len(argv) > 4 else 64 * 1024
        result = asyncio.run(garbage(port, int(argv[2]), connections, size))
    else:
        pre_auth = len(argv) > 3 and argv[3] == "pre-auth"
        result = asyncio.run(trickle(port, int(argv[2]), pre_auth))
    print(json.dumps({"connections": len(result["closed_s"]), **result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
