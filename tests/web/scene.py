"""A broker with jobs in every state, for the dashboard's tests: ready (one
whose args hold markup and script), leased (held by a process that stays
connected, with a time limit and a progress report), scheduled, retrying,
dead, and a committed batch; a ready job holds a uniqueness key and expires."""

from dataclasses import dataclass

from leash import Client
from leash.protocol.messages import JobsRun
from tests.web.conftest import Dashboard

# A process that holds a lease stays alive as long as the test needs it.
BROKER_ARGS = ("--process-ttl-ms", "600000", "--idle-timeout-ms", "0")
HOUR_MS = 3_600_000
DONE_ROUNDS = 4  # of 8 jobs pushed, fetched and acked
MARKUP = '<script>window.__leash_pwned = 1</script><img src=x onerror="window.__leash_pwned = 2">'


@dataclass
class Scene:
    holder: Client  # holds the leased job; close it at the end
    worker_id: str
    ready: str
    markup: str  # a ready job whose args are MARKUP
    leased: str
    scheduled: str
    retrying: str
    dead: str
    batch: str


def populate(dashboard: Dashboard) -> Scene:
    client = Client("127.0.0.1", dashboard.broker.port, timeout_s=10.0)
    client.push(
        "send_email",
        {"to": "ada@example.com"},
        queue="mail",
        id="mail-1",
        unique_key="mail:ada",
        unique_for_ms=HOUR_MS,
        ttl_ms=24 * HOUR_MS,
    )
    client.push("send_email", {"to": "bob@example.com"}, queue="mail", id="mail-2")
    client.push("render", {"html": MARKUP}, queue="mail", id="markup-1")
    client.push("report", [1], queue="reports", id="later-1", delay_ms=HOUR_MS)
    client.push("sync", [2], queue="reports", id="flaky-1", max_attempts=5)
    client.push("sync", [3], queue="reports", id="doomed-1", max_attempts=1)
    client.push("hold", [4], queue="work", id="held-1", time_limit_ms=HOUR_MS)
    for round in range(DONE_ROUNDS):  # some work done, for the graph of the overview
        client.push_many([{"type": "ping", "args": [round, n], "queue": "done"} for n in range(8)])
        client.ack_many(client.fetch_many("done", 8))
    client.beat(ran={"ping": JobsRun(done=DONE_ROUNDS * 8)})  # as a Worker tells what it ran
    for _ in range(2):
        job = client.fetch("reports")
        assert job is not None
        client.fail(job, ValueError(f"bad row in {job.id}"))
    held = client.fetch("work")
    assert held is not None and held.id == "held-1"
    client.progress(held, 40, "4 of 10 files")
    created = client.create_batch(
        [{"type": "thumb", "args": [n], "queue": "images", "id": f"thumb-{n}"} for n in range(3)],
        id="album-42",
        description="thumbnails for album 42",
        on_success={"type": "album_ready", "args": [42], "queue": "images"},
        commit=True,
    )
    with dashboard.admin() as admin:
        (process,) = admin.processes()
        assert {job.state for job in admin.jobs("dead")} == {"dead"}
    return Scene(
        holder=client,
        worker_id=process.worker_id,
        ready="mail-1",
        markup="markup-1",
        leased="held-1",
        scheduled="later-1",
        retrying="flaky-1",
        dead="doomed-1",
        batch=created.id,
    )
