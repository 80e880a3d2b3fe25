"""The events a streamed answer is made of, shared by executions and chat.

On the wire each is `event: <event>` and `data: <data as JSON>`; these models describe them.
"""

from typing import Literal

from pydantic import BaseModel

from shared.deepseek.models import Usage


class DeltaData(BaseModel):
    delta: str


class DoneData(BaseModel):
    finish_reason: str | None
    usage: Usage | None
    cost: float | None
    ttft_ms: float | None
    latency_ms: float | None


class ErrorData(BaseModel):
    code: str
    message: str


class ReasoningEvent(BaseModel):
    event: Literal["reasoning"]
    data: DeltaData


class ContentEvent(BaseModel):
    event: Literal["content"]
    data: DeltaData


class DoneEvent(BaseModel):
    event: Literal["done"]
    data: DoneData


class ErrorEvent(BaseModel):
    event: Literal["error"]
    data: ErrorData
