"""Framework-neutral requests and responses, so services and routes never see Flask or Starlette."""

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.bounds import JsonTooDeep, parse_json
from shared.errors import BadRequest, UnsupportedMediaType, ValidationFailed, validation_failed

ModelT = TypeVar("ModelT", bound=BaseModel)
JSON_LINES_TYPES = {"application/x-ndjson", "application/jsonl"}


@dataclass
class JsonRecords:
    """The records of a JSON list or JSON Lines body, each with where it stands in the body
    (`["body", index]` or `["body", "line", number]`), and the lines that are not JSON."""

    entries: list[tuple[list[Any], Any]]
    errors: list[dict[str, Any]]


@dataclass
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # keys in lower case
    read_body: Callable[[], bytes]
    request_id: str

    @cached_property
    def body(self) -> bytes:
        """The raw body, read on first use so routes without one never pay for it."""
        return self.read_body()

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def if_none_match(self) -> list[str]:
        """The entity tags of `If-None-Match`, weak ones compared as strong (RFC 9110 8.8.3.2)."""
        header = self.header("if-none-match") or ""
        return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]

    def json(self) -> Any:
        """The body parsed as JSON: 415 for another content type, 400 for malformed JSON or JSON
        nested too deep to parse safely."""
        content_type = (self.header("content-type") or "").split(";")[0].strip().lower()
        if not self.body:
            raise BadRequest("This request needs a JSON body.")
        if content_type != "application/json":
            raise UnsupportedMediaType(
                "Send the body as application/json.", details={"content_type": content_type}
            )
        return parse_body(self.body)

    def json_records(self) -> JsonRecords:
        """The body as records: a JSON list (`application/json`) or JSON Lines, one record per
        line (`application/x-ndjson`, blank lines skipped); 415 for another content type."""
        content_type = (self.header("content-type") or "").split(";")[0].strip().lower()
        if content_type in JSON_LINES_TYPES:
            return _json_lines(self.body)
        if content_type != "application/json":
            raise UnsupportedMediaType(
                "Send a JSON list as application/json, or JSON Lines as application/x-ndjson.",
                details={"content_type": content_type},
            )
        document = self.json()
        if not isinstance(document, list):
            raise ValidationFailed(
                "The body must be a JSON list.",
                details=[{"loc": ["body"], "msg": "expected a list", "type": "list_type"}],
            )
        return JsonRecords([(["body", index], item) for index, item in enumerate(document)], [])

    def body_as(self, model: type[ModelT]) -> ModelT:
        """The JSON body validated against a model (422 naming every failing field)."""
        try:
            return model.model_validate(self.json())
        except ValidationError as exc:
            raise validation_failed(
                "The body does not match the expected shape.", exc, "body"
            ) from exc

    def query_as(self, model: type[ModelT]) -> ModelT:
        """The query string validated against a model; a repeated key keeps its last value."""
        values = {name: items[-1] for name, items in self.query.items() if items}
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            raise validation_failed(
                "The query string does not match the expected parameters.", exc, "query"
            ) from exc


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class EventStream(Response):
    """A `text/event-stream` response: (event name, JSON data) pairs, sent as they come."""

    events: AsyncIterator[tuple[str, dict[str, Any]]] | None = None


@dataclass
class ByteStream(Response):
    """A `text/event-stream` response of frames already encoded (another API's wire format),
    sent as they come; keep-alives are the producer's (`shared.http.sse.started`)."""

    chunks: AsyncIterator[bytes] | None = None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; pydantic models are dumped in JSON mode."""
    if isinstance(data, BaseModel):
        body = data.model_dump_json(by_alias=True).encode()
    else:
        body = json.dumps(data, separators=(",", ":"), default=str).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def parse_body(body: bytes) -> Any:
    """A body parsed as JSON, refused with a 400 before parsing when it nests too deep."""
    try:
        return parse_json(body)
    except JsonTooDeep as exc:
        raise BadRequest(
            f"The body nests arrays and objects deeper than {exc.max_depth} levels.",
            code="json_too_deep",
            details=[{"loc": ["body"], "msg": str(exc), "type": "json_too_deep"}],
        ) from exc
    except ValueError as exc:
        raise BadRequest("The body is not valid JSON.", code="malformed_json") from exc


def no_content() -> Response:
    return Response(204)


def _json_lines(body: bytes) -> JsonRecords:
    """Each non-blank line parsed as JSON, located by line number, and the lines that are not."""
    if not body:
        raise BadRequest("This request needs a body.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("The body is not valid UTF-8.", code="malformed_json") from exc
    records = JsonRecords([], [])
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        location = ["body", "line", number]
        try:
            records.entries.append((location, parse_json(line)))
        except JsonTooDeep as exc:
            records.errors.append({"loc": location, "msg": str(exc), "type": "json_too_deep"})
        except ValueError as exc:
            message = f"not valid JSON: {getattr(exc, 'msg', 'malformed')}"
            records.errors.append({"loc": location, "msg": message, "type": "json_invalid"})
    return records
