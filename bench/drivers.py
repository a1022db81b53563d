"""One small interface over the three brokers' clients, used by every workload.

A session is one connection, used the way that broker's users use it:
- Leash: ``client.Client`` (push, push_many, fetch, fetch_many, ack, ack_many).
- beanstalkd: ``greenstalk.Client`` one command at a time; batches go through
  ``bench.beanstalk_raw`` (pipelined), since greenstalk has no pipelining.
- Redis: a reliable queue through redis-py. Push is ``LPUSH q``. Fetch is
  ``LMOVE q processing:<worker> RIGHT LEFT`` plus a lease timestamp
  (``ZADD leases <deadline_ms> <job id>``), both in one Lua script so a fetch
  is one round trip and the lease is taken atomically; when ``q`` is empty and
  the fetch may wait, ``BLMOVE`` then ``ZADD``. Ack is ``LREM processing -1
  job`` (from the tail, where the oldest lease is) plus ``ZREM leases id`` in
  one pipeline (one round trip).

A job payload is 100 bytes: 16 hex digits of sequence number (the job's id
in Redis), 16 hex digits of a monotonic timestamp in ns (for latency), one
marker byte ("!" asks a worker to stop), filler.
"""

import os
import time
from typing import Any, Protocol

PAYLOAD_BYTES = 100
QUEUE = "bench"
LEASE_TTL_S = 60
_STOP, _JOB = b"!", b"."


def payload(seq: int, stamp_ns: int = 0, *, stop: bool = False) -> bytes:
    head = b"%016x%016x" % (seq, stamp_ns) + (_STOP if stop else _JOB)
    return head + b"x" * (PAYLOAD_BYTES - len(head))


def stamp_ns(body: bytes) -> int:
    return int(body[16:32], 16)


def is_stop(body: bytes) -> bool:
    return body[32:33] == _STOP


class Session(Protocol):
    def push(self, body: bytes) -> None: ...
    def push_batch(self, bodies: list[bytes]) -> None: ...
    def fetch(self, wait_s: float) -> Any: ...
    def ack(self, job: Any) -> None: ...
    def fetch_batch(self, count: int) -> list[Any]: ...
    def ack_batch(self, jobs: list[Any]) -> None: ...
    def body(self, job: Any) -> bytes: ...
    def close(self) -> None: ...


def connect(kind: str, host: str, port: int) -> Session:
    if kind == "leash":
        return LeashSession(host, port)
    if kind == "beanstalkd":
        return BeanstalkSession(host, port)
    if kind == "redis":
        return RedisSession(host, port)
    raise ValueError(f"unknown broker kind {kind!r}")


class LeashSession:
    def __init__(self, host: str, port: int) -> None:
        from leash.client import Client, job_spec

        self._job_spec = job_spec
        self.client = Client(host, port)

    def push(self, body: bytes) -> None:
        self.client.push("bench", body, queue=QUEUE)

    def push_batch(self, bodies: list[bytes]) -> None:
        self.client.push_many([self._job_spec("bench", b, queue=QUEUE) for b in bodies])

    def fetch(self, wait_s: float) -> Any:
        return self.client.fetch(QUEUE, wait_ms=int(wait_s * 1000))

    def ack(self, job: Any) -> None:
        self.client.ack(job)

    def fetch_batch(self, count: int) -> list[Any]:
        return self.client.fetch_many(QUEUE, count)

    def ack_batch(self, jobs: list[Any]) -> None:
        errors = [e for e in self.client.ack_many(jobs) if e is not None]
        if errors:
            raise errors[0]

    def body(self, job: Any) -> bytes:
        args: bytes = job.args
        return args

    def close(self) -> None:
        self.client.close()


class BeanstalkSession:
    def __init__(self, host: str, port: int) -> None:
        import greenstalk

        from bench.beanstalk_raw import PRIORITY, TTR_S, PipelinedBeanstalk

        self._timed_out = greenstalk.TimedOutError
        self._priority, self._ttr_s = PRIORITY, TTR_S
        self.client = greenstalk.Client((host, port), encoding=None)
        self._address = (host, port)
        self._raw: PipelinedBeanstalk | None = None

    def _pipelined(self) -> Any:
        if self._raw is None:
            from bench.beanstalk_raw import PipelinedBeanstalk

            self._raw = PipelinedBeanstalk(*self._address)
        return self._raw

    def push(self, body: bytes) -> None:
        self.client.put(body, priority=self._priority, ttr=self._ttr_s)

    def push_batch(self, bodies: list[bytes]) -> None:
        self._pipelined().put_many(bodies)

    def fetch(self, wait_s: float) -> Any:
        try:
            return self.client.reserve(timeout=int(wait_s))
        except self._timed_out:
            return None

    def ack(self, job: Any) -> None:
        self.client.delete(job)

    def fetch_batch(self, count: int) -> list[Any]:
        jobs: list[Any] = self._pipelined().reserve_many(count)
        return jobs

    def ack_batch(self, jobs: list[Any]) -> None:
        self._pipelined().delete_many([job_id for job_id, _ in jobs])

    def body(self, job: Any) -> bytes:
        if isinstance(job, tuple):
            raw: bytes = job[1]
            return raw
        greenstalk_body: bytes = job.body
        return greenstalk_body

    def close(self) -> None:
        self.client.close()
        if self._raw is not None:
            self._raw.close()


# KEYS: queue, processing list, leases zset. ARGV: count, lease deadline (ms).
_FETCH_LUA = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not job then break end
  redis.call('ZADD', KEYS[3], ARGV[2], string.sub(job, 1, 16))
  out[#out + 1] = job
end
return out
"""
_worker_number = 0


class RedisSession:
    def __init__(self, host: str, port: int) -> None:
        import redis

        global _worker_number
        _worker_number += 1
        self.client = redis.Redis(host=host, port=port)
        self.queue, self.leases = QUEUE, "leases"
        self.processing = f"processing:{os.getpid()}.{_worker_number}"
        self._fetch = self.client.register_script(_FETCH_LUA)
        self._keys = [self.queue, self.processing, self.leases]

    def _deadline_ms(self) -> int:
        return time.time_ns() // 1_000_000 + LEASE_TTL_S * 1000

    def push(self, body: bytes) -> None:
        self.client.lpush(self.queue, body)

    def push_batch(self, bodies: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for body in bodies:
            pipe.lpush(self.queue, body)
        pipe.execute()

    def fetch(self, wait_s: float) -> Any:
        jobs = self._fetch(keys=self._keys, args=[1, self._deadline_ms()])
        if jobs:
            return jobs[0]
        if wait_s <= 0:
            return None
        job: Any = self.client.blmove(
            self.queue, self.processing, max(1, int(wait_s)), "RIGHT", "LEFT"
        )
        if job is not None:
            lease: dict[bytes, int] = {job[:16]: self._deadline_ms()}
            self.client.zadd(self.leases, lease)
        return job

    def ack(self, job: Any) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.lrem(self.processing, -1, job)
        pipe.zrem(self.leases, job[:16])
        pipe.execute()

    def fetch_batch(self, count: int) -> list[Any]:
        jobs: list[Any] = self._fetch(keys=self._keys, args=[count, self._deadline_ms()])
        return jobs

    def ack_batch(self, jobs: list[Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for job in jobs:
            pipe.lrem(self.processing, -1, job)
            pipe.zrem(self.leases, job[:16])
        pipe.execute()

    def body(self, job: Any) -> bytes:
        raw: bytes = job
        return raw

    def close(self) -> None:
        self.client.close()
