"""A push tried once, for the tests about what the broker itself answers.

A client sends a push again after ``journal_failed`` or a lost connection,
with the same id, until its timeout (leash.client._backoff): the right thing
for a producer, which rides out a broker restart, but it hides the broker's
own answer, which these tests check (``journal_failed`` at once, then the
connection gone)."""

from typing import Any

from leash.client import AsyncClient, Client
from leash.client._types import job_spec


def push_once(client: Client, job_id: str, args: Any) -> str:
    return client._call(client._core.push(job_spec("t", args, id=job_id)))


async def push_once_async(client: AsyncClient, job_id: str, args: Any) -> str:
    return await client._call(client._core.push(job_spec("t", args, id=job_id)))
