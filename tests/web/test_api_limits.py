"""Queue limits and schedules through the HTTP API and on the pages,
against a real broker: each change checked through its admin socket, bad
input a 400 naming the field that changes nothing."""

import time

import httpx
import pytest

from leash import Client
from tests.web.conftest import Dashboard

FIRE_WAIT_S = 20.0  # an interval schedule of 1 s fires well within this, even on a loaded machine
SET = {"concurrency": 20, "per_key": 1, "rate": 600, "rate_interval_ms": 60_000}


def ok(response: httpx.Response) -> object:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert all(word in error for word in words), (words, error)


def test_a_queues_limits_are_set_and_shown_with_their_use(dashboard: Dashboard) -> None:
    admin = dashboard.admin()
    client = Client("127.0.0.1", dashboard.broker.port, timeout_s=10.0)
    for customer in ("acme", "acme", "globex"):
        client.push("sync_account", [customer], queue="sync", concurrency_key=customer)
    with dashboard.http() as http:
        assert ok(http.put("/api/queues/sync/limits", json=SET)) == {
            "message": "sync: 20 at once, 1 per key, 600 per min",
            "limits": SET,
        }
        (view,) = admin.queues()
        assert (view.concurrency_limit, view.per_key_limit, view.rate_limit) == (20, 1, 600)
        assert view.rate_interval_ms == 60_000
        first = client.fetch_many("sync", 10)  # one a customer: the second acme job waits
        assert sorted(job.args[0] for job in first) == ["acme", "globex"]
        queue = ok(http.get("/api/queues/sync"))
        assert isinstance(queue, dict)
        use = {
            name: queue[name]
            for name in ("in_flight", "rate_used", "keys_leased", "keys_saturated")
        }
        assert use == {"in_flight": 2, "rate_used": 2, "keys_leased": 2, "keys_saturated": 2}
        listing = ok(http.get("/api/queues"))
        assert isinstance(listing, list) and listing[0]["concurrency_limit"] == 20
        page = http.get("/queues").text
        assert (
            '<td class="limits">2/20 running, 1 per key (2 of 2 keys full), 2/600 per min</td>'
            in page
        )
        assert 'action="/api/queues/sync/limits"' in page and 'value="20"' in page
        refused(http.get("/api/queues/nightly"), 404, "nightly")
        for body, words in (
            ({"rate": 5}, ("rate_interval_ms",)),
            ({"rate_interval_ms": 1000}, ("rate", "needs both")),
            ({"concurrency": -1}, ("concurrency", "between 0")),
            ({"concurrency": 1_000_001}, ("concurrency",)),
            ({"per_key": "x"}, ("per_key", "whole number")),
            ({"per_key": True}, ("per_key",)),
            ({"concurrency": 1.5}, ("concurrency",)),
            ({"rate": 5, "rate_interval_ms": 86_400_001}, ("rate_interval_ms",)),
            ({"concurrency": 1, "burst": 3}, ("'burst'",)),
        ):
            refused(http.put("/api/queues/sync/limits", json=body), 400, *words)
        refused(http.put("/api/queues/bad%20name/limits", json=SET), 400, "queue")
        (view,) = admin.queues()
        assert (view.concurrency_limit, view.per_key_limit, view.rate_limit) == (20, 1, 600)
        # The page's form: empty fields are no limit, its interval without a rate nothing.
        form = {"csrf": http.headers["X-CSRF-Token"], "back": "/queues", "concurrency": "3",
                "per_key": "", "rate": "", "rate_interval_ms": "60000"}  # fmt: skip
        answer = http.post("/api/queues/sync/limits", data=form)
        assert answer.status_code == 303 and answer.headers["location"] == "/queues"
        (view,) = admin.queues()
        assert (view.concurrency_limit, view.per_key_limit, view.rate_limit) == (3, 0, 0)
        assert "sync: 3 at once" in http.get("/queues").text  # the message shown
        ok(http.post("/api/queues/sync/limits", json={}))  # nothing given: no limits
        (view,) = admin.queues()
        assert (view.concurrency_limit, view.per_key_limit, view.rate_limit) == (0, 0, 0)
    with dashboard.http(csrf=False) as http:
        refused(http.put("/api/queues/sync/limits", json=SET), 403, "CSRF")
    with dashboard.http() as http:
        elsewhere = {"Origin": "http://evil.test"}
        refused(http.put("/api/queues/sync/limits", json=SET, headers=elsewhere), 403)
    assert admin.queues()[0].concurrency_limit == 0
    client.close()
    admin.close()


def test_schedules_are_added_listed_paused_resumed_and_removed(dashboard: Dashboard) -> None:
    admin = dashboard.admin()
    with dashboard.http() as http:
        added = ok(http.post("/api/schedules", json={
            "name": "nightly", "cron": "30 2 * * *", "tz": "Europe/Berlin", "queue": "cron",
            "type": "report", "args": ["eu"], "missed": "last", "priority": 7,
        }))  # fmt: skip
        assert added == {"message": "schedule nightly added"}
        ok(http.post("/api/schedules", json={"name": "beat", "every_ms": 1000, "type": "ping"}))
        deadline = time.monotonic() + FIRE_WAIT_S
        while not any(s["fires"] for s in ok(http.get("/api/schedules"))):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the 1 s schedule never fired"
            time.sleep(0.2)
        beat, nightly = ok(http.get("/api/schedules"))  # type: ignore[misc]
        assert (nightly["name"], nightly["cron"], nightly["tz"]) == ("nightly", "30 2 * * *",
                                                                     "Europe/Berlin")  # fmt: skip
        assert (nightly["queue"], nightly["type"], nightly["args"]) == ("cron", "report", ["eu"])
        assert nightly["missed"] == "last" and nightly["next_ms"] > int(time.time() * 1000)
        assert (nightly["fires"], nightly["last_tick_ms"], nightly["every_ms"]) == (0, None, None)
        assert (nightly["paused"], nightly["from_config"], nightly["skips"]) == (False, False, 0)
        assert (beat["every_ms"], beat["queue"], beat["args"]) == (1000, "default", [])
        assert beat["fires"] >= 1 and beat["last_tick_ms"] <= beat["next_ms"]
        assert ok(http.post("/api/schedules/nightly/pause")) == {
            "message": "schedule nightly: paused"
        }
        (paused,) = [s for s in admin.schedules() if s.name == "nightly"]
        assert paused.paused and paused.next_ms == 0
        page = http.get("/schedules").text
        assert (
            '<tr data-schedule="nightly">' in page
            and "<code>30 2 * * *</code> (Europe/Berlin)" in page
        )
        assert 'action="/api/schedules/nightly/resume"' in page and "every 1 s" in page
        ok(http.post("/api/schedules/nightly/resume"))
        (resumed,) = [s for s in admin.schedules() if s.name == "nightly"]
        assert not resumed.paused and resumed.next_ms > 0
        assert ok(http.post("/api/schedules/beat/remove")) == {"message": "schedule beat: removed"}
        assert [s.name for s in admin.schedules()] == ["nightly"]
        refused(http.post("/api/schedules/beat/pause"), 404, "beat")
        refused(http.post("/api/schedules/nightly/explode"), 400, "pause, resume or remove")
        form = {"csrf": http.headers["X-CSRF-Token"], "back": "/schedules", "name": "hourly",
                "cron": "0 * * * *", "tz": "UTC", "every_ms": "", "queue": "cron",
                "type": "tidy", "args": '{"deep": true}', "missed": "skip"}  # fmt: skip
        answer = http.post("/api/schedules", data=form)
        assert answer.status_code == 303 and answer.headers["location"] == "/schedules"
        (hourly,) = [s for s in admin.schedules() if s.name == "hourly"]
        assert (hourly.cron, hourly.queue, hourly.type) == ("0 * * * *", "cron", "tidy")
        assert ok(http.get("/api/schedules"))[0]["args"] == {"deep": True}  # type: ignore[index]
    admin.close()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "x", "every_ms": 60000}, ("type",)),
        ({"name": "x", "type": "t"}, ("cron or every_ms",)),
        ({"name": "x", "type": "t", "cron": "* * * * *", "every_ms": 60000}, ("cron or every_ms",)),
        ({"name": "x", "type": "t", "every_ms": 10}, ("every_ms", "between 1000")),
        ({"name": "bad name", "type": "t", "every_ms": 60000}, ("$.name",)),
        ({"type": "t", "every_ms": 60000}, ("$.name",)),
        ({"name": "x", "type": "t", "every_ms": 60000, "queue": "a b"}, ("$.queue",)),
        ({"name": "x", "type": "t", "every_ms": 60000, "missed": "never"}, ("$.missed",)),
        ({"name": "x", "type": "t", "every_ms": 60000, "priority": 10}, ("priority",)),
        ({"name": "x", "type": "t", "every_ms": 60000, "when": "now"}, ("'when'",)),
        ({"name": "x", "type": "t", "every_ms": 60000, "args": [2**70]}, ("args",)),
        ({"name": "x", "type": "t", "cron": "61 * * * *"}, ("61",)),
        ({"name": "x", "type": "t", "cron": "* * * * *", "tz": "Mars/Olympus"}, ("Mars/Olympus",)),
    ],
)
def test_a_bad_schedule_is_a_clear_400_and_adds_nothing(
    dashboard: Dashboard, body: dict[str, object], words: tuple[str, ...]
) -> None:
    with dashboard.http() as http:
        refused(http.post("/api/schedules", json=body), 400, *words)
        form = {"csrf": http.headers["X-CSRF-Token"], "name": "x", "type": "t",
                "every_ms": "60000", "args": "[1,"}  # fmt: skip
        answer = http.post("/api/schedules", data=form)
        assert answer.status_code == 303
        assert "refused: args is not JSON" in http.get("/schedules").text
    with dashboard.admin() as admin:
        assert admin.schedules() == []
