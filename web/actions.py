"""The changes an operator makes from the dashboard or the HTTP API: each is
one or more admin requests to the broker, decided and journalled by its
core. A bulk change by filter goes ``BULK_CHUNK`` jobs a request, request
after request, so the broker's other clients are served between them."""

from typing import Any, Final

from leash.client import AdminClient, NotFound, ServerError
from leash.web.gateway import BULK_CHUNK

CONTROLS: Final = {"quiet": "quiet", "unquiet": "ok", "stop": "terminate"}


def job_action(admin: AdminClient, action: str, job_id: str) -> str:
    match action:
        case "retry":
            admin.requeue_job(job_id)
            return f"{job_id}: requeued"
        case "delete":
            admin.delete_job(job_id)
            return f"{job_id}: deleted"
        case "kill":
            admin.kill_job(job_id)
            return f"{job_id}: killed"
    raise ValueError(action)


def jobs_by_id(admin: AdminClient, action: str, ids: list[str]) -> tuple[int, list[str]]:
    """The action on each job: how many were changed, and why the others were not."""
    done, problems = 0, []
    for job_id in ids:
        try:
            job_action(admin, action, job_id)
            done += 1
        except (NotFound, ServerError) as error:
            problems.append(f"{job_id}: {error.message}")
    return done, problems


def jobs_by_filter(
    admin: AdminClient, action: str, state: str, fields: dict[str, Any], most: int | None
) -> int:
    """The action on every job of ``state`` that matches: how many."""
    match action:
        case "retry":
            ids = admin.requeue_jobs(state, most=most, chunk=BULK_CHUNK, pace=True, **fields)  # type: ignore[arg-type]
        case "delete":
            ids = admin.delete_jobs(state, most=most, chunk=BULK_CHUNK, pace=True, **fields)  # type: ignore[arg-type]
        case "kill":
            ids = admin.kill_jobs(state, most=most, chunk=BULK_CHUNK, pace=True, **fields)  # type: ignore[arg-type]
        case _:
            raise ValueError(action)
    return len(ids)


def plural(count: int, noun: str = "job") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
