"""One route table per function, dispatched in one place: errors, CORS, health and request ids.

Every route declares who may call it (`shared.access.policy`): the caller is authenticated and
the route's project checked here, before the handler runs, so no handler can forget to.

A handler declares what it needs by parameter: `request`, `caller` (who is calling), `body:
SomeModel` (the JSON body, validated), `query: SomeModel` (the query string, validated) and path
parameters by name (an `int` annotation makes the path segment numeric, `PathRest` makes the last
parameter take the rest of the path, slashes included). It returns a pydantic
model (rendered as JSON with the route's status), None (204) or a ready `Response`. The same
declarations describe the route in the OpenAPI document.
"""

import asyncio
import gc
import inspect
import logging
import re
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from pydantic import BaseModel, ValidationError

from shared.access.callers import Caller, authenticate
from shared.access.policy import PUBLIC, Access
from shared.db import (
    RETRY_AFTER_S,
    DatabaseUnreachable,
    database_failed,
    is_database_unavailable,
    ping_database,
)
from shared.errors import AppError, DatabaseUnavailable, MethodNotAllowed, NotFound
from shared.http.messages import Request, Response, json_response, no_content
from shared.logs import note_route
from shared.models import Model
from shared.settings import get_settings

logger = logging.getLogger("better_assistant")

Handler = Callable[..., Any]

_PARAMETER = re.compile(r"\{(\w+)\}")
# The last path parameter, slashes included: the adapters hand paths over decoded, so a value
# sent with `/` as `%2F` (a prompt's name) arrives as several segments.
PathRest = NewType("PathRest", str)
_CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
# The request headers a page may send: named, never echoed from the preflight.
_CORS_HEADERS = "Authorization, Content-Type, If-None-Match, X-Request-Id, Last-Event-ID"


@dataclass(frozen=True)
class BodyDoc:
    """The body a route reads from the raw request, for the OpenAPI document: each media type it
    accepts and the type its body is in that media type (a model, `list[Model]`, `str`)."""

    media: Mapping[str, Any]
    description: str = ""


# A POST or PUT that takes no body says so, so that no other can leave its body undocumented.
NO_BODY = BodyDoc({})


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access
    status: int = 200
    # For streamed routes: the type of the server-sent events, for the OpenAPI document.
    events: Any = None
    # The route calls DeepSeek, admitted against the project's limits: it may answer 402 (the
    # month's budget is spent) and 429 (the caller's rate), for the OpenAPI document.
    metered: bool = False
    body_doc: BodyDoc | None = None
    # For a handler returning a ready `Response` of JSON: the model of that JSON, for the
    # OpenAPI document.
    returns: Any = None
    pattern: re.Pattern[str] = field(init=False)
    body: type[BaseModel] | None = field(init=False, default=None)
    query: type[BaseModel] | None = field(init=False, default=None)
    response: Any = field(init=False, default=None)
    path_types: dict[str, type] = field(init=False, default_factory=dict)
    is_async: bool = field(init=False, default=False)
    wants_request: bool = field(init=False, default=False)
    wants_caller: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(self.handler)
        names = _PARAMETER.findall(self.path)
        set_field = object.__setattr__
        set_field(self, "path_types", {name: hints.get(name, str) for name in names})
        set_field(self, "pattern", _compile(self.path, self.path_types))
        set_field(self, "body", hints.get("body"))
        set_field(self, "query", hints.get("query"))
        set_field(self, "response", hints.get("return"))
        set_field(self, "is_async", inspect.iscoroutinefunction(self.handler))
        parameters = inspect.signature(self.handler).parameters
        set_field(self, "wants_request", "request" in parameters)
        set_field(self, "wants_caller", "caller" in parameters)
        if self.wants_caller and not self.access.needs_caller:
            raise TypeError(f"{self.method} {self.path} wants a caller its access does not have")
        if self.body is not None and self.body_doc is not None:
            raise TypeError(f"{self.method} {self.path} has a body model: it needs no body_doc")
        makes_response = isinstance(self.response, type) and issubclass(self.response, Response)
        if self.returns is not None and not makes_response:
            raise TypeError(f"{self.method} {self.path} returns a model: it needs no `returns`")

    def admit(self, request: Request, path_values: dict[str, str]) -> dict[str, Any]:
        """The handler's keyword arguments, once the caller may make this call (401, 403, 404)."""
        caller = None
        if self.access.needs_caller:
            caller = authenticate(request.header("authorization"))
        arguments = self.arguments(request, path_values, caller)
        self.access.check(caller, arguments)
        return arguments

    def arguments(
        self, request: Request, path_values: dict[str, str], caller: Caller | None
    ) -> dict[str, Any]:
        """The handler's keyword arguments, parsed and validated from the request."""
        arguments: dict[str, Any] = {
            name: self.path_types[name](value) for name, value in path_values.items()
        }
        if self.wants_request:
            arguments["request"] = request
        if self.wants_caller:
            arguments["caller"] = caller
        if self.body is not None:
            arguments["body"] = request.body_as(self.body)
        if self.query is not None:
            arguments["query"] = request.query_as(self.query)
        return arguments

    def render(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        if result is None:
            return no_content()
        return json_response(result, self.status)


def _compile(path: str, path_types: dict[str, type]) -> re.Pattern[str]:
    """`/{prompt_id}/versions/{number}` -> a regex with a named group per path parameter, to be
    matched against the whole path (`fullmatch`)."""
    parts = _PARAMETER.split(path.rstrip("/") or "/")
    regex = ""
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex += re.escape(part)
        elif path_types[part] is int:
            regex += f"(?P<{part}>[0-9]{{1,9}})"
        elif path_types[part] is PathRest:
            regex += f"(?P<{part}>.+)"
        else:
            regex += f"(?P<{part}>[^/]+)"
    if regex == "/":
        return re.compile("/?")
    # A trailing slash is optional, except after the rest of a path, which keeps its own.
    return re.compile(regex if regex.endswith(".+)") else f"{regex}/?")


# Renders any failure of a request, given its request id, as the function's error response.
ErrorRenderer = Callable[[Exception, str], Response]


class ErrorDetail(Model):
    code: str
    message: str
    details: Any = None


class ErrorBody(Model):
    """Every error, from every function: a stable code, a human message, optional details."""

    error: ErrorDetail


@dataclass(frozen=True)
class ErrorFormat:
    """How a function words every failure: `render` answers it; the rest describes the answers
    in the OpenAPI document."""

    render: ErrorRenderer
    # The model of every error body.
    body: type[BaseModel]
    # The status answered in place of one of ours; None: never answered.
    statuses: Mapping[int, int | None] = field(default_factory=dict)
    # What a status means in this format's words, where the document's own would mislead.
    descriptions: Mapping[int, str] = field(default_factory=dict)
    # Statuses a metered route answers besides ours: DeepSeek's failures, passed on.
    metered: frozenset[int] = frozenset()


class Router:
    """The route table of one function; paths are relative to the function's own root.

    Failures are answered in our error model unless `errors` names another format (the
    OpenAI-compatible function answers in OpenAI's)."""

    def __init__(self, name: str, errors: ErrorFormat | None = None) -> None:
        self.name = name
        self.errors = errors or OUR_ERRORS
        self.render_error: ErrorRenderer = self.errors.render
        self.routes: list[Route] = [
            Route("GET", "/healthz", _health, PUBLIC),
            Route("GET", "/readyz", _readiness, PUBLIC),
        ]

    def route(
        self,
        method: str,
        path: str,
        *,
        access: Access,
        status: int = 200,
        events: Any = None,
        metered: bool = False,
        body_doc: BodyDoc | None = None,
        returns: Any = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            route = Route(method, path, handler, access, status, events, metered, body_doc, returns)
            self.routes.append(route)
            return handler

        return register

    def get(self, path: str, *, access: Access) -> Callable[[Handler], Handler]:
        return self.route("GET", path, access=access)

    def post(
        self,
        path: str,
        *,
        access: Access,
        status: int = 200,
        events: Any = None,
        metered: bool = False,
        body_doc: BodyDoc | None = None,
        returns: Any = None,
    ) -> Callable[[Handler], Handler]:
        return self.route(
            "POST",
            path,
            access=access,
            status=status,
            events=events,
            metered=metered,
            body_doc=body_doc,
            returns=returns,
        )

    def put(
        self, path: str, *, access: Access, body_doc: BodyDoc | None = None
    ) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, access=access, body_doc=body_doc)

    def delete(self, path: str, *, access: Access) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, access=access, status=204)

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route and raw path values for a request; 404 or 405 when there is none.

        The first path in the table that matches owns the request: `PUT /openapi.json` is a 405
        of the document's path, not an update of a record whose id would be `openapi.json`.
        """
        allowed: list[str] = []
        lookup_method = "GET" if method == "HEAD" else method
        owner = None
        for route in self.routes:
            # The whole path, to its last character: `$` would also match before a final newline.
            match = route.pattern.fullmatch(path)
            if match is None or owner not in (None, route.path):
                continue
            owner = route.path
            if route.method == lookup_method:
                note_route(route.path)
                return route, match.groupdict()
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowed(sorted({*allowed, "OPTIONS"}))
        raise NotFound(f"No route {path} in function {self.name}.", code="route_not_found")

    def dispatch(self, request: Request) -> Response:
        """Run the matching (synchronous) handler and render any failure as the error model."""
        if is_preflight(request):
            return finish(request, Response(204))
        try:
            route, path_values = self.resolve(request.method, request.path)
            response = route.render(route.handler(**route.admit(request, path_values)))
        except Exception as exc:
            response = self.render_error(exc, request.request_id)
        return finish(request, response)

    async def dispatch_async(self, request: Request) -> Response:
        """As `dispatch`; coroutine handlers are awaited, the others run in a worker thread."""
        if is_preflight(request):
            return finish(request, Response(204))
        try:
            route, path_values = self.resolve(request.method, request.path)
            if route.is_async:
                # Admission may read MongoDB (a key, a membership): never on the event loop.
                arguments = await asyncio.to_thread(route.admit, request, path_values)
                result = await route.handler(**arguments)
            elif route.handler is _health:
                # Liveness touches nothing: answered on the loop, never queued behind requests
                # that hold the worker threads (waiting on a database, say).
                result = _admitted_call(route, request, path_values)
            else:
                result = await asyncio.to_thread(_admitted_call, route, request, path_values)
            response = route.render(result)
        except Exception as exc:
            response = self.render_error(exc, request.request_id)
        return finish(request, response)


def freeze_imported_objects() -> None:
    """Take what the function's imports allocated out of the garbage collector's sight.

    Those objects live as long as the process, yet every full collection walks them all: with
    the OIDC library and its crypto bindings loaded, the chat function spent 8 more ms of CPU per
    request and stalled one stream in a hundred for 250 ms. Called once, when the function's
    handler is built, after its imports.
    """
    gc.freeze()


def _admitted_call(route: Route, request: Request, path_values: dict[str, str]) -> Any:
    return route.handler(**route.admit(request, path_values))


def is_preflight(request: Request) -> bool:
    return (
        request.method == "OPTIONS" and request.header("access-control-request-method") is not None
    )


def finish(request: Request, response: Response) -> Response:
    """Headers every response carries: the request id and CORS."""
    response.headers["X-Request-Id"] = request.request_id
    response.headers.update(cors_headers(request))
    return response


def as_app_error(exc: Exception, request_id: str) -> AppError:
    """What a client is told of any exception; internals are logged, never sent."""
    if isinstance(exc, DatabaseUnreachable):
        # The breaker's own refusal: it logged when it opened, and will when it closes.
        return DatabaseUnavailable(RETRY_AFTER_S)
    if is_database_unavailable(exc):
        database_failed(exc)
        logger.warning("database unavailable request_id=%s: %s", request_id, type(exc).__name__)
        return DatabaseUnavailable(RETRY_AFTER_S)
    if isinstance(exc, AppError):
        return exc
    logger.exception("unhandled error request_id=%s", request_id)
    return AppError("An unexpected error occurred.", details={"request_id": request_id})


def render_error(exc: Exception, request_id: str) -> Response:
    """The response for any exception, in our error model."""
    error = as_app_error(exc, request_id)
    return json_response(error.to_body(), error.status, error.headers)


OUR_ERRORS = ErrorFormat(render_error, ErrorBody)


def cors_headers(request: Request) -> dict[str, str]:
    """CORS headers for an allowed browser origin (and preflight answers)."""
    origin = request.header("origin")
    if not origin:
        return {}
    try:
        allowed = get_settings().cors_origins
    except ValidationError:
        # Settings that do not load fail the request in the error model: no origin is allowed.
        return {}
    if "*" not in allowed and origin not in allowed:
        return {}
    headers = {
        "Access-Control-Allow-Origin": "*" if "*" in allowed else origin,
        "Access-Control-Expose-Headers": "ETag, X-Request-Id, Retry-After, WWW-Authenticate",
        "Vary": "Origin",
    }
    if request.method == "OPTIONS":
        headers["Access-Control-Allow-Methods"] = _CORS_METHODS
        headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
        headers["Access-Control-Max-Age"] = "600"
    return headers


def new_request_id(incoming: str | None) -> str:
    """The caller's request id when it is sane, else a fresh one."""
    if incoming and re.fullmatch(r"[\w.:-]{1,100}", incoming):
        return incoming
    return uuid.uuid4().hex


class HealthStatus(BaseModel):
    status: str


def _health() -> HealthStatus:
    """Liveness: answers without touching any dependency."""
    return HealthStatus(status="ok")


def _readiness() -> HealthStatus:
    """Readiness: one short round trip to MongoDB (503 at once while it is unreachable)."""
    ping_database()
    return HealthStatus(status="ready")
