"""A broker restart (kill -9) under Faktory consumers: every process known
from before has the restart grace (3 s by default), a Faktory consumer as
well as a Leash worker, though its own TTL is 60 s. One that says HELLO
with its wid again within the grace keeps its lease and acks it; one that
does not come back loses its lease at the grace's end, and another consumer
fetches the job at once (at least once: the job is not lost, and a late ACK
from the gone consumer is refused)."""

import time
from contextlib import ExitStack

import pytest

from leash.client.admin import AdminClient
from tests.faktory.lines import Lines
from tests.integration.broker_proc import BrokerProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)
RESTART_GRACE_S = 3.0  # --restart-grace-ms by default
SLACK_S = 3.0  # the broker's timer (at most 1 s) and a loaded machine
CONSUMERS = {"live": "fk-live-wid", "gone": "fk-gone-wid"}  # queue: the wid that holds its job


def test_faktory_consumers_have_the_restart_grace_to_come_back(broker: BrokerProcess) -> None:
    with Lines(broker.faktory_port) as producer:
        producer.hello()
        for queue in CONSUMERS:
            unit = {"jid": f"fk-{queue}-0001", "jobtype": "t", "args": [], "queue": queue}
            producer.ok("PUSH", unit)
    with ExitStack() as before:
        for queue, wid in CONSUMERS.items():
            consumer = before.enter_context(Lines(broker.faktory_port))
            consumer.hello(wid=wid)
            assert consumer.command("FETCH", queue).json["jid"] == f"fk-{queue}-0001"
        broker.kill()  # both leases held
    broker.start()  # the same data directory
    back_s = time.monotonic()
    with ExitStack() as after:
        live = after.enter_context(Lines(broker.faktory_port))
        live.hello(wid=CONSUMERS["live"])  # back within the grace: it keeps its lease
        assert time.monotonic() - back_s < RESTART_GRACE_S, "too slow to test the grace"
        rescuer = after.enter_context(Lines(broker.faktory_port, timeout_s=30))
        rescuer.hello(wid="fk-rescue-wid")
        rescued_s = _fetch_gone(rescuer, back_s)
        print(f"restart -> the gone consumer's job fetched by another {rescued_s:.2f} s later")
        assert RESTART_GRACE_S - 0.5 <= rescued_s <= RESTART_GRACE_S + SLACK_S
        admin = after.enter_context(broker.admin())
        assert _holders(admin) == {
            CONSUMERS["live"]: ["fk-live-0001"],
            "fk-rescue-wid": ["fk-gone-0001"],
        }
        live.ok("ACK", {"jid": "fk-live-0001"})
        job = admin.job("fk-gone-0001")
        assert job.attempt == 1 and job.last_error is not None
        assert job.last_error.type == "WorkerLost"
        late = after.enter_context(Lines(broker.faktory_port))
        late.hello(wid=CONSUMERS["gone"])
        late.send('ACK {"jid":"fk-gone-0001"}')
        assert late.error().startswith("STALE_LEASE")
        rescuer.ok("ACK", {"jid": "fk-gone-0001"})


def _fetch_gone(rescuer: Lines, back_s: float) -> float:
    """Fetch the gone consumer's job: the seconds after the broker was back."""
    deadline_s = back_s + RESTART_GRACE_S + 10 * SLACK_S
    while time.monotonic() < deadline_s:
        unit = rescuer.command("FETCH", "gone")  # waits up to 2 s while there is none
        if unit.data is not None:
            assert unit.json["jid"] == "fk-gone-0001"
            return time.monotonic() - back_s
    raise AssertionError("the gone consumer's job was never fetched again")


def _holders(admin: AdminClient) -> dict[str, list[str]]:
    """The leases held now, by process."""
    wait_for(lambda: len(admin.busy()) == 2, "two processes hold a lease")
    return {busy.worker_id: sorted(job.id for job in busy.jobs) for busy in admin.busy()}
