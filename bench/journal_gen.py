"""Journals for the journal benchmarks: written fast, valid for the core.

``write_lifecycles`` writes a broker's life in records: a boot, a worker
process, then for every job a push, and for most of them a lease and an
ack (``live_every``: every Nth job is left ready), one record each, the mix
a busy broker journals. ``write_backlog`` writes ``jobs`` ready jobs in
pushes of ``per_record`` jobs: a big state from few records. Both frame
``per_frame`` records together, as a broker frames the records of a loop
turn (format.py): the default, as many as fit in a frame, is a busy
broker's journal, 1 an idle one's (a request a turn).
"""

import os

import msgspec

from leash.broker.core import records as R
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.log import Journal
from leash.protocol.messages import LeaseRef

ARGS = msgspec.Raw(msgspec.msgpack.encode({"to": "ada@example.com", "n": 1}))
START_MS = 1_700_000_000_000
WORKER = "bench-worker"
INFO = R.ProcessInfo("bench", 1, [], 8, "bench")
WRITE_RECORDS = 10_000  # records encoded per write


def _new_job(number: int) -> R.NewJob:
    return R.NewJob(
        f"job-{number:09d}", "default", "send", ARGS, 5, 25, 1_800_000, None, START_MS, None
    )


def _open(directory: str) -> Journal:
    os.makedirs(directory, exist_ok=True)
    journal = Journal(directory, OsDisk(), segment_bytes=1 << 62)
    journal.open(1, None, 1)
    return journal


def _flush(journal: Journal, records: list[R.Record], per_frame: int) -> None:
    if records:
        data = b"".join(
            journal.encode(records[start : start + per_frame])
            for start in range(0, len(records), per_frame)
        )
        journal.append(data, journal.next_seq - 1)
        records.clear()


def write_lifecycles(
    directory: str, record_count: int, live_every: int = 4, per_frame: int = WRITE_RECORDS
) -> int:
    """About ``record_count`` records; the number of jobs left."""
    journal = _open(directory)
    pending: list[R.Record] = [
        R.Booted(1, START_MS, START_MS + 15_000),
        R.ProcessSeen(WORKER, INFO, START_MS, START_MS + 15_000),
    ]
    counter, number, live = 1, 0, 0
    while journal.next_seq + len(pending) <= record_count:
        job = _new_job(number)
        pending.append(R.JobsPushed([job], counter))
        if number % live_every == 0:
            live += 1
        else:
            token = (1 << 32) | counter
            counter += 1
            grant = R.Grant(job.id, token, START_MS + 1_800_000)
            pending.append(R.JobsLeased(WORKER, [grant], counter, START_MS))
            pending.append(R.JobsAcked([LeaseRef(job.id, token)]))
        number += 1
        if len(pending) >= WRITE_RECORDS:
            _flush(journal, pending, per_frame)
    _flush(journal, pending, per_frame)
    journal.sync()
    journal.close()
    return live


def write_backlog(
    directory: str, jobs: int, per_record: int = 1000, per_frame: int = WRITE_RECORDS
) -> None:
    journal = _open(directory)
    pending: list[R.Record] = [R.Booted(1, START_MS, START_MS + 15_000)]
    for start in range(0, jobs, per_record):
        batch = [_new_job(n) for n in range(start, min(jobs, start + per_record))]
        pending.append(R.JobsPushed(batch, 1))
        if len(pending) >= 50:
            _flush(journal, pending, per_frame)
    _flush(journal, pending, per_frame)
    journal.sync()
    journal.close()
