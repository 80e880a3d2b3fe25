"""Logs operators can use: one JSON object per line, tied to its request, with secrets redacted.

Configured once per process, when a function's handler is built, at the level LOG_LEVEL names
from its first request on. Lines carry ids, route templates, statuses and durations: never a
body, a query string, a header or anything a user wrote. Text from elsewhere (an upstream's
error message, an exception) goes through `redact` on its way out.
"""

import json
import logging
import re
import sys
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import SecretStr, ValidationError

from shared.settings import Settings, get_settings

REDACTED = "[redacted]"
# What looks like a credential wherever it appears, each with the part of the match to keep.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), rf"\1{REDACTED}"),
    # OpenAI-style keys (DeepSeek's among them) and our own project keys.
    (re.compile(r"\b(?:sk|ba)[-_][A-Za-z0-9_-]{8,}"), REDACTED),
    # `api_key=...`, and `"api_key": "..."` in JSON; not `API_KEY: ...` in a sentence.
    (
        re.compile(
            r"(?i)\b([\w-]*(?:api[_-]?key|token|secret|password|passwd|credentials?)"
            r"(?:\s*=\s*[\"']?|[\"']\s*:\s*[\"']))[^\s\"'&,;}]+"
        ),
        rf"\1{REDACTED}",
    ),
    # A password in a URL: `mongodb://user:password@host`.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), rf"\1{REDACTED}@"),
)
# Libraries that log what they send and receive (MongoDB commands with their documents, DeepSeek
# requests with their messages, URLs with their query strings) below WARNING: what users wrote.
_PAYLOAD_LOGGERS = ("pymongo", "openai", "httpx", "httpx2", "httpcore", "botocore", "urllib3")
# Fields an access line carries besides the message, passed as the record's `extra`.
_ACCESS_FIELDS = ("method", "status", "duration_ms")

access_logger = logging.getLogger("better_assistant.access")


@dataclass
class RequestLog:
    """The request a log line belongs to: set by the HTTP adapters for each request."""

    request_id: str
    function: str
    method: str
    # The route's template (`/{prompt_id}`), once the request matched one: never the raw path.
    route: str | None = None
    started: float = field(default_factory=time.perf_counter)


_current_request: ContextVar[RequestLog | None] = ContextVar("current_request", default=None)
_configured_secrets: tuple[Settings, tuple[str, ...]] | None = None
_process_function: str | None = None
_level_applied = False


def _secret_values(settings: Settings) -> tuple[str, ...]:
    """The configured secrets' values (DeepSeek, admin and signing keys...), longest first."""
    global _configured_secrets
    if _configured_secrets is None or _configured_secrets[0] is not settings:
        values: list[str] = []
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, SecretStr) and len(item.get_secret_value()) >= 4:
                    values.append(item.get_secret_value())
        _configured_secrets = (settings, tuple(sorted(values, key=len, reverse=True)))
    return _configured_secrets[1]


def redact(text: str) -> str:
    """`text` with what looks like a secret, and every configured secret, replaced."""
    try:
        secrets = _secret_values(get_settings())
    except ValueError:
        # Settings that do not load (the failure being logged, say): the patterns still apply,
        # and a log call must not fail because of them.
        secrets = ()
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Redacts a record's message and traceback before any handler after it formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = redact(record.getMessage())
        except (TypeError, ValueError):
            # Logging would report the call with its arguments, unredacted: say where it is.
            message = f"a log call whose arguments do not fit its message, at line {record.lineno}"
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request's fields and the
    traceback, after `RedactSecrets`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = _current_request.get()
        if request is not None:
            line.update(
                request_id=request.request_id, function=request.function, route=request.route
            )
        elif _process_function is not None:
            line["function"] = _process_function
        line.update((name, vars(record)[name]) for name in _ACCESS_FIELDS if name in vars(record))
        # `RedactSecrets` has formatted the traceback, redacted.
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


class _StandardError(logging.StreamHandler[TextIO]):
    """Writes to `sys.stderr` as it is when a line is written, as logging's last resort does,
    so a stream swapped after configuration (a test's capture) is followed."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(function: str) -> None:
    """JSON lines on stderr, for the whole process; only the first call counts.

    `function` names the lines logged outside any request (the dev gateway serves several).
    LOG_LEVEL applies from the first request on (`apply_log_level`): importing a function reads
    no settings, so a cold start's import pays for nothing the first request would not.
    """
    global _process_function
    if _process_function is not None:
        return
    _process_function = function
    handler = _StandardError()
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)


def apply_log_level() -> None:
    """LOG_LEVEL for the whole process, once. Libraries that would log payloads say only what
    went wrong, whatever the level."""
    global _level_applied
    if _level_applied:
        return
    try:
        level = get_settings().log_level
    except ValidationError:
        # The request goes on to fail in the error model, which says the settings are wrong; the
        # level is applied once they load.
        return
    _level_applied = True
    root = logging.getLogger()
    root.setLevel(level)
    for name in _PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def begin_request(request_id: str, function: str, method: str) -> Token[RequestLog | None]:
    """Tie the lines logged from now on, in this context, to this request."""
    apply_log_level()
    return _current_request.set(RequestLog(request_id, function, method))


def end_request(token: Token[RequestLog | None]) -> None:
    _current_request.reset(token)


def note_route(template: str) -> None:
    """The route the current request matched, by its template."""
    request = _current_request.get()
    if request is not None:
        request.route = template


def log_access(status: int) -> None:
    """The current request's access line: method, route template, status and duration."""
    request = _current_request.get()
    if request is None:
        return
    duration_ms = round((time.perf_counter() - request.started) * 1000, 3)
    access_logger.info(
        "%s %s %d",
        request.method,
        request.route or "(no route)",
        status,
        extra={"method": request.method, "status": status, "duration_ms": duration_ms},
    )
