"""Storage of what calls cost (`usage_ledger`) and of request windows (`rate_windows`).

Every write is an atomic single-document update (`$inc` upserts, conditional updates), so any
number of replicas share the figures without transactions.
"""

from datetime import date, datetime, timedelta
from typing import Any, ClassVar

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.db import indexed_collection, to_object_id
from shared.metering.models import ActorUsage, Charge, DayUsage, Payer, Tokens

_FIGURES = ("spend_usd", "prompt_cache_hit", "prompt_cache_miss", "completion", "calls")
# A refused take that raced a window's renewal looks again; more than this means heavy churn,
# and the request is refused rather than looping.
_TAKE_ATTEMPTS = 3


def month_of(day: date) -> str:
    return day.strftime("%Y-%m")


def _key(*parts: str) -> str:
    """A document id made of parts; only the last may contain the separator (an actor's id)."""
    return "|".join(parts)


def _sums() -> dict[str, Any]:
    return {name: {"$sum": f"${name}"} for name in _FIGURES}


def _figures(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "spend_usd": round(document["spend_usd"], 10),
        "tokens": Tokens(
            prompt_cache_hit=document["prompt_cache_hit"],
            prompt_cache_miss=document["prompt_cache_miss"],
            completion=document["completion"],
        ),
        "calls": document["calls"],
    }


def _charge_updates(payer: Payer, day: date, charge: Charge) -> list[UpdateOne]:
    """The updates that count one finished call on its day (UTC) and month."""
    project_id = to_object_id(payer.project_id)
    month = month_of(day)
    actor = payer.actor
    # The month first: it is what budget checks read.
    month_total = UpdateOne(
        {"_id": _key(payer.project_id, month)},
        {
            "$inc": {"spend_usd": charge.spend_usd, "calls": 1},
            "$setOnInsert": {"project_id": project_id, "month": month},
        },
        upsert=True,
    )
    day_figures = UpdateOne(
        {
            "_id": _key(
                payer.project_id,
                day.isoformat(),
                actor.kind if actor else "none",
                actor.id if actor else "",
            )
        },
        {
            "$inc": {
                "spend_usd": charge.spend_usd,
                "prompt_cache_hit": charge.prompt_cache_hit,
                "prompt_cache_miss": charge.prompt_cache_miss,
                "completion": charge.completion,
                "calls": 1,
            },
            # The latest name the actor went by (a key can be renamed, a user's name change).
            "$set": {"actor": actor.model_dump() if actor else None},
            "$setOnInsert": {"project_id": project_id, "day": day.isoformat()},
        },
        upsert=True,
    )
    return [month_total, day_figures]


class UsageLedger:
    """Per project, UTC day and actor: spend, tokens (cache hits apart) and calls; and per project
    and month the spend alone, so that a budget check is one read by id. Both live in one
    collection, so counting a call is one round trip; a month's document has no `day`, so the
    day queries never see it."""

    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel([("project_id", ASCENDING), ("day", ASCENDING)], name="project_days"),
    ]

    def __init__(self) -> None:
        self.days: Collection = indexed_collection("usage_ledger", self.INDEXES)

    def add_many(self, charges: list[tuple[Payer, date, Charge]]) -> None:
        """Count finished calls, each on its day (UTC) and month, in one round trip."""
        self.days.bulk_write(
            [update for charge in charges for update in _charge_updates(*charge)], ordered=True
        )

    def delete_project(self, project_id: str) -> None:
        self.days.delete_many({"project_id": to_object_id(project_id)})

    def month_spend(self, project_id: str, month: str) -> float:
        """USD spent by the project in a month (YYYY-MM)."""
        document = self.days.find_one({"_id": _key(project_id, month)}, {"spend_usd": 1})
        return round(document["spend_usd"], 10) if document else 0.0

    def _match(self, project_id: str, since: date, until: date) -> dict[str, Any]:
        return {
            "$match": {
                "project_id": to_object_id(project_id),
                "day": {"$gte": since.isoformat(), "$lte": until.isoformat()},
            }
        }

    def by_day(self, project_id: str, since: date, until: date) -> list[DayUsage]:
        """The project's figures per day with calls, oldest first."""
        documents = self.days.aggregate(
            [
                self._match(project_id, since, until),
                {"$group": {"_id": "$day", **_sums()}},
                {"$sort": {"_id": ASCENDING}},
            ]
        )
        return [
            DayUsage(day=date.fromisoformat(document["_id"]), **_figures(document))
            for document in documents
        ]

    def by_actor(self, project_id: str, since: date, until: date) -> list[ActorUsage]:
        """The project's figures per key or user over the days, biggest spender first."""
        documents = self.days.aggregate(
            [
                self._match(project_id, since, until),
                {"$sort": {"day": ASCENDING}},
                {
                    "$group": {
                        "_id": {"kind": "$actor.kind", "id": "$actor.id"},
                        "actor": {"$last": "$actor"},
                        **_sums(),
                    }
                },
            ]
        )
        rows = [ActorUsage(actor=document["actor"], **_figures(document)) for document in documents]
        return sorted(rows, key=lambda row: (-row.spend_usd, -row.calls))


class RateWindows:
    """Requests per caller in windows of fixed length, each starting at the first request after
    the previous one ended. A window's document expires (TTL) once it has ended."""

    INDEXES: ClassVar[list[IndexModel]] = [
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expire_ended"),
    ]

    def __init__(self) -> None:
        self.windows: Collection = indexed_collection("rate_windows", self.INDEXES)

    def take(self, key: str, limit: int, window: timedelta, now: datetime) -> datetime | None:
        """Count one request in the caller's window; None when it fits, else when the window
        ends. A refused request changes nothing."""
        for _ in range(_TAKE_ATTEMPTS):
            try:
                # A live window with room counts it; no window at all starts one (the upsert).
                self.windows.find_one_and_update(
                    {"_id": key, "expires_at": {"$gt": now}, "count": {"$lt": limit}},
                    {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": now + window}},
                    upsert=True,
                )
                return None
            except DuplicateKeyError:
                pass  # the caller has a window, full or ended
            # An ended window not yet removed by the TTL monitor is started again.
            renewed = self.windows.find_one_and_update(
                {"_id": key, "expires_at": {"$lte": now}},
                {"$set": {"count": 1, "expires_at": now + window}},
            )
            if renewed is not None:
                return None
            full = self.windows.find_one({"_id": key, "expires_at": {"$gt": now}})
            if full is not None and full["count"] >= limit:
                return full["expires_at"]
        return now + window
