"""The dashboard's ASGI application: the pages, the API, the static files,
behind the guard (guard.py) that every request passes first."""

from pathlib import Path
from typing import Final

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from leash import __version__
from leash.web import api, filters, pages
from leash.web.context import Web
from leash.web.credentials import Credentials
from leash.web.gateway import Gateway
from leash.web.guard import Guard, new_failure_table
from leash.web.sessions import Sessions

HERE: Final = Path(__file__).resolve().parent
REFRESH_DEFAULT_S: Final = 5


def templates() -> Environment:
    """Jinja2 with autoescape on for every template: a value is text, never markup."""
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(filters.FILTERS)
    return environment


async def _favicon(request: Request) -> Response:
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


async def _http_error(request: Request, error: Exception) -> Response:
    """A refusal raised by a handler (bad input, an unknown path): JSON for
    the API, text for anything else."""
    assert isinstance(error, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": error.detail}, status_code=error.status_code)
    return PlainTextResponse(str(error.detail), status_code=error.status_code)


def make_app(
    socket_path: str,
    credentials: Credentials,
    *,
    secure: bool = False,
    refresh_s: int = REFRESH_DEFAULT_S,
    fail_delay_ms: int | None = None,
) -> Starlette:
    failures = new_failure_table() if fail_delay_ms is None else new_failure_table(fail_delay_ms)
    sessions = Sessions()
    web = Web(
        gateway=Gateway(socket_path),
        sessions=sessions,
        credentials=credentials,
        failures=failures,
        templates=templates(),
        refresh_s=refresh_s,
        version=__version__,
    )
    guard = Middleware(
        Guard, credentials=credentials, sessions=sessions, failures=failures, secure=secure
    )
    routes = [
        *pages.ROUTES,
        *api.ROUTES,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        Route("/favicon.ico", _favicon),
    ]
    app = Starlette(
        routes=routes, middleware=[guard], exception_handlers={HTTPException: _http_error}
    )
    app.state.web = web
    return app
