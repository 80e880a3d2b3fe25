"""OpenAI's request and response shapes, as far as this API takes and gives them.

Requests are read strictly (an unknown parameter is a 400, as at OpenAI) except for messages,
which apps often send back as they received them, with fields a request does not need.
"""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from shared.deepseek.models import StopWord, Thinking
from shared.executions.inputs import Variables, WithVariables
from shared.models import InputModel, Model

# `name`, `name@label`, `name@<version>` or a configured model id.
ModelRef = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_MESSAGES = 2000


class ContentPart(Model):
    """One part of a message's content (Chat Completions' or the Responses API's); only text
    parts can be sent to DeepSeek."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=50)
    text: str | None = None


class CallerMessage(Model):
    """A message of the caller's conversation, in Chat Completions' shape."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=200)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(None, max_length=200)


class StreamOptions(InputModel):
    include_usage: bool = False
    # OpenAI pads its chunks against side channels unless told not to; nothing pads them here.
    include_obfuscation: bool | None = None


class ResponseFormat(InputModel):
    """`text`, `json_object`, or `json_schema` with its schema (DeepSeek judges the last)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]


class FunctionTool(InputModel):
    type: Literal["function"]
    function: dict[str, Any]


class SamplingParameters(InputModel):
    """What a caller may set on the model's call; what they set wins over the prompt's config."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    user: str | None = Field(None, max_length=256)
    # Accepted as OpenAI's SDKs send them; DeepSeek keeps nothing, and this API records every
    # call as an execution either way.
    store: bool | None = None
    metadata: dict[str, Annotated[str, StringConstraints(max_length=512)]] | None = Field(
        None, max_length=16
    )
    service_tier: str | None = Field(None, max_length=50)


class ChatCompletionRequest(SamplingParameters, WithVariables):
    model: ModelRef
    messages: Annotated[list[CallerMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: StopWord | Annotated[list[StopWord], Field(max_length=16)] | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # DeepSeek's own: whether the model thinks before it answers.
    thinking: Thinking | None = None
    # OpenAI's, refused with a 400 naming them when they ask for what DeepSeek cannot do.
    n: int | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    logit_bias: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    reasoning_effort: str | None = None


class PromptReference(InputModel):
    """The Responses API's `prompt`: our prompt's id or name, a version number or label."""

    id: ModelRef
    version: str | None = Field(None, max_length=50)
    variables: Variables = Field(default_factory=dict)


class InputItem(Model):
    """An item of the Responses API's `input`: a message (the only kind of text input)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field("message", max_length=50)
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[ContentPart] | None = None


class TextFormat(InputModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]


class TextOptions(InputModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat | None = None


class ResponseRequest(SamplingParameters, WithVariables):
    model: ModelRef | None = None
    input: str | Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)] | None = None
    instructions: str | None = None
    prompt: PromptReference | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    text: TextOptions | None = None
    # Text output only: accepted when they ask for nothing else.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    previous_response_id: str | None = None
    background: bool | None = None


class ModelEntry(Model):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(Model):
    object: Literal["list"] = "list"
    data: list[ModelEntry]


class OpenAIError(Model):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(Model):
    error: OpenAIError
