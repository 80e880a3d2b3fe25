"""Keyset pagination for every list endpoint: newest first by default, stable under inserts."""

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from pydantic import Field
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from shared.bounds import parse_json
from shared.errors import ValidationFailed
from shared.models import Model

ItemT = TypeVar("ItemT")


class PageParams(Model):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None
    page: int | None = Field(None, ge=1, le=10_000)


class Page(Model, Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None
    total: int
    limit: int
    page: int | None = None

    @classmethod
    def of(
        cls, found: tuple[list[ItemT], str | None, int] | None, params: PageParams
    ) -> "Page[ItemT]":
        """The page a repository search found; None (a filter that matches nothing) is empty."""
        items, next_cursor, total = found if found is not None else ([], None, 0)
        return cls(
            items=items, next_cursor=next_cursor, total=total, limit=params.limit, page=params.page
        )


def encode_cursor(created_at: datetime, object_id: ObjectId) -> str:
    raw = json.dumps({"t": int(created_at.timestamp() * 1000), "id": str(object_id)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# Cursors this API hands out are about 60 characters; the newest moment one can name is the
# last millisecond of year 9999, the largest a datetime holds.
MAX_CURSOR_LENGTH = 200
MAX_CURSOR_MS = 253_402_300_799_999


def decode_cursor(cursor: str) -> tuple[datetime, ObjectId]:
    """The position a cursor names; 422 for anything this API did not hand out."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("cursor too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        position = parse_json(base64.urlsafe_b64decode(padded), max_depth=1)
        moment, object_id = position["t"], position["id"]
        if type(moment) is not int or not 0 <= moment <= MAX_CURSOR_MS:
            raise ValueError("cursor time out of range")
        if not isinstance(object_id, str):
            raise TypeError("cursor id is not text")
        created_at = datetime.fromtimestamp(moment / 1000, tz=UTC)
        return created_at, ObjectId(object_id)
    except (
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
        OSError,
        InvalidId,
        binascii.Error,
    ) as exc:
        raise ValidationFailed(
            "The cursor is not one this API handed out.",
            details=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "cursor"}],
        ) from exc


def find_page(
    collection: Collection,
    query: Mapping[str, Any],
    params: PageParams,
    sort_field: str = "created_at",
    ascending: bool = False,
) -> tuple[list[dict[str, Any]], str | None, int]:
    """One page of documents by `sort_field` then _id, newest first unless `ascending`; the next
    cursor and the total."""
    page_query: dict[str, Any] = dict(query)
    skip = 0
    beyond = "$gt" if ascending else "$lt"
    direction = ASCENDING if ascending else DESCENDING
    if params.cursor:
        position, object_id = decode_cursor(params.cursor)
        after_cursor = {
            "$or": [
                {sort_field: {beyond: position}},
                {sort_field: position, "_id": {beyond: object_id}},
            ]
        }
        page_query = {"$and": [page_query, after_cursor]}
    elif params.page:
        skip = (params.page - 1) * params.limit
    documents = list(
        collection.find(page_query)
        .sort([(sort_field, direction), ("_id", direction)])
        .skip(skip)
        .limit(params.limit + 1)
    )
    next_cursor = None
    if len(documents) > params.limit:
        documents = documents[: params.limit]
        last = documents[-1]
        next_cursor = encode_cursor(last[sort_field], last["_id"])
    return documents, next_cursor, collection.count_documents(dict(query))
