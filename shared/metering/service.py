"""Admitting DeepSeek calls against a project's limits, and metering what they cost.

Every route that calls DeepSeek bounds its call's output (`bounded_params`) and admits it
(`Metering.admit`) before it stores anything, and hands the `recorder` to the call's `Answer`,
so each finished call's final usage lands in the ledger however the call was made (executions
streamed or not, chat turns, evaluation cells and their judge calls).

The budget is checked against the ledger when a call is admitted, and a call's cost is known
only when it ends. So the calls in flight when the ledger reaches the budget all finish and are
counted: a month's spend can pass the budget by at most the cost of those calls, each at most
`max_output_tokens` x the output price plus its prompt x the input price.
"""

import math
from datetime import date, timedelta
from typing import Any

from shared.batching import Batcher
from shared.db import utc_now
from shared.deepseek.models import ChatCall, ModelConfig, Usage, UsageHook, merged_params
from shared.errors import PaymentRequired, TooManyRequests, ValidationFailed
from shared.metering.models import (
    BUDGET_EXCEEDED,
    MAX_REPORT_DAYS,
    Charge,
    Limits,
    MonthBudget,
    Payer,
    Tokens,
    UsageParams,
    UsageReport,
)
from shared.metering.repository import RateWindows, UsageLedger, month_of
from shared.settings import get_settings

RATE_WINDOW = timedelta(minutes=1)


def _add_charges(charges: list[tuple[Payer, date, Charge]]) -> list[None]:
    UsageLedger().add_many(charges)
    return [None] * len(charges)


# Calls that finish while the ledger is being written go together into the next write.
_charges: Batcher[tuple[Payer, date, Charge], None] = Batcher(_add_charges, max_batch=100)
Location = tuple[str | int, ...]


def bounded_params(params: dict[str, Any], limits: Limits, location: Location) -> dict[str, Any]:
    """The model parameters with `max_tokens` at most the project's cap (the cap when unset),
    so every answer is bounded; 422 naming `location` when the call asks for more."""
    cap = limits.max_output_tokens
    wanted = params.get("max_tokens")
    if wanted is None:
        return {**params, "max_tokens": cap}
    if wanted > cap:
        message = f"max_tokens {wanted} is above the project's max_output_tokens ({cap})."
        raise ValidationFailed(
            message,
            details=[
                {"loc": [*location, "max_tokens"], "msg": message, "type": "max_output_tokens"}
            ],
        )
    return params


def bounded_call(
    stored: dict[str, Any],
    override: ModelConfig | None,
    limits: Limits,
    messages: list[dict[str, str]],
) -> ChatCall:
    """The call a run sends: the stored config under the request's `config` overrides, bounded
    by the project's limits (a 422 naming the request's `config`), on the configured model
    unless the config names one."""
    params = bounded_params(merged_params(stored, override), limits, ("body", "config"))
    model = params.pop("model", None) or get_settings().deepseek_model
    return ChatCall(model, messages, params)


class Metering:
    def __init__(self) -> None:
        self.ledger = UsageLedger()

    def admit(self, payer: Payer, limits: Limits, *, is_request: bool = True) -> None:
        """Let a call through, or refuse it before anything is stored: 402 when the month's
        budget is spent, then 429 when a request (not an evaluation's cell) is over the caller's
        rate. Its parameters went through `bounded_params` first."""
        self.check_budget(payer.project_id, limits)
        if is_request:
            self.take_request(payer, limits)

    def check_budget(self, project_id: str, limits: Limits) -> None:
        """402 `budget_exceeded` when the project has spent its budget this UTC month."""
        budget = limits.monthly_budget_usd
        if budget is None:
            return
        month = month_of(utc_now().date())
        spent = self.ledger.month_spend(project_id, month)
        if spent >= budget:
            raise PaymentRequired(
                "The project's monthly budget is spent; calls resume next month, or when an "
                "owner raises the budget.",
                code=BUDGET_EXCEEDED,
                details={"budget_usd": budget, "spent_usd": spent, "month": month},
            )

    def take_request(self, payer: Payer, limits: Limits) -> None:
        """Count a request of the caller in their window; 429 `rate_limited` when it is full.

        The admin key is exempt: it is the operators' own, shared by their tools.
        """
        limit = limits.requests_per_minute
        actor = payer.actor
        if limit is None or actor is None or actor.kind == "admin":
            return
        now = utc_now()
        key = "|".join((payer.project_id, actor.kind, actor.id))
        ends = RateWindows().take(key, limit, RATE_WINDOW, now)
        if ends is None:
            return
        retry_after_s = max(1, math.ceil((ends - now).total_seconds()))
        raise TooManyRequests(
            f"More than {limit} requests in a minute; retry after {retry_after_s} s.",
            retry_after_s=retry_after_s,
            details={"requests_per_minute": limit, "retry_after_s": retry_after_s},
        )

    def recorder(self, payer: Payer) -> UsageHook:
        """What records a finished call's usage and cost in the ledger, on the day it ended."""

        async def record(usage: Usage, cost: float | None) -> None:
            charge = Charge(
                # An unpriced model costs nothing here; its tokens still count.
                spend_usd=cost or 0.0,
                prompt_cache_hit=usage.prompt_cache_hit_tokens,
                prompt_cache_miss=usage.prompt_cache_miss_tokens,
                completion=usage.completion_tokens,
            )
            await _charges.submit((payer, utc_now().date(), charge))

        return record

    def report(self, project_id: str, limits: Limits, params: UsageParams) -> UsageReport:
        """Spend, tokens and calls over UTC days, by day and by key or user, and the current
        month against the budget; 422 for a range that ends before it starts or is too long."""
        today = utc_now().date()
        until = params.until or today
        since = params.since or until.replace(day=1)
        _check_range(since, until)
        by_day = self.ledger.by_day(project_id, since, until)
        return UsageReport(
            since=since,
            until=until,
            spend_usd=round(sum(row.spend_usd for row in by_day), 10),
            tokens=Tokens(
                prompt_cache_hit=sum(row.tokens.prompt_cache_hit for row in by_day),
                prompt_cache_miss=sum(row.tokens.prompt_cache_miss for row in by_day),
                completion=sum(row.tokens.completion for row in by_day),
            ),
            calls=sum(row.calls for row in by_day),
            by_day=by_day,
            by_actor=self.ledger.by_actor(project_id, since, until),
            month=self._month(project_id, limits, today),
        )

    def _month(self, project_id: str, limits: Limits, today: date) -> MonthBudget:
        month = month_of(today)
        spent = self.ledger.month_spend(project_id, month)
        budget = limits.monthly_budget_usd
        return MonthBudget(
            month=month,
            budget_usd=budget,
            spent_usd=spent,
            remaining_usd=None if budget is None else round(max(0.0, budget - spent), 10),
        )


def _check_range(since: date, until: date) -> None:
    if until < since:
        raise _bad_range("until", "until is before since")
    if (until - since).days + 1 > MAX_REPORT_DAYS:
        raise _bad_range("until", f"a report covers at most {MAX_REPORT_DAYS} days")


def _bad_range(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"The date range is not valid: {message}.",
        details=[{"loc": ["query", field], "msg": message, "type": "date_range"}],
    )
