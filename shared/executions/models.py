"""Execution records: one prompt run against DeepSeek, with everything needed to judge it."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from shared.access.models import Actor
from shared.bounds import StoredJson
from shared.deepseek.events import answer_stream_events
from shared.deepseek.models import ModelConfig, Usage
from shared.executions.inputs import History, UserInput, WithVariables
from shared.models import Model, Moment
from shared.pagination import PageParams
from shared.prompts.models import VersionChoice, VersionNumber

ExecutionStatus = Literal["running", "ok", "error", "cancelled"]


class RunInputs(WithVariables, VersionChoice):
    """What a run takes besides its prompt: which version, the variables, the user's input,
    earlier turns and config overrides."""

    input: UserInput | None = None
    # Earlier turns: after the prompt's opening, before its `{{input}}` message or the input.
    history: History = Field(default_factory=list)
    config: ModelConfig | None = None


class ExecutionCreate(RunInputs):
    prompt_id: str
    stream: bool = False


class ExecutionError(Model):
    code: str
    message: str


class RenderedMessage(Model):
    """A message as sent to the model. Those of an OpenAI-compatible call may also answer a
    tool call or carry the assistant's; fields a message does not have are left out."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {name: value for name, value in handler(self).items() if value is not None}


class VariableUse(Model):
    """The template variables of a rendered version, against those a request gave."""

    used: list[str] = Field(description="Every variable the content uses, in order of first use")
    filled: list[str] = Field(description="Used and given: their placeholders were filled")
    missing: list[str] = Field(description="Used, not given: their placeholders stay as written")
    unused: list[str] = Field(description="Given, not used by the content")


class RunPreview(Model):
    """What a run with these inputs would send to DeepSeek, as its execution record would show
    it; nothing is called or stored."""

    prompt_id: str
    prompt_version: int
    label: str | None
    model: str
    params: dict[str, Any]
    messages: list[RenderedMessage]
    variables: VariableUse


class ExecutionDraft(Model):
    """What a run is before its answer comes back: the rendered prompt it sends and where it
    came from. Its record is stored as running once the call has lasted a second, else
    when it ends (`ExecutionService.store_running`)."""

    project_id: str
    # None for a call that names a model rather than a prompt (the OpenAI-compatible API).
    prompt_id: str | None
    prompt_version: int | None
    label: str | None
    model: str
    params: dict[str, Any]
    messages: list[RenderedMessage]
    variables: dict[str, Any]
    input: str | None
    source: str
    actor: Actor | None = None


class ExecutionOutcome(Model):
    """What the answer brought back, however it ended."""

    status: ExecutionStatus
    error: ExecutionError | None
    output: str
    reasoning: str | None
    finish_reason: str | None
    usage: Usage | None
    cost: float | None
    latency_ms: float | None
    ttft_ms: float | None
    tool_calls: list[dict[str, Any]] | None = None

    @classmethod
    def not_yet(cls) -> "ExecutionOutcome":
        """A run's outcome before anything came back."""
        return cls(
            status="running",
            error=None,
            output="",
            reasoning=None,
            finish_reason=None,
            usage=None,
            cost=None,
            latency_ms=None,
            ttft_ms=None,
        )


# The draft's and the outcome's fields again rather than inherited: inheriting would reorder
# the fields the API shows.
class Execution(Model):
    id: str
    project_id: str
    prompt_id: str | None = Field(description="None for a call that named a model, no prompt")
    prompt_version: int | None
    label: str | None
    model: str
    params: dict[str, Any]
    messages: list[RenderedMessage]
    variables: StoredJson
    input: str | None
    output: str
    reasoning: str | None
    finish_reason: str | None
    usage: Usage | None
    cost: float | None
    latency_ms: float | None
    ttft_ms: float | None
    status: ExecutionStatus
    error: ExecutionError | None
    source: str
    created_at: datetime
    finished_at: datetime | None
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, description="The functions the model called, when it called any"
    )
    actor: Actor | None = Field(
        default=None, description="Who ran it: a project key or user (absent on older records)"
    )


class RunFigures(Model):
    """The figures stats read of one finished run."""

    prompt_version: int
    status: ExecutionStatus
    latency_ms: float | None
    ttft_ms: float | None
    usage: Usage | None
    cost: float | None


class ExecutionMeta(Model):
    execution_id: str
    prompt_id: str | None
    prompt_version: int | None
    model: str


ExecutionEvent = answer_stream_events(ExecutionMeta)


class ExecutionListParams(PageParams):
    project_id: str | None = None
    prompt_id: str | None = None
    version: VersionNumber | None = None
    status: ExecutionStatus | None = None
    since: Moment | None = None
    until: Moment | None = None


class StatsParams(Model):
    prompt_id: str
    since: Moment | None = None
    until: Moment | None = None


class VersionStats(Model):
    version: int
    count: int
    ok: int
    errors: int
    cancelled: int
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float


class ExecutionStats(Model):
    prompt_id: str
    versions: list[VersionStats]
