"""One route table per function, dispatched in one place: errors, CORS, health and request ids."""

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from shared.db import DATABASE_UNAVAILABLE_ERRORS, ping_database
from shared.errors import AppError, MethodNotAllowed, NotFound, ServiceUnavailable
from shared.http.messages import Request, Response, json_response
from shared.settings import get_settings

logger = logging.getLogger("better_assistant")

Handler = Callable[..., Response]

_PARAMETER = re.compile(r"\{(\w+(?::int)?)\}")
_CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    pattern: re.Pattern[str]
    integers: frozenset[str]
    handler: Handler


def _parameter_regex(parameter: str) -> str:
    name, _, kind = parameter.partition(":")
    return f"(?P<{name}>[0-9]{{1,9}})" if kind == "int" else f"(?P<{name}>[^/]+)"


def compile_path(path: str) -> tuple[re.Pattern[str], frozenset[str]]:
    """`/{prompt_id}/versions/{number:int}` -> a regex with named groups, and the int ones."""
    parts = _PARAMETER.split(path.rstrip("/") or "/")
    regex = "".join(
        _parameter_regex(part) if index % 2 else re.escape(part) for index, part in enumerate(parts)
    )
    integers = frozenset(part.partition(":")[0] for part in parts[1::2] if part.endswith(":int"))
    return re.compile(f"^{regex}/?$" if regex != "/" else "^/?$"), integers


class Router:
    """The route table of one function; paths are relative to the function's own root."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.routes: list[Route] = []
        self.add("GET", "/healthz", _health)
        self.add("GET", "/readyz", _readiness)

    def add(self, method: str, path: str, handler: Handler) -> None:
        pattern, integers = compile_path(path)
        self.routes.append(Route(method, path, pattern, integers, handler))

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("GET", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("POST", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("PUT", path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("DELETE", path)

    def _decorator(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(method, path, handler)
            return handler

        return register

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str | int]]:
        """The handler and path parameters for a request; 404 or 405 when there is none."""
        allowed: list[str] = []
        lookup_method = "GET" if method == "HEAD" else method
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method == lookup_method:
                parameters: dict[str, str | int] = {
                    name: int(value) if name in route.integers else value
                    for name, value in match.groupdict().items()
                }
                return route.handler, parameters
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowed(sorted({*allowed, "OPTIONS"}))
        raise NotFound(f"No route {path} in function {self.name}.", code="route_not_found")

    def dispatch(self, request: Request) -> Response:
        """Run the matching handler and render any failure as the one error model."""
        if request.method == "OPTIONS" and request.header("access-control-request-method"):
            response = Response(204)
        else:
            response = self._run(request)
        response.headers["X-Request-Id"] = request.request_id
        response.headers.update(cors_headers(request))
        return response

    def _run(self, request: Request) -> Response:
        try:
            handler, parameters = self.resolve(request.method, request.path)
            return handler(request, **parameters)
        except Exception as exc:
            return render_error(exc, request.request_id)


def render_error(exc: Exception, request_id: str) -> Response:
    """The response for any exception; internals are logged, never sent."""
    if isinstance(exc, DATABASE_UNAVAILABLE_ERRORS):
        logger.warning("database unavailable request_id=%s: %s", request_id, exc)
        exc = ServiceUnavailable("The database is unreachable; try again shortly.")
    if isinstance(exc, AppError):
        return json_response(exc.to_body(), exc.status, exc.headers)
    logger.exception("unhandled error request_id=%s", request_id)
    body = {
        "error": {
            "code": "internal_error",
            "message": "An unexpected error occurred.",
            "details": {"request_id": request_id},
        }
    }
    return json_response(body, 500)


def cors_headers(request: Request) -> dict[str, str]:
    """CORS headers for an allowed browser origin (and preflight answers)."""
    origin = request.header("origin")
    allowed = get_settings().cors_origins
    if not origin or ("*" not in allowed and origin not in allowed):
        return {}
    headers = {
        "Access-Control-Allow-Origin": "*" if "*" in allowed else origin,
        "Access-Control-Expose-Headers": "ETag, X-Request-Id, Retry-After",
        "Vary": "Origin",
    }
    if request.method == "OPTIONS":
        headers["Access-Control-Allow-Methods"] = _CORS_METHODS
        headers["Access-Control-Allow-Headers"] = (
            request.header("access-control-request-headers") or "Content-Type"
        )
        headers["Access-Control-Max-Age"] = "600"
    return headers


def new_request_id(incoming: str | None) -> str:
    """The caller's request id when it is sane, else a fresh one."""
    if incoming and re.fullmatch(r"[\w.:-]{1,100}", incoming):
        return incoming
    return uuid.uuid4().hex


def _health(request: Request) -> Response:
    return json_response({"status": "ok"})


def _readiness(request: Request) -> Response:
    ping_database()
    return json_response({"status": "ready"})
