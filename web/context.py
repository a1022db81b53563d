"""What every handler of the dashboard shares, and the one place where a
failure becomes an HTTP answer.

``Web`` holds the gateway to the broker, the sessions, the credentials and
the templates. ``answer_errors`` turns what an admin request can raise into
a status: 404 for what is not there, 409 for a refusal of the broker
(``invalid_state`` ...), 400 for bad input, 503 when the broker does not
answer on its admin socket.
"""

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from jinja2 import Environment
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from leash.broker.server.auth import FailureTable
from leash.client import ConnectionLost, NotFound, ServerError
from leash.client._admin_format import plain
from leash.web.credentials import Credentials
from leash.web.gateway import Gateway
from leash.web.guard import Access, csrf_ok
from leash.web.sessions import Sessions

BODY_MAX_BYTES: Final = 1 << 20
FORM_FIELDS_MAX: Final = 2000  # a page of job checkboxes and the filter


@dataclass
class Web:
    gateway: Gateway
    sessions: Sessions
    credentials: Credentials
    failures: FailureTable
    templates: Environment
    refresh_s: int
    version: str


def web_of(request: Request) -> Web:
    found: Web = request.app.state.web
    return found


def access_of(request: Request) -> Access:
    found: Access = request.state.access
    return found


class Body:
    """A POST's fields, from a form or a JSON object."""

    def __init__(self, fields: dict[str, Any] | FormData, is_form: bool) -> None:
        self.fields = fields
        self.is_form = is_form

    def get(self, name: str) -> Any:
        value = self.fields.get(name)
        return value if value is None or not isinstance(value, list) else None

    def getlist(self, name: str) -> list[str]:
        if isinstance(self.fields, FormData):
            return [str(value) for value in self.fields.getlist(name)]
        value = self.fields.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise HTTPException(400, f"{name} must be a list of strings")
        return value

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields.items())


async def read_body(request: Request) -> Body:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        data = await request.body()
        if len(data) > BODY_MAX_BYTES:
            raise HTTPException(413, f"a body has at most {BODY_MAX_BYTES} bytes")
        try:
            fields = json.loads(data) if data else {}
        except ValueError as error:
            raise HTTPException(400, f"the body is not JSON: {error}") from None
        if not isinstance(fields, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return Body(fields, is_form=False)
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=FORM_FIELDS_MAX)
        return Body(form, is_form=True)
    return Body({}, is_form=False)


Handler = Callable[[Request, Body], Awaitable[tuple[str, dict[str, Any]]]]


def mutation(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A POST: the CSRF check, the handler (a message and data), then JSON for
    an API client or, for a form, the message shown on the page it came
    from (303). A refusal is the status for the API, a message for a form."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            body = await read_body(request)
        except HTTPException as error:
            return JSONResponse({"error": error.detail}, status_code=error.status_code)
        if not csrf_ok(request, body.get("csrf") if body.is_form else None):
            return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
        try:
            message, data = await handler(request, body)
        except Exception as error:
            status, text = failure(error)
            if not body.is_form:
                return JSONResponse({"error": text}, status_code=status)
            message, data = f"refused: {text}", {}
        if not body.is_form:
            return JSONResponse({"message": message, **data})
        access_of(request).session.flash.append(message)
        return RedirectResponse(local_path(body.get("back"), "/"), status_code=303)

    endpoint.mutation = True  # type: ignore[attr-defined]
    return endpoint


def failure(error: Exception) -> tuple[int, str]:
    """The status and the message for what a handler raised (or re-raise a bug)."""
    match error:
        case HTTPException():
            return error.status_code, str(error.detail)
        case NotFound():
            return 404, error.message
        case ServerError():
            return (400 if error.code == "bad_request" else 409), error.message
        case ConnectionLost():
            return 503, f"the broker does not answer on its admin socket: {error}"
        case ValueError():
            return 400, str(error)
    raise error


def local_path(value: object, default: str) -> str:
    """A path on this server to go back to (never another site)."""
    text = value if isinstance(value, str) else ""
    if not text.startswith("/") or text.startswith("//") or "\\" in text or len(text) > 2048:
        return default
    return text


def json_of(value: Any) -> Response:
    """A view as JSON: builtins, job args decoded, no request ids or reply
    tags; encoded once, by msgspec."""
    found = plain(value)
    if isinstance(found, dict):
        found.pop("t", None)
    return Response(msgspec.json.encode(found), media_type="application/json")
