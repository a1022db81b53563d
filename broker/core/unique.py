"""Unique jobs: the uniqueness keys, who holds them, and for how long.

Theory of operation. A push may carry a key (``unique_key``, or
``unique``: derived from queue, type and args by ``derived_key``). A key is
held in ``state.unique`` by one ``UniqueLock``:
- while its job lives and is not dead (waiting, scheduled, retrying,
  leased), the lock names the job, ``until_ms`` 0;
- after the job succeeds (its ack), for the job's ``unique_for_ms`` if it
  has one: the lock names the acked job until ``until_ms``, an entry of the
  heap ``state.unique_windows`` (lazy, as state.py's heaps are);
- nothing else: the record that ends the job (ack, death, delete, a
  Faktory FLUSH or MUTATE, a dead job trimmed) frees the key in the same
  step, so no crash can leave a key held without its job. A dead job holds
  no key: a death frees it and the job forgets it, so a requeued job runs
  without one.
A window that passed frees its key through the tick (``UniqueWindowsEnded``);
until then a push already treats the key as free (``holder``). Only apply
changes the locks (``taken``, ``job_ended``, ``windows_ended``); the
pushes read them. The number of keys held is bounded by
``CoreConfig.unique_keys_max``: a push that would hold more is refused.
"""

import hashlib
import heapq
from typing import Final

import msgspec
from msgspec import Raw

from leash.broker.core import records as R
from leash.broker.core.state import (
    State,
    UniqueLock,
    due_entries,
    live_unique_window,
    purge_unique_windows,
)
from leash.protocol import messages as M

DERIVED_PREFIX: Final = "auto:"  # a derived key: this, then 32 hex digits
SUCCEEDED: Final = "succeeded"  # a duplicate's state while its key's window runs

_canonical = msgspec.msgpack.Encoder(order="sorted")


def derived_key(queue: str, job_type: str, args: Raw) -> str:
    """The key ``unique: true`` asks for: the first 128 bits of the SHA-256
    of the msgpack array [queue, type, args], args re-encoded with map keys
    sorted (so the producer's key order does not matter). Args msgpack
    cannot decode to plain data (a map keyed by arrays) are hashed as sent."""
    try:
        plain = msgspec.msgpack.decode(args)
        encoded = _canonical.encode([queue, job_type, plain])
    except (msgspec.DecodeError, TypeError):
        encoded = _canonical.encode([queue, job_type, Raw(bytes(args))])
    return DERIVED_PREFIX + hashlib.sha256(encoded).hexdigest()[:32]


def key_of(spec: M.JobSpec) -> str | None:
    if spec.unique_key is not None:
        return spec.unique_key
    if spec.unique:
        return derived_key(spec.queue, spec.type, spec.args)
    return None  # no key: an ordinary job


def holder(state: State, key: str, now_ms: int) -> M.PushResult | None:
    """The push result of a push whose key is held (None: the key is free)."""
    lock = state.unique.get(key)
    if lock is None:
        return None
    if not lock.until_ms:
        job = state.jobs[lock.job_id]
        return M.PushResult(job.id, False, job.state, True)
    if lock.until_ms > now_ms:
        return M.PushResult(lock.job_id, False, SUCCEEDED, True)
    return None  # its window passed; the tick frees it


def due_windows(state: State, now_ms: int, limit: int) -> list[str]:
    """The keys whose window passed, at most ``limit``."""
    keys: dict[str, None] = {}
    for entry in due_entries(state.unique_windows, now_ms, limit):
        if len(keys) >= limit:
            break
        if live_unique_window(state, entry):
            keys[entry[1]] = None
    return list(keys)


# --- apply's ----------------------------------------------------------------


def taken(state: State, job_id: str, key: str, at_ms: int) -> None:
    """A job was created with a key (``at_ms``): it holds the key (a window
    that had passed, not yet freed by a tick, ends)."""
    lock = state.unique.get(key)
    assert lock is None or 0 < lock.until_ms <= at_ms, (key, lock, job_id)
    state.unique[key] = UniqueLock(job_id)
    if lock is not None:  # its window's entry is stale now, maybe at the front
        purge_unique_windows(state)


def job_ended(state: State, job_id: str, key: str, window_ms: int, at_ms: int) -> None:
    """The job holding ``key`` ended: the key is free, or (``window_ms``,
    after a success) held until ``at_ms + window_ms``."""
    lock = state.unique.get(key)
    assert lock is not None and lock.job_id == job_id and not lock.until_ms, (key, lock, job_id)
    if window_ms > 0 and at_ms > 0:
        until_ms = at_ms + window_ms
        state.unique[key] = UniqueLock(job_id, until_ms)
        heapq.heappush(state.unique_windows, (until_ms, key))
    else:
        del state.unique[key]


def windows_ended(state: State, record: R.UniqueWindowsEnded) -> None:
    for key in record.keys:
        lock = state.unique.pop(key)
        assert 0 < lock.until_ms <= record.at_ms, (key, lock)
