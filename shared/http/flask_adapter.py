"""Serve a route table as a functions-framework (Flask) HTTP function."""

from collections.abc import Callable

import flask

from shared.errors import PayloadTooLarge
from shared.http.messages import Request
from shared.http.openapi import serve_document
from shared.http.routing import Router, freeze_imported_objects, new_request_id
from shared.logs import begin_request, configure_logging, end_request, log_access
from shared.settings import get_settings


def body_reader(request: flask.Request) -> Callable[[], bytes]:
    """Reads the body, refusing more than the configured limit whether or not a length was sent."""

    def read() -> bytes:
        limit = get_settings().max_body_bytes
        too_large = PayloadTooLarge(f"The body exceeds {limit} bytes.", details={"limit": limit})
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise too_large
        return body

    return read


def path_as_sent(request: flask.Request) -> str:
    """The decoded path: `request.path` merges leading slashes, so `//` would be the root."""
    # WSGI hands PATH_INFO over as the raw bytes in latin-1.
    raw = request.environ.get("PATH_INFO", "").encode("latin-1")
    return raw.decode(errors="replace") or "/"


def flask_function(router: Router) -> Callable[[flask.Request], flask.Response]:
    """The `handle` target functions-framework calls with each Flask request."""
    configure_logging(router.name)
    serve_document(router)
    freeze_imported_objects()

    def handle(request: flask.Request) -> flask.Response:
        request_id = new_request_id(request.headers.get("X-Request-Id"))
        # The worker thread serves other requests after this one: its lines are this one's only
        # until it is answered.
        logged = begin_request(request_id, router.name, request.method)
        try:
            response = router.dispatch(
                Request(
                    method=request.method,
                    path=path_as_sent(request),
                    query={key: request.args.getlist(key) for key in request.args},
                    headers={key.lower(): value for key, value in request.headers.items()},
                    read_body=body_reader(request),
                    request_id=request_id,
                )
            )
            log_access(response.status)
        finally:
            end_request(logged)
        return flask.Response(response.body, status=response.status, headers=response.headers)

    # functions-framework imports the function inside its app's context. Paths that app's own
    # routing rejects (a newline in a segment) must still get the one error model, not HTML.
    if flask.has_app_context():
        flask.current_app.register_error_handler(404, lambda _: handle(flask.request))

    return handle
