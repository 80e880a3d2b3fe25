"""DeepSeek failures as the API's own errors: a status, a stable code, a message of our own.

What DeepSeek or the transport said is for operators: it is logged here, redacted and cut
short, and never reaches a client or a stored record. It may name internal hosts, and an
upstream that echoes what it was sent could hand back a key.
"""

import logging

from shared.errors import AppError
from shared.logs import redact

logger = logging.getLogger("better_assistant.deepseek")
# Enough of an upstream's words to tell one failure from another.
_LOGGED_CHARACTERS = 500
# What of them is read for secrets at most: a secret is redacted before the words are cut short,
# as a secret cut in two would no longer be recognised.
_READ_CHARACTERS = 100_000


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


def _log_upstream(failure: str, upstream_text: str) -> None:
    redacted = redact(upstream_text[:_READ_CHARACTERS])
    logger.warning("%s: %s", failure, redacted[:_LOGGED_CHARACTERS])


def from_status(status: int, upstream_message: str, retry_after_s: float | None) -> UpstreamError:
    """The error for an HTTP error status DeepSeek answered with; its message is logged."""
    _log_upstream(f"DeepSeek answered {status}", upstream_message)
    if status in (400, 422):
        return UpstreamError(
            "DeepSeek refused the request as invalid; check the model and its parameters.",
            code="upstream_bad_request",
            status=422,
        )
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
            "DeepSeek is limiting the rate of our calls; try again later.",
            code="upstream_rate_limited",
            status=429,
            retryable=True,
            retry_after_s=retry_after_s,
        )
    if status >= 500:
        return UpstreamError(
            "DeepSeek is unavailable; try again shortly.",
            code="upstream_unavailable",
            status=503,
            retryable=True,
            retry_after_s=retry_after_s,
        )
    return UpstreamError(f"DeepSeek refused the request (HTTP {status}).", code="upstream_rejected")


def unreachable(reason: str) -> UpstreamError:
    """DeepSeek could not be reached; the transport's reason is logged."""
    _log_upstream("DeepSeek could not be reached", reason)
    return UpstreamError(
        "DeepSeek could not be reached; try again shortly.",
        code="upstream_unreachable",
        status=503,
        retryable=True,
    )


def timed_out(message: str) -> UpstreamError:
    return UpstreamError(message, code="upstream_timeout", status=504)


def stream_broken(reason: str) -> UpstreamError:
    """The answer's stream broke off; the transport's reason is logged."""
    _log_upstream("The DeepSeek stream broke off", reason)
    return UpstreamError(
        "The DeepSeek stream broke off before the answer was complete.",
        code="upstream_stream_broken",
        status=502,
    )


def not_configured() -> UpstreamError:
    return UpstreamError(
        "No DeepSeek API key is configured: set DEEPSEEK_API_KEY.",
        code="upstream_not_configured",
        status=503,
    )
