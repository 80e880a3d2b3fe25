"""The one error family: services raise these, the HTTP layer renders them once."""

from typing import Any

from pydantic import ValidationError


class AppError(Exception):
    """An error a client can act on: an HTTP status, a stable code and a human message."""

    status: int = 500
    code: str = "internal_error"
    # Whole seconds the client should wait before trying again, when known: sent as the
    # `Retry-After` header, or in a stream's `error` event.
    retry_after: int | None = None

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = {}

    def wait_before_retry(self, seconds: int) -> None:
        """Tell the client how long to wait before trying again."""
        self.retry_after = seconds
        self.headers["Retry-After"] = str(seconds)

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class Unauthenticated(AppError):
    status = 401
    code = "unauthenticated"


class PaymentRequired(AppError):
    """Spending is refused until more is allowed (a project's monthly budget is spent)."""

    status = 402
    code = "payment_required"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__("This route does not accept that method.", details={"allowed": allowed})
        self.headers["Allow"] = ", ".join(allowed)


class Conflict(AppError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(AppError):
    status = 422
    code = "validation_failed"


class TooManyRequests(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.wait_before_retry(retry_after_s)


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """MongoDB cannot serve now (unreachable, electing a primary, replicating too slowly)."""

    code = "database_unavailable"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("The database is unavailable; try again shortly.")
        self.wait_before_retry(retry_after_s)


def not_found(kind: str, identifier: object) -> NotFound:
    return NotFound(
        f"{kind} {identifier!s} does not exist.", details={"kind": kind, "id": str(identifier)}
    )


def validation_failed(message: str, error: ValidationError, location: str) -> ValidationFailed:
    """A 422 listing pydantic's failures as `{loc, msg, type}`, without echoing the input."""
    details = [
        {"loc": [location, *item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]
    return ValidationFailed(message, details=details)
