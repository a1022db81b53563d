"""The dashboard's pages: server-rendered HTML (Jinja2, every value escaped),
each from one round of admin requests, refreshed by the page's script.

Overview (``/``), Queues (with each queue's limits and a form to set them),
the jobs of each state (``/jobs/STATE``, with search, paging and bulk
actions), a job's detail (``/job/ID``), Busy, Processes, Batches and a
batch's detail, Schedules (with a form to add one), and the sign-in page. Buttons are
forms that POST to the API's endpoints (api.py) with the page's CSRF token.
"""

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from leash.client import AdminClient
from leash.protocol import limits as L
from leash.web import charts, filters, forms
from leash.web.context import access_of, failure, local_path, read_body, web_of
from leash.web.guard import csrf_ok, delay_failure, failure_source, now_ms

CHART_POINTS: Final = 120  # the overview's graph: at most this many points
CHART_MIN_S: Final = 60  # it spans the broker's uptime, at least a minute, at most an hour
QUEUES_ON_OVERVIEW: Final = 10
RECENT_S: Final = 10  # the overview's "now": the rate over the last 10 s


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    web = web_of(request)
    access = access_of(request)
    flash, access.session.flash = access.session.flash, []
    html = web.templates.get_template(template).render(
        request_path=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        csrf=access.session.csrf,
        signed_in=access.session.signed_in,
        sign_in_needed=web.credentials.required,
        refresh_s=web.refresh_s,
        version=web.version,
        now_ms=now_ms(),
        flash=flash,
        **context,
    )
    return HTMLResponse(html, status_code=status)


async def _page(request: Request, template: str, work: Any, **context: Any) -> Response:
    try:
        found = await web_of(request).gateway.call(work)
    except Exception as error:
        status, message = failure(error)
        return render(request, "error.html", status=status, message=message, **context)
    return render(request, template, **found, **context)


async def overview(request: Request) -> Response:
    def work(admin: AdminClient) -> dict[str, Any]:
        stats = admin.stats()
        span_s = min(max(stats.uptime_ms // 1000 + 1, CHART_MIN_S), L.HISTORY_MAX_S)
        span_s -= span_s % CHART_MIN_S if span_s > CHART_POINTS else 0
        history, queues = admin.history(span_s), admin.queues()
        bucket_s = max(1, span_s // CHART_POINTS)
        series = [
            charts.Series("acked", "processed", charts.buckets(history.acked, bucket_s)),
            charts.Series("failed", "failed", charts.buckets(history.failed, bucket_s)),
        ]
        busiest = sorted(queues, key=lambda q: (-(q.ready + q.in_flight), q.name))
        return {
            "stats": stats,
            "chart": charts.line_chart(series, filters.duration(span_s * 1000) + " ago"),
            "span": filters.duration(span_s * 1000),
            "rates": {"acked": _recent(history.acked), "failed": _recent(history.failed)},
            "queues": busiest[:QUEUES_ON_OVERVIEW],
            "more_queues": max(0, len(queues) - QUEUES_ON_OVERVIEW),
        }

    return await _page(request, "overview.html", work, section="overview")


def _recent(counts: list[int], seconds: int = RECENT_S) -> float:
    """The rate a second over the last whole seconds (not the one counting now)."""
    whole = counts[-seconds - 1 : -1]
    return sum(whole) / len(whole) if whole else 0.0


async def queues(request: Request) -> Response:
    return await _page(
        request, "queues.html", lambda admin: {"queues": admin.queues()}, section="queues"
    )


async def schedules(request: Request) -> Response:
    return await _page(
        request,
        "schedules.html",
        lambda admin: {"schedules": admin.schedules()},
        section="schedules",
        limits=L,
    )


async def jobs(request: Request) -> Response:
    state = request.path_params["state"]
    if state not in forms.STATES:
        return render(request, "error.html", 404, message=f"no job state {state!r}")
    query = request.query_params
    try:
        fields = forms.job_filter(query)
        cursor, limit = forms.cursor_of(query), forms.limit_of(query)
    except Exception as error:
        return render(request, "error.html", 400, message=failure(error)[1], section=state)

    def work(admin: AdminClient) -> dict[str, Any]:
        return {"page": admin.jobs_page(state, cursor, limit, **fields)}

    return await _page(
        request,
        "jobs.html",
        work,
        section=state,
        state=state,
        filters=forms.filter_query(query),
        cursor=cursor,
        limit=limit,
        retryable=state in forms.RETRYABLE,
        killable=state in forms.KILLABLE,
    )


async def job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    return await _page(request, "job.html", lambda admin: {"job": admin.job(job_id)}, section="")


async def busy(request: Request) -> Response:
    def work(admin: AdminClient) -> dict[str, Any]:
        return {"busy": admin.busy(), "processes": {p.worker_id: p for p in admin.processes()}}

    return await _page(request, "busy.html", work, section="busy")


async def processes(request: Request) -> Response:
    return await _page(
        request,
        "processes.html",
        lambda admin: {"processes": admin.processes()},
        section="processes",
    )


async def batches(request: Request) -> Response:
    query = request.query_params
    state = query.get("state") or None
    if state not in (None, "open", "committed", "finished", "abandoned"):
        return render(request, "error.html", 400, message=f"no batch state {state!r}")
    try:
        cursor = forms.cursor_of(query)
    except Exception as error:
        return render(request, "error.html", 400, message=failure(error)[1])

    def work(admin: AdminClient) -> dict[str, Any]:
        return {"page": admin.batches_page(state, cursor, 50)}  # type: ignore[arg-type]

    return await _page(
        request, "batches.html", work, section="batches", batch_state=state, cursor=cursor
    )


async def batch(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]
    return await _page(
        request,
        "batch.html",
        lambda admin: {"batch": admin.batch(batch_id, limit=L.BATCH_STATUS_MEMBERS_DEFAULT)},
        section="batches",
    )


# --- signing in ------------------------------------------------------------------


async def login(request: Request) -> Response:
    web = web_of(request)
    next_path = local_path(request.query_params.get("next"), "/")
    if request.method == "GET":
        return render(request, "login.html", next_path=next_path, error="")
    body = await read_body(request)
    next_path = local_path(body.get("next"), "/")
    if not csrf_ok(request, body.get("csrf")):
        return render(request, "login.html", 403, next_path=next_path, error="Reload and retry.")
    secret = str(body.get("password") or "")
    ok = web.credentials.required and bool(secret) and web.credentials.check(secret)
    if not ok:
        await delay_failure(web.failures, request)
        message = "Wrong password or key."
        return render(request, "login.html", 401, next_path=next_path, error=message)
    web.failures.succeeded(failure_source(request))
    access = access_of(request)
    access.session = web.sessions.sign_in(access.session, now_ms())
    return RedirectResponse(next_path, status_code=303)


async def logout(request: Request) -> Response:
    body = await read_body(request)
    access = access_of(request)
    if csrf_ok(request, body.get("csrf")):
        web_of(request).sessions.end(access.session)
        access.session = web_of(request).sessions.new(now_ms())
    return RedirectResponse("/login" if web_of(request).credentials.required else "/", 303)


logout.mutation = True  # type: ignore[attr-defined]
login.mutation = True  # type: ignore[attr-defined]

ROUTES = [
    Route("/", overview),
    Route("/queues", queues),
    Route("/jobs/{state}", jobs),
    Route("/job/{job_id}", job),
    Route("/schedules", schedules),
    Route("/busy", busy),
    Route("/processes", processes),
    Route("/batches", batches),
    Route("/batch/{batch_id}", batch),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
