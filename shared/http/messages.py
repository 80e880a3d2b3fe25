"""Framework-neutral requests and responses, so services and routes never see Flask or Starlette."""

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.errors import BadRequest, UnsupportedMediaType, validation_failed

ModelT = TypeVar("ModelT", bound=BaseModel)


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
        """The body parsed as JSON: 415 for another content type, 400 for malformed JSON."""
        content_type = (self.header("content-type") or "").split(";")[0].strip().lower()
        if not self.body:
            raise BadRequest("This request needs a JSON body.")
        if content_type != "application/json":
            raise UnsupportedMediaType(
                "Send the body as application/json.", details={"content_type": content_type}
            )
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("The body is not valid JSON.", code="malformed_json") from exc

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


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; pydantic models are dumped in JSON mode."""
    if isinstance(data, BaseModel):
        body = data.model_dump_json(by_alias=True).encode()
    else:
        body = json.dumps(data, separators=(",", ":"), default=str).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def no_content() -> Response:
    return Response(204)
