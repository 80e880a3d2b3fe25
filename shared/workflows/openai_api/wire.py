"""OpenAI's wire format: Chat Completions objects and chunks, Responses API objects and events.

DeepSeek already speaks Chat Completions, so its chunks are passed on as they came, with the
call's own id; the Responses API's events are made from the same chunks.
"""

from typing import Any, Protocol

import orjson

from shared.deepseek.models import Usage
from shared.errors import AppError
from shared.executions.service import Run
from shared.workflows.openai_api.errors import error_body
from shared.workflows.openai_api.models import ResponseRequest

DONE_FRAME = b"data: [DONE]\n\n"


class Presenter(Protocol):
    """How one API words a streamed answer: each chunk, the end, and a failure mid-way."""

    def chunk(self, data: dict[str, Any]) -> bytes | None: ...

    def end(self, run: Run) -> list[bytes]: ...

    def failure(self, error: AppError) -> list[bytes]: ...


def completion_id(run: Run) -> str:
    """The id a call's completion carries: its execution's, so the record is one GET away."""
    return f"chatcmpl-{run.record.id}"


def usage_body(usage: Usage) -> dict[str, Any]:
    """DeepSeek's usage in OpenAI's shape (its cache hits as `cached_tokens`), its own kept."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.prompt_cache_hit_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "prompt_cache_hit_tokens": usage.prompt_cache_hit_tokens,
        "prompt_cache_miss_tokens": usage.prompt_cache_miss_tokens,
    }


def _upstream_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """DeepSeek's usage as it sent it, with OpenAI's `cached_tokens` where it left it out."""
    details = usage.get("prompt_tokens_details") or {}
    if "cached_tokens" not in details:
        hit = usage.get("prompt_cache_hit_tokens") or 0
        usage = {**usage, "prompt_tokens_details": {**details, "cached_tokens": hit}}
    return usage


def completion(run: Run) -> dict[str, Any]:
    """The whole answer as a `chat.completion` object."""
    answer = run.answer
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text or (None if answer.tool_calls else ""),
    }
    if answer.reasoning_text is not None:
        message["reasoning_content"] = answer.reasoning_text
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    finish = answer.finish
    return {
        "id": completion_id(run),
        "object": "chat.completion",
        "created": int(run.record.created_at.timestamp()),
        "model": finish.model if finish else answer.call.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish.finish_reason if finish else None,
            }
        ],
        "usage": usage_body(finish.usage) if finish else None,
    }


class ChunkPresenter:
    """`chat.completion.chunk` frames: DeepSeek's chunks with the call's id; the usage chunk
    only when the caller asked for it (`stream_options.include_usage`); `[DONE]` at the end."""

    def __init__(self, run: Run, include_usage: bool) -> None:
        self.id = completion_id(run)
        self.include_usage = include_usage

    def chunk(self, data: dict[str, Any]) -> bytes | None:
        data["id"] = self.id
        usage = data.get("usage")
        if self.include_usage:
            data["usage"] = _upstream_usage(usage) if usage else None
        elif usage is not None or "usage" in data:
            if not data.get("choices"):
                return None  # the usage chunk nobody asked for
            del data["usage"]
        return b"data: %b\n\n" % orjson.dumps(data)

    def end(self, run: Run) -> list[bytes]:
        return [DONE_FRAME]

    def failure(self, error: AppError) -> list[bytes]:
        # OpenAI's SDKs raise an APIError for a streamed object carrying `error`.
        return [b"data: %b\n\n" % orjson.dumps(error_body(error))]


def response_id(run: Run) -> str:
    return f"resp_{run.record.id}"


def _message_id(run: Run) -> str:
    return f"msg_{run.record.id}"


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(run: Run, status: str) -> dict[str, Any]:
    content = [] if status == "in_progress" else [_output_text(run.answer.text)]
    return {
        "id": _message_id(run),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _response_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.prompt_cache_hit_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def request_echo(request: ResponseRequest) -> dict[str, Any]:
    """What a `response` object repeats of the request that made it."""
    return {
        "prompt": request.prompt.model_dump() if request.prompt else None,
        "instructions": request.instructions,
        "metadata": request.metadata or {},
    }


def response_object(
    run: Run, status: str, echo: dict[str, Any], error: AppError | None = None
) -> dict[str, Any]:
    """The Responses API's `response` object for the call, as it stands in `status`; `echo` is
    what it repeats of the request (`request_echo`)."""
    answer = run.answer
    finish = answer.finish
    done = status in ("completed", "incomplete")
    params = answer.call.params
    return {
        "id": response_id(run),
        "object": "response",
        "created_at": int(run.record.created_at.timestamp()),
        "status": status,
        "model": finish.model if finish else answer.call.model,
        "output": [_message_item(run, "completed")] if done else [],
        "usage": _response_usage(finish.usage) if finish and done else None,
        "error": None if error is None else {"code": error.code, "message": error.message},
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "max_output_tokens": params.get("max_tokens"),
        "temperature": params.get("temperature"),
        "top_p": params.get("top_p"),
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "text": {"format": _text_format(params.get("response_format"))},
        **echo,
    }


def chat_response_format(text_format: dict[str, Any]) -> dict[str, Any]:
    """The Responses API's `text.format` as Chat Completions' `response_format`: a JSON
    schema's name, schema and strictness sit beside its type there, under `json_schema` here."""
    if text_format["type"] != "json_schema":
        return text_format
    schema = {name: value for name, value in text_format.items() if name != "type"}
    return {"type": "json_schema", "json_schema": schema}


def _text_format(response_format: dict[str, Any] | None) -> dict[str, Any]:
    """A call's `response_format` as the Responses API's `text.format` (`chat_response_format`
    undone)."""
    if response_format is None:
        return {"type": "text"}
    if response_format.get("type") == "json_schema" and "json_schema" in response_format:
        return {"type": "json_schema", **response_format["json_schema"]}
    return response_format


def response_status(run: Run) -> str:
    finish = run.answer.finish
    return "incomplete" if finish is not None and finish.finish_reason == "length" else "completed"


class ResponseEventPresenter:
    """Responses API events, as OpenAI's SDKs parse them: the response created, its message
    item and text part opened, each text delta, then everything closed and the response
    completed (or incomplete, or failed)."""

    def __init__(self, run: Run, echo: dict[str, Any]) -> None:
        self.run = run
        self.echo = echo
        self.sequence = 0
        self.opened = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: %b\ndata: %b\n\n" % (kind.encode(), orjson.dumps(data))

    def _opening(self) -> bytes:
        self.opened = True
        run = self.run
        part = {"item_id": _message_id(run), "output_index": 0, "content_index": 0}
        return b"".join(
            (
                self._event(
                    "response.created",
                    response=response_object(run, "in_progress", self.echo),
                ),
                self._event(
                    "response.in_progress",
                    response=response_object(run, "in_progress", self.echo),
                ),
                self._event(
                    "response.output_item.added",
                    output_index=0,
                    item=_message_item(run, "in_progress"),
                ),
                self._event("response.content_part.added", **part, part=_output_text("")),
            )
        )

    def chunk(self, data: dict[str, Any]) -> bytes | None:
        opening = b"" if self.opened else self._opening()
        text = "".join(
            (choice.get("delta") or {}).get("content") or "" for choice in data.get("choices") or ()
        )
        if not text:
            return opening or None
        delta = self._event(
            "response.output_text.delta",
            item_id=_message_id(self.run),
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )
        return opening + delta

    def end(self, run: Run) -> list[bytes]:
        opening = [] if self.opened else [self._opening()]
        text = run.answer.text
        part = {"item_id": _message_id(run), "output_index": 0, "content_index": 0}
        status = response_status(run)
        return [
            *opening,
            self._event("response.output_text.done", **part, text=text, logprobs=[]),
            self._event("response.content_part.done", **part, part=_output_text(text)),
            self._event(
                "response.output_item.done", output_index=0, item=_message_item(run, "completed")
            ),
            self._event(f"response.{status}", response=response_object(run, status, self.echo)),
        ]

    def failure(self, error: AppError) -> list[bytes]:
        body = error_body(error)["error"]
        return [
            self._event("error", code=body["code"], message=body["message"], param=body["param"]),
            self._event(
                "response.failed",
                response=response_object(self.run, "failed", self.echo, error),
            ),
        ]
