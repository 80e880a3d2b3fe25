"""Building blocks every domain's models share."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(max_length=2000)]
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,50}$")]


def _in_utc(moment: datetime) -> datetime:
    # MongoDB compares moments in UTC: an offset that moves one past year 9999 (or before year
    # 1) leaves nothing to compare, and the driver would fail on it.
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment is outside years 1 to 9999 in UTC") from None


# A moment a client gives to filter on, in UTC.
Moment = Annotated[datetime, AfterValidator(_in_utc)]


class Model(BaseModel):
    """The base of every API model. Its validator and serializer are built on first use, not at
    import: a function imports many models it never touches, and every import is cold start."""

    model_config = ConfigDict(defer_build=True)


class InputModel(Model):
    """A request body: unknown fields are refused so typos and smuggled operators surface as 422."""

    model_config = ConfigDict(extra="forbid")


class IdField(Model):
    id: str = Field(description="Opaque identifier")
