"""What DeepSeek calls cost a project: the usage ledger's figures, and the limits a call meets.

Metering sits on the platform floor, under the domains that make calls (executions, chat,
evaluations), so each of them admits and meters its calls through the same few functions.
"""

from dataclasses import dataclass
from datetime import date
from typing import Protocol

from pydantic import Field

from shared.access.models import Actor
from shared.models import Model

# The code of the 402 a spent budget answers, and of the evaluation cells it leaves unrun.
BUDGET_EXCEEDED = "budget_exceeded"
# The longest range one usage report sums: a year, leap day included.
MAX_REPORT_DAYS = 366


class Limits(Protocol):
    """What a project allows (its `limits`): unset means no limit."""

    @property
    def monthly_budget_usd(self) -> float | None: ...

    @property
    def max_output_tokens(self) -> int: ...

    @property
    def requests_per_minute(self) -> int | None: ...


@dataclass(frozen=True)
class Payer:
    """Who a call is billed to: a project, and the actor it is attributed to (None: a run
    started before runs kept who started them)."""

    project_id: str
    actor: Actor | None


@dataclass(frozen=True)
class Charge:
    """What one finished call adds to the ledger."""

    spend_usd: float
    prompt_cache_hit: int
    prompt_cache_miss: int
    completion: int


class Tokens(Model):
    prompt_cache_hit: int = 0
    prompt_cache_miss: int = 0
    completion: int = 0


# The figures' fields again rather than inherited, so that each row starts with what it is of.
class DayUsage(Model):
    day: date
    spend_usd: float
    tokens: Tokens
    calls: int


class ActorUsage(Model):
    # None for calls of evaluation runs started before runs kept who started them.
    actor: Actor | None
    spend_usd: float
    tokens: Tokens
    calls: int


class MonthBudget(Model):
    """The current UTC month against the project's budget."""

    month: str = Field(description="YYYY-MM, UTC")
    budget_usd: float | None
    spent_usd: float
    # None when the project has no budget; never below zero, even after an overshoot.
    remaining_usd: float | None


class UsageParams(Model):
    since: date | None = Field(None, description="First UTC day (default: the month's first)")
    until: date | None = Field(None, description="Last UTC day, included (default: today)")


class UsageReport(Model):
    since: date
    until: date
    spend_usd: float
    tokens: Tokens
    calls: int
    by_day: list[DayUsage]
    by_actor: list[ActorUsage]
    month: MonthBudget
