"""Serve a route table as a functions-framework ASGI (`functions_framework.aio`) function.

Used by the functions that stream: one instance holds many concurrent streams on one event loop.
"""

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import functions_framework.aio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.responses import StreamingResponse

from shared.errors import PayloadTooLarge
from shared.http.messages import ByteStream, EventStream, Request, Response
from shared.http.openapi import serve_document
from shared.http.routing import (
    Router,
    finish,
    freeze_imported_objects,
    new_request_id,
)
from shared.http.sse import STREAM_HEADERS, encode_stream
from shared.logs import begin_request, configure_logging, log_access
from shared.settings import get_settings


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body exceeds {limit} bytes.", details={"limit": limit})


async def read_body(request: StarletteRequest) -> bytes:
    """The body, refusing more than the configured limit whether or not a length was sent. A
    request without a body reads no settings: liveness answers while they do not load."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > 0:
        limit = get_settings().max_body_bytes
        if int(declared) > limit:
            raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        if not chunk:
            continue
        limit = get_settings().max_body_bytes
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def to_starlette(response: Response) -> StarletteResponse:
    if isinstance(response, EventStream) and response.events is not None:
        chunks = encode_stream(response.events, get_settings().stream_keepalive_s)
    elif isinstance(response, ByteStream) and response.chunks is not None:
        chunks = response.chunks
    else:
        return StarletteResponse(response.body, response.status, response.headers)
    return StreamingResponse(
        chunks, status_code=response.status, headers={**response.headers, **STREAM_HEADERS}
    )


def route_path(scope: Any) -> str:
    """The path from the function's root (the gateway mounts it under `root_path`), as sent:
    Starlette's `{path:path}` would turn `/%0A` into `/` and miss paths with a newline."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(f"{root}/"):
        path = path[len(root) :]
    return path or "/"


# Set on `handle`: the app functions-framework builds for it hands every request to it.
_SERVES_EVERY_REQUEST = "serves_every_request"


def _every_request_to_the_function(
    build: Callable[..., Starlette],
) -> Callable[..., Starlette]:
    """functions-framework's app routes only some methods and paths to the function and answers
    the rest itself, in text without a request id (TRACE, a newline inside the path,
    `/robots.txt`); the function's own routing answers those too, with the one error model."""

    @functools.wraps(build)
    def build_app(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Starlette:
        app = build(function, *args, **kwargs)
        if getattr(function, _SERVES_EVERY_REQUEST, False):

            async def refused(request: StarletteRequest, _: Exception) -> StarletteResponse:
                return await function(request)

            app.add_exception_handler(HTTPException, refused)
        return app

    setattr(build_app, _SERVES_EVERY_REQUEST, True)
    return build_app


def _hand_every_request_to_functions() -> None:
    # Both of the framework's entry points (its CLI, and `create_app` as the gateway and the
    # tests call it) build the app through this one function, after importing `main.py`.
    build = functions_framework.aio._create_asgi_app_with_function
    if not getattr(build, _SERVES_EVERY_REQUEST, False):
        functions_framework.aio._create_asgi_app_with_function = _every_request_to_the_function(
            build
        )


def asgi_function(
    router: Router, on_start: Callable[[], object] | None = None
) -> Callable[[StarletteRequest], Awaitable[StarletteResponse]]:
    """The `handle` target functions-framework serves with each Starlette request.

    `on_start` runs once, on the event loop of the first request, before it is served (it must
    not make it wait): the first moment this process's loop runs, since gunicorn builds the
    handler before it forks the worker that serves it.
    """
    configure_logging(router.name)
    serve_document(router)
    freeze_imported_objects()
    _hand_every_request_to_functions()
    handle = starlette_handler(router, on_start)
    setattr(handle, _SERVES_EVERY_REQUEST, True)
    return functions_framework.aio.http(handle)


def starlette_handler(
    router: Router, on_start: Callable[[], object] | None = None
) -> Callable[[StarletteRequest], Awaitable[StarletteResponse]]:
    """Serves the route table to Starlette requests, the path taken from the request's scope."""
    started = False

    async def handle(request: StarletteRequest) -> StarletteResponse:
        nonlocal started
        if on_start is not None and not started:
            started = True
            on_start()
        path = route_path(request.scope)
        query = {key: request.query_params.getlist(key) for key in request.query_params}
        neutral = Request(
            method=request.method,
            path=path,
            query=query,
            headers=dict(request.headers),
            read_body=lambda: b"",
            request_id=new_request_id(request.headers.get("x-request-id")),
        )
        # Each request is a task of its own, and a streamed body is sent in it after this
        # returns: the lines logged while it streams stay tied to the request.
        begin_request(neutral.request_id, router.name, request.method)
        try:
            body = await read_body(request)
        except Exception as exc:
            response = finish(neutral, router.render_error(exc, neutral.request_id))
        else:
            neutral.read_body = lambda: body
            response = await router.dispatch_async(neutral)
        # A stream's line comes when its headers are sent, not at its end.
        log_access(response.status)
        return to_starlette(response)

    return handle
