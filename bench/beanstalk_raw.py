"""A pipelined beanstalk protocol driver: many commands per write, replies read in order.

greenstalk sends one command and waits for its reply; to compare batched
pushes and drains fairly, the beanstalkd "batched" cells write a whole batch
of commands in one ``sendall`` and then read the batch of replies.

The beanstalk protocol (as served by beanstalkd 1.x) is text over TCP. Each
command is one line ending in ``\\r\\n``; a command with a body sends the body
and another ``\\r\\n`` after the line. The server answers every command with
one line, in order, so replies to pipelined commands come back in the order
the commands were sent. The commands used here:

    put <pri> <delay> <ttr> <bytes>\\r\\n<body>\\r\\n
        -> INSERTED <id>\\r\\n            (or BURIED <id>, JOB_TOO_BIG, DRAINING, ...)
    reserve-with-timeout <seconds>\\r\\n
        -> RESERVED <id> <bytes>\\r\\n<body>\\r\\n   (or TIMED_OUT, DEADLINE_SOON)
    delete <id>\\r\\n
        -> DELETED\\r\\n                  (or NOT_FOUND)

``pri`` is 0 (most urgent) .. 2**32-1, ``delay`` and ``ttr`` (time to run,
the lease) are seconds. Jobs go to the tube ``default`` unless ``use`` says
otherwise; reserve watches ``default``. A reserved job that is not deleted
within ``ttr`` goes back to the ready queue, like an expired lease.
"""

import socket

from bench.servers import BenchError

PRIORITY = 1024  # greenstalk's default
TTR_S = 60  # the lease a reserve takes, in seconds


class PipelinedBeanstalk:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def put_many(self, bodies: list[bytes]) -> list[int]:
        """Put every body with one write; the ids, in order."""
        out = bytearray()
        for body in bodies:
            out += b"put %d 0 %d %d\r\n" % (PRIORITY, TTR_S, len(body))
            out += body
            out += b"\r\n"
        self.sock.sendall(out)
        ids = []
        for _ in bodies:
            line = self.reader.readline()
            if not line.startswith(b"INSERTED "):
                raise BenchError(f"beanstalkd put: {line!r}")
            ids.append(int(line[9:]))
        return ids

    def reserve_many(self, count: int) -> list[tuple[int, bytes]]:
        """Up to ``count`` ready jobs (id, body), without waiting for more to arrive."""
        self.sock.sendall(b"reserve-with-timeout 0\r\n" * count)
        jobs = []
        for _ in range(count):
            line = self.reader.readline()
            if line.startswith(b"RESERVED "):
                _, job_id, size = line.split()
                body = self.reader.read(int(size) + 2)[:-2]
                jobs.append((int(job_id), body))
            elif line != b"TIMED_OUT\r\n":
                raise BenchError(f"beanstalkd reserve: {line!r}")
        return jobs

    def delete_many(self, ids: list[int]) -> None:
        self.sock.sendall(b"".join(b"delete %d\r\n" % job_id for job_id in ids))
        for _ in ids:
            line = self.reader.readline()
            if line != b"DELETED\r\n":
                raise BenchError(f"beanstalkd delete: {line!r}")
