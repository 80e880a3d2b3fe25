"""What the OpenAI-compatible API answers, for the OpenAPI document: the `chat.completion` and
`response` objects, and the frames of their streams.

The answers themselves are built as plain dicts (`wire`), DeepSeek's chunks passed on as they
came; these models describe them. OpenAI's objects are open, and DeepSeek adds its own fields
(`reasoning_content`, `prompt_cache_hit_tokens`, ...): every object here allows more fields than
it names.
"""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from shared.models import Model
from shared.workflows.openai_api.models import OpenAIErrorBody


class OpenObject(Model):
    """An object of OpenAI's wire format: fields beyond those named may come."""

    model_config = ConfigDict(extra="allow")


class PromptTokensDetails(OpenObject):
    cached_tokens: int = Field(0, description="DeepSeek's cache hits.")


class CompletionTokensDetails(OpenObject):
    reasoning_tokens: int = 0


class CompletionUsage(OpenObject):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class FunctionCall(OpenObject):
    name: str | None = None
    arguments: str | None = None


class ToolCall(OpenObject):
    """A tool call: whole in a message; in a chunk, a piece of one, `index` saying which."""

    index: int | None = None
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCall | None = None


class AssistantMessage(OpenObject):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = Field(
        None, description="DeepSeek's reasoning, when the model thought before answering."
    )
    tool_calls: list[ToolCall] | None = None


class CompletionChoice(OpenObject):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None


class ChatCompletion(OpenObject):
    """A whole answer; its `id` is `chatcmpl-<execution id>`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


class ChunkDelta(OpenObject):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChunkChoice(OpenObject):
    index: int
    delta: ChunkDelta
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(OpenObject):
    """A piece of a streamed answer, DeepSeek's chunk with the call's id; with
    `stream_options.include_usage`, every chunk has `usage`, null but in the last, whose
    `choices` is empty."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class ChunkFrame(Model):
    """A frame of a streamed chat completion: `data:` alone, no `event:`; an error after the
    stream has started comes as a frame of its own, which OpenAI's SDKs raise."""

    data: ChatCompletionChunk | OpenAIErrorBody


class DoneFrame(Model):
    """The last frame of a streamed chat completion that did not fail."""

    data: Literal["[DONE]"]


ChatCompletionFrame = ChunkFrame | DoneFrame


class OutputText(OpenObject):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class OutputMessage(OpenObject):
    id: str
    type: Literal["message"]
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[OutputText]


class ResponseUsage(OpenObject):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: PromptTokensDetails | None = None
    output_tokens_details: CompletionTokensDetails | None = None


class ResponseError(OpenObject):
    code: str
    message: str


class ResponseObject(OpenObject):
    """The Responses API's `response`; its `id` is `resp_<execution id>`, its `prompt` the
    request's."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    model: str
    output: list[OutputMessage]
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[Any] | None = None
    text: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


# The events of a streamed response, in the order they come; on the wire `event: <type>` and
# `data: <its data>`, whose `type` repeats the event's name.
ResponseState = Literal[
    "response.created",
    "response.in_progress",
    "response.completed",
    "response.incomplete",
    "response.failed",
]
OutputItemEventName = Literal["response.output_item.added", "response.output_item.done"]
ContentPartEventName = Literal["response.content_part.added", "response.content_part.done"]


class StreamedEventData(OpenObject):
    sequence_number: int


class ResponseStateData(StreamedEventData):
    type: ResponseState
    response: ResponseObject


class OutputItemData(StreamedEventData):
    type: OutputItemEventName
    output_index: int
    item: OutputMessage


class ContentPartData(StreamedEventData):
    type: ContentPartEventName
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDeltaData(StreamedEventData):
    type: Literal["response.output_text.delta"]
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any]


class OutputTextDoneData(StreamedEventData):
    type: Literal["response.output_text.done"]
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any]


class StreamErrorData(StreamedEventData):
    """A failure after the stream started; `response.failed` follows it."""

    type: Literal["error"]
    code: str | None
    message: str
    param: str | None


class ResponseStateEvent(Model):
    event: ResponseState
    data: ResponseStateData


class OutputItemEvent(Model):
    event: OutputItemEventName
    data: OutputItemData


class ContentPartEvent(Model):
    event: ContentPartEventName
    data: ContentPartData


class OutputTextDeltaEvent(Model):
    event: Literal["response.output_text.delta"]
    data: OutputTextDeltaData


class OutputTextDoneEvent(Model):
    event: Literal["response.output_text.done"]
    data: OutputTextDoneData


class StreamErrorEvent(Model):
    event: Literal["error"]
    data: StreamErrorData


ResponseStreamEvent = Annotated[
    ResponseStateEvent
    | OutputItemEvent
    | ContentPartEvent
    | OutputTextDeltaEvent
    | OutputTextDoneEvent
    | StreamErrorEvent,
    Field(discriminator="event"),
]
