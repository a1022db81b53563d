"""The HTTP admin API: JSON over everything the admin socket offers.

Views (GET) answer the admin view of the same name, as ``leash ... --json``
prints it (times in unix ms, job args decoded); listings are pages with a
``next`` cursor. Changes (POST, ``@mutation``: CSRF-checked, or signed by
an API key) answer ``{"message": ..., ...}``; the same endpoints serve the
dashboard's forms, which get a redirect back with the message shown.
docs/web.md lists every endpoint.
"""

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leash.client import AdminClient, NotFound
from leash.client._admin_format import plain
from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.web import actions, filters, forms, settings
from leash.web.context import Body, access_of, failure, json_of, mutation, web_of
from leash.web.gateway import BULK_CHUNK


async def _view(request: Request, work: Any) -> Response:
    try:
        return json_of(await web_of(request).gateway.call(work))
    except Exception as error:
        status, message = failure(error)
        return JSONResponse({"error": message}, status_code=status)


async def stats(request: Request) -> Response:
    return await _view(request, lambda admin: admin.stats())


async def history(request: Request) -> Response:
    seconds = forms.number(request.query_params.get("seconds"), "seconds", 1, L.HISTORY_MAX_S)
    wanted = int(seconds or L.HISTORY_MAX_S)
    return await _view(request, lambda admin: admin.history(wanted))


async def queues(request: Request) -> Response:
    return await _view(request, lambda admin: admin.queues())


async def queue(request: Request) -> Response:
    """One queue's view (its counts, limits and their use); 404 if it has none."""
    name = request.path_params["queue"]

    def work(admin: AdminClient) -> A.QueueView:
        for found in admin.queues():
            if found.name == name:
                return found
        raise NotFound("not_found", f"no queue {name!r}")

    return await _view(request, work)


async def schedules(request: Request) -> Response:
    """Every schedule with all its fields (null or 0 where it has none)."""

    def work(admin: AdminClient) -> list[dict[str, Any]]:
        return [{**msgspec.structs.asdict(found), **plain(found)} for found in admin.schedules()]

    return await _view(request, work)


async def busy(request: Request) -> Response:
    return await _view(request, lambda admin: admin.busy())


async def processes(request: Request) -> Response:
    return await _view(request, lambda admin: admin.processes())


async def fsck(request: Request) -> Response:
    return await _view(request, lambda admin: admin.fsck())


async def jobs(request: Request) -> Response:
    try:
        query = request.query_params
        state = forms.state_of(query.get("state", ""))
        fields = forms.job_filter(query)
        cursor, limit = forms.cursor_of(query), forms.limit_of(query)
    except Exception as error:
        status, message = failure(error)
        return JSONResponse({"error": message}, status_code=status)
    return await _view(
        request,
        lambda admin: admin.jobs_page(state, cursor, limit, **fields),
    )


async def job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    return await _view(request, lambda admin: admin.job(job_id))


async def batches(request: Request) -> Response:
    query = request.query_params
    state = query.get("state") or None
    if state not in (None, "open", "committed", "finished", "abandoned"):
        return JSONResponse({"error": f"no batch state {state!r}"}, status_code=400)
    try:
        cursor, limit = forms.cursor_of(query), forms.limit_of(query)
    except Exception as error:
        return JSONResponse({"error": failure(error)[1]}, status_code=400)

    return await _view(request, lambda admin: admin.batches_page(state, cursor, limit))


async def batch(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]
    return await _view(request, lambda admin: admin.batch(batch_id))


async def session(request: Request) -> Response:
    """The CSRF token of the caller's session (for a script that uses the cookie)."""
    return JSONResponse({"csrf": access_of(request).session.csrf})


# --- changes ---------------------------------------------------------------------


@mutation
async def queue_action(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    name, action = request.path_params["queue"], request.path_params["action"]
    gateway = web_of(request).gateway
    match action:
        case "pause":
            create = body.get("create") not in (False, "0", "false", "off")  # as the admin op
            await gateway.call(lambda admin: admin.pause(name, create=create))
            return f"{name}: paused", {}
        case "resume":
            await gateway.call(lambda admin: admin.resume(name))
            return f"{name}: resumed", {}
        case "purge":
            count = await gateway.call(lambda admin: admin.purge(name, chunk=BULK_CHUNK, pace=True))
            return f"{name}: purged {actions.plural(count)}", {"count": count}
    raise forms.bad(f"no queue action {action!r}: pause, resume or purge")


@mutation
async def queue_limits(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    """Replace a queue's limits (``PUT`` or ``POST``): every field checked
    before the one admin request, a field not given is no such limit."""
    name = request.path_params["queue"]
    found = settings.limits_of(name, body.as_dict(), body.is_form)
    await web_of(request).gateway.call(lambda admin: admin.set_queue_limits(name, **found))
    return f"{name}: {filters.limits_text(found)}", {"limits": found}


@mutation
async def schedule_add(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    add = settings.schedule_of(body.as_dict(), body.is_form)
    await web_of(request).gateway.call(
        lambda admin: admin.add_schedule(
            add.name, add.job, cron=add.cron, tz=add.tz, every_ms=add.every_ms, missed=add.missed
        )
    )
    return f"schedule {add.name} added", {}


@mutation
async def schedule_action(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    name, action = request.path_params["name"], request.path_params["action"]
    gateway = web_of(request).gateway
    match action:
        case "pause":
            await gateway.call(lambda admin: admin.pause_schedule(name))
        case "resume":
            await gateway.call(lambda admin: admin.resume_schedule(name))
        case "remove":
            await gateway.call(lambda admin: admin.remove_schedule(name))
        case _:
            raise forms.bad(f"no schedule action {action!r}: pause, resume or remove")
    return f"schedule {name}: {action.removesuffix('e')}ed", {}


@mutation
async def job_action(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    job_id, action = request.path_params["job_id"], request.path_params["action"]
    if action not in forms.ACTIONS:
        raise forms.bad(f"no job action {action!r}: retry, delete or kill")
    message = await web_of(request).gateway.call(
        lambda admin: actions.job_action(admin, action, job_id)
    )
    return message, {}


@mutation
async def bulk_action(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    """The action on the jobs named by ``id`` (a list), or on every job of
    ``state`` that matches the filter (at most ``most``)."""
    action = request.path_params["action"]
    if action not in forms.ACTIONS:
        raise forms.bad(f"no job action {action!r}: retry, delete or kill")
    gateway = web_of(request).gateway
    scope = body.get("scope")  # the dashboard's buttons: "selected" or "all"
    ids = [] if scope == "all" else forms.ids_of(body.getlist("id"))
    if scope == "selected" and not ids:
        raise forms.bad("select jobs first")
    if ids:
        done, problems = await gateway.call(lambda admin: actions.jobs_by_id(admin, action, ids))
        message = f"{action}: {actions.plural(done)}" + (
            f"; {'; '.join(problems)}" if problems else ""
        )
        return message, {"count": done, "problems": problems}
    allowed = {"retry": forms.RETRYABLE, "kill": forms.KILLABLE}.get(action, forms.STATES)
    state = forms.state_of(str(body.get("state") or ""), allowed)
    fields = forms.job_filter(body.as_dict())
    most = forms.number(body.get("most"), "most", 1, forms.BULK_MOST_MAX)
    count = await gateway.call(
        lambda admin: actions.jobs_by_filter(
            admin, action, state, fields, None if most is None else int(most)
        )
    )
    return f"{action}: {actions.plural(count)}", {"count": count}


@mutation
async def process_action(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    worker_id, action = request.path_params["worker_id"], request.path_params["action"]
    control = actions.CONTROLS.get(action)
    if control is None:
        raise forms.bad(f"no process action {action!r}: quiet, unquiet or stop")
    await web_of(request).gateway.call(lambda admin: admin.control(worker_id, control))  # type: ignore[arg-type]
    return f"{worker_id}: asked to {action}", {}


@mutation
async def batch_delete(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    batch_id = request.path_params["batch_id"]
    await web_of(request).gateway.call(lambda admin: admin.delete_batch(batch_id))
    return f"{batch_id}: deleted", {}


@mutation
async def compact(request: Request, body: Body) -> tuple[str, dict[str, Any]]:
    done = await web_of(request).gateway.call(lambda admin: admin.compact())
    return f"snapshot through seq {done.through_seq}", {
        "through_seq": done.through_seq,
        "journal_bytes": done.journal_bytes,
    }


ROUTES = [
    Route("/api/stats", stats),
    Route("/api/history", history),
    Route("/api/queues", queues),
    Route("/api/queues/{queue}", queue),
    Route("/api/schedules", schedules, methods=["GET"]),
    Route("/api/schedules", schedule_add, methods=["POST"]),
    Route("/api/schedules/{name}/{action}", schedule_action, methods=["POST"]),
    Route("/api/busy", busy),
    Route("/api/processes", processes),
    Route("/api/fsck", fsck),
    Route("/api/jobs", jobs),
    Route("/api/jobs/{action}", bulk_action, methods=["POST"]),
    Route("/api/jobs/{job_id}", job),
    Route("/api/jobs/{job_id}/{action}", job_action, methods=["POST"]),
    Route("/api/batches", batches),
    Route("/api/batches/{batch_id}", batch),
    Route("/api/batches/{batch_id}/delete", batch_delete, methods=["POST"]),
    Route("/api/queues/{queue}/limits", queue_limits, methods=["PUT", "POST"]),
    Route("/api/queues/{queue}/{action}", queue_action, methods=["POST"]),
    Route("/api/processes/{worker_id:path}/{action}", process_action, methods=["POST"]),
    Route("/api/compact", compact, methods=["POST"]),
    Route("/api/session", session),
]
