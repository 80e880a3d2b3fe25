"""What a DeepSeek call takes and gives back, independent of the SDK."""

from dataclasses import dataclass
from typing import Any, Literal

from shared.models import Model
from shared.settings import ModelPrice


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


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One chat completion request: the model, the messages and the sampling parameters."""

    model: str
    messages: list[dict[str, str]]
    params: dict[str, Any]


@dataclass(slots=True)
class Delta:
    kind: Literal["reasoning", "content"]
    text: str


@dataclass(slots=True)
class Finish:
    finish_reason: str | None
    usage: Usage
    model: str
