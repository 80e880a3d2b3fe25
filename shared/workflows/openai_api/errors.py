"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the statuses
OpenAI's SDKs turn into their exception classes (400 BadRequestError, 401 AuthenticationError,
403 PermissionDeniedError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError).
"""

from typing import Any

from shared.errors import AppError, NotFound, ValidationFailed
from shared.http.messages import Response, json_response
from shared.http.routing import ErrorFormat, as_app_error
from shared.metering.models import BUDGET_EXCEEDED
from shared.workflows.openai_api.models import OpenAIErrorBody

# Ours -> OpenAI's status, where they differ: OpenAI answers every invalid request with 400,
# and a spent quota with 429 (an SDK's RateLimitError), never 402.
_STATUSES = {415: 400, 422: 400, 402: 429}
_TYPES = {401: "invalid_request_error", 429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 403: "permission_denied"}


def model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model {model!r} does not exist in this project, or you do not have access to it.",
        code="model_not_found",
        details={"param": "model"},
    )


def unsupported(param: str, message: str) -> ValidationFailed:
    """A 400 for what OpenAI's API takes and this one cannot do, naming the parameter."""
    return ValidationFailed(message, code="unsupported_parameter", details={"param": param})


def error_body(error: AppError) -> dict[str, Any]:
    """The error as OpenAI words it; its message is ours and names no internals."""
    status = _STATUSES.get(error.status, error.status)
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if error.code == BUDGET_EXCEEDED:
        kind = "insufficient_quota"
    code = _CODES.get(status, error.code)
    param = _param(error)
    message = error.message
    failure = _first_failure(error)
    if failure is not None and failure.get("type") == "extra_forbidden":
        code = "unknown_parameter"
        message = f"Unrecognized request argument supplied: {param}."
    elif failure is not None and failure.get("msg") != message:
        # Our message is the generic one for a body; the field's own says what is wrong.
        message = f"{message} {param or 'body'}: {failure.get('msg')}."
    elif isinstance(error.details, dict) and "request_id" in error.details:
        message = f"{message} Request id: {error.details['request_id']}."
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _first_failure(error: AppError) -> dict[str, Any] | None:
    """The first field a validation error lists (`{loc, msg, type}`), if it lists any."""
    details = error.details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return details[0]
    return None


def render_openai_error(exc: Exception, request_id: str) -> Response:
    """Any failure of a request, as OpenAI's SDKs expect it."""
    error = as_app_error(exc, request_id)
    status = _STATUSES.get(error.status, error.status)
    headers = dict(error.headers)
    if error.code == BUDGET_EXCEEDED:
        # A spent budget comes back next month: an SDK's automatic retries would only spin.
        headers["x-should-retry"] = "false"
    return json_response(error_body(error), status, headers)


# Names pydantic gives the members of a union in an error's location: they name no parameter.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _is_field(part: object) -> bool:
    """Whether a part of a validation error's location is a parameter's name or index, rather
    than the body itself or the member of a union it was read as (`str`, `list[...]`)."""
    if isinstance(part, int):
        return True
    text = str(part)
    return text != "body" and text not in _TYPE_TAGS and not any(c in text for c in "[]-")


def _param(error: AppError) -> str | None:
    """The request parameter the error is about: `messages[0].role` for a body field."""
    details = error.details
    if isinstance(details, dict):
        if "param" in details:
            return str(details["param"])
        if "missing" in details:
            return "variables"
        return None
    failure = _first_failure(error)
    if failure is not None:
        path = list(failure.get("loc", []))
        # An unknown parameter's name is the caller's, whatever it looks like.
        unknown = path.pop() if failure.get("type") == "extra_forbidden" and path else None
        location = [part for part in path if _is_field(part)]
        if unknown is not None:
            location.append(unknown)
        text = ""
        for part in location:
            text += f"[{part}]" if isinstance(part, int) else f".{part}"
        return text.lstrip(".") or None
    return None


# For the OpenAPI document: what each status means here, where our words would mislead.
_DESCRIPTIONS = {
    400: "`invalid_request_error`: the body is not JSON or not application/json, a parameter is "
    "invalid (`validation_failed`) or unsupported (`unsupported_parameter`: `n` > 1, audio, "
    "...), or a variable of the prompt is missing; `param` names it.",
    401: "`invalid_api_key`: no API key, or one that is unknown, expired or revoked.",
    403: "`permission_denied`: not a project API key (the admin key and users' tokens are "
    "refused here), or its role cannot run prompts.",
    404: "`model_not_found`: no such prompt, label or version in the key's project, nor a "
    "configured model.",
    429: "`rate_limit_error`: over the project's requests_per_minute for this key "
    "(`rate_limited`), or DeepSeek limiting ours (`upstream_rate_limited`); retry after the "
    "`Retry-After` seconds. `insufficient_quota` (`budget_exceeded`, with "
    "`x-should-retry: false`): the project's monthly budget is spent; nothing was called.",
    500: "`server_error`: unexpected failure; the X-Request-Id header identifies it in the logs.",
    502: "`server_error`: DeepSeek failed or its answer broke off; the execution is recorded.",
    503: "`server_error`: MongoDB or DeepSeek cannot serve now (`code` names which); retry "
    "after the `Retry-After` seconds when sent.",
    504: "`server_error` (`upstream_timeout`): DeepSeek did not answer in time.",
}
OPENAI_ERRORS = ErrorFormat(
    render=render_openai_error,
    body=OpenAIErrorBody,
    # No resource is created or changed here, so nothing conflicts.
    statuses={**_STATUSES, 409: None},
    descriptions=_DESCRIPTIONS,
    metered=frozenset({502, 504}),
)
