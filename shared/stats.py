"""Figures summed over stored runs, shared by execution stats and evaluation summaries."""

import math
from typing import Any


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def usage_totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The prompt, completion and total tokens and the cost (USD) of stored runs, summed."""
    usages = [run["usage"] for run in runs if run.get("usage")]
    return {
        "prompt_tokens": sum(usage["prompt_tokens"] for usage in usages),
        "completion_tokens": sum(usage["completion_tokens"] for usage in usages),
        "total_tokens": sum(usage["total_tokens"] for usage in usages),
        "cost": round(sum(run.get("cost") or 0 for run in runs), 10),
    }
