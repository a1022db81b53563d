"""A Starlette (or FastAPI) app that pushes jobs to Leash.

One ``AsyncClient`` for the app's life: opened in the lifespan, before the
first request, closed after the last. Every request shares its connection
(what the requests of one event-loop turn push goes out in one write), and
a push that meets a broker restart is sent again, with the same id, until
the broker answers, so a request never creates a job twice.

    LEASH_URL=leash://127.0.0.1:7420 uvicorn starlette_app:app

With FastAPI the lifespan is the same function:
``app = FastAPI(lifespan=lifespan)``, and a route reads the client from
``request.app.state.leash`` as here.
"""

import contextlib
import datetime
from collections.abc import AsyncIterator
from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from leash import AsyncClient


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    client = await AsyncClient.from_env()  # LEASH_URL, LEASH_KEY_FILE, LEASH_TLS_CA ...
    app.state.leash = client
    try:
        yield
    finally:
        await client.close()


async def order(request: Request) -> JSONResponse:
    body = await request.json()
    leash: AsyncClient = request.app.state.leash
    job_id = await leash.push(
        "send_receipt",
        {
            "order": int(body["order"]),
            "total": Decimal(body["total"]),  # a Decimal reaches the worker as a Decimal
            "placed_at": datetime.datetime.now(datetime.UTC),
        },
        queue="mail",
    )
    return JSONResponse({"job": job_id}, status_code=202)


app = Starlette(routes=[Route("/orders", order, methods=["POST"])], lifespan=lifespan)
