"""The HTTP admin API against a real broker: every view, every change (each
checked on the broker through its admin socket), bad input, and paging
through 100,000 dead jobs and a bulk retry of 10,000."""

import time
from collections.abc import Callable

import httpx
import pytest

from leash import Client
from leash.protocol import limits as L
from leash.web.gateway import PAGE_MAX
from tests.web.conftest import Dashboard
from tests.web.scene import BROKER_ARGS, MARKUP, Scene, populate


@pytest.fixture
def scene_dashboard(start_dashboard: Callable[..., Dashboard]) -> tuple[Dashboard, Scene]:
    dashboard = start_dashboard(broker_args=BROKER_ARGS)
    return dashboard, populate(dashboard)


def ok(response: httpx.Response) -> object:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def test_every_view_answers_json_from_the_admin_socket(
    scene_dashboard: tuple[Dashboard, Scene],
) -> None:
    dashboard, scene = scene_dashboard
    with dashboard.http() as http:
        stats = ok(http.get("/api/stats"))
        assert isinstance(stats, dict)
        assert stats["jobs"] == {"ready": 6, "scheduled": 1, "leased": 1, "retrying": 1, "dead": 1}
        assert stats["fsync"] == "always" and stats["busy_processes"] == 1
        assert stats["journal"]["disk_free_bytes"] > 0
        history = ok(http.get("/api/history", params={"seconds": 60}))
        assert isinstance(history, dict) and len(history["pushed"]) == 60
        assert sum(history["pushed"]) == 42, "7 pushes, 32 done and the batch's 3 jobs"
        assert sum(history["acked"]) == 32 and sum(history["failed"]) == 2
        assert sum(history["dead"]) == 1 == stats["totals"]["dead"]
        assert sum(history["pushed"]) == stats["totals"]["pushed"], "the totals' counting"
        queues = ok(http.get("/api/queues"))
        assert isinstance(queues, list)
        assert [q["name"] for q in queues] == ["images", "mail", "reports", "work"]
        assert [q["held_fetches"] for q in queues] == [0, 0, 0, 0]  # nobody long-polls here
        assert http.get("/queues").text.count('<td class="waiting">0</td>') == 4
        for state, expected in (
            ("ready", ["thumb-0", "thumb-1", "thumb-2", "mail-1", "mail-2", scene.markup]),
            ("leased", [scene.leased]),
            ("scheduled", [scene.scheduled]),
            ("retrying", [scene.retrying]),
            ("dead", [scene.dead]),
        ):
            page = ok(http.get("/api/jobs", params={"state": state, "limit": 50}))
            assert isinstance(page, dict) and page["next"] == ""
            assert [job["id"] for job in page["jobs"]] == expected, state
        two = ok(http.get("/api/jobs", params={"state": "ready", "queue": "mail", "limit": 2}))
        assert isinstance(two, dict) and [job["id"] for job in two["jobs"]] == ["mail-1", "mail-2"]
        rest = ok(http.get("/api/jobs", params={"state": "ready", "cursor": two["next"]}))
        assert isinstance(rest, dict) and [job["id"] for job in rest["jobs"]] == [scene.markup]
        markup = ok(http.get(f"/api/jobs/{scene.markup}"))
        assert isinstance(markup, dict) and markup["args"] == {"html": MARKUP}
        dead = ok(http.get(f"/api/jobs/{scene.dead}"))
        assert isinstance(dead, dict)
        (attempt,) = dead["attempts"]
        assert attempt["outcome"] == "failed" and attempt["worker_id"] == scene.worker_id
        assert attempt["error"]["message"] == f"bad row in {scene.dead}"
        busy = ok(http.get("/api/busy"))
        assert isinstance(busy, list) and busy[0]["worker_id"] == scene.worker_id
        assert [job["id"] for job in busy[0]["jobs"]] == [scene.leased]
        processes = ok(http.get("/api/processes"))
        assert isinstance(processes, list)
        assert [(p["worker_id"], p["in_flight"]) for p in processes] == [(scene.worker_id, 1)]
        assert processes[0]["ran"] == {"ping": {"done": 32}}  # what its beat told
        page = http.get("/processes")
        assert page.status_code == 200
        assert '<td class="ran" title="ping: 32 done">32 done</td>' in page.text
        batches = ok(http.get("/api/batches"))
        assert isinstance(batches, dict) and [b["id"] for b in batches["batches"]] == [scene.batch]
        batch = ok(http.get(f"/api/batches/{scene.batch}"))
        assert isinstance(batch, dict) and batch["pending"] == 3 and len(batch["members"]) == 3
        fsck = ok(http.get("/api/fsck"))
        assert isinstance(fsck, dict) and fsck["problems"] == []
        assert http.get("/api/jobs/nope").status_code == 404
        assert http.get("/api/batches/nope").status_code == 404
    scene.holder.close()


def test_the_job_features_show_in_the_api_and_on_the_pages(
    scene_dashboard: tuple[Dashboard, Scene],
) -> None:
    """A uniqueness key, an expiry, a time limit and a progress report: in
    the JSON of the job and busy views, and on the job, listing and busy pages."""
    dashboard, scene = scene_dashboard
    with dashboard.http() as http:
        held = ok(http.get(f"/api/jobs/{scene.leased}"))
        assert isinstance(held, dict)
        assert (held["progress"], held["progress_message"], held["time_limit_ms"]) == (
            40,
            "4 of 10 files",
            3_600_000,
        )
        busy = ok(http.get("/api/busy"))
        assert isinstance(busy, list)
        (running,) = busy[0]["jobs"]
        assert (running["progress"], running["time_limit_ms"]) == (40, 3_600_000)
        ready = ok(http.get(f"/api/jobs/{scene.ready}"))
        assert isinstance(ready, dict) and ready["unique_key"] == "mail:ada" and ready["expires_ms"]
        job_page = http.get(f"/job/{scene.leased}").text
        assert '<progress max="100" value="40">' in job_page and "4 of 10 files" in job_page
        assert '<dd class="time-limit">60 min 0 s an attempt: this one ends by' in job_page
        busy_page = http.get("/busy").text
        assert (
            '<td class="busy-progress"><span class="progress"><progress max="100" value="40">'
            in (busy_page)
        )
        ready_page = http.get(f"/job/{scene.ready}").text
        assert '<dd class="unique-key"><code>mail:ada</code> (kept 60 min 0 s after success)' in (
            ready_page
        )
        assert '<dd class="expires">' in ready_page and "unless started before" in ready_page
        listing = http.get("/jobs/ready", params={"queue": "mail"}).text
        assert '<span class="tag unique" title="uniqueness key mail:ada">key mail:ada</span>' in (
            listing
        )
        assert '<span class="tag expires"' in listing
        leased_listing = http.get("/jobs/leased").text
        assert '<span class="tag time-limit">limit 60 min 0 s</span>' in leased_listing
        assert '<progress max="100" value="40">' in leased_listing
        overview = http.get("/").text
        assert "duplicates refused 0, expired unstarted 0, time limits exceeded 0" in overview
    scene.holder.close()


def test_every_change_is_an_admin_request_the_broker_applies(
    scene_dashboard: tuple[Dashboard, Scene],
) -> None:
    dashboard, scene = scene_dashboard
    admin = dashboard.admin()
    with dashboard.http() as http:

        def queue(name: str) -> dict[str, object]:
            (found,) = [q for q in admin.queues() if q.name == name]
            return {"paused": found.paused, "ready": found.ready}

        assert ok(http.post("/api/queues/mail/pause")) == {"message": "mail: paused"}
        assert queue("mail")["paused"] is True
        ok(http.post("/api/queues/mail/resume"))
        assert queue("mail")["paused"] is False
        assert http.post("/api/queues/nightly/pause", json={"create": False}).status_code == 404
        ok(http.post(f"/api/jobs/{scene.dead}/retry"))
        assert admin.job(scene.dead).state == "ready"
        ok(http.post(f"/api/jobs/{scene.scheduled}/kill"))
        assert admin.job(scene.scheduled).state == "dead"
        ok(http.post(f"/api/jobs/{scene.scheduled}/delete"))
        gone = http.get(f"/api/jobs/{scene.scheduled}")  # from the finished-job history
        assert (gone.status_code, gone.json()["state"]) == (200, "deleted")
        assert http.post(f"/api/jobs/{scene.ready}/retry").status_code == 409  # not dead
        done = ok(http.post("/api/jobs/kill", json={"id": ["thumb-0", "nope"]}))
        assert done == {"message": "kill: 1 job; nope: no job 'nope'", "count": 1,
                        "problems": ["nope: no job 'nope'"]}  # fmt: skip
        assert admin.job("thumb-0").state == "dead"
        assert sum(admin.history().dead) == 3, "the failed job and two killed by an operator"
        retried = ok(http.post("/api/jobs/retry", json={"state": "dead", "queue": "images"}))
        assert retried == {"message": "retry: 1 job", "count": 1}
        purged = ok(http.post("/api/queues/mail/purge"))
        assert purged == {"message": "mail: purged 3 jobs", "count": 3}
        assert "mail" not in {q.name for q in admin.queues()}
        ok(http.post(f"/api/processes/{scene.worker_id}/quiet"))
        assert admin.processes()[0].state == "quiet"
        ok(http.post(f"/api/processes/{scene.worker_id}/unquiet"))
        assert admin.processes()[0].state == "ok"
        ok(http.post(f"/api/batches/{scene.batch}/delete"))
        assert [b.id for b in admin.batches()] == []
        deleted = ok(http.post("/api/jobs/delete", json={"state": "ready"}))
        assert isinstance(deleted, dict) and deleted["count"] == 4  # 3 thumbs and the requeued one
        ok(http.post(f"/api/processes/{scene.worker_id}/stop"))
        assert admin.processes()[0].state == "terminate"
        compacted = ok(http.post("/api/compact"))
        assert isinstance(compacted, dict) and compacted["through_seq"] > 0
    admin.close()
    scene.holder.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/api/jobs?state=busy", None, 400),
        ("GET", "/api/jobs?state=ready&limit=0", None, 400),
        ("GET", "/api/jobs?state=ready&limit=51", None, 400),
        ("GET", "/api/jobs?state=ready&min_age_s=-1", None, 400),
        ("GET", "/api/jobs?state=ready&max_age_s=nan", None, 400),
        ("GET", "/api/jobs?state=dead&cursor=not-a-cursor", None, 400),
        ("GET", "/api/jobs?state=ready&queue=bad%20name", None, 400),
        ("GET", "/api/history?seconds=3601", None, 400),
        ("GET", "/api/batches?state=done", None, 400),
        ("POST", "/api/jobs/explode", {}, 400),
        ("POST", "/api/jobs/retry", {"state": "ready"}, 400),
        ("POST", "/api/jobs/kill", {"state": "dead"}, 400),
        ("POST", "/api/jobs/delete", {"id": "not-a-list"}, 400),
        ("POST", "/api/jobs/delete", {"state": "ready", "most": 0}, 400),
        ("POST", "/api/queues/mail/explode", {}, 400),
        ("POST", "/api/processes/w-1/explode", {}, 400),
        ("POST", "/api/processes/w-1/quiet", {}, 404),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    dashboard: Dashboard, method: str, path: str, body: object, status: int
) -> None:
    with Client("127.0.0.1", dashboard.broker.port) as client:
        client.push("t", queue="mail")
    with dashboard.http() as http:
        response = http.request(method, path, json=body)
        assert response.status_code == status, response.text
        assert isinstance(response.json()["error"], str) and response.json()["error"]
        not_json = {"content-type": "application/json"}
        assert http.post("/api/jobs/retry", content=b"{x", headers=not_json).status_code == 400
    with dashboard.admin() as admin:
        assert [(q.name, q.ready, q.paused) for q in admin.queues()] == [("mail", 1, False)]


def test_a_post_without_the_sessions_csrf_token_or_from_another_origin_is_refused(
    dashboard: Dashboard,
) -> None:
    with Client("127.0.0.1", dashboard.broker.port) as client:
        client.push("t", queue="mail")
    with dashboard.http(csrf=False) as http:
        refused = http.post("/api/queues/mail/pause")
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
        wrong = http.post("/api/queues/mail/pause", headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        form = http.post("/api/queues/mail/pause", data={"csrf": ""})
        assert form.status_code == 403
    with dashboard.http() as http:
        elsewhere = http.post("/api/queues/mail/pause", headers={"Origin": "http://evil.test"})
        assert elsewhere.status_code == 403
    with dashboard.admin() as admin:
        assert [q.paused for q in admin.queues()] == [False]


def test_every_post_route_refuses_a_request_without_the_csrf_token(dashboard: Dashboard) -> None:
    from leash.web import api, pages

    posts = [
        route.path
        for route in (*api.ROUTES, *pages.ROUTES)
        if "POST" in (getattr(route, "methods", None) or ())
    ]
    assert len(posts) == 11
    sample = {"{action}": "delete", "{job_id}": "j", "{batch_id}": "b", "{queue}": "q",
              "{worker_id:path}": "w", "{name}": "s"}  # fmt: skip
    with dashboard.http(csrf=False) as http:
        for path in posts:
            for name, value in sample.items():
                path = path.replace(name, value)
            response = http.post(path, data={"password": "x", "state": "dead"})
            assert response.status_code == 403 or (
                path == "/logout" and response.status_code == 303  # signs nobody out
            ), (path, response.status_code)


def test_responses_carry_a_strict_content_security_policy(dashboard: Dashboard) -> None:
    with dashboard.http() as http:
        for path in ("/", "/api/stats", "/static/app.js", "/jobs/dead"):
            headers = http.get(path).headers
            policy = headers["content-security-policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
            assert headers["x-content-type-options"] == "nosniff"
        cookie = http.get("/").headers.get("set-cookie") or ""
        assert cookie == "" or "httponly" in cookie.lower()


DEAD_JOBS = 100_000
RETRIED = 10_000


@pytest.mark.timeout(600)  # 2,000 paced pages: minutes on a loaded 2-core machine
def test_paging_through_100000_dead_jobs_shows_each_once_then_a_bulk_retry_of_10000(
    start_dashboard: Callable[..., Dashboard],
) -> None:
    started = time.perf_counter()
    dashboard = start_dashboard(broker_args=["--dead-max-jobs", str(DEAD_JOBS), "--fsync", "never"])
    with Client("127.0.0.1", dashboard.broker.port, timeout_s=60.0) as client:
        for start in range(0, DEAD_JOBS, L.PUSH_MANY_MAX):
            specs = [
                {"type": "report" if n % 10 else "mail", "args": [n], "queue": "bulk",
                 "id": f"d{n:06}"}
                for n in range(start, start + L.PUSH_MANY_MAX)
            ]  # fmt: skip
            client.push_many(specs)
    with dashboard.admin() as admin:
        killed = admin.kill_jobs("ready", chunk=5_000, queue="bulk")
        assert len(killed) == DEAD_JOBS
    with dashboard.http() as http:
        seen: list[str] = []
        cursor, pages = "", 0
        while True:
            params = {"state": "dead", "limit": PAGE_MAX, "cursor": cursor}
            page = ok(http.get("/api/jobs", params=params))
            assert isinstance(page, dict)
            seen += [job["id"] for job in page["jobs"]]
            pages += 1
            cursor = page["next"]
            if not cursor:
                break
        assert len(seen) == DEAD_JOBS and len(set(seen)) == DEAD_JOBS
        assert seen[:2] == ["d099999", "d099998"], "newest first"
        assert pages == DEAD_JOBS // PAGE_MAX
        done = ok(http.post("/api/jobs/retry",
                            json={"state": "dead", "type": "report", "most": RETRIED}))  # fmt: skip
        assert done == {"message": f"retry: {RETRIED} jobs", "count": RETRIED}
    with dashboard.admin() as admin:
        stats = admin.stats()
        assert stats.jobs["dead"] == DEAD_JOBS - RETRIED
        assert stats.jobs["ready"] == RETRIED
        assert {job.type for job in admin.jobs("ready", most=RETRIED)} == {"report"}
    print(
        f"100,000 dead jobs made, paged and 10,000 retried in {time.perf_counter() - started:.1f} s"
    )
