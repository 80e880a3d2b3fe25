"""DeepSeek failures as the API's own errors: a status, a stable code, a clear message."""

from shared.errors import AppError


class UpstreamError(AppError):
    """DeepSeek (or the configured OpenAI-compatible server) failed."""

    status = 502
    code = "upstream_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code)
        if status is not None:
            self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        if retry_after_s is not None:
            self.wait_before_retry(max(1, round(retry_after_s)))


def from_status(status: int, upstream_message: str, retry_after_s: float | None) -> UpstreamError:
    """The error for an HTTP error status DeepSeek answered with."""
    detail = f"DeepSeek answered {status}: {upstream_message}"
    if status in (400, 422):
        return UpstreamError(detail, code="upstream_bad_request", status=422)
    if status == 401:
        return UpstreamError(
            "DeepSeek refused the API key; check DEEPSEEK_API_KEY.", code="upstream_auth_failed"
        )
    if status == 402:
        return UpstreamError(
            "The DeepSeek account has insufficient balance.",
            code="upstream_insufficient_balance",
            status=503,
        )
    if status == 429:
        return UpstreamError(
            detail,
            code="upstream_rate_limited",
            status=429,
            retryable=True,
            retry_after_s=retry_after_s,
        )
    if status >= 500:
        return UpstreamError(
            detail,
            code="upstream_unavailable",
            status=503,
            retryable=True,
            retry_after_s=retry_after_s,
        )
    return UpstreamError(detail)


def unreachable(reason: str) -> UpstreamError:
    return UpstreamError(
        f"DeepSeek could not be reached: {reason}",
        code="upstream_unreachable",
        status=503,
        retryable=True,
    )


def timed_out(message: str) -> UpstreamError:
    return UpstreamError(message, code="upstream_timeout", status=504)


def stream_broken(reason: str) -> UpstreamError:
    return UpstreamError(
        f"The DeepSeek stream broke off: {reason}", code="upstream_stream_broken", status=502
    )


def not_configured() -> UpstreamError:
    return UpstreamError(
        "No DeepSeek API key is configured: set DEEPSEEK_API_KEY.",
        code="upstream_not_configured",
        status=503,
    )
