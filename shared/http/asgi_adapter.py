"""Serve a route table as a functions-framework ASGI (`functions_framework.aio`) function.

Used by the functions that stream: one instance holds many concurrent streams on one event loop.
"""

from collections.abc import Awaitable, Callable

import functions_framework.aio
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.responses import StreamingResponse

from shared.errors import PayloadTooLarge
from shared.http.messages import EventStream, Request, Response
from shared.http.openapi import serve_document
from shared.http.routing import (
    Router,
    finish,
    freeze_imported_objects,
    new_request_id,
    render_error,
)
from shared.http.sse import STREAM_HEADERS, encode_stream
from shared.logs import begin_request, configure_logging, log_access
from shared.settings import get_settings


async def read_body(request: StarletteRequest, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes whether or not a length was sent."""
    too_large = PayloadTooLarge(f"The body exceeds {limit} bytes.", details={"limit": limit})
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def to_starlette(response: Response) -> StarletteResponse:
    if isinstance(response, EventStream) and response.events is not None:
        return StreamingResponse(
            encode_stream(response.events, get_settings().stream_keepalive_s),
            status_code=response.status,
            headers={**response.headers, **STREAM_HEADERS},
        )
    return StarletteResponse(response.body, response.status, response.headers)


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
    return functions_framework.aio.http(starlette_handler(router, on_start))


def starlette_handler(
    router: Router, on_start: Callable[[], object] | None = None
) -> Callable[[StarletteRequest], Awaitable[StarletteResponse]]:
    """Serves the route table to Starlette requests whose `path` path parameter is the path from
    the function's root (functions-framework's catch-all route sets it)."""
    started = False

    async def handle(request: StarletteRequest) -> StarletteResponse:
        nonlocal started
        if on_start is not None and not started:
            started = True
            on_start()
        path = "/" + request.path_params.get("path", "")
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
            body = await read_body(request, get_settings().max_body_bytes)
        except Exception as exc:
            response = finish(neutral, render_error(exc, neutral.request_id))
        else:
            neutral.read_body = lambda: body
            response = await router.dispatch_async(neutral)
        # A stream's line comes when its headers are sent, not at its end.
        log_access(response.status)
        return to_starlette(response)

    return handle
