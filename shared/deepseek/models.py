"""What a DeepSeek call takes and gives back, independent of the SDK."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from shared.models import InputModel, Model
from shared.settings import ModelPrice

ModelName = Annotated[str, StringConstraints(pattern=r"^[\w.:/-]{1,100}$")]
StopWord = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class ResponseFormat(InputModel):
    type: Literal["text", "json_object"]


class Thinking(InputModel):
    type: Literal["enabled", "disabled"]


class ModelConfig(InputModel):
    """Model parameters sent to DeepSeek; stored as given, checked for type and range."""

    model: ModelName | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    stop: StopWord | Annotated[list[StopWord], Field(max_length=16)] | None = None
    response_format: ResponseFormat | None = None
    thinking: Thinking | None = None


def merged_params(stored: dict[str, Any], override: ModelConfig | None) -> dict[str, Any]:
    """A stored config with a request's overrides on top (null removes a key)."""
    params = dict(stored)
    if override is not None:
        for key, value in override.model_dump(exclude_unset=True).items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value
    return params


class Usage(Model):
    """DeepSeek's usage, cache hit/miss split included."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_cache_hit_tokens: int = 0
    prompt_cache_miss_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_upstream(cls, usage: dict[str, Any]) -> "Usage":
        details = usage.get("completion_tokens_details") or {}
        prompt_tokens = usage.get("prompt_tokens") or 0
        hit = usage.get("prompt_cache_hit_tokens") or 0
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=usage.get("completion_tokens") or 0,
            total_tokens=usage.get("total_tokens") or 0,
            prompt_cache_hit_tokens=hit,
            prompt_cache_miss_tokens=usage.get("prompt_cache_miss_tokens", prompt_tokens - hit),
            reasoning_tokens=details.get("reasoning_tokens") or 0,
        )

    def cost(self, price: ModelPrice) -> float:
        """USD for these tokens at a price per million tokens."""
        dollars = (
            self.prompt_cache_hit_tokens * price.input_cache_hit
            + self.prompt_cache_miss_tokens * price.input_cache_miss
            + self.completion_tokens * price.output
        ) / 1_000_000
        return round(dollars, 10)


# Records a finished call's final usage and its cost in USD (None: the model has no price).
UsageHook = Callable[[Usage, float | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One chat completion request: the model, the messages and the sampling parameters."""

    model: str
    # Role and text; a relayed OpenAI-compatible call's may also carry tool calls and their ids.
    messages: list[dict[str, Any]]
    params: dict[str, Any]


@dataclass(slots=True)
class Delta:
    kind: Literal["reasoning", "content"]
    text: str


@dataclass(slots=True)
class UpstreamChunk:
    """One `chat.completion.chunk` as DeepSeek sent it: its JSON text, and that text parsed."""

    payload: bytes
    data: dict[str, Any]


@dataclass(slots=True)
class Finish:
    finish_reason: str | None
    usage: Usage
    model: str
