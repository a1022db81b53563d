"""The admin socket and the ``leash`` operator commands, against a real broker.

Every command runs as the real command line (``leash.client.cli.main``, in
this process: tests/cli_run.py) and is checked in both forms, the table and
``--json``; ``leash journal``, which replaces its process with the broker's
tool, runs as a process of its own. Waits
are bounded polls; the broker is stopped by its pid.
"""

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from leash.client import AdminClient, Client, ConnectFailed
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder, encode_frame
from tests.cli_run import run_cli as run_leash
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import Raw
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMAND_TIMEOUT_S = 30.0


@pytest.fixture
def start_broker(tmp_path: "os.PathLike[str]") -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def start(*flags: str, data_dir: str = "data") -> BrokerProcess:
        broker = BrokerProcess(os.path.join(tmp_path, data_dir), flags).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.kill()


def leash(broker: BrokerProcess, *args: str, json_output: bool = False) -> Any:
    """Run ``leash ARGS --data-dir DIR``; the output (parsed with --json); exit 0 checked."""
    result = run_leash(*args, "--data-dir", broker.data_dir, *(["--json"] if json_output else []))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout) if json_output else result.stdout


def run_leash_process(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "leash.client", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def rows(table: str) -> list[list[str]]:
    """The table's rows under its header, split on runs of two or more spaces."""
    lines = table.rstrip("\n").split("\n")
    return [re.split(r" {2,}", line.strip()) for line in lines[1:]]


def fields(text: str) -> dict[str, str]:
    """``key: value`` lines; an indented line goes on the value before it."""
    found: dict[str, str] = {}
    key = ""
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("  ") or not line:
            found[key] = (found[key] + "\n" + line.strip()).strip()
            continue
        key, _, value = line.partition(":")
        found[key] = value.strip()
    return found


def connect(broker: BrokerProcess, **options: Any) -> Client:
    return Client("127.0.0.1", broker.port, **options)


# --- views -------------------------------------------------------------------


def test_stats_counts_jobs_by_state_and_totals_since_start(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client:
        for _ in range(3):
            client.push("t", queue="q")
        job = client.fetch("q")
        assert job is not None
        client.ack(job)
        stats = leash(broker, "stats", json_output=True)
        text = fields(leash(broker, "stats"))
    assert stats["jobs"] == {"ready": 2, "scheduled": 0, "leased": 0, "retrying": 0, "dead": 0}
    assert stats["totals"] == {
        "pushed": 3,
        "acked": 1,
        "failed": 0,
        "dead": 0,
        "expired": 0,
        "duplicate": 0,
        "ttl_expired": 0,
        "time_limited": 0,
    }
    assert stats["connections"] == 1 and stats["queues"] == 1 and stats["epoch"] == 1
    assert stats["journal"]["last_seq"] > 0 and stats["journal"]["fsyncs"] > 0
    assert stats["limits"]["max_frame_bytes"] == 1024 * 1024
    assert text["jobs"] == "ready 2, scheduled 0, leased 0, retrying 0, dead 0"
    assert text["since start"] == (
        "pushed 3, acked 1, failed 0, dead 0, expired 0, duplicate 0, ttl_expired 0, time_limited 0"
    )
    assert text["version"].startswith("leash/")


LIMIT_FIELDS = (
    "concurrency_limit",
    "per_key_limit",
    "rate_limit",
    "rate_interval_ms",
    "rate_used",
    "keys_leased",
    "keys_saturated",
)


def test_queues_shows_each_queue_with_its_counts_and_latency(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client:
        client.push("t", queue="mail")
        client.push("t", queue="mail")
        client.push("t", queue="later", delay_ms=600_000)
        held = client.fetch("mail")
        assert held is not None
        time.sleep(0.05)  # the oldest ready job's age is what is measured
        queues = {q["name"]: q for q in leash(broker, "queues", json_output=True)}
        table = rows(leash(broker, "queues"))
    assert queues["mail"]["ready"] == 1 and queues["mail"]["in_flight"] == 1
    assert queues["mail"]["latency_ms"] >= 50
    assert queues["later"] == {
        "held_fetches": 0,
        "name": "later",
        "ready": 0,
        "scheduled": 1,
        "in_flight": 0,
        "dead": 0,
        "paused": False,
        "latency_ms": 0,
        "in_per_s": pytest.approx(1 / 60, abs=1e-3),  # one push in the last minute
        "out_per_s": 0.0,
        **dict.fromkeys(LIMIT_FIELDS, 0),  # no limits
    }
    assert queues["mail"]["in_per_s"] == pytest.approx(2 / 60, abs=1e-3)
    assert [row[:5] for row in table] == [
        ["later", "0", "1", "0", "0"],
        ["mail", "1", "0", "1", "0"],
    ]


def test_held_fetches_show_the_consumers_waiting_for_a_job(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """A long-poll fetch held for a job counts once in stats and in each
    queue it lists (the table's WAITING column, the metrics), until a job
    serves it."""
    broker = start_broker("--metrics-port", "0")
    port = metrics_port(broker)
    with connect(broker) as producer, broker.admin() as admin, Raw(broker.port) as consumer:
        for queue in ("a", "b", "c"):  # known queues, nothing ready
            producer.push("later", queue=queue, delay_ms=600_000)
        assert admin.stats().held_fetches == 0
        consumer.hello()
        consumer.send(M.Fetch(rid=2, queues=["a", "b"], wait_ms=20_000))
        assert wait_until(lambda: admin.stats().held_fetches == 1)
        held = {q["name"]: q["held_fetches"] for q in leash(broker, "queues", json_output=True)}
        assert held == {"a": 1, "b": 1, "c": 0}
        table = leash(broker, "queues")
        waiting_at = table.index("WAITING")  # the column: empty cells collapse in rows()
        waiting = [line[waiting_at:].split()[0] for line in table.splitlines()[1:]]
        assert waiting == ["1", "1", "0"], table
        assert fields(leash(broker, "stats"))["held fetches"].startswith("1 ")
        samples = scrape(port)
        assert samples["leash_held_fetches"] == 1
        assert samples['leash_queue_held_fetches{queue="b"}'] == 1
        assert samples['leash_queue_held_fetches{queue="c"}'] == 0
        producer.push("now", queue="b")
        served = consumer.reply()
        assert isinstance(served, M.Jobs) and [job.type for job in served.jobs] == ["now"]
        assert admin.stats().held_fetches == 0
        assert scrape(port)["leash_held_fetches"] == 0


def test_busy_and_processes_show_who_holds_what(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker, labels=["gpu"]) as worker:
        job_id = worker.push("send", queue="q")
        assert worker.fetch("q") is not None
        busy = leash(broker, "busy", json_output=True)
        busy_rows = rows(leash(broker, "busy"))
        processes = leash(broker, "processes", json_output=True)
        process_rows = rows(leash(broker, "processes"))
    assert busy == [{"worker_id": worker.worker_id, "jobs": [busy[0]["jobs"][0]]}]
    assert busy[0]["jobs"][0]["id"] == job_id
    assert busy_rows[0][:5] == [worker.worker_id, job_id, "q", "send", "1"]
    [view] = processes
    assert (view["worker_id"], view["pid"], view["labels"]) == (
        worker.worker_id,
        os.getpid(),
        ["gpu"],
    )
    assert (view["connections"], view["in_flight"], view["state"]) == (1, 1, "ok")
    assert process_rows[0][0] == worker.worker_id and process_rows[0][-2:] == ["1", "1"]


def test_busy_and_job_show_a_running_jobs_progress_and_time_limit(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as worker:
        job_id = worker.push("encode", queue="q", time_limit_ms=90_000)
        job = worker.fetch("q")
        assert job is not None
        worker.progress(job, 40, "4 of 10 files")
        busy = leash(broker, "busy", json_output=True)
        busy_rows = rows(leash(broker, "busy"))
        text = fields(leash(broker, "job", job_id))
    (running,) = busy[0]["jobs"]
    assert (running["progress"], running["progress_message"], running["time_limit_ms"]) == (
        40,
        "4 of 10 files",
        90_000,
    )
    assert busy_rows[0][-1] == "40% 4 of 10 files"
    assert text["time limit"] == "90.0 s"
    assert text["progress"].startswith("40% 4 of 10 files (at ")


def test_job_shows_everything_about_one_job_including_its_last_error(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client:
        job_id = client.push("send", {"to": "ada"}, queue="q", max_attempts=3)
        job = client.fetch("q")
        assert job is not None
        client.fail(job, ValueError("mail server down"))
        view = leash(broker, "job", job_id, json_output=True)
        text = fields(leash(broker, "job", job_id))
    assert (view["id"], view["state"], view["attempt"], view["args"]) == (
        job_id,
        "retrying",
        1,
        {"to": "ada"},
    )
    assert view["last_error"]["type"] == "ValueError"
    assert text["state"] == "retrying"
    assert text["attempts"] == "1 failed of at most 3"
    assert text["last error"] == "ValueError: mail server down"
    assert text["args"] == '{"to":"ada"}'


def test_job_on_an_acked_job_says_when_and_by_which_process_it_finished(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client:
        job_id = client.push("send", {"to": "ada"}, queue="q", max_attempts=3)
        failed = client.fetch("q")
        assert failed is not None
        client.fail(failed, ValueError("once"), retry_in_ms=0)
        job = client.fetch("q", wait_ms=5_000)
        assert job is not None
        client.ack(job)
        view = leash(broker, "job", job_id, json_output=True)
        text = fields(leash(broker, "job", job_id))
    assert (view["state"], view["finished_by"], view["finished_pid"]) == (
        "succeeded",
        client.worker_id,
        os.getpid(),
    )
    assert text["state"] == "succeeded"
    assert re.fullmatch(rf"{re.escape(client.worker_id)} \(\S+ pid {os.getpid()}\), attempt 2",
                        text["finished by"]), text  # fmt: skip
    assert "finished" in text and "args" not in text


def test_scheduled_retries_and_dead_list_their_jobs_filtered_and_paged(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client:
        later = [client.push("t", queue="a", delay_ms=60_000 + i) for i in range(5)]
        client.push("other", queue="b", delay_ms=60_000)  # still scheduled when listed
        retrying = client.push("t", queue="a", max_attempts=3)
        dead = client.push("t", queue="a", max_attempts=1)
        for _ in range(2):
            job = client.fetch("a")
            assert job is not None
            client.fail(job, RuntimeError(f"broken {job.id}"))
        scheduled = leash(broker, "scheduled", "--queue", "a", "--limit", "1000", json_output=True)
        first_three = leash(broker, "scheduled", "--queue", "a", "--limit", "3", json_output=True)
        by_type = leash(broker, "scheduled", "--type", "other", json_output=True)
        retries = rows(leash(broker, "retries"))
        dead_jobs = leash(broker, "dead", "--error", f"broken {dead}", json_output=True)
        no_match = leash(broker, "dead", "--error", "no such text")
    assert [job["id"] for job in scheduled] == later  # soonest first
    assert [job["id"] for job in first_three] == later[:3]
    assert [job["queue"] for job in by_type] == ["b"]
    assert [row[0] for row in retries] == [retrying]
    assert "RuntimeError: broken" in retries[0][-1]
    assert [job["id"] for job in dead_jobs] == [dead]
    assert no_match.strip() == "(none)"


def test_paging_through_the_admin_client_sees_every_job_once(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client, broker.admin() as admin:
        ids = [
            r.id for r in client.push_many([{"type": "t", "delay_ms": 60_000} for _ in range(250)])
        ]
        pages, cursor, seen = 0, "", []
        while True:
            page = admin.jobs_page("scheduled", cursor, limit=100)
            seen += [job.id for job in page.jobs]
            pages += 1
            if not page.next:
                break
            cursor = page.next
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    assert pages == 3


# --- operations --------------------------------------------------------------


def test_pause_quiet_and_stop_are_applied_and_survive_a_restart(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    # The processes stay known across the restart for as long as the test runs
    # (the restart grace, 3 s by default, may pass on a loaded machine).
    broker = start_broker(
        "--process-ttl-ms", "60000", "--reconnect-grace-ms", "60000", "--restart-grace-ms", "60000"
    )  # fmt: skip
    with connect(broker) as client:
        client.push("t", queue="q")
        quiet_id, stopped_id = "w-quiet", "w-stop"
        for worker_id in (quiet_id, stopped_id):
            with connect(broker, worker_id=worker_id):
                pass
        assert leash(broker, "pause", "q").strip() == "q: paused"
        assert leash(broker, "quiet", quiet_id).strip() == f"{quiet_id}: asked to quiet"
        assert leash(broker, "stop", stopped_id).strip() == f"{stopped_id}: asked to terminate"
        assert client.fetch("q") is None
    dump = run_leash_process("journal", "dump", broker.data_dir)
    lines = [json.loads(line) for line in dump.stdout.splitlines()]
    kinds = [line["record"]["r"] for line in lines if "record" in line]
    assert "paused" in kinds and kinds.count("controlled") == 2, kinds  # operations are records
    assert broker.stop() == 0
    broker.start()
    queues = leash(broker, "queues", json_output=True)
    states = {p["worker_id"]: p["state"] for p in leash(broker, "processes", json_output=True)}
    assert [(q["name"], q["paused"], q["ready"]) for q in queues] == [("q", True, 1)]
    assert states[quiet_id] == "quiet" and states[stopped_id] == "terminate"
    assert leash(broker, "resume", "q").strip() == "q: resumed"
    assert leash(broker, "unquiet", quiet_id).strip() == f"{quiet_id}: asked to ok"
    with connect(broker) as client:
        assert client.fetch("q") is not None


def test_kill_delete_and_requeue_one_job_and_requeue_by_filter_survive_a_restart(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client:
        killed = client.push("t", queue="q")
        deleted = client.push("t", queue="q")
        assert leash(broker, "kill", killed).strip() == f"{killed}: killed"
        assert leash(broker, "delete", deleted).strip() == f"{deleted}: deleted"
        assert client.get_job(killed).state == "dead"
        assert leash(broker, "requeue", killed).strip() == f"{killed}: requeued"
        assert client.get_job(killed).state == "ready"
        dead = [client.push("send", queue="mail", max_attempts=1) for _ in range(3)]
        others = [client.push("other", queue="mail", max_attempts=1) for _ in range(2)]
        for job in client.fetch_many("mail", 5):
            client.fail(job, "smtp down" if job.type == "send" else "other trouble")
        requeued = leash(broker, "requeue", "--dead", "--type", "send", json_output=True)
        assert sorted(requeued) == sorted(dead)
        text = leash(broker, "requeue", "--dead", "--error", "other trouble")
        assert text.strip() == "requeued 2 jobs"
        assert leash(broker, "requeue", "--dead").strip() == "requeued 0 jobs"
    assert broker.stop() == 0
    broker.start()
    with connect(broker) as client:
        states = {job_id: client.get_job(job_id).state for job_id in [killed, *dead, *others]}
        assert set(states.values()) == {"ready"}
        assert client.get_job(deleted).state == "deleted"  # in the finished-job history
    refused = run_leash("requeue", killed, "--data-dir", broker.data_dir)
    assert refused.returncode == 1 and "invalid_state" in refused.stderr
    both = run_leash("requeue", killed, "--dead", "--data-dir", broker.data_dir)
    assert both.returncode == 2


def test_batches_batch_delete_batch_and_fsck(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    with connect(broker) as client:
        client.create_batch([{"type": "t", "queue": "b"}] * 2, id="first", description="one")
        client.create_batch([{"type": "t", "queue": "b"}], id="second", commit=True)
        listed = leash(broker, "batches", json_output=True)
        table = rows(leash(broker, "batches"))
        opened = leash(broker, "batches", "--state", "open", json_output=True)
        status = leash(broker, "batch", "first", json_output=True)
        text = fields(leash(broker, "batch", "first"))
        assert [b["id"] for b in listed] == ["second", "first"]  # newest first
        assert [row[:4] for row in table] == [["second", "committed", "1", "1"],
                                              ["first", "open", "2", "2"]]  # fmt: skip
        assert [b["id"] for b in opened] == ["first"]
        assert (status["total"], status["pending"], len(status["members"])) == (2, 2, 2)
        assert text["state"] == "open" and text["description"] == "one"
        assert text["members"].startswith("total 2, pending 2")
        report = leash(broker, "fsck", json_output=True)
        assert (report["problems"], report["jobs"], report["batches"]) == ([], 3, 2)
        assert fields(leash(broker, "fsck"))["problems"] == "none"
        assert leash(broker, "delete-batch", "first").strip() == "first: deleted"
    assert broker.stop() == 0
    broker.start()
    assert [b["id"] for b in leash(broker, "batches", json_output=True)] == ["second"]
    gone = run_leash("batch", "first", "--data-dir", broker.data_dir)
    assert (gone.returncode, gone.stderr) == (3, "leash: error: no batch 'first'\n")
    assert leash(broker, "fsck", json_output=True)["problems"] == []


def test_compact_snapshots_now_and_drops_the_segments_the_snapshot_covers(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker("--segment-bytes", "65536")
    with connect(broker) as client:
        for _ in range(20):  # about 20 segments of jobs that are then acked
            client.push_many([{"type": "t", "args": "x" * 600} for _ in range(100)])
            client.ack_many(client.fetch_many("default", 100))
        kept = client.push("t", queue="kept")
        before = leash(broker, "stats", json_output=True)["journal"]
        done = leash(broker, "compact", json_output=True)
        after = leash(broker, "stats", json_output=True)["journal"]
        text = fields(leash(broker, "compact"))
    assert done["through_seq"] >= before["last_seq"]
    assert after["bytes"] < before["bytes"] / 4, (before, after)
    assert after["segments"] < before["segments"] and after["snapshots"] == 1
    assert int(text["snapshot through seq"]) >= done["through_seq"]
    broker.kill()
    broker.start()
    with connect(broker) as client:
        assert client.get_job(kept).state == "ready"


# --- errors ------------------------------------------------------------------


def test_errors_are_one_line_with_their_own_exit_status(
    start_broker: Callable[..., BrokerProcess], tmp_path: "os.PathLike[str]"
) -> None:
    broker = start_broker()
    not_found = run_leash("job", "nope", "--data-dir", broker.data_dir)
    no_process = run_leash("quiet", "nobody", "--data-dir", broker.data_dir)
    no_socket = run_leash("stats", "--data-dir", os.path.join(tmp_path, "nowhere"))
    both = run_leash("stats", "--data-dir", broker.data_dir, "--socket", "x")
    usage = run_leash("dead", "--limit", "many", "--data-dir", broker.data_dir)
    assert (not_found.returncode, not_found.stderr) == (3, "leash: error: no job 'nope'\n")
    assert (no_process.returncode, no_process.stderr) == (3, "leash: error: no process 'nobody'\n")
    assert no_socket.returncode == 69
    assert no_socket.stderr.startswith("leash: error: no admin socket at ")
    assert no_socket.stderr.count("\n") == 1
    assert both.returncode == 2
    assert usage.returncode == 2


def test_help_lists_every_operator_command() -> None:
    result = run_leash("--help")
    assert result.returncode == 0
    for command in ("stats", "queues", "busy", "processes", "job", "scheduled", "retries", "dead",
                    "pause", "resume", "quiet", "unquiet", "stop", "kill", "delete", "requeue",
                    "batches", "batch", "delete-batch", "fsck", "compact"):  # fmt: skip
        assert f"    {command}" in result.stdout, command


def test_the_tcp_port_refuses_admin_requests(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        hello = M.Hello(rid=1, version=1, worker_id="w")
        pause = {"op": "pause", "rid": 2, "queue": "q"}
        stats = {"op": "stats", "rid": 3}
        sock.sendall(b"".join(encode_frame(M.encoder.encode(m)) for m in (hello, pause, stats)))
        replies = read_replies(sock, 3)
    assert isinstance(replies[0], M.Welcome)
    for reply, op in zip(replies[1:], ("pause", "stats"), strict=True):
        assert isinstance(reply, M.Error)
        assert (reply.code, reply.path) == (ErrorCode.ADMIN_ONLY, "$.op")
        assert op in reply.message
    with broker.admin() as admin:
        assert admin.queues() == []  # the refused pause changed nothing


def read_replies(sock: socket.socket, count: int) -> list[M.Reply]:
    decoder, replies = FrameDecoder(), []
    while len(replies) < count:
        data = sock.recv(65536)
        assert data, "the broker closed the connection"
        decoder.feed(data)
        while (body := decoder.next_frame()) is not None:
            replies.append(M.reply_decoder.decode(body))
    return replies


# --- the socket --------------------------------------------------------------


def test_the_socket_is_0600_in_a_0700_directory_and_gone_after_a_clean_stop(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    path = os.path.join(broker.data_dir, "admin.sock")
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(broker.data_dir).st_mode) == 0o700
    assert broker.stop() == 0
    assert not os.path.exists(path)


def test_a_stale_socket_after_a_crash_is_replaced_and_a_second_broker_leaves_it_alone(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    broker.kill()
    path = os.path.join(broker.data_dir, "admin.sock")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # left behind by kill -9
    broker.start()
    assert leash(broker, "queues", json_output=True) == []
    second = BrokerProcess(broker.data_dir)
    with pytest.raises(RuntimeError, match="locked by pid"):
        second.start()
    assert leash(broker, "queues", json_output=True) == []  # still the first one's socket


def test_a_socket_path_over_the_unix_limit_stops_start_up_with_a_clear_error(
    tmp_path: "os.PathLike[str]",
) -> None:
    data_dir = os.path.join(tmp_path, "data")
    long_path = os.path.join(data_dir, "s" * 120 + ".sock")
    result = subprocess.run(
        [sys.executable, "-m", "leash.broker", "serve", "--port", "0", "--data-dir", data_dir,
         "--admin-socket", long_path],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 78
    assert "at most 107" in result.stderr and "--admin-socket" in result.stderr


def test_an_admin_socket_outside_a_private_directory_is_refused(
    tmp_path: "os.PathLike[str]",
) -> None:
    open_dir = os.path.join(tmp_path, "open")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o755)
    result = subprocess.run(
        [sys.executable, "-m", "leash.broker", "serve", "--port", "0",
         "--data-dir", os.path.join(tmp_path, "data"),
         "--admin-socket", os.path.join(open_dir, "admin.sock")],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 78
    assert "mode 0700" in result.stderr


def test_a_client_with_no_socket_gets_connect_failed(tmp_path: "os.PathLike[str]") -> None:
    with pytest.raises(ConnectFailed, match="no admin socket"):
        AdminClient(os.path.join(tmp_path, "admin.sock"))


# --- metrics -----------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def metrics_port(broker: BrokerProcess) -> int:
    assert broker.wait_for_log("metrics on http://127.0.0.1:")
    line = next(line for line in broker.log if "metrics on http://" in line)
    return int(line.rsplit(":", 1)[1].split("/")[0])


def test_the_metrics_endpoint_matches_the_admin_stats_during_a_small_load(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker("--metrics-port", "0")
    port = metrics_port(broker)
    with connect(broker) as client, broker.admin() as admin:
        admin.set_queue_limits("q", concurrency=1000, per_key=1, rate=1000, rate_interval_ms=60_000)
        client.push("t", queue="q", concurrency_key="c")
        (keyed,) = client.fetch_many("q", 1)
        rounds = 0
        while rounds < 5:
            rounds += 1
            client.push_many([{"type": "t", "queue": "q"} for _ in range(20)])
            client.push_many([{"type": "t", "queue": "u", "unique_key": "k"}] * 2)  # 1 job in all
            jobs = client.fetch_many("q", 15)
            client.ack_many(jobs[:10])
            for job in jobs[10:12]:
                client.fail(job, "boom")
            samples = scrape(port)  # between requests: nothing moves while it is taken
            stats = admin.stats()
            queue = {q.name: q for q in admin.queues()}["q"]
            assert samples['leash_queue_pushed_total{queue="q"}'] == stats.totals["pushed"] - 1
            assert samples['leash_queue_acked_total{queue="q"}'] == stats.totals["acked"]
            assert samples['leash_queue_failed_total{queue="q"}'] == stats.totals["failed"]
            assert samples['leash_queue_duplicate_total{queue="u"}'] == stats.totals["duplicate"]
            assert samples['leash_queue_ready{queue="q"}'] == queue.ready
            assert samples['leash_queue_leased{queue="q"}'] == queue.in_flight
            assert samples['leash_queue_concurrency_limit{queue="q"}'] == 1000
            assert samples['leash_queue_rate_used{queue="q"}'] == queue.rate_used == 1 + 15 * rounds
            assert samples['leash_queue_keys_saturated{queue="q"}'] == 1
            for state, count in stats.jobs.items():
                assert samples[f'leash_jobs{{state="{state}"}}'] == count
            assert samples["leash_connections"] == stats.connections
            assert samples["leash_processes"] == stats.processes
            assert samples["leash_journal_fsync_seconds_count"] >= 1
        assert keyed.id and stats.totals["pushed"] == 100 + 2 and stats.totals["acked"] == 50
        assert stats.totals["duplicate"] == 2 * 5 - 1  # the job of the first push holds the key


def test_the_metrics_count_jobs_made_by_batches_and_callbacks_and_killed_by_an_operator(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker("--metrics-port", "0")
    port = metrics_port(broker)
    with connect(broker) as client, broker.admin() as admin:
        client.create_batch(
            [{"type": "t", "queue": "b"}, {"type": "t", "queue": "b", "id": "doomed"}],
            on_complete={"type": "cb", "queue": "cb"},
            commit=True,
        )
        admin.kill_job("doomed")  # dead; the other member acked: the batch completes
        (member,) = client.fetch_many("b", 10)
        client.ack(member)
        samples, stats = scrape(port), admin.stats()
    assert samples['leash_queue_pushed_total{queue="b"}'] == 2
    assert samples['leash_queue_pushed_total{queue="cb"}'] == 1  # the callback job
    assert samples['leash_queue_dead_total{queue="b"}'] == 1
    assert (stats.totals["pushed"], stats.totals["dead"], stats.totals["acked"]) == (3, 1, 1)


def test_leash_lists_ready_and_leased_jobs_purges_and_kills_or_deletes_by_filter(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    with connect(broker) as client:
        for n in range(3):
            client.push("send", [n], queue="mail", id=f"mail-{n}")
        client.push("report", [1], queue="reports", id="report-1", max_attempts=3)
        client.push("report", [2], queue="reports", id="report-2")
        held = client.fetch("reports")
        assert held is not None and held.id == "report-1"
        client.fail(held, ValueError("bad row 17"))
        leased = client.fetch("reports")
        assert leased is not None
        assert [row[0] for row in rows(leash(broker, "ready"))] == ["mail-0", "mail-1", "mail-2"]
        assert [row[0] for row in rows(leash(broker, "leased"))] == ["report-2"]
        assert leash(broker, "ready", "--min-age-s", "3600") == "(none)\n"
        shown = fields(leash(broker, "job", "report-1"))["attempts ended"]
        assert re.fullmatch(
            r"1 failed at \S+ \S+ after \d+ ms, \S+ \(\S+ pid \d+\): ValueError: bad row 17", shown
        ), shown
        assert (
            leash(broker, "kill", "--state", "retrying", "--queue", "reports") == "killed 1 job\n"
        )
        assert leash(broker, "delete", "--state", "dead", "--type", "report", json_output=True) == [
            "report-1"
        ]
        assert leash(broker, "purge", "mail") == "mail: purged 3 jobs\n"
        refused = run_leash("delete", "mail-0", "--queue", "mail", "--data-dir", broker.data_dir)
        assert refused.returncode == 2 and "go with --state" in refused.stderr
    with broker.admin() as admin:
        assert admin.stats().jobs == {
            "ready": 0, "scheduled": 0, "leased": 1, "retrying": 0, "dead": 0
        }  # fmt: skip
