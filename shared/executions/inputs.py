"""What a run of a prompt takes from its caller: template variables, earlier turns, input.

Datasets store the same for each case, so these stay light to import: no DeepSeek, no records.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from shared.bounds import JsonFields
from shared.models import InputModel

VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
UserInput = Annotated[str, StringConstraints(max_length=100_000)]


# Template variables: JSON values within bounds, stored as given.
Variables = Annotated[dict[VariableName, Any], JsonFields]


class WithVariables(InputModel):
    """A request carrying template variables."""

    variables: Variables = Field(default_factory=dict)


class HistoryTurn(InputModel):
    """A prior turn of a conversation, sent before the input."""

    role: Literal["user", "assistant"]
    content: UserInput


MAX_HISTORY_TURNS = 100
History = Annotated[list[HistoryTurn], Field(max_length=MAX_HISTORY_TURNS)]
