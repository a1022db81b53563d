"""Message types: round trips, bounds, and what a body that does not decode is answered.

The bounds tested here are the ones docs/protocol.md sections 5, 6 and 10 state.
Requests of the admin socket (protocol.admin) are tested alongside those of
the TCP port, each through its own decoder (``decode_request`` below picks
it by op).
"""

import copy
import re
from typing import Any, get_args

import msgspec
import pytest

import leash.protocol.messages as M
from leash.protocol import PROTOCOL_VERSION
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol.errors import ErrorCode
from leash.protocol.messages import (
    EMPTY_ARGS,
    Ack,
    AckedMany,
    AckMany,
    BadRequest,
    Delivery,
    Error,
    ErrorInfo,
    Extend,
    Extended,
    Fail,
    Failed,
    Fetch,
    GetJob,
    GetResult,
    Hello,
    ItemResult,
    JobInfo,
    JobResult,
    Jobs,
    JobSpec,
    JobView,
    LeaseRef,
    Ok,
    Push,
    Pushed,
    PushedMany,
    PushMany,
    PushResult,
    Release,
    Reply,
    Request,
    Welcome,
    encoder,
    reply_decoder,
)

ADMIN_ONLY_OPS = A.ADMIN_OPS - M.REQUEST_OPS


def decode_request(body: bytes) -> Any:
    """The request on the TCP port, or on the admin socket for an admin op."""
    try:
        return M.decode_request(body)
    except BadRequest as bad:
        if bad.op not in ADMIN_ONLY_OPS:
            raise
    return M.decode_with(A.admin_request_decoder, A.ADMIN_OPS, body)


def decode_reply(body: bytes) -> Any:
    try:
        return reply_decoder.decode(body)
    except msgspec.ValidationError:
        return A.admin_reply_decoder.decode(body)


ARGS = msgspec.Raw(msgspec.msgpack.encode({"to": "ada@example.com", "n": [1, 2.5, None]}))
T0_MS = 1_767_225_600_000

FULL_SPEC = JobSpec(
    type="send",
    queue="mail.high",
    args=ARGS,
    id="order-7",
    priority=9,
    run_at_ms=T0_MS,
    max_attempts=3,
    lease_ttl_ms=60_000,
    retry_base_ms=500,
)

REQUESTS: list[Any] = [
    Hello(rid=1, version=1, worker_id="w-1"),
    Hello(
        rid=1,
        version=1,
        worker_id="w-1",
        client="leash-py/0.1",
        hostname="build-7",
        pid=4242,
        labels=["gpu", "eu"],
        concurrency=8,
    ),
    Push(rid=2, job=JobSpec(type="send")),
    Push(rid=2, job=FULL_SPEC),
    Push(rid=2, job=JobSpec(type="send", delay_ms=5_000)),
    PushMany(rid=3, jobs=[FULL_SPEC, JobSpec(type="other")]),
    Fetch(rid=4, queues=["a"]),
    Fetch(rid=4, queues=["a", "b"], count=10, wait_ms=5_000),
    Ack(rid=5, id="order-7", token=17),
    AckMany(rid=6, leases=[LeaseRef("order-7", 17), LeaseRef("_x1", 2**63 - 1)]),
    AckMany(rid=6, leases=[LeaseRef("order-7", 17), LeaseRef("_x1", 2)], results=[None, b"\x01"]),
    Ack(rid=5, id="order-7", token=17, result=b"\xa2ok"),
    Fail(rid=7, id="order-7", token=17),
    Fail(rid=7, id="order-7", token=17, error=ErrorInfo("ValueError", "bad", "trace")),
    Extend(rid=8, id="order-7", token=17),
    Extend(rid=8, id="order-7", token=17, lease_ttl_ms=90_000),
    M.Progress(rid=8, id="order-7", token=17, percent=40, message="4 of 10 files"),
    M.Cancel(rid=9, of=4),
    Push(rid=2, job=JobSpec(type="send", time_limit_ms=60_000)),
    Release(rid=9, id="order-7", token=17),
    Fail(rid=7, id="order-7", token=17, retry_in_ms=30_000),
    Fail(rid=7, id="order-7", token=17, dead=True),
    Release(rid=9, id="order-7", token=17, delay_ms=60_000),
    A.Pause(rid=10, queue="mail"),
    A.Resume(rid=11, queue="mail"),
    A.SetQueueLimits(rid=11, queue="mail", concurrency=8, per_key=2),
    A.SetQueueLimits(rid=11, queue="mail", rate=100, rate_interval_ms=60_000),
    GetJob(rid=12, id="order-7"),
    GetResult(rid=12, id="order-7"),
    GetResult(rid=12, id="order-7", wait_ms=5_000),
    M.Beat(rid=13),
    A.Control(rid=14, worker_id="host-1-ab", state="quiet"),
    A.Control(rid=15, worker_id="host-1-ab", state="terminate"),
    A.ListProcesses(rid=16),
    A.GetBusy(rid=17),
    A.GetStats(rid=18),
    A.ListQueues(rid=19),
    A.ListJobs(rid=20, kind="dead"),
    A.ListJobs(
        rid=21,
        kind="retrying",
        filter=A.JobFilter(queue="mail", type="send", error="Timeout"),
        cursor="1767225600000:order-7",
        limit=L.ADMIN_PAGE_MAX,
    ),
    Push(rid=18, job=JobSpec(type="part", batch="b-1"), lease=LeaseRef("split-1", 17)),
    PushMany(rid=19, jobs=[JobSpec(type="part", batch="b-1")], lease=LeaseRef("s", 2)),
    M.CreateBatch(rid=20),
    M.CreateBatch(
        rid=21,
        id="b-1",
        description="import of file 7",
        parent="b-0",
        callbacks=M.BatchCallbacks(
            success=JobSpec(type="done", args=ARGS), death=JobSpec(type="alert")
        ),
        jobs=[FULL_SPEC, JobSpec(type="other")],
        commit=True,
        lease=LeaseRef("split-1", 17),
    ),
    M.CommitBatch(rid=22, id="b-1"),
    M.GetBatchStatus(rid=23, id="b-1"),
    M.GetBatchStatus(rid=23, id="_b1.2", limit=0),
    A.DeleteBatch(rid=24, id="b-1"),
    A.DeleteJob(rid=25, id="order-7"),
    A.KillJob(rid=26, id="order-7"),
    A.RequeueJob(rid=27, id="order-7"),
    A.Fsck(rid=28),
    A.RequeueJobs(rid=29, kind="dead"),
    A.RequeueJobs(rid=30, kind="retrying", filter=A.JobFilter(type="send"), cursor="1:a", limit=5),
    A.ListBatches(rid=31),
    A.ListBatches(rid=32, state="finished", cursor="3:b-1", limit=L.ADMIN_PAGE_MAX),
    A.Compact(rid=33),
    A.DeleteJobs(rid=34, kind="ready", filter=A.JobFilter(queue="mail", min_age_ms=60_000)),
    A.KillJobs(rid=35, kind="leased", cursor="1767225600000:4294967297", limit=250),
    A.GetHistory(rid=36, seconds=600),
    A.ListJobs(rid=37, kind="ready", cursor="mail/5/job-7", limit=100),
    A.AddSchedule(
        rid=38,
        name="nightly",
        job=JobSpec(type="report", queue="mail", args=ARGS),
        cron="30 2 * * *",
        tz="Europe/Berlin",
        missed="last",
    ),
    A.AddSchedule(rid=39, name="beat", job=JobSpec(type="ping"), every_ms=60_000),
    A.RemoveSchedule(rid=40, name="nightly"),
    A.PauseSchedule(rid=41, name="beat"),
    A.ResumeSchedule(rid=42, name="beat"),
    A.ListSchedules(rid=43),
    Hello(rid=1, version=1, worker_id="w-1", key_id="k-2026", nonce=b"\x01" * 32),
    M.Auth(rid=2, proof=b"\x02" * L.AUTH_PROOF_BYTES),
]

DELIVERY = Delivery(
    id="order-7",
    queue="mail",
    type="send",
    args=ARGS,
    token=17,
    deadline_ms=T0_MS + 60_000,
    attempt=2,
    max_attempts=3,
    lease_ttl_ms=60_000,
    priority=9,
    created_ms=T0_MS,
)

REPLIES: list[Any] = [
    Welcome(rid=1, version=1, server="leash/0.1.0", epoch=3, max_frame_bytes=L.FRAME_MAX_BYTES),
    Pushed(rid=2, id="order-7", created=True, state="ready"),
    Pushed(rid=2, id="_k3", created=False, state="dead"),
    PushedMany(
        rid=3, results=[PushResult("a", True, "scheduled"), PushResult("b", False, "leased")]
    ),
    Jobs(rid=4, jobs=[]),
    Jobs(rid=4, jobs=[DELIVERY, DELIVERY]),
    Ok(rid=5),
    AckedMany(
        rid=6,
        results=[ItemResult("a"), ItemResult("b", ErrorCode.STALE_LEASE, "token 3 is stale")],
    ),
    Failed(rid=7, state="retrying", retry_at_ms=T0_MS + 16_000),
    Failed(rid=7, state="dead"),
    Extended(rid=8, deadline_ms=T0_MS + 90_000),
    JobResult(rid=12, id="order-7", state="succeeded", value=b"\x91\x01"),
    JobResult(rid=12, id="order-7", state="dead", error=ErrorInfo("ValueError", "bad")),
    JobResult(rid=12, id="order-7", state="leased"),
    JobInfo(
        rid=12,
        job=JobView(
            id="order-7",
            queue="mail",
            type="send",
            args=ARGS,
            state="ready",
            priority=5,
            attempt=0,
            max_attempts=25,
            lease_ttl_ms=1_800_000,
            created_ms=T0_MS,
        ),
    ),
    JobInfo(
        rid=12,
        job=JobView(
            id="order-7",
            queue="mail",
            type="send",
            args=ARGS,
            state="leased",
            priority=5,
            attempt=1,
            max_attempts=25,
            lease_ttl_ms=1_800_000,
            created_ms=T0_MS,
            run_at_ms=T0_MS,
            retry_base_ms=100,
            last_error=ErrorInfo("LeaseExpired", "lease expired"),
            owner="w-1",
            token=18,
            deadline_ms=T0_MS + 1_800_000,
            died_ms=T0_MS + 5,
        ),
    ),
    Welcome(
        rid=2,
        version=1,
        server="leash/0.1.0",
        epoch=3,
        max_frame_bytes=L.FRAME_MAX_BYTES,
        idle_timeout_ms=15_000,
        max_in_flight=1_024,
        max_args_bytes=L.FRAME_MAX_BYTES,
    ),
    M.Challenge(rid=1, nonce=b"\x03" * 32, proof=b"\x04" * 32),
    Error(rid=13, code=ErrorCode.NOT_FOUND, message="no job 'x'"),
    Error(rid=0, code=ErrorCode.BAD_REQUEST, message="bad", path="$.job.priority"),
    M.ProcessState(rid=14, state="quiet"),
    A.Processes(
        rid=15,
        processes=[
            A.ProcessView(
                worker_id="host-1-ab",
                state="ok",
                hostname="host",
                pid=1,
                labels=["eu"],
                concurrency=4,
                client="leash-py/0.1.0",
                registered_ms=T0_MS,
                last_seen_ms=T0_MS + 1,
                beat_deadline_ms=T0_MS + 15_001,
                in_flight=2,
                grace_deadline_ms=T0_MS + 2_000,
            )
        ],
    ),
    A.Busy(
        rid=16,
        processes=[
            A.BusyProcess("host-1-ab", [A.BusyJob("j", "send", "mail", 1, T0_MS, T0_MS + 9)])
        ],
    ),
    A.Stats(
        rid=17,
        version="leash/0.1.0",
        started_ms=T0_MS,
        uptime_ms=5,
        epoch=3,
        jobs={"ready": 1},
        totals={"pushed": 2},
        connections=1,
        processes=1,
        queues=1,
        journal=A.JournalStats(1, 1, 0, 9, 2, 0.5, 1.5, 2, 4.5, 0.25, 8),
        limits={"max_frame_bytes": L.FRAME_MAX_BYTES},
    ),
    A.Queues(rid=18, queues=[A.QueueView("mail", 1, 2, 3, 4, True, 250)]),
    A.JobPage(rid=19, jobs=[], next="", scanned=0),
    M.BatchCreated(rid=17, id="b-1", created=True, state="open", results=[]),
    M.BatchCreated(
        rid=17,
        id="_b1.2",
        created=False,
        state="finished",
        results=[PushResult("a", True, "ready")],
    ),
    M.BatchInfo(
        rid=18,
        batch=M.BatchView(
            id="b-1",
            state="committed",
            description="",
            created_ms=T0_MS,
            expires_ms=T0_MS + 1,
            total=3,
            pending=2,
            failures=1,
            dead=0,
            deleted=0,
            children=1,
            children_pending=1,
            succeeded=False,
            callbacks=["complete", "success"],
            fired=[M.CallbackFired("complete", T0_MS, "_cb:b-1:100000001:complete")],
            members=[
                M.MemberView("a", "pending", "leased", "w-1"),
                M.MemberView("b", "retrying", "retrying"),
            ],
            more_members=False,
            pending_children=[M.ChildView("b-2", "running")],
            parent="b-0",
            committed_ms=T0_MS,
            complete_ms=T0_MS,
            died_ms=T0_MS,
        ),
    ),
    A.FsckReport(rid=19, problems=[], more=False, jobs=3, batches=1),
    A.FsckReport(
        rid=19, problems=["job x is ready but missing from its index"], more=True, jobs=3, batches=0
    ),
    A.Requeued(rid=20, ids=["a", "b"], next="", scanned=2),
    A.JobsChanged(rid=23, ids=["a"], next="0:1767225600000:a", scanned=1),
    A.History(
        rid=24, end_ms=1_767_225_600_000, pushed=[3, 4], acked=[2, 5], failed=[0, 1], dead=[0, 0]
    ),
    A.BatchPage(rid=21, batches=[], next="2:b-0", scanned=1),
    A.Compacted(rid=22, through_seq=41_210, journal_bytes=1_843_211),
    A.Schedules(
        rid=25,
        schedules=[
            A.ScheduleView(
                name="nightly",
                queue="mail",
                type="report",
                args=ARGS,
                missed="last",
                next_ms=T0_MS + 3_600_000,
                added_ms=T0_MS,
                cron="30 2 * * *",
                tz="Europe/Berlin",
                last_tick_ms=T0_MS - 82_800_000,
                fires=4,
            )
        ],
    ),
]

BASES: dict[str, dict[str, Any]] = {
    "hello": {"op": "hello", "rid": 1, "version": 1, "worker_id": "w"},
    "hello+labels": {"op": "hello", "rid": 1, "version": 1, "worker_id": "w", "labels": ["x"]},
    "push": {"op": "push", "rid": 1, "job": {"type": "t"}},
    "push+lease": {"op": "push", "rid": 1, "job": {"type": "t"}, "lease": ["j", 1]},
    "push_many": {"op": "push_many", "rid": 1, "jobs": [{"type": "t"}]},
    "fetch": {"op": "fetch", "rid": 1, "queues": ["q"]},
    "ack": {"op": "ack", "rid": 1, "id": "j", "token": 1},
    "ack_many": {"op": "ack_many", "rid": 1, "leases": [["j", 1]]},
    "fail": {"op": "fail", "rid": 1, "id": "j", "token": 1, "error": {}},
    "extend": {"op": "extend", "rid": 1, "id": "j", "token": 1},
    "progress": {"op": "progress", "rid": 1, "id": "j", "token": 1, "percent": 0},
    "release": {"op": "release", "rid": 1, "id": "j", "token": 1},
    "pause": {"op": "pause", "rid": 1, "queue": "q"},
    "resume": {"op": "resume", "rid": 1, "queue": "q"},
    "set_queue_limits": {"op": "set_queue_limits", "rid": 1, "queue": "q"},
    "get_job": {"op": "get_job", "rid": 1, "id": "j"},
    "beat": {"op": "beat", "rid": 1},
    "control": {"op": "control", "rid": 1, "worker_id": "w", "state": "quiet"},
    "processes": {"op": "processes", "rid": 1},
    "busy": {"op": "busy", "rid": 1},
    "stats": {"op": "stats", "rid": 1},
    "queues": {"op": "queues", "rid": 1},
    "list_jobs": {"op": "list_jobs", "rid": 1, "kind": "dead"},
    "list_jobs+filter": {"op": "list_jobs", "rid": 1, "kind": "dead", "filter": {}},
    "create_batch": {"op": "create_batch", "rid": 1},
    "create_batch+all": {
        "op": "create_batch",
        "rid": 1,
        "jobs": [{"type": "t"}],
        "callbacks": {"success": {"type": "t"}},
        "lease": ["j", 1],
    },
    "commit_batch": {"op": "commit_batch", "rid": 1, "id": "b"},
    "batch_status": {"op": "batch_status", "rid": 1, "id": "b"},
    "delete_batch": {"op": "delete_batch", "rid": 1, "id": "b"},
    "delete_job": {"op": "delete_job", "rid": 1, "id": "j"},
    "kill_job": {"op": "kill_job", "rid": 1, "id": "j"},
    "requeue_job": {"op": "requeue_job", "rid": 1, "id": "j"},
    "fsck": {"op": "fsck", "rid": 1},
    "requeue_jobs": {"op": "requeue_jobs", "rid": 1, "kind": "dead"},
    "delete_jobs": {"op": "delete_jobs", "rid": 1, "kind": "ready"},
    "kill_jobs": {"op": "kill_jobs", "rid": 1, "kind": "leased"},
    "history": {"op": "history", "rid": 1},
    "batches": {"op": "batches", "rid": 1},
    "compact": {"op": "compact", "rid": 1},
    "add_schedule": {
        "op": "add_schedule",
        "rid": 1,
        "name": "s",
        "job": {"type": "t"},
        "every_ms": 1000,
    },
    "remove_schedule": {"op": "remove_schedule", "rid": 1, "name": "s"},
    "pause_schedule": {"op": "pause_schedule", "rid": 1, "name": "s"},
    "resume_schedule": {"op": "resume_schedule", "rid": 1, "name": "s"},
    "schedules": {"op": "schedules", "rid": 1},
}
BATCH_ID_OK = ["b", "b" * L.BATCH_ID_MAX_CHARS, "any batch é/"]
BATCH_ID_BAD = ["", "b" * (L.BATCH_ID_MAX_CHARS + 1)]

NAME_OK = ["q", "q" * L.NAME_MAX_CHARS, "Az09_.:-"]
NAME_BAD = ["", "q" * (L.NAME_MAX_CHARS + 1), "a b", "a/b", "é", "a\x00", "a,b"]
ANY_JOB_ID_OK = ["j", "_j", "j" * L.JOB_ID_MAX_CHARS, "any id é/ "]
ANY_JOB_ID_BAD = ["", "j" * (L.JOB_ID_MAX_CHARS + 1)]
TOKEN_OK = [1, 2**63 - 1]
TOKEN_BAD = [0, -1, 2**63]
LEASE_TTL_OK = [L.LEASE_TTL_MIN_MS, L.LEASE_TTL_MAX_MS]
LEASE_TTL_BAD = [L.LEASE_TTL_MIN_MS - 1, L.LEASE_TTL_MAX_MS + 1]
ONE_JOB = {"type": "t"}

# (base, path, values accepted, values refused). The path is where the value goes, and the
# `path` a refusal must name.
BOUNDS: list[tuple[str, str, list[Any], list[Any]]] = [
    *[(op, "$.rid", [0, 2**63 - 1], [-1, 2**63]) for op in BASES if "+" not in op],
    ("hello", "$.version", [0, 1, 2, 2**63], []),
    ("hello", "$.worker_id", ["w", "w" * 128, "any worker é/"], ["", "w" * 129]),
    ("hello", "$.client", ["", "c" * L.CLIENT_NAME_MAX_CHARS], ["c" * 129]),
    ("hello", "$.hostname", ["", "h" * L.HOSTNAME_MAX_CHARS], ["h" * 256]),
    ("hello", "$.pid", [0, 2**31], [-1, 2**31 + 1]),
    ("hello", "$.labels", [[], ["l"] * L.LABELS_MAX], [["l"] * (L.LABELS_MAX + 1)]),
    ("hello+labels", "$.labels[0]", ["", "l" * L.NAME_MAX_CHARS], ["l" * 129]),
    ("hello", "$.concurrency", [0, 100_000], [-1, 100_001]),
    ("push", "$.job.type", ["t", "t" * L.TYPE_MAX_CHARS, "é" * 256], ["", "t" * 257, "é" * 257]),
    ("push", "$.job.queue", NAME_OK, NAME_BAD),
    (
        "push",
        "$.job.id",
        ["j", "j" * L.JOB_ID_MAX_CHARS, "a_b", "-x", ".x", ":x", "0", None],
        ["", "j" * 129, "_", "_x", "a b", "ü", "a/b"],
    ),
    ("push", "$.job.priority", [0, 9], [-1, 10]),
    ("push", "$.job.max_attempts", [1, 1_000], [0, 1_001]),
    ("push", "$.job.lease_ttl_ms", LEASE_TTL_OK, LEASE_TTL_BAD),
    ("push", "$.job.retry_base_ms", [1, 86_400_000, None], [0, 86_400_001]),
    ("push", "$.job.run_at_ms", [0, 2**53, None], [-1, 2**53 + 1]),
    (
        "push",
        "$.job.delay_ms",
        [0, L.SCHEDULE_HORIZON_MS, None],
        [-1, L.SCHEDULE_HORIZON_MS + 1],
    ),
    ("push_many", "$.jobs", [[ONE_JOB] * L.PUSH_MANY_MAX], [[], [ONE_JOB] * 1_001]),
    ("push_many", "$.jobs[0].priority", [9], [10]),
    ("push_many", "$.jobs[0].id", ["a"], ["_a"]),
    ("fetch", "$.queues", [["q"], ["q"] * L.FETCH_QUEUES_MAX], [[], ["q"] * 65]),
    ("fetch", "$.queues[0]", NAME_OK, NAME_BAD),
    ("fetch", "$.count", [1, L.FETCH_COUNT_MAX], [0, 1_001]),
    ("fetch", "$.wait_ms", [0, L.FETCH_WAIT_MAX_MS], [-1, 20_001]),
    *[(op, "$.id", ANY_JOB_ID_OK, ANY_JOB_ID_BAD) for op in ("ack", "fail", "extend", "release")],
    *[(op, "$.token", TOKEN_OK, TOKEN_BAD) for op in ("ack", "fail", "extend", "release")],
    ("ack_many", "$.leases", [[["j", 1]] * L.ACK_MANY_MAX], [[], [["j", 1]] * 1_001]),
    ("ack_many", "$.leases[0][0]", ANY_JOB_ID_OK, ANY_JOB_ID_BAD),
    ("ack_many", "$.leases[0][1]", TOKEN_OK, TOKEN_BAD),
    ("fail", "$.error.type", ["", "t" * L.ERROR_TYPE_MAX_CHARS], ["t" * 257]),
    ("fail", "$.error.message", ["m" * L.ERROR_MESSAGE_MAX_CHARS], ["m" * 8_193]),
    ("fail", "$.error.backtrace", ["b" * L.ERROR_BACKTRACE_MAX_CHARS], ["b" * 65_537]),
    ("extend", "$.lease_ttl_ms", [*LEASE_TTL_OK, None], LEASE_TTL_BAD),
    ("progress", "$.percent", [0, 100], [-1, 101, None]),
    ("progress", "$.message", ["", "m" * L.PROGRESS_MESSAGE_MAX_CHARS], ["m" * 201]),
    ("progress", "$.token", TOKEN_OK, TOKEN_BAD),
    (
        "push",
        "$.job.time_limit_ms",
        [L.TIME_LIMIT_MIN_MS, L.TIME_LIMIT_MAX_MS, None],
        [99, L.TIME_LIMIT_MAX_MS + 1],
    ),
    ("fail", "$.retry_in_ms", [0, L.SCHEDULE_HORIZON_MS, None], [-1, L.SCHEDULE_HORIZON_MS + 1]),
    ("fail", "$.dead", [True, False], [0, None]),
    ("release", "$.delay_ms", [0, L.SCHEDULE_HORIZON_MS, None], [-1, L.SCHEDULE_HORIZON_MS + 1]),
    ("pause", "$.queue", NAME_OK, NAME_BAD),
    ("resume", "$.queue", NAME_OK, NAME_BAD),
    ("set_queue_limits", "$.queue", NAME_OK, NAME_BAD),
    *[
        ("set_queue_limits", f"$.{field}", [0, L.CONCURRENCY_LIMIT_MAX], [-1, 1_000_001])
        for field in ("concurrency", "per_key")
    ],
    ("get_job", "$.id", ANY_JOB_ID_OK, ANY_JOB_ID_BAD),
    ("list_jobs", "$.kind", ["ready", "leased", "scheduled", "retrying", "dead"], ["busy", ""]),
    ("list_jobs", "$.limit", [1, L.ADMIN_PAGE_MAX], [0, L.ADMIN_PAGE_MAX + 1]),
    ("list_jobs", "$.cursor", ["", "c" * 512], ["c" * 513]),
    ("list_jobs+filter", "$.filter.queue", NAME_OK, NAME_BAD),
    ("list_jobs+filter", "$.filter.type", ["t" * L.TYPE_MAX_CHARS], ["t" * (L.TYPE_MAX_CHARS + 1)]),
    ("push", "$.job.batch", [*BATCH_ID_OK, None], BATCH_ID_BAD),
    ("push", "$.lease", [["j", 1], None], [["j"], "j"]),
    ("push+lease", "$.lease[0]", ANY_JOB_ID_OK, ANY_JOB_ID_BAD),
    ("push+lease", "$.lease[1]", TOKEN_OK, TOKEN_BAD),
    ("push_many", "$.lease", [["j", 1], None], [["j"]]),
    (
        "create_batch",
        "$.id",
        ["b", "b" * L.BATCH_ID_MAX_CHARS, "a_b", None],
        ["", "b" * 65, "_b", "a b", "é"],
    ),
    ("create_batch", "$.description", ["", "d" * L.BATCH_DESCRIPTION_MAX_CHARS], ["d" * 1025]),
    ("create_batch", "$.parent", [*BATCH_ID_OK, None], BATCH_ID_BAD),
    ("create_batch", "$.jobs", [[], [ONE_JOB] * L.PUSH_MANY_MAX], [[ONE_JOB] * 1_001]),
    ("create_batch", "$.commit", [True, False], [0, None]),
    ("create_batch+all", "$.jobs[0].priority", [9], [10]),
    ("create_batch+all", "$.callbacks.success.priority", [0], [-1]),
    ("create_batch+all", "$.callbacks.success.type", ["t"], [""]),
    ("create_batch+all", "$.lease[1]", TOKEN_OK, TOKEN_BAD),
    *[(op, "$.id", BATCH_ID_OK, BATCH_ID_BAD) for op in ("commit_batch", "delete_batch")],
    ("batch_status", "$.id", BATCH_ID_OK, BATCH_ID_BAD),
    ("batch_status", "$.limit", [0, L.BATCH_STATUS_MEMBERS_MAX], [-1, 1_001]),
    *[
        (op, "$.id", ANY_JOB_ID_OK, ANY_JOB_ID_BAD)
        for op in ("delete_job", "kill_job", "requeue_job")
    ],
    ("requeue_jobs", "$.kind", ["retrying", "dead"], ["scheduled", "ready"]),
    ("requeue_jobs", "$.limit", [1, L.REQUEUE_MANY_MAX], [0, L.REQUEUE_MANY_MAX + 1]),
    ("delete_jobs", "$.kind", ["ready", "leased", "dead"], ["busy", ""]),
    ("delete_jobs", "$.limit", [1, L.BULK_MAX], [0, L.BULK_MAX + 1]),
    ("kill_jobs", "$.kind", ["ready", "retrying"], ["dead", "x"]),
    ("history", "$.seconds", [1, L.HISTORY_MAX_S], [0, L.HISTORY_MAX_S + 1]),
    ("batches", "$.state", ["open", "committed", "finished", "abandoned", None], ["done", ""]),
    ("batches", "$.limit", [1, L.ADMIN_PAGE_MAX], [0, L.ADMIN_PAGE_MAX + 1]),
]


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...len{len(value)}"


ACCEPTED = [
    pytest.param(base, path, value, id=f"{base}-{path}={short(value)}")
    for base, path, accepted, _ in BOUNDS
    for value in accepted
]
REFUSED = [
    pytest.param(base, path, value, id=f"{base}-{path}={short(value)}")
    for base, path, _, refused in BOUNDS
    for value in refused
]


def body_with(base: str, path: str, value: Any) -> dict[str, Any]:
    """A copy of a valid base body with ``value`` put where the msgspec ``path`` points."""
    body = copy.deepcopy(BASES[base])
    steps: list[str | int] = [
        name if name else int(index) for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", path)
    ]
    target: Any = body
    for step in steps[:-1]:
        target = target[step]
    target[steps[-1]] = value
    return body


def refusal(body: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        decode_request(body)
    return caught.value


def encode(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


# --- round trips -------------------------------------------------------------


def test_the_examples_cover_every_request_and_reply_type() -> None:
    requests = set(get_args(Request)) | set(get_args(A.AdminRequest))
    replies = set(get_args(Reply)) | set(get_args(A.AdminReply))
    assert {type(message) for message in REQUESTS} == requests
    assert {type(message) for message in REPLIES} == replies


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_every_request_round_trips(message: Any) -> None:
    assert decode_request(encoder.encode(message)) == message


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: type(m).__name__)
def test_every_reply_round_trips(message: Any) -> None:
    assert decode_reply(encoder.encode(message)) == message


@pytest.mark.parametrize("op", sorted(ADMIN_ONLY_OPS))
def test_the_tcp_decoder_does_not_know_the_admin_ops_and_says_which_op(op: str) -> None:
    with pytest.raises(BadRequest) as caught:
        M.decode_request(encode(BASES[op]))
    assert (caught.value.code, caught.value.op) == (ErrorCode.UNKNOWN_OP, op)


def test_the_admin_decoder_does_not_know_the_worker_ops() -> None:
    with pytest.raises(BadRequest) as caught:
        M.decode_with(A.admin_request_decoder, A.ADMIN_OPS, encode(BASES["push"]))
    assert caught.value.code == ErrorCode.UNKNOWN_OP


def test_requests_are_tagged_op_and_replies_t() -> None:
    assert msgspec.msgpack.decode(encoder.encode(Ok(rid=3))) == {"t": "ok", "rid": 3}
    assert msgspec.msgpack.decode(encoder.encode(GetJob(rid=3, id="j"))) == {
        "op": "get_job",
        "rid": 3,
        "id": "j",
    }


def test_a_lease_ref_is_a_two_element_array() -> None:
    assert encoder.encode(LeaseRef("j", 3)) == encode(["j", 3])


def test_fields_at_their_defaults_are_not_sent() -> None:
    assert msgspec.msgpack.decode(encoder.encode(JobSpec(type="t"))) == {"type": "t"}
    assert msgspec.msgpack.decode(encoder.encode(Fetch(rid=1, queues=["q"]))) == {
        "op": "fetch",
        "rid": 1,
        "queues": ["q"],
    }
    assert "retry_at_ms" not in msgspec.msgpack.decode(encoder.encode(Failed(1, "dead")))


def test_omitted_fields_take_their_defaults() -> None:
    request = decode_request(encode(BASES["push"]))
    assert isinstance(request, Push)
    job = request.job
    assert (job.queue, job.priority, job.max_attempts) == ("default", 5, 25)
    assert (job.lease_ttl_ms, job.args, job.id) == (1_800_000, EMPTY_ARGS, None)
    assert (job.run_at_ms, job.delay_ms, job.retry_base_ms) == (None, None, None)
    fetch = decode_request(encode(BASES["fetch"]))
    assert isinstance(fetch, Fetch)
    assert (fetch.count, fetch.wait_ms) == (1, 0)
    fail = decode_request(encode({"op": "fail", "rid": 1, "id": "j", "token": 1}))
    assert isinstance(fail, Fail)
    assert fail.error == ErrorInfo()


def test_the_protocol_version_is_one() -> None:
    assert PROTOCOL_VERSION == 1


# --- bounds ------------------------------------------------------------------


@pytest.mark.parametrize(("base", "path", "value"), ACCEPTED)
def test_a_value_just_inside_its_bounds_is_accepted(base: str, path: str, value: Any) -> None:
    decode_request(encode(body_with(base, path, value)))


@pytest.mark.parametrize(("base", "path", "value"), REFUSED)
def test_a_value_just_outside_its_bounds_is_refused_naming_the_field(
    base: str, path: str, value: Any
) -> None:
    error = refusal(encode(body_with(base, path, value)))
    assert error.code is ErrorCode.BAD_REQUEST
    assert error.path == path
    assert error.rid == (1 if path != "$.rid" else 0)


def test_lengths_count_characters_not_bytes() -> None:
    decode_request(encode(body_with("push", "$.job.type", "€" * L.TYPE_MAX_CHARS)))
    assert refusal(encode(body_with("push", "$.job.type", "€" * 257))).path == "$.job.type"


def test_a_client_id_may_not_start_with_the_broker_prefix() -> None:
    error = refusal(encode(body_with("push", "$.job.id", L.SERVER_ID_PREFIX + "order-7")))
    assert (error.code, error.path, error.rid) == (ErrorCode.BAD_REQUEST, "$.job.id", 1)


def test_broker_made_ids_are_accepted_where_a_job_is_named() -> None:
    for op in ("ack", "fail", "extend", "release", "get_job"):
        decode_request(encode(body_with(op, "$.id", "_01HZX")))


def test_a_beat_tells_what_its_process_ran_only_when_asked_within_bounds() -> None:
    assert msgspec.msgpack.decode(M.encoder.encode(M.Beat(rid=3))) == {"op": "beat", "rid": 3}
    ran = {"resize": {"done": 11, "dead": 1}}
    beat = decode_request(encode({"op": "beat", "rid": 3, "ran": ran}))
    assert beat == M.Beat(rid=3, ran={"resize": M.JobsRun(done=11, dead=1)})
    too_many = {f"t{n}": {"done": 1} for n in range(L.BEAT_TYPES_MAX + 1)}
    assert refusal(encode({"op": "beat", "rid": 3, "ran": too_many})).path == "$.ran"
    negative = {"resize": {"done": -1}}
    assert refusal(encode({"op": "beat", "rid": 3, "ran": negative})).path == "$.ran[...].done"


def test_a_bad_job_in_push_many_is_named_by_its_index() -> None:
    body = {"op": "push_many", "rid": 9, "jobs": [{"type": "a"}, {"type": "b", "priority": 12}]}
    error = refusal(encode(body))
    assert (error.code, error.path, error.rid) == (ErrorCode.BAD_REQUEST, "$.jobs[1].priority", 9)


# --- bodies that do not decode -----------------------------------------------


def test_an_unknown_op_is_answered_unknown_op_with_the_rid() -> None:
    error = refusal(encode({"op": "frobnicate", "rid": 42, "x": 1}))
    assert (error.code, error.rid, error.path) == (ErrorCode.UNKNOWN_OP, 42, "$.op")


def test_an_unknown_op_with_an_unreadable_rid_is_answered_with_rid_zero() -> None:
    assert refusal(encode({"op": "frobnicate", "rid": 2**63})).rid == 0
    assert refusal(encode({"op": "frobnicate", "rid": -5})).rid == 0
    assert refusal(encode({"op": "frobnicate"})).rid == 0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",
        b"\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x85\xa2op",  # truncated
        encode([1, 2, 3]),
        encode("push"),
        encode(7),
        encode(None),
    ],
    ids=[
        "empty",
        "reserved-byte",
        "ff",
        "http",
        "truncated",
        "array",
        "str",
        "int",
        "nil",
    ],
)
def test_garbage_is_answered_bad_request_with_rid_zero(body: bytes) -> None:
    error = refusal(body)
    assert (error.code, error.rid) == (ErrorCode.BAD_REQUEST, 0)


def test_trailing_bytes_after_a_readable_rid_are_bad_request_with_that_rid() -> None:
    error = refusal(encode(BASES["ack"] | {"rid": 31}) + b"\x00")
    assert (error.code, error.rid) == (ErrorCode.BAD_REQUEST, 31)


def test_a_body_without_op_is_bad_request_with_its_rid() -> None:
    error = refusal(encode({"rid": 8, "queue": "q"}))
    assert (error.code, error.rid) == (ErrorCode.BAD_REQUEST, 8)


def test_a_missing_required_field_is_bad_request_with_its_rid() -> None:
    error = refusal(encode({"op": "ack", "rid": 8, "id": "j"}))
    assert (error.code, error.rid) == (ErrorCode.BAD_REQUEST, 8)
    assert "token" in error.message
    nested = refusal(encode({"op": "push", "rid": 8, "job": {"queue": "q"}}))
    assert (nested.code, nested.rid, nested.path) == (ErrorCode.BAD_REQUEST, 8, "$.job")


@pytest.mark.parametrize(
    ("base", "path", "value"),
    [
        ("push", "$.job.priority", "5"),
        ("push", "$.job.priority", 5.0),
        ("push", "$.job.priority", True),
        ("push", "$.job.priority", None),
        ("push", "$.job.type", b"bytes-not-str"),
        ("push", "$.job", ["t"]),
        ("push", "$.job.id", 7),
        ("fetch", "$.count", 1.0),
        ("fetch", "$.queues", "q"),
        ("ack", "$.token", "1"),
        ("ack_many", "$.leases[0]", {"id": "j", "token": 1}),
        ("fail", "$.error", "boom"),
        ("hello", "$.labels", "gpu"),
        ("hello", "$.version", "1"),
    ],
    ids=lambda v: short(v),
)
def test_a_field_of_the_wrong_type_is_named(base: str, path: str, value: Any) -> None:
    error = refusal(encode(body_with(base, path, value)))
    assert (error.code, error.path, error.rid) == (ErrorCode.BAD_REQUEST, path, 1)


def test_the_refusal_becomes_an_error_reply() -> None:
    error = refusal(encode(body_with("push", "$.job.priority", 10)))
    reply = error.reply()
    assert reply == Error(
        rid=1, code=ErrorCode.BAD_REQUEST, message=error.message, path="$.job.priority"
    )
    assert msgspec.msgpack.decode(encoder.encode(reply))["t"] == "error"


# --- forward compatibility -----------------------------------------------------


def test_unknown_fields_are_ignored_at_every_level() -> None:
    body = {
        "op": "push_many",
        "rid": 1,
        "future": {"nested": [1, 2]},
        "jobs": [{"type": "t", "future_field": None}, {"type": "u", "x": b"\x00"}],
    }
    request = decode_request(encode(body))
    assert request == PushMany(rid=1, jobs=[JobSpec(type="t"), JobSpec(type="u")])
    fail = decode_request(encode({**BASES["fail"], "error": {"type": "E", "code": 3}}))
    assert isinstance(fail, Fail)
    assert fail.error == ErrorInfo(type="E")


def test_extra_elements_of_a_lease_ref_are_ignored() -> None:
    request = decode_request(encode({"op": "ack_many", "rid": 1, "leases": [["j", 5, "later"]]}))
    assert request == AckMany(rid=1, leases=[LeaseRef("j", 5)])


def test_ack_many_results_are_one_a_lease() -> None:
    bad = encode({"op": "ack_many", "rid": 1, "leases": [["j", 5], ["k", 6]], "results": [None]})
    with pytest.raises(BadRequest, match="one item a lease"):
        decode_request(bad)


def test_unknown_reply_fields_are_ignored_by_the_reply_decoder() -> None:
    reply = reply_decoder.decode(encode({"t": "ok", "rid": 4, "server_hint": "x"}))
    assert reply == Ok(rid=4)


def test_the_tag_may_come_anywhere_in_the_map() -> None:
    assert decode_request(encode({"rid": 3, "queue": "q", "op": "pause"})) == A.Pause(3, "q")


# --- args ----------------------------------------------------------------------

# Deliberately not how msgspec would encode it: wide integers, a str8 for a short
# string, a float32, an ext value and map keys out of order.
ODD_ARGS = (
    b"\x84"
    + b"\xa1b\xce\x00\x00\x00\x01"  # "b": 1 as a uint32
    + b"\xa1a\xd9\x01x"  # "a": "x" as a str8
    + b"\xa1f\xca\x3f\xc0\x00\x00"  # "f": 1.5 as a float32
    + b"\xa1e\xd5\x05\x01\x02"  # "e": ext type 5, two bytes
)


def test_args_bytes_are_kept_exactly_as_the_producer_encoded_them() -> None:
    body = encoder.encode(Push(rid=1, job=JobSpec(type="t", args=msgspec.Raw(ODD_ARGS))))
    assert ODD_ARGS in body
    request = decode_request(body)
    assert isinstance(request, Push)
    assert bytes(request.job.args) == ODD_ARGS
    delivery = Jobs(rid=2, jobs=[msgspec.structs.replace(DELIVERY, args=request.job.args)])
    reply = reply_decoder.decode(encoder.encode(delivery))
    assert isinstance(reply, Jobs)
    assert bytes(reply.jobs[0].args) == ODD_ARGS


@pytest.mark.parametrize("args", [None, 0, "", [], {}, [[[]]], {"k": [1, {"v": None}]}])
def test_args_may_be_any_msgpack_value(args: Any) -> None:
    request = decode_request(encode({"op": "push", "rid": 1, "job": {"type": "t", "args": args}}))
    assert isinstance(request, Push)
    assert bytes(request.job.args) == encode(args)


def test_args_default_to_the_empty_array() -> None:
    assert bytes(EMPTY_ARGS) == b"\x90"


# --- known defects ---------------------------------------------------------------
# Each states what docs/protocol.md requires and the reference decoder does not do yet.
# They are strict: once protocol/ is fixed they pass, and the marker must go.


def test_invalid_utf8_in_a_string_field_is_bad_request() -> None:
    body = encode(BASES["get_job"]).replace(b"\xa1j", b"\xa1\xff")
    assert refusal(body).code is ErrorCode.BAD_REQUEST


def test_deeply_nested_args_are_bad_request() -> None:
    depth = 5_000
    args = msgspec.Raw(b"\x91" * depth + b"\xc0")
    body = encoder.encode(Push(rid=3, job=JobSpec(type="t", args=args)))
    assert refusal(body).code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(("base", "path"), [("push", "$.job.queue"), ("push", "$.job.id")])
def test_a_name_with_a_trailing_newline_is_refused(base: str, path: str) -> None:
    assert refusal(encode(body_with(base, path, "abc\n"))).path == path


def test_run_at_and_delay_together_are_refused() -> None:
    job = {"type": "t", "run_at_ms": T0_MS, "delay_ms": 1_000}
    assert refusal(encode({"op": "push", "rid": 1, "job": job})).code is ErrorCode.BAD_REQUEST


def test_a_fail_that_retries_and_gives_up_at_once_is_refused() -> None:
    body = BASES["fail"] | {"retry_in_ms": 1_000, "dead": True}
    assert refusal(encode(body)).code is ErrorCode.BAD_REQUEST


def test_a_fail_and_a_release_at_their_defaults_send_only_the_lease() -> None:
    assert msgspec.msgpack.decode(encode(Fail(rid=7, id="j", token=1))) == {
        "op": "fail", "rid": 7, "id": "j", "token": 1
    }  # fmt: skip
    assert set(msgspec.msgpack.decode(encode(Release(rid=9, id="j", token=1)))) == {
        "op", "rid", "id", "token"
    }  # fmt: skip


def test_an_op_of_the_wrong_type_still_echoes_the_rid() -> None:
    assert refusal(encode({"op": 5, "rid": 42})).rid == 42


def test_a_non_string_key_is_reported_at_its_map() -> None:
    assert refusal(encode({"op": "push", "rid": 1, "job": {"type": "t", 5: 1}})).path == "$.job"
