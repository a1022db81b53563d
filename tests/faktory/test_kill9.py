"""kill -9 of a Faktory-client worker (the ``faktory`` package's Worker, as a
real process): its leases end within Leash's bound (the reconnect grace, not
the units' 30-minute ``reserve_for``), another consumer fetches the jobs at
once (a lost lease has no retry backoff; the attempt counts), and a late
ACK from the dead process's wid is refused."""

import time

import pytest
from faktory import Client as FaktoryClient

from leash.client.admin import AdminClient
from tests.faktory.lines import Lines
from tests.faktory.workers import WorkerProcess
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)
GRACE_S = 2.0  # --reconnect-grace-ms: all connections gone this long, the process is dead
SLACK_S = 3.0  # the broker's timer (at most 1 s) and a loaded machine


def test_a_killed_faktory_worker_loses_its_leases_within_the_grace(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    jids = [f"fk-hang-{n:04}" for n in range(3)]
    with FaktoryClient(f"tcp://127.0.0.1:{broker.faktory_port}") as client:
        for jid in jids:
            assert client.queue("hang", args=[], queue="hang", jid=jid)  # reserve_for: 30 min
    victim = WorkerProcess("py_worker", str(broker.faktory_port), "fk-victim-01", "hang")
    try:
        wait_for(lambda: sum(len(b.jobs) for b in admin.busy()) == 3, "3 jobs held")
    finally:
        victim.kill()
    killed_s = time.monotonic()
    ended_s = wait_for(lambda: admin.busy() == [], "the victim's leases ended", 30)
    print(f"kill -9 -> the victim's 3 leases ended in {ended_s:.3f} s (grace {GRACE_S} s)")
    assert ended_s < GRACE_S + SLACK_S
    for jid in jids:
        job = admin.job(jid)
        assert job.state == "ready" and job.attempt == 1 and job.last_error is not None
        assert (job.last_error.type, job.last_error.message) == (
            "WorkerLost",
            "worker lost: disconnected",
        )
    with Lines(broker.faktory_port) as late:  # the dead process, back with its wid
        late.hello(wid="fk-victim-01")
        late.send(f'ACK {{"jid":"{jids[0]}"}}')
        refusal = late.error()
        assert refusal.startswith("STALE_LEASE") and "ready" in refusal
    with Lines(broker.faktory_port, timeout_s=30) as rescuer:
        rescuer.hello(wid="fk-rescuer-1")
        fetched = {}
        while len(fetched) < 3 and time.monotonic() - killed_s < GRACE_S + 10 * SLACK_S:
            unit = rescuer.command("FETCH", "hang")
            if unit.data is not None:
                fetched[unit.json["jid"]] = unit.json
        took_s = time.monotonic() - killed_s
        print(f"kill -9 -> the 3 jobs fetched by another consumer {took_s:.2f} s later")
        assert sorted(fetched) == jids
        assert took_s < GRACE_S + 2 * SLACK_S, "ready at once, not after a retry backoff"
        assert {unit["failure"]["errtype"] for unit in fetched.values()} == {"WorkerLost"}
        for jid in jids:
            rescuer.ok("ACK", {"jid": jid})
    with Lines(broker.faktory_port) as late:
        late.hello(wid="fk-victim-01")
        late.send(f'ACK {{"jid":"{jids[1]}"}}')
        assert late.error().startswith("NOT_FOUND")  # done by the rescuer: gone
