"""Figures summed over stored runs, shared by execution stats and evaluation summaries."""

import math
from collections.abc import Sequence
from typing import Any, Protocol


class TokenCounts(Protocol):
    """A run's usage, as far as totals go."""

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def total_tokens(self) -> int: ...


class BilledRun(Protocol):
    """A stored run with what it used and cost: an execution's figures or an evaluation cell."""

    @property
    def usage(self) -> TokenCounts | None: ...

    @property
    def cost(self) -> float | None: ...


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def usage_totals(runs: Sequence[BilledRun]) -> dict[str, Any]:
    """The prompt, completion and total tokens and the cost (USD) of stored runs, summed."""
    usages = [run.usage for run in runs if run.usage is not None]
    return {
        "prompt_tokens": sum(usage.prompt_tokens for usage in usages),
        "completion_tokens": sum(usage.completion_tokens for usage in usages),
        "total_tokens": sum(usage.total_tokens for usage in usages),
        "cost": round(sum(run.cost or 0 for run in runs), 10),
    }
